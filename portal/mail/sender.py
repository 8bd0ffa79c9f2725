"""Who the portal's mail is from: the From header (PORTAL_MAIL_FROM, with a name people
recognise) and the envelope sender (VERP, with PORTAL_BOUNCE_ADDRESS)."""

from __future__ import annotations

from email.headerregistry import Address
from email.utils import formataddr, parseaddr

from portal.core.config import Settings
from portal.core.tokens import bounce_tags


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


def envelope_sender(settings: Settings, message_id: int) -> str | None:
    """The MAIL FROM of an outbox message: `local+TAG@domain` of PORTAL_BOUNCE_ADDRESS, the
    tag signed and naming the message (never its address), so that a bounce names it; None
    without that setting (the address of PORTAL_MAIL_FROM, as `build_email` takes it)."""
    if not settings.bounce_address:
        return None
    local, _, domain = settings.bounce_address.rpartition("@")
    return f"{local}+{bounce_tags(settings).tag(message_id)}@{domain}"
