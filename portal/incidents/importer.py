"""CSV import: hash each distinct address once, in parallel, and write in batches.

The file is read, checked and deduplicated first (`reading.py`, with memory that does not
grow with the file), and nothing is written when it cannot be read as a whole. The
distinct addresses of this part (`--part K/N`) are then stretched into blind indexes on
all cores and written chunk by chunk, each chunk in its own transaction, as a set union
of field bits that any number of concurrent imports may write at once. A crash part-way
leaves a consistent, partially imported state (field sets only ever grow), and running
the same import again completes it. Values are never stored or logged: only the blind
index of each address, the partner and the set of exposed fields.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Engine, select

from portal.core.blind_index import KdfParams, blind_index, stretch
from portal.core.config import Settings
from portal.core.errors import PortalError
from portal.core.printable import shown
from portal.incidents import fingerprints
from portal.incidents.columns import plan_columns
from portal.incidents.parts import WHOLE, Part
from portal.incidents.reading import (
    FileRead,
    ImportSummary,
    Progress,
    RowVisitor,
    Skipped,
    chunks,
    read_file,
)
from portal.incidents.reading import read_each_row as _read_each_row
from portal.incidents.spill import spill_folder
from portal.incidents.stored import Incident, Partner, get_partner, get_partners, require_incident
from portal.store import db, tables

__all__ = [
    "CHUNK",
    "Hasher",
    "ImportSummary",
    "Progress",
    "Skipped",
    "chunks",
    "import_csv",
    "read_each_row",
]

log = logging.getLogger("portal.importer")

CHUNK = 1000
HASH_PROGRESS_EVERY = 50


# -- importing -------------------------------------------------------------------------


def import_csv(
    engine: Engine,
    settings: Settings,
    *,
    incident: str,
    partner: str,
    path: Path,
    mapping: dict[str, str] | None = None,
    email_column: str | None = None,
    workers: int | None = None,
    dry_run: bool = False,
    part: Part = WHOLE,
    progress: Progress | None = None,
) -> ImportSummary:
    """Imports one partner's leaked records (this part of them); idempotent; `dry_run`
    writes nothing."""
    if workers is not None and workers < 1:
        raise PortalError("--workers must be at least 1")
    with engine.begin() as conn:
        incident_id, partner_id, params = _target(conn, incident, partner)
        salt = db.ensure_salt(conn)
        # Before a row is read: records of another pepper would be unreachable (design §4.1).
        fingerprints.refuse_another(
            conn, incident_id=incident_id, pepper=settings.pepper, salt=salt
        )
    with spill_folder(settings.instance_dir) as folder:
        read = read_file(
            path,
            lambda header: plan_columns(header, mapping=mapping or {}, email_column=email_column),
            progress,
            pepper=settings.pepper,
            folder=folder,
            part=part,
        )
        summary = read.summary
        summary.dry_run = dry_run
        refuse_empty(path, summary)
        if not dry_run and summary.imported:
            # Claimed with the first records, not before: a refused file writes nothing.
            with engine.begin() as conn:
                fingerprints.claim(
                    conn, incident_id=incident_id, pepper=settings.pepper, salt=salt, params=params
                )
        hasher = Hasher(settings.pepper, salt, params)
        _store(engine, partner_id, read, hasher, workers or os.cpu_count() or 1, progress)
    _log(incident, partner, summary)
    return summary


def refuse_empty(path: Path, summary: ImportSummary) -> None:
    """Refuses a file without one valid row (in any part): there is nothing to do."""
    if not summary.imported and not summary.other_parts:
        raise PortalError(_nothing_to_import(path, summary))


def read_each_row(
    path: Path,
    visit: RowVisitor,
    *,
    mapping: dict[str, str] | None = None,
    email_column: str | None = None,
    progress: Progress | None = None,
    require_email: bool = True,
) -> ImportSummary:
    """Reads a file as the import does (same columns, `--map`, errors and accounting) and
    shows `visit` each row with its normalised address, or None for a row the import skips.

    With `require_email=False` (`portal letters`) a file may have no email column: each
    row is then skipped as having "no email address", as the import counts an empty cell.
    A file without any row is refused as the import refuses it.
    """
    summary = _read_each_row(
        path,
        lambda header: plan_columns(
            header, mapping=mapping or {}, email_column=email_column, require_email=require_email
        ),
        visit,
        progress,
    )
    if not summary.rows:
        raise PortalError(_nothing_to_import(path, summary))
    return summary


def _nothing_to_import(path: Path, summary: ImportSummary) -> str:
    if not summary.rows:
        return f"{shown(str(path))}: no rows after the header; nothing to import"
    reasons = "; ".join(
        f"{reason}: {describe_lines(lines)}"
        for reason, lines in summary.skipped_by_reason().items()
    )
    return (
        f"{shown(str(path))}: no row has a valid email address ({summary.rows:,} rows read, "
        f"all skipped: {reasons})"
    )


def describe_lines(lines: list[int]) -> str:
    """Line numbers as runs: "line 4", "lines 4-6, 9"."""
    runs: list[list[int]] = []
    for line in lines:
        if runs and line == runs[-1][-1] + 1:
            runs[-1].append(line)
        else:
            runs.append([line])
    text = ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)
    return f"line {text}" if len(lines) == 1 else f"lines {text}"


@dataclass(frozen=True)
class Hasher:
    """The blind index of an address with one deployment's pepper, salt and parameters."""

    pepper: bytes
    salt: bytes
    params: KdfParams

    def __call__(self, address: str) -> bytes:
        return blind_index(address, pepper=self.pepper, salt=self.salt, params=self.params)

    def stretch(self, keyed: bytes) -> bytes:
        """The blind index of an address from its keyed index (`reading` keeps those)."""
        return stretch(keyed, salt=self.salt, params=self.params)


def stretched(
    pool: ThreadPoolExecutor,
    hasher: Hasher,
    items: Iterable[tuple[bytes, int]],
    size: int,
    tick: Callable[[int], None] | None = None,
) -> Iterator[list[tuple[bytes, int]]]:
    """Chunks of (blind index, field bits) from (keyed index, field bits); the next chunk is
    hashed on the pool's threads (argon2id releases the GIL) while the caller writes this one.
    `tick(n)` hears of every HASH_PROGRESS_EVERY addresses hashed: a chunk takes seconds.
    """
    pending: list[tuple[bytes, int]] | None = None
    for chunk in chunks(items, size):
        hashing = pool.map(hasher.stretch, [keyed for keyed, _ in chunk])  # submitted at once
        if pending is not None:
            yield pending
        pending = []
        for bidx, (_, bits) in zip(hashing, chunk, strict=True):
            pending.append((bidx, bits))
            if tick and len(pending) % HASH_PROGRESS_EVERY == 0:
                tick(HASH_PROGRESS_EVERY)
        if tick:
            tick(len(pending) % HASH_PROGRESS_EVERY)
    if pending is not None:
        yield pending


def _store(
    engine: Engine,
    partner_id: int,
    read: FileRead,
    hasher: Hasher,
    workers: int,
    progress: Progress | None,
) -> None:
    """Hashes the distinct addresses on `workers` threads and writes them chunk by chunk."""
    done, total = 0, read.summary.addresses

    def tick(hashed: int) -> None:
        nonlocal done
        done += hashed
        if progress:
            progress("hashing", done, total)

    tick(0)
    keyed = ((key, bits) for _, key, bits in read.distinct.sorted())
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for chunk in stretched(pool, hasher, keyed, CHUNK, tick):
            _write_chunk(engine, partner_id, dict(chunk), read.summary)


def _log(incident: str, partner: str, summary: ImportSummary) -> None:
    log.info(
        "import %s/%s: %d rows, %d imported, %d skipped, %d new, %d updated, %d unchanged%s",
        incident,
        partner,
        summary.rows,
        summary.imported,
        len(summary.skipped),
        summary.new_exposures,
        summary.updated_exposures,
        summary.unchanged,
        " (dry run)" if summary.dry_run else "",
    )


def _target(conn: Connection, incident: str, partner: str) -> tuple[int, int, KdfParams]:
    found, target = require_partner(conn, incident, partner)
    return found.id, target.id, found.kdf


def require_partner(conn: Connection, incident: str, partner: str) -> tuple[Incident, Partner]:
    """The incident and its partner, or the PortalError that names the known ones."""
    found = require_incident(conn, incident)
    target = get_partner(conn, found.id, partner)
    if target is None:
        known = ", ".join(p.slug for p in get_partners(conn, found.id))
        raise PortalError(
            f"unknown partner {shown(repr(partner))} in incident {incident!r} (known: {known})"
        )
    return found, target


def _write_chunk(
    engine: Engine, partner_id: int, indexed: dict[bytes, int], summary: ImportSummary
) -> None:
    """Counts new, grown and unchanged exposures, and writes the first two unless dry run."""
    t = tables.exposures
    with engine.begin() as conn:
        existing: dict[bytes, int] = {
            bidx: bits
            for bidx, bits in conn.execute(
                select(t.c.bidx, t.c.fields).where(
                    t.c.partner_id == partner_id, t.c.bidx.in_(list(indexed))
                )
            )
        }
        changed: dict[bytes, int] = {}
        for bidx, bits in indexed.items():
            before = existing.get(bidx)
            if before is not None and before | bits == before:
                summary.unchanged += 1
                continue
            if before is None:
                summary.new_exposures += 1
            else:
                summary.updated_exposures += 1
            changed[bidx] = bits
        if not summary.dry_run:
            db.write_exposures(conn, partner_id, changed)
