"""The incidents and their partners, kept in each process: the pages read them from memory.

Every page needs its incident, and the incident page needs nothing else. They change only
when the operator runs `portal incident load` (in another process, maybe on another host),
which always sets the incident's `updated_at`. So the cache checks, at most once per `ttl`
seconds and with one small query (ids and `updated_at`), whether anything changed, and
reloads everything when it did. The check runs beside the request that finds the snapshot
stale, which is answered from it meanwhile: no page ever waits for the incident, except the
first one of a process. A page shows a loaded change about `ttl` seconds later at most.
A TTL rather than a check per request: that check would be a round trip on every page.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Engine, select
from starlette.concurrency import run_in_threadpool

from portal.incidents import stored
from portal.incidents.stored import Incident, Partner
from portal.store import tables

log = logging.getLogger("portal.incident_cache")

DEFAULT_TTL = 1.0  # seconds a page may show an incident as it was before a load


@dataclass(frozen=True)
class Snapshot:
    """Every incident with its partners, as of one read."""

    versions: tuple[tuple[int, datetime | None], ...] = ()
    by_slug: dict[str, Incident] = field(default_factory=dict)
    partners: dict[int, list[Partner]] = field(default_factory=dict)
    ordered: list[Incident] = field(default_factory=list)


class IncidentCache:
    """Incidents by slug and their partners, revalidated at most once per `ttl` seconds."""

    def __init__(self, engine: Engine, *, ttl: float = DEFAULT_TTL) -> None:
        self.engine = engine
        self.ttl = ttl
        self.snapshot: Snapshot | None = None
        self.checked = float("-inf")
        self._lock = asyncio.Lock()
        self._checking: asyncio.Task[None] | None = None

    async def incident(self, slug: str) -> Incident | None:
        return (await self._fresh()).by_slug.get(slug)

    async def partners(self, incident: Incident) -> list[Partner]:
        """The incident's partners in the order they were first loaded."""
        return (await self._fresh()).partners.get(incident.id, [])

    async def incidents(self) -> list[Incident]:
        return (await self._fresh()).ordered

    async def close(self) -> None:
        """Waits for a check under way: its connection must be back before the pool goes."""
        if self._checking is not None:
            await asyncio.gather(self._checking, return_exceptions=True)

    async def _fresh(self) -> Snapshot:
        """The snapshot; a stale one is served while a check runs (no request waits for it)."""
        snapshot = self.snapshot
        if snapshot is None or self.ttl <= 0:
            return await self._check()
        if time.monotonic() - self.checked >= self.ttl and self._checking is None:
            self._checking = asyncio.create_task(self._check_in_background())
        return snapshot

    async def _check(self) -> Snapshot:
        async with self._lock:
            self.snapshot = await run_in_threadpool(self._revalidate, self.snapshot)
            self.checked = time.monotonic()
            return self.snapshot

    async def _check_in_background(self) -> None:
        try:
            await self._check()
        except Exception as exc:  # the database is away: pages go on with what they have
            log.warning("incident cache not revalidated: %s", type(exc).__name__)
            self.checked = time.monotonic()
        finally:
            self._checking = None

    def _revalidate(self, snapshot: Snapshot | None) -> Snapshot:
        with self.engine.begin() as conn:
            versions = _versions(conn)
            if snapshot is not None and versions == snapshot.versions:
                return snapshot
            return _read_all(conn, versions)


def _versions(conn: Connection) -> tuple[tuple[int, datetime | None], ...]:
    t = tables.incidents
    rows = conn.execute(select(t.c.id, t.c.updated_at).order_by(t.c.id))
    return tuple((row.id, row.updated_at) for row in rows)


def _read_all(conn: Connection, versions: tuple[tuple[int, datetime | None], ...]) -> Snapshot:
    ordered = stored.list_incidents(conn)
    return Snapshot(
        versions=versions,
        by_slug={incident.slug: incident for incident in ordered},
        partners={incident.id: stored.get_partners(conn, incident.id) for incident in ordered},
        ordered=ordered,
    )
