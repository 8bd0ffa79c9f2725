"""The audit log: who (an operator, a partner, the portal) did what to which object, and when.

Append-only from the app: this module adds and reads entries; only retention removes them.
It holds no personal data: names, slugs, references and fixed words, never an address.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time

from sqlalchemy import Connection, func, select

from portal.core.clock import utcnow
from portal.store import tables

_ADDRESS = re.compile(r"[^\s@]+@[^\s@]+")
MAX_OBJECT = 200


@dataclass(frozen=True)
class Entry:
    id: int
    at: datetime
    actor: str
    action: str
    object: str
    detail: str | None


def record(
    conn: Connection, *, actor: str, action: str, object: str, detail: str | None = None
) -> None:
    """Appends one entry; an email address in any part of it is a programming error."""
    for value in (actor, action, object, detail or ""):
        if _ADDRESS.search(value):
            raise ValueError("the audit log holds no email address")
    conn.execute(
        tables.audit_log.insert().values(
            at=utcnow(), actor=actor, action=action, object=object[:MAX_OBJECT], detail=detail
        )
    )


def record_daily(
    conn: Connection, *, actor: str, action: str, object: str, detail: str | None = None
) -> bool:
    """Appends one entry unless `actor` did `action` to `object` already today (UTC).

    For what is worth knowing once a day rather than at every page view: who saw a
    person's address. Returns whether it wrote one.
    """
    t = tables.audit_log
    today = datetime.combine(utcnow().date(), time())
    done = conn.scalar(
        select(t.c.id)
        .where(
            t.c.at >= today,
            t.c.actor == actor,
            t.c.action == action,
            t.c.object == object[:MAX_OBJECT],
        )
        .limit(1)
    )
    if done is not None:
        return False
    record(conn, actor=actor, action=action, object=object, detail=detail)
    return True


def entries(conn: Connection, *, limit: int = 200, offset: int = 0) -> list[Entry]:
    """Newest first."""
    t = tables.audit_log
    rows = conn.execute(
        select(t).order_by(t.c.at.desc(), t.c.id.desc()).limit(limit).offset(offset)
    )
    return [Entry(r.id, r.at, r.actor, r.action, r.object, r.detail) for r in rows]


def count(conn: Connection) -> int:
    return int(conn.scalar(select(func.count()).select_from(tables.audit_log)) or 0)
