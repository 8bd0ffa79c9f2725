"""CSV import: read, map columns to fields, hash addresses in parallel, write in batches.

The file is read and validated completely before anything is written; addresses are then
deduplicated, hashed on all cores and written chunk by chunk, each chunk in its own
transaction. A crash part-way leaves a consistent, partially imported state (field sets
only ever grow), and running the same import again completes it. Values are never stored
or logged: only the blind index of each address, the partner and the set of exposed fields.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import logging
import os
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, select

from portal import db, fields, tables
from portal.blind_index import InvalidEmail, KdfParams, blind_index, normalise
from portal.config import Settings
from portal.errors import PortalError
from portal.incidents import get_incident, get_partner, get_partners

log = logging.getLogger("portal.importer")

CHUNK = 1000
SNIFF_LINES = 50
IGNORE = "-"
DELIMITERS = ",;"
MAX_LINES_SHOWN = 20

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ColumnPlan:
    """Which column holds the address and which columns expose which field."""

    header: list[str]
    email_index: int
    fields: dict[int, str]  # column index -> field key
    ignored: list[str]

    @property
    def columns(self) -> dict[str, str]:
        """Each used column's name and its field key."""
        named = {self.header[self.email_index]: "email"}
        named.update((self.header[i], key) for i, key in self.fields.items())
        return named

    def bits(self, row: list[str]) -> int:
        keys = {"email"}
        keys.update(key for i, key in self.fields.items() if i < len(row) and row[i].strip())
        return fields.to_bits(keys)


@dataclass
class ImportSummary:
    rows: int = 0  # data rows read (blank lines not counted)
    imported: int = 0  # rows with a valid address
    addresses: int = 0  # distinct addresses among them (each hashed once)
    new_exposures: int = 0
    updated_exposures: int = 0  # known address that gained fields
    unchanged: int = 0
    invalid_lines: list[int] = field(default_factory=list)
    fields: dict[str, int] = field(default_factory=dict)  # rows exposing each field
    columns: dict[str, str] = field(default_factory=dict)  # CSV column -> field key
    ignored_columns: list[str] = field(default_factory=list)
    dry_run: bool = False


# -- columns ---------------------------------------------------------------------------


def plan_columns(
    header: list[str], *, mapping: dict[str, str], email_column: str | None
) -> ColumnPlan:
    """Maps each header column to a field; raises PortalError naming what to fix."""
    wanted = _check_mapping(header, mapping)
    email_index = _email_index(header, wanted, email_column)
    mapped: dict[int, str] = {}
    ignored: list[str] = []
    unknown: list[str] = []
    for index, column in enumerate(header):
        key = wanted.get(fields.squash(column)) or fields.field_for_column(column)
        if index == email_index:
            continue
        if key == IGNORE or not column.strip():
            ignored.append(column)
        elif key is None:
            unknown.append(column)
        else:
            mapped[index] = key
    if unknown:
        raise PortalError("; ".join(_unknown_column(column) for column in unknown))
    return ColumnPlan(header, email_index, mapped, ignored)


def _check_mapping(header: list[str], mapping: dict[str, str]) -> dict[str, str]:
    present = {fields.squash(column) for column in header}
    wanted: dict[str, str] = {}
    for column, key in mapping.items():
        key = key.strip()
        if key != IGNORE and key not in fields.BY_KEY:
            raise PortalError(
                f'--map "{column}={key}": unknown field "{key}" (fields: {_field_list()}, '
                f"or - to ignore the column)"
            )
        if fields.squash(column) not in present:
            raise PortalError(
                f'--map "{column}={key}": there is no column "{column}" '
                f"(columns: {', '.join(header)})"
            )
        wanted[fields.squash(column)] = key
    return wanted


def _email_index(header: list[str], wanted: dict[str, str], email_column: str | None) -> int:
    squashed = [fields.squash(column) for column in header]
    if email_column is not None:
        if fields.squash(email_column) not in squashed:
            raise PortalError(
                f'--email-column "{email_column}": there is no such column '
                f"(columns: {', '.join(header)})"
            )
        return squashed.index(fields.squash(email_column))
    for index, name in enumerate(squashed):
        if wanted.get(name, fields.field_for_column(name)) == "email":
            return index
    looked_for = ", ".join(fields.BY_KEY["email"].columns)
    raise PortalError(
        f"no email column (looked for: {looked_for}); name it with --email-column COLUMN"
    )


def _unknown_column(column: str) -> str:
    return (
        f'unknown column "{column}": map it with --map "{column}=FIELD" '
        f'(fields: {_field_list()}) or ignore it with --map "{column}=-"'
    )


def _field_list() -> str:
    return ", ".join(f.key for f in fields.FIELDS)


# -- reading ---------------------------------------------------------------------------


@dataclass
class _Rows:
    """What the file holds, before hashing: each distinct address with its field bits."""

    found: dict[str, int] = field(default_factory=dict)
    summary: ImportSummary = field(default_factory=ImportSummary)


def _read_rows(path: Path, plan_for: Callable[[list[str]], ColumnPlan]) -> _Rows:
    """Reads the whole file, deduplicating addresses; nothing leaves this but bits."""
    lines = _decoded_lines(path)
    with contextlib.closing(lines):
        return _collect(_reader(path, lines), path, plan_for)


def _collect(reader: Any, path: Path, plan_for: Callable[[list[str]], ColumnPlan]) -> _Rows:
    result = _Rows()
    plan = plan_for(_header(reader, path))
    result.summary.columns = plan.columns
    result.summary.ignored_columns = plan.ignored
    counts: Counter[str] = Counter()
    previous = reader.line_num
    for row in _rows(reader, path):
        line, previous = previous + 1, reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        result.summary.rows += 1
        address = row[plan.email_index] if plan.email_index < len(row) else ""
        try:
            normalised = normalise(address)
        except InvalidEmail:
            result.summary.invalid_lines.append(line)
            continue
        bits = plan.bits(row)
        result.found[normalised] = result.found.get(normalised, 0) | bits
        counts.update(f.key for f in fields.from_bits(bits))
    result.summary.imported = result.summary.rows - len(result.summary.invalid_lines)
    result.summary.addresses = len(result.found)
    result.summary.fields = {f.key: counts[f.key] for f in fields.FIELDS if counts[f.key]}
    return result


def _reader(path: Path, lines: Iterator[str]) -> Any:
    head = list(itertools.islice(lines, SNIFF_LINES))
    if not head:
        raise PortalError(f"{path}: the file is empty; a header row is required")
    return csv.reader(itertools.chain(head, lines), delimiter=_delimiter(head))


def _decoded_lines(path: Path) -> Generator[str, None, None]:
    """The file's lines as text; a line that is not UTF-8 stops the import, naming it."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise PortalError(f"cannot read {path}: no such file") from None
    except OSError as exc:
        raise PortalError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        for number, raw in enumerate(handle, 1):
            try:
                yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                raise PortalError(
                    f"{path}:{number}: not UTF-8 text; save the file as CSV UTF-8"
                ) from None


def _delimiter(head: list[str]) -> str:
    header = head[0]
    try:
        sniffed = csv.Sniffer().sniff("".join(head), delimiters=DELIMITERS).delimiter
    except csv.Error:
        sniffed = ""
    if sniffed and sniffed in header:
        return sniffed
    return ";" if header.count(";") > header.count(",") else ","


def _header(reader: Any, path: Path) -> list[str]:
    for row in _rows(reader, path):
        if any(cell.strip() for cell in row):
            return [cell.strip() for cell in row]
    raise PortalError(f"{path}: no header row")


def _rows(reader: Any, path: Path) -> Iterator[list[str]]:
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            # csv's messages describe the syntax, never the cell's content.
            raise PortalError(f"{path}:{reader.line_num}: {exc}") from None


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
        partner_id, params = _target(conn, incident, partner)
        salt = db.ensure_salt(conn)
    rows = _read_rows(
        path, lambda header: plan_columns(header, mapping=mapping or {}, email_column=email_column)
    )
    rows.summary.dry_run = dry_run
    if not rows.summary.imported:
        raise PortalError(f"{path}: no row has a valid email address{_lines(rows.summary)}")
    hasher = _Hasher(settings.pepper, salt, params)
    _store(engine, partner_id, rows, hasher, workers or os.cpu_count() or 1, progress)
    _log(incident, partner, rows.summary)
    return rows.summary


@dataclass(frozen=True)
class _Hasher:
    pepper: bytes
    salt: bytes
    params: KdfParams

    def __call__(self, address: str) -> bytes:
        return blind_index(address, pepper=self.pepper, salt=self.salt, params=self.params)


def _store(
    engine: Engine,
    partner_id: int,
    rows: _Rows,
    hasher: _Hasher,
    workers: int,
    progress: Progress | None,
) -> None:
    """Hashes the addresses on `workers` threads and writes them, one chunk at a time."""
    done, total = 0, len(rows.found)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for chunk in _chunks(rows.found.items(), CHUNK):
            hashed = pool.map(hasher, [address for address, _ in chunk])
            indexed = dict(zip(hashed, [bits for _, bits in chunk], strict=True))
            _write_chunk(engine, partner_id, indexed, rows.summary)
            done += len(chunk)
            if progress:
                progress(done, total)


def _log(incident: str, partner: str, summary: ImportSummary) -> None:
    log.info(
        "import %s/%s: %d rows, %d new, %d updated, %d unchanged, %d invalid%s",
        incident,
        partner,
        summary.rows,
        summary.new_exposures,
        summary.updated_exposures,
        summary.unchanged,
        len(summary.invalid_lines),
        " (dry run)" if summary.dry_run else "",
    )


def _target(conn: Connection, incident: str, partner: str) -> tuple[int, KdfParams]:
    found = get_incident(conn, incident)
    if found is None:
        raise PortalError(f"unknown incident {incident!r}")
    target = get_partner(conn, found.id, partner)
    if target is None:
        known = ", ".join(p.slug for p in get_partners(conn, found.id))
        raise PortalError(f"unknown partner {partner!r} in incident {incident!r} (known: {known})")
    return target.id, found.kdf


def _lines(summary: ImportSummary) -> str:
    lines = summary.invalid_lines
    if not lines:
        return ""
    shown = ", ".join(map(str, lines[:MAX_LINES_SHOWN]))
    more = f" and {len(lines) - MAX_LINES_SHOWN} more" if len(lines) > MAX_LINES_SHOWN else ""
    return f" (invalid on lines {shown}{more})"


def _chunks(items: Iterable[tuple[str, int]], size: int) -> Iterator[list[tuple[str, int]]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


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
        changed = []
        for bidx, bits in indexed.items():
            before = existing.get(bidx)
            if before is not None and before | bits == before:
                summary.unchanged += 1
                continue
            if before is None:
                summary.new_exposures += 1
            else:
                summary.updated_exposures += 1
            changed.append({"partner_id": partner_id, "bidx": bidx, "fields": bits})
        if not summary.dry_run:
            db.upsert(
                conn,
                t,
                changed,
                keys=["partner_id", "bidx"],
                update={"fields": lambda ex: t.c.fields.op("|")(ex.fields)},
            )
