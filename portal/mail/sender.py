"""The From header of the portal's mail: PORTAL_MAIL_FROM, with a name people recognise."""

from __future__ import annotations

from email.headerregistry import Address
from email.utils import formataddr, parseaddr


def from_header(mail_from: str, organisation: str | None) -> str:
    """`Name <address>` from PORTAL_MAIL_FROM as set, else named after the organisation.

    A bare address says nothing about who writes; the organisation that runs the portal
    (the incident file's `organisation`) is the name a worried person looks for.
    """
    name, address = parseaddr(mail_from)
    display = name or (organisation or "").strip()
    if not display:
        return address or mail_from
    try:
        return str(Address(display_name=display, addr_spec=address))
    except (ValueError, IndexError):
        return formataddr((display, address))
