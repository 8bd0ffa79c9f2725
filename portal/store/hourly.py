"""Counters per hour for the notice-day overview: bumped with the work, never from personal rows.

Each figure is one row per hour (UTC, on the hour) and name, summed by an upsert in the
transaction that does the work, once per batch; a gauge (the outbox depth) keeps the
highest value sampled in its hour. No row says whose it was, and `portal purge` does not
touch the table, so the overview still shows notice day after its rows are gone.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, Executable, case, func, select

from portal.core.clock import utcnow
from portal.store import db, tables

log = logging.getLogger("portal.hourly")

LOOKUPS = "lookups"  # lookups that passed the limits and were hashed: a link written
LINK_MAILS = "link_mails"  # link mails delivered
NOTICES_SENT = "notices_sent"  # direct notices delivered
NOTICES_BOUNCED = "notices_bounced"  # direct notices refused for good
REQUESTS_OPENED = "requests_opened"  # deletion requests received
REQUESTS_CLOSED = "requests_closed"  # deletion requests completed or rejected
OUTBOX_DEPTH = "outbox_depth"  # the most messages owed at once in the hour (a gauge)
LOOKUPS_SHED = "lookups_shed"  # lookups dropped by a full lookup queue
MAIL_FAILED = "mail_failed"  # messages given up (after 24 hours, or refused for good)
BOUNCES_TEMPORARY = "bounces_temporary"  # bounces read that report a temporary failure
BOUNCES_IGNORED = "bounces_ignored"  # bounces read that are forged, untagged or unparseable


def hour_of(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def bump(conn: Connection, name: str, *, by: int = 1, at: datetime | None = None) -> None:
    """Adds `by` to the figure's count for the hour of `at` (now)."""
    bump_many(conn, {name: by}, at=at)


def bump_many(conn: Connection, counts: Mapping[str, int], *, at: datetime | None = None) -> None:
    """Adds each count to its figure for the hour of `at` (now): one statement for them all."""
    hour = hour_of(at or utcnow())
    rows = [{"hour": hour, "name": n, "count": by} for n, by in sorted(counts.items()) if by]
    if rows:
        conn.execute(_adding(conn.dialect.name), rows)


@functools.cache
def _adding(dialect: str) -> Executable:
    """The upsert that adds to a figure, built once: the mail worker bumps with every
    commit, and building the statement cost more than running it."""
    t = tables.hourly_counters
    return db.upsert_statement(
        dialect, t, keys=["hour", "name"], update={"count": lambda ex: t.c.count + ex.count}
    )


def record_max(conn: Connection, name: str, value: int, *, at: datetime | None = None) -> None:
    """Keeps `value` as the figure of the hour of `at` (now) if it is the highest yet."""
    t = tables.hourly_counters
    db.upsert(
        conn,
        t,
        [{"hour": hour_of(at or utcnow()), "name": name, "count": value}],
        keys=["hour", "name"],
        # CASE rather than GREATEST or max(a, b): one spelling for SQLite and PostgreSQL.
        update={
            "count": lambda excluded: case(
                (excluded.count > t.c.count, excluded.count), else_=t.c.count
            )
        },
    )


def series(
    conn: Connection, names: Sequence[str], *, hours: int, until: datetime
) -> dict[str, list[int]]:
    """Each figure's counts for the `hours` hours up to the hour of `until`, oldest first."""
    last = hour_of(until)
    first = last - timedelta(hours=hours - 1)
    t = tables.hourly_counters.c
    found = {
        (hour, name): int(count)
        for hour, name, count in conn.execute(
            select(t.hour, t.name, t.count).where(
                t.name.in_(names), t.hour >= first, t.hour <= last
            )
        )
    }
    span = [first + timedelta(hours=n) for n in range(hours)]
    return {name: [found.get((hour, name), 0) for hour in span] for name in names}


def total(conn: Connection, name: str, *, since: datetime) -> int:
    """The figure summed over the hours from the hour of `since` on."""
    t = tables.hourly_counters.c
    query = select(func.sum(t.count)).where(t.name == name, t.hour >= hour_of(since))
    return int(conn.scalar(query) or 0)


class Tally:
    """Counts kept in memory and written now and then: for events that happen outside any
    transaction (a lookup shed by a full queue), where a write each would cost too much.

    `add` is safe from any thread; `flush` writes what was counted in one transaction and
    keeps it when the database does not answer, for the next flush.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._counts: Counter[datetime] = Counter()

    def add(self, by: int = 1, *, at: datetime | None = None) -> None:
        with self._lock:
            self._counts[hour_of(at or utcnow())] += by

    def flush(self, engine: Engine) -> None:
        with self._lock:
            counts, self._counts = self._counts, Counter()
        if not counts:
            return
        try:
            with engine.begin() as conn:
                for hour, by in counts.items():
                    bump(conn, self.name, by=by, at=hour)
        except Exception as exc:
            # Kept for the next flush; the class only, as everywhere a write fails.
            log.warning("%s not counted yet: %s", self.name, type(exc).__name__)
            with self._lock:
                self._counts.update(counts)
