"""CSV import: account for every row, hash in parallel, write in batches (columns: columns.py).

The file (read strictly by `csv_file`) is read and checked completely before anything is
written: every row is imported or skipped with its line and reason, and a file that cannot
be read as a whole is refused. Addresses are then deduplicated, hashed on all cores and
written chunk by chunk, each chunk in its own transaction. A crash part-way leaves a
consistent, partially imported state (field sets only ever grow), and running the same
import again completes it. Values are never stored or logged: only the blind index of each
address, the partner and the set of exposed fields.
"""

from __future__ import annotations

import csv
import itertools
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Connection, Engine, select

from portal.core import fields
from portal.core.blind_index import InvalidEmail, KdfParams, blind_index, normalise
from portal.core.config import Settings
from portal.core.errors import PortalError
from portal.core.printable import shown
from portal.incidents import fingerprints
from portal.incidents.columns import ColumnPlan, plan_columns
from portal.incidents.csv_file import CsvFile, Row, count_lines
from portal.incidents.stored import Incident, Partner, get_partner, get_partners, require_incident
from portal.store import db, tables

log = logging.getLogger("portal.importer")

CHUNK = 1000
READ_PROGRESS_EVERY = 5000
HASH_PROGRESS_EVERY = 50


def chunks(items: Iterable[tuple[str, int]], size: int) -> Iterator[list[tuple[str, int]]]:
    """The items in lists of `size` (the last one shorter)."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


# progress(stage, done, total): stage "reading" counts lines, "hashing" addresses.
Progress = Callable[[str, int, int], None]

WHY_INVALID = {
    "missing": "no email address",
    "control": "not a valid address: it holds control characters",
    "too_long": "not a valid address: longer than 254 characters",
    "local_too_long": "not a valid address: more than 64 characters before the @",
    "mixed_script": "not a valid address: the domain mixes alphabets",
    "lookalike": "not a valid address: the domain imitates another with look-alike letters",
}


@dataclass(frozen=True)
class Skipped:
    """A row that was read and not imported: its line and why (never its value)."""

    line: int
    reason: str


@dataclass
class ImportSummary:
    """What the import read and did; `rows == imported + len(skipped)` always holds."""

    lines: int = 0  # physical lines in the file, header included
    blank_lines: int = 0  # lines without any value: not rows
    rows: int = 0  # data rows read
    imported: int = 0  # rows with a valid address
    skipped: list[Skipped] = field(default_factory=list)
    short_rows: int = 0  # rows with fewer cells than the header (the missing ones empty)
    multiline_rows: int = 0  # rows with a quoted cell over several lines
    addresses: int = 0  # distinct addresses among the imported rows (each hashed once)
    new_exposures: int = 0
    updated_exposures: int = 0  # known address that gained fields
    unchanged: int = 0
    fields: dict[str, int] = field(default_factory=dict)  # rows exposing each field
    columns: dict[str, str] = field(default_factory=dict)  # CSV column -> field key
    ignored_columns: list[str] = field(default_factory=list)
    delimiter: str = "comma"
    dry_run: bool = False

    @property
    def invalid_lines(self) -> list[int]:
        return [s.line for s in self.skipped]

    @property
    def changed(self) -> bool:
        """Whether the import added anything (or, in a dry run, would have)."""
        return bool(self.new_exposures or self.updated_exposures)

    def skipped_by_reason(self) -> dict[str, list[int]]:
        """The skipped lines grouped by reason, in the order the reasons first occur."""
        grouped: dict[str, list[int]] = {}
        for skipped in self.skipped:
            grouped.setdefault(skipped.reason, []).append(skipped.line)
        return grouped


# -- columns ---------------------------------------------------------------------------


# -- reading ---------------------------------------------------------------------------


@dataclass
class _Rows:
    """What the file holds, before hashing: each distinct address with its field bits."""

    found: dict[str, int] = field(default_factory=dict)
    summary: ImportSummary = field(default_factory=ImportSummary)


# visit(plan, row, address): each row read, with its normalised address or None (skipped).
RowVisitor = Callable[[ColumnPlan, Row, "str | None"], None]


def _read_rows(
    path: Path,
    plan_for: Callable[[list[str]], ColumnPlan],
    progress: Progress | None,
    visit: RowVisitor | None = None,
) -> _Rows:
    """Reads the whole file, deduplicating addresses; nothing leaves this but bits."""
    total = count_lines(path)
    if progress:
        progress("reading", 0, total)
    with CsvFile(path) as source:
        try:
            plan = plan_for(source.header)
        except PortalError as exc:
            raise PortalError(f"{shown(str(path))}: {exc}") from None
        result = _Rows()
        result.summary.lines = total
        result.summary.delimiter = source.delimiter_name
        result.summary.columns = plan.columns
        result.summary.ignored_columns = plan.ignored
        counts: Counter[str] = Counter()
        for row in source.rows():
            _check_whole(source, plan, row)
            address = _account(result, plan, row, counts)
            if visit is not None:
                visit(plan, row, address)
            if progress and result.summary.rows % READ_PROGRESS_EVERY == 0:
                progress("reading", source.lines_read, total)
        result.summary.blank_lines = source.blank_lines
    if progress:
        progress("reading", total, total)
    result.summary.imported = result.summary.rows - len(result.summary.skipped)
    result.summary.addresses = len(result.found)
    result.summary.fields = {f.key: counts[f.key] for f in fields.FIELDS if counts[f.key]}
    return result


def read_addresses(
    path: Path,
    *,
    mapping: dict[str, str] | None = None,
    email_column: str | None = None,
    progress: Progress | None = None,
) -> tuple[dict[str, int], ImportSummary]:
    """Reads a file as the import does: each distinct valid address with its field bits.

    For `portal notify`, which reads the very file an import read (same columns, `--map`,
    errors and accounting) and needs the addresses in hand, not their blind indexes only.
    """
    rows = _read_rows(
        path,
        lambda header: plan_columns(header, mapping=mapping or {}, email_column=email_column),
        progress,
    )
    if not rows.summary.imported:
        raise PortalError(_nothing_to_import(path, rows.summary))
    return rows.found, rows.summary


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

    For `portal letters`, which writes to the people of the very rows an import skips (no
    valid address) and so needs their other cells; a file without any row is refused alike.
    With `require_email=False` a file may have no email column: each row is then skipped
    as having "no email address", as the import counts an empty cell.
    """
    rows = _read_rows(
        path,
        lambda header: plan_columns(
            header,
            mapping=mapping or {},
            email_column=email_column,
            require_email=require_email,
        ),
        progress,
        visit,
    )
    if not rows.summary.rows:
        raise PortalError(_nothing_to_import(path, rows.summary))
    return rows.summary


def _account(result: _Rows, plan: ColumnPlan, row: Row, counts: Counter[str]) -> str | None:
    """Counts one row as imported (its address and field bits kept) or skipped, with why;
    returns its normalised address, or None when skipped."""
    summary = result.summary
    summary.rows += 1
    summary.short_rows += row.short
    summary.multiline_rows += row.multiline
    cell = "" if plan.email_index is None else row.cells[plan.email_index]
    try:
        normalised = normalise(cell)
    except InvalidEmail as exc:
        summary.skipped.append(Skipped(row.line, _why(exc)))
        return None
    bits = plan.bits(row.cells)
    result.found[normalised] = result.found.get(normalised, 0) | bits
    counts.update(f.key for f in fields.from_bits(bits))
    return normalised


def _why(exc: InvalidEmail) -> str:
    if exc.code in WHY_INVALID:
        return WHY_INVALID[exc.code]
    detail = exc.detail[:1].lower() + exc.detail[1:]
    return f"not a valid address: {detail}" if detail else "not a valid address"


def _check_whole(source: CsvFile, plan: ColumnPlan, row: Row) -> None:
    """Refuses a quoted cell that swallowed rows: a line inside it that is a row itself.

    A legitimate cell over several lines (an address) holds no line whose email column
    holds another address; a quote left open on line 3 takes in the rows after it until
    some other quote closes it. (The row's own address may follow a multi-line cell on its
    last line.)
    """
    index = plan.email_index
    if not row.continuation or index is None:  # no email column: no address to tell rows by
        return
    own = _address(row.cells[index])
    for offset, text in enumerate(row.continuation, 1):
        cells = next(csv.reader([text], delimiter=source.delimiter), [])
        found = _address(cells[index]) if index < len(cells) else None
        if found is not None and found != own:
            raise PortalError(
                f"{shown(str(source.path))}:{row.line}: a quoted cell opens on this line and "
                f"runs on to line {row.end_line}, taking in line {row.line + offset}, which "
                f'looks like a row of its own; a " is probably missing or stray on line '
                f'{row.line}: close the quote, or double each " inside a quoted cell ("")'
            )


def _address(cell: str) -> str | None:
    try:
        return normalise(cell)
    except InvalidEmail:
        return None


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
    progress: Progress | None = None,
) -> ImportSummary:
    """Imports one partner's leaked records; idempotent; `dry_run` writes nothing."""
    if workers is not None and workers < 1:
        raise PortalError("--workers must be at least 1")
    with engine.begin() as conn:
        incident_id, partner_id, params = _target(conn, incident, partner)
        salt = db.ensure_salt(conn)
        # Before a row is read: records of another pepper would be unreachable (design §4.1).
        fingerprints.refuse_another(
            conn, incident_id=incident_id, pepper=settings.pepper, salt=salt
        )
    rows = _read_rows(
        path,
        lambda header: plan_columns(header, mapping=mapping or {}, email_column=email_column),
        progress,
    )
    rows.summary.dry_run = dry_run
    if not rows.summary.imported:
        raise PortalError(_nothing_to_import(path, rows.summary))
    if not dry_run:
        # Claimed with the first records, not before: a refused file writes nothing.
        with engine.begin() as conn:
            fingerprints.claim(
                conn, incident_id=incident_id, pepper=settings.pepper, salt=salt, params=params
            )
    hasher = Hasher(settings.pepper, salt, params)
    _store(engine, partner_id, rows, hasher, workers or os.cpu_count() or 1, progress)
    _log(incident, partner, rows.summary)
    return rows.summary


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


def _store(
    engine: Engine,
    partner_id: int,
    rows: _Rows,
    hasher: Hasher,
    workers: int,
    progress: Progress | None,
) -> None:
    """Hashes the addresses on `workers` threads and writes them, one chunk at a time."""
    done, total = 0, len(rows.found)
    if progress:
        progress("hashing", 0, total)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        hashed: dict[bytes, int] | None = None
        for chunk in chunks(rows.found.items(), CHUNK):
            # Queued at once: the threads hash this chunk while the previous one is written.
            indexes = pool.map(hasher, [address for address, _ in chunk])
            if hashed is not None:
                _write_chunk(engine, partner_id, hashed, rows.summary)
            hashed = {}
            for count, (bidx, (_, bits)) in enumerate(zip(indexes, chunk, strict=True), 1):
                hashed[bidx] = bits
                # A chunk takes seconds: the bar moves within it.
                if progress and count % HASH_PROGRESS_EVERY == 0 and count < len(chunk):
                    progress("hashing", done + count, total)
            done += len(chunk)
            if progress:
                progress("hashing", done, total)
        if hashed is not None:
            _write_chunk(engine, partner_id, hashed, rows.summary)


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
