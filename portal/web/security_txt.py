"""/.well-known/security.txt (RFC 9116): whom to tell about a vulnerability, and until when."""

from __future__ import annotations

from datetime import datetime, timedelta

from portal.core.config import Settings

# RFC 9116 §2.5.5: Expires should be less than a year away; the file is made on request, so
# it never goes stale, and a cached copy stays valid for a good while.
VALID_FOR = timedelta(days=180)


def contact_uri(contact: str) -> str:
    """An address becomes a mailto: URI; a URI is kept as it is."""
    return contact if ":" in contact.split("@", 1)[0] else f"mailto:{contact}"


def security_txt(settings: Settings, *, fallback_contact: str | None, now: datetime) -> str | None:
    """The file's text; None when there is nobody to contact yet (no setting, no incident)."""
    contact = settings.security_contact or fallback_contact
    if not contact:
        return None
    expires = (now + VALID_FOR).replace(hour=0, minute=0, second=0, microsecond=0)
    lines = [
        f"Contact: {contact_uri(contact)}",
        f"Expires: {expires.strftime('%Y-%m-%dT%H:%M:%SZ')}",
        "Preferred-Languages: nl, en",
        f"Canonical: {settings.base_url}/.well-known/security.txt",
    ]
    return "\n".join(lines) + "\n"
