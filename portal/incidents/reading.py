"""A partner's file read for import and notify: every row accounted for, addresses deduplicated.

The file (read strictly by `csv_file`) is read and checked completely before anything is
written: every row is counted as imported, skipped (with its line and reason) or left to
another part (`--part K/N`, `parts.py`). What the reading keeps does not grow with the
file: each valid row of this part goes to a sorted spill on disk (`spill.py`) as its keyed
index, line and field bits, never its address; the spill then gives each distinct address
once, with the first line it occurs on and the union of its rows' fields, in file order.
`Addresses` reads the file a second time for the addresses themselves (`portal notify`
mails them), only ever a chunk of them in memory.
"""

from __future__ import annotations

import csv
import itertools
import struct
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from portal.core import fields
from portal.core.blind_index import InvalidEmail, keyed_index, normalise
from portal.core.errors import PortalError
from portal.core.printable import shown
from portal.incidents.columns import ColumnPlan
from portal.incidents.csv_file import CsvFile, Row, count_lines
from portal.incidents.parts import WHOLE, Part
from portal.incidents.spill import Spill

READ_PROGRESS_EVERY = 5000
# Skipped lines kept to list; beyond them each reason's lines are counted, not kept.
SKIPPED_LISTED = 1000
# (keyed index, line, field bits) as read; (line, keyed index, field bits) once distinct.
BY_KEY = struct.Struct(">32sQQ")
BY_LINE = struct.Struct(">Q32sQ")

# progress(stage, done, total): stage "reading" counts lines, "hashing" addresses.
Progress = Callable[[str, int, int], None]
T = TypeVar("T")

WHY_INVALID = {
    "missing": "no email address",
    "control": "not a valid address: it holds control characters",
    "too_long": "not a valid address: longer than 254 characters",
    "local_too_long": "not a valid address: more than 64 characters before the @",
    "mixed_script": "not a valid address: the domain mixes alphabets",
    "lookalike": "not a valid address: the domain imitates another with look-alike letters",
}


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """The items in lists of `size` (the last one shorter)."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


@dataclass(frozen=True)
class Skipped:
    """A row that was read and not imported: its line and why (never its value)."""

    line: int
    reason: str


@dataclass
class ImportSummary:
    """What the import read and did: rows == imported + skipped_rows + other_parts always.

    `skipped` lists the first SKIPPED_LISTED skipped rows; `skipped_reasons` counts all.
    """

    lines: int = 0  # physical lines in the file, header included
    blank_lines: int = 0  # lines without any value: not rows
    rows: int = 0  # data rows read
    imported: int = 0  # rows with a valid address (of this part)
    skipped: list[Skipped] = field(default_factory=list)
    skipped_rows: int = 0
    skipped_reasons: dict[str, int] = field(default_factory=dict)
    other_parts: int = 0  # rows left to the other parts of --part K/N
    part: Part = WHOLE
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
    def unlisted(self) -> int:
        """Skipped rows counted but not listed (past SKIPPED_LISTED)."""
        return self.skipped_rows - len(self.skipped)

    @property
    def changed(self) -> bool:
        """Whether the import added anything (or, in a dry run, would have)."""
        return bool(self.new_exposures or self.updated_exposures)

    def skip(self, line: int, reason: str) -> None:
        self.skipped_rows += 1
        self.skipped_reasons[reason] = self.skipped_reasons.get(reason, 0) + 1
        if len(self.skipped) < SKIPPED_LISTED:
            self.skipped.append(Skipped(line, reason))

    def skipped_by_reason(self) -> dict[str, list[int]]:
        """The listed skipped lines grouped by reason, in the order the reasons first occur."""
        grouped: dict[str, list[int]] = {}
        for skipped in self.skipped:
            grouped.setdefault(skipped.reason, []).append(skipped.line)
        return grouped


@dataclass
class FileRead:
    """A file read: its summary, and each distinct address of the part as (line, keyed
    index, field bits) in file order, on disk."""

    path: Path
    summary: ImportSummary
    distinct: Spill
    plan: ColumnPlan
    stamp: tuple[int, int]  # the file's size and mtime, to notice a change before pass two


def read_file(
    path: Path,
    plan_for: Callable[[list[str]], ColumnPlan],
    progress: Progress | None,
    *,
    pepper: bytes,
    folder: Path,
    part: Part = WHOLE,
) -> FileRead:
    """Reads the whole file, deduplicating on keyed indexes in `folder`; no address kept."""
    total = count_lines(path)
    stamp = _stamp(path)
    if progress:
        progress("reading", 0, total)
    summary = ImportSummary(lines=total, part=part)
    spill = Spill(folder, BY_KEY)
    with CsvFile(path) as source:
        try:
            plan = plan_for(source.header)
        except PortalError as exc:
            raise PortalError(f"{shown(str(path))}: {exc}") from None
        summary.delimiter = source.delimiter_name
        summary.columns = plan.columns
        summary.ignored_columns = plan.ignored
        counts: Counter[str] = Counter()
        for row in source.rows():
            _check_whole(source, plan, row)
            _account(summary, plan, row, counts, lambda a: keyed_index(a, pepper=pepper), spill)
            if progress and summary.rows % READ_PROGRESS_EVERY == 0:
                progress("reading", source.lines_read, total)
        summary.blank_lines = source.blank_lines
    if progress:
        progress("reading", total, total)
    summary.fields = {f.key: counts[f.key] for f in fields.FIELDS if counts[f.key]}
    distinct = _distinct(spill, Spill(folder, BY_LINE))
    summary.addresses = distinct.count
    return FileRead(path, summary, distinct, plan, stamp)


def _distinct(by_key: Spill, by_line: Spill) -> Spill:
    """Each keyed index once, at its first line, with the union of its rows' field bits."""
    for keyed, group in itertools.groupby(by_key.sorted(), key=lambda record: record[0]):
        line, bits = 0, 0
        for _, row_line, row_bits in group:
            line, bits = line or row_line, bits | row_bits
        by_line.add(line, keyed, bits)
    by_key.discard()
    return by_line


def _account(
    summary: ImportSummary,
    plan: ColumnPlan,
    row: Row,
    counts: Counter[str],
    keyed_of: Callable[[str], bytes],
    spill: Spill,
) -> None:
    """Counts one row as imported (spilled), skipped with why, or left to another part.

    A row without a valid address has no index to split on: part 1 reports it.
    """
    summary.rows += 1
    summary.short_rows += row.short
    summary.multiline_rows += row.multiline
    try:
        normalised = normalise(_email_cell(plan, row))
    except InvalidEmail as exc:
        if summary.part.index == 1:
            summary.skip(row.line, _why(exc))
        else:
            summary.other_parts += 1
        return
    keyed = keyed_of(normalised)
    if not summary.part.holds(keyed):
        summary.other_parts += 1
        return
    bits = plan.bits(row.cells)
    summary.imported += 1
    spill.add(keyed, row.line, bits)
    counts.update(f.key for f in fields.from_bits(bits))


# visit(plan, row, address): each row read, with its normalised address or None (skipped).
RowVisitor = Callable[[ColumnPlan, Row, "str | None"], None]


def read_each_row(
    path: Path,
    plan_for: Callable[[list[str]], ColumnPlan],
    visit: RowVisitor,
    progress: Progress | None = None,
) -> ImportSummary:
    """Reads a file as the import does (same columns, checks and accounting) and shows
    `visit` each row with its normalised address, or None for a row the import skips.

    For `portal letters`, which writes to the people of the very rows an import skips and
    so needs their other cells; what it keeps of them is its own affair. No spill: it does
    not deduplicate addresses.
    """
    total = count_lines(path)
    summary = ImportSummary(lines=total)
    with CsvFile(path) as source:
        try:
            plan = plan_for(source.header)
        except PortalError as exc:
            raise PortalError(f"{shown(str(path))}: {exc}") from None
        summary.delimiter = source.delimiter_name
        summary.columns = plan.columns
        summary.ignored_columns = plan.ignored
        for row in source.rows():
            _check_whole(source, plan, row)
            summary.rows += 1
            summary.short_rows += row.short
            summary.multiline_rows += row.multiline
            try:
                address: str | None = normalise(_email_cell(plan, row))
            except InvalidEmail as exc:
                summary.skip(row.line, _why(exc))
                address = None
            else:
                summary.imported += 1
            visit(plan, row, address)
            if progress and summary.rows % READ_PROGRESS_EVERY == 0:
                progress("reading", source.lines_read, total)
        summary.blank_lines = source.blank_lines
    if progress:
        progress("reading", total, total)
    return summary


def _email_cell(plan: ColumnPlan, row: Row) -> str:
    """The row's email cell; empty in a file without an email column (`portal letters`)."""
    return "" if plan.email_index is None else row.cells[plan.email_index]


class Addresses:
    """The distinct addresses of a file read, in file order: (address, keyed index, bits).

    Reads the file a second time, keeping only the address of the row being read.
    """

    def __init__(self, read: FileRead, *, pepper: bytes) -> None:
        self.read = read
        self.pepper = pepper

    def __iter__(self) -> Iterator[tuple[str, bytes, int]]:
        path, plan = self.read.path, self.read.plan
        if _stamp(path) != self.read.stamp:
            raise PortalError(f"{shown(str(path))}: the file changed while it was read; run again")
        changed = PortalError(f"{shown(str(path))}: the file changed while it was read; run again")
        with CsvFile(path) as source:
            rows = source.rows()
            for line, keyed, bits in self.read.distinct.sorted():
                row = next((row for row in rows if row.line >= line), None)
                if row is None or row.line != line:
                    raise changed
                try:
                    address = normalise(_email_cell(plan, row))
                except InvalidEmail:
                    raise changed from None
                if keyed_index(address, pepper=self.pepper) != keyed:
                    raise changed
                yield address, keyed, bits


def _stamp(path: Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_size, status.st_mtime_ns


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
