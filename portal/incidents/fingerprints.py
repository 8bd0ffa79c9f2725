"""Each incident's pepper fingerprint: kept with its first records, checked before hashing.

A pepper other than the one an import used makes every lookup miss, and the portal would
tell every affected person "not affected" (design §4.1). So each incident keeps a keyed
hash of a fixed string under the pepper and salt its records were imported with, and the
commands that hash addresses refuse to start when the pepper in force gives another one.

The fingerprint is itself a blind index (of a string that is no address): with the
database in hand, it costs a guess at the pepper exactly what one known address's index
costs, so keeping it makes a weak pepper no cheaper to find.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, Exists, exists, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from portal.core.blind_index import InvalidEmail, KdfParams, blind_index, normalise
from portal.core.errors import PortalError
from portal.store import db, tables

log = logging.getLogger("portal.fingerprints")

FIXED_TEXT = "breach-portal pepper fingerprint v1"
RECHECK_SECONDS = 30.0  # how stale /healthz's answer about the pepper may be


@functools.lru_cache(maxsize=16)
def fingerprint(pepper: bytes, salt: bytes, params: KdfParams) -> str:
    """The hex fingerprint of a pepper with one deployment's salt and an incident's params."""
    return blind_index(FIXED_TEXT, pepper=pepper, salt=salt, params=params).hex()


def refusal(slugs: Iterable[str]) -> str:
    """The one line a command that refuses to start prints: the incidents and the fix."""
    named = ", ".join(slugs)
    return (
        f"PORTAL_PEPPER is not the pepper the records of incident(s) {named} were imported "
        'with: every lookup would answer "not affected"; set PORTAL_PEPPER to the pepper '
        "those incidents were imported with, or purge them (portal purge --incident SLUG "
        "--all) and import them again"
    )


@dataclass(frozen=True)
class PepperCheck:
    """What a guarded start found: incidents another pepper imported, fingerprints adopted."""

    mismatched: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)


def check(conn: Connection, pepper: bytes) -> PepperCheck:
    """Compares the pepper with every incident that holds records, in the caller's
    transaction; an incident imported before fingerprints were kept adopts this pepper's.

    Adopting is a guess: nothing kept can prove which pepper made an index, except a
    deletion request that still holds its verified address. When one does, it decides.
    """
    salt = db.ensure_salt(conn)
    mismatched, adopted = [], []
    for row in conn.execute(_with_records()):
        mine = fingerprint(pepper, salt, _params(row))
        if row.pepper_fingerprint is not None:
            if row.pepper_fingerprint != mine:
                mismatched.append(row.slug)
        elif _disproved(conn, row, pepper, salt):
            mismatched.append(row.slug)
        else:
            _set(conn, row.id, mine)
            adopted.append(row.slug)
    return PepperCheck(mismatched, adopted)


def mismatches(conn: Connection, pepper: bytes) -> list[str]:
    """The incidents holding records whose fingerprint is another pepper's (reads only)."""
    salt = db.ensure_salt(conn)
    return [
        row.slug
        for row in conn.execute(_with_records().where(_fingerprint.is_not(None)))
        if row.pepper_fingerprint != fingerprint(pepper, salt, _params(row))
    ]


def claim(
    conn: Connection, *, incident_id: int, pepper: bytes, salt: bytes, params: KdfParams
) -> None:
    """Before an import writes records: the incident takes this pepper's fingerprint,
    unless records of another pepper are there (a PortalError, nothing changed)."""
    mine = fingerprint(pepper, salt, params)
    t = tables.incidents
    free = or_(t.c.pepper_fingerprint.is_(None), t.c.pepper_fingerprint == mine, ~_has_records())
    taken = conn.execute(
        update(t).where(t.c.id == incident_id, free).values(pepper_fingerprint=mine)
    )
    if taken.rowcount == 0:
        slug = conn.scalar(select(t.c.slug).where(t.c.id == incident_id))
        raise PortalError(refusal([str(slug)]))


def refuse_another(conn: Connection, *, incident_id: int, pepper: bytes, salt: bytes) -> None:
    """`claim` for a dry run: refuses as it would, and writes nothing."""
    row = conn.execute(_with_records().where(tables.incidents.c.id == incident_id)).first()
    if row is not None and row.pepper_fingerprint not in (
        None,
        fingerprint(pepper, salt, _params(row)),
    ):
        raise PortalError(refusal([row.slug]))


_fingerprint = tables.incidents.c.pepper_fingerprint


def _has_records() -> Exists:
    """Whether any partner of the incident (of the enclosing query) holds records."""
    p, e = tables.partners, tables.exposures
    return exists().where(p.c.incident_id == tables.incidents.c.id, e.c.partner_id == p.c.id)


def _with_records() -> Any:
    i = tables.incidents.c
    return (
        select(
            i.id,
            i.slug,
            i.pepper_fingerprint,
            i.kdf_time_cost,
            i.kdf_memory_cost,
            i.kdf_parallelism,
        )
        .where(_has_records())
        .order_by(i.slug)
    )


def _params(row: Any) -> KdfParams:
    return KdfParams(row.kdf_time_cost, row.kdf_memory_cost, row.kdf_parallelism)


def _disproved(conn: Connection, row: Any, pepper: bytes, salt: bytes) -> bool:
    """Whether a deletion request's verified address hashes, with this pepper, to other
    than its index: a request exists only where a lookup matched the records."""
    d = tables.deletion_requests.c
    found = conn.execute(
        select(d.email, d.bidx).where(d.incident_id == row.id, d.email.is_not(None)).limit(1)
    ).first()
    if found is None:
        return False
    try:
        address = normalise(found.email)
    except InvalidEmail:
        return False
    index = blind_index(address, pepper=pepper, salt=salt, params=_params(row))
    return bool(index != found.bidx)


def _set(conn: Connection, incident_id: int, value: str) -> None:
    t = tables.incidents
    conn.execute(update(t).where(t.c.id == incident_id).values(pepper_fingerprint=value))


class PepperWatch:
    """For /healthz: the incidents whose records another pepper imported, read again at
    most every `interval` seconds (one small query), so a check costs no round trip."""

    def __init__(self, engine: Engine, pepper: bytes, *, interval: float = RECHECK_SECONDS):
        self.engine = engine
        self.pepper = pepper
        self.interval = interval
        self.found: list[str] = []
        self.checked = float("-inf")
        self._lock = asyncio.Lock()

    async def mismatched(self) -> list[str]:
        async with self._lock:
            if time.monotonic() - self.checked >= self.interval:
                await self._check()
        return self.found

    async def _check(self) -> None:
        try:
            found = await run_in_threadpool(self._read)
        except SQLAlchemyError as exc:
            log.warning("checking the pepper failed: %s", type(exc).__name__)
            return
        finally:
            self.checked = time.monotonic()
        if found and found != self.found:
            log.error(refusal(found))
        self.found = found

    def _read(self) -> list[str]:
        with self.engine.connect() as conn:
            return mismatches(conn, self.pepper)


def refuse_another_pepper(engine: Engine, pepper: bytes) -> None:
    """Stops a command that hashes addresses when the pepper in force is not the one the
    records were imported with: every lookup would answer "not affected" (design §4.1)."""
    with engine.begin() as conn:
        found = check(conn, pepper)
    for slug in found.adopted:
        log.warning(
            "incident %s holds records imported before pepper fingerprints were kept: the "
            "PORTAL_PEPPER in force is now recorded as theirs, unchecked; should people in "
            'the data be told "not affected", it is not: purge the incident and import it again',
            slug,
        )
    if found.mismatched:
        raise PortalError(refusal(found.mismatched))
