"""The notices' throttled schedule: each notice or follow-up gets the moment before which no
worker may send it, 1/rate after the last one any run scheduled (design §7 "Rate")."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, func, select

from portal.core.clock import utcnow
from portal.store import tables

# pg_advisory_xact_lock's key while a chunk takes its places in the schedule: "notice".
SCHEDULE_LOCK = 0x6E6F74696365


def lock(conn: Connection) -> None:
    """One run at a time takes places in the schedule, so two runs never share a slot."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(SCHEDULE_LOCK)))
    elif conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def next_slot(conn: Connection, step: timedelta) -> datetime:
    """Now, or one step after the last notice (or follow-up) any run has scheduled,
    whichever is later."""
    found = [
        conn.scalar(select(func.max(tables.notices.c.send_after))),
        conn.scalar(select(func.max(tables.notice_followups.c.send_after))),
    ]
    last = max((at for at in found if at is not None), default=None)
    now = utcnow()
    return now if last is None else max(now, last + step)
