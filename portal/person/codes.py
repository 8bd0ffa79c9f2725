"""A letter's code typed on the portal: checked, used to start a session, audited.

An unknown code and a known one cost the same: one HMAC and one query each way (a code
that cannot be one is hashed in place of a dummy and looked up all the same), so the
answer's timing does not tell whether a code exists. The session a code starts has the
code's hash where a lookup's session has the address's blind index, and no address: the
results page reads the code's exposures as it reads an address's.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Connection, select, update

from portal.core import letter_codes
from portal.core.clock import utcnow
from portal.core.config import Settings
from portal.core.tokens import session_tokens, token_hash
from portal.incidents.stored import Incident
from portal.store import audit, tables

# Hashed in place of a typed text that cannot be a code, so that both cost the same.
_NO_CODE = letter_codes.from_value(0)


def open_code(
    conn: Connection, settings: Settings, incident: Incident, typed: str, lang: str
) -> str | None:
    """The cookie of a new session for the code typed, or None when it is no code of
    `incident`. Each use is audited, without the code."""
    try:
        hashed, valid = letter_codes.code_hash(settings.pepper, typed), True
    except letter_codes.InvalidCode:
        hashed, valid = letter_codes.code_hash(settings.pepper, _NO_CODE), False
    c = tables.letter_codes.c
    row = conn.execute(
        select(c.id, c.lang).where(c.code_hash == hashed, c.incident_id == incident.id)
    ).first()
    if row is None or not valid:
        audit.record(conn, actor="person", action="code_refused", object=incident.slug)
        return None
    now = utcnow()
    conn.execute(update(tables.letter_codes).where(c.id == row.id).values(last_used_at=now))
    cookie, secret = session_tokens(settings).issue()
    conn.execute(
        tables.sessions.insert().values(
            token_hash=token_hash(secret),
            incident_id=incident.id,
            bidx=hashed,
            sealed_email=None,
            lang=lang,
            created_at=now,
            verified_at=now,
            expires_at=now + timedelta(seconds=settings.session_ttl),
            letter_code_id=row.id,
        )
    )
    audit.record(conn, actor="person", action="code_used", object=incident.slug)
    return cookie
