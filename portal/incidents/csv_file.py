"""A partner's CSV export read strictly: every line accounted for, or refused with its line.

The file is UTF-8 (with or without BOM), separated by comma, semicolon or tab, with a
header row. What cannot be read as a whole stops the reading with the line and the fix:
bytes that are not UTF-8, a NUL byte, lines that end in CR only, a quote that never closes,
text after a closing quote, a row with more (non-empty) cells than the header, a file
separated by another character (a `|`), and rows separated otherwise than the header.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from portal.core.errors import PortalError
from portal.core.printable import shown

DELIMITERS = ",;\t"
DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab"}
# Separators that some exports use and the reader does not: named when a file uses one.
FOREIGN_SEPARATORS = "|^~"
SNIFF_LINES = 50
COUNT_BLOCK = 1 << 20
SAVE_AS = "save the file as CSV UTF-8"


@dataclass(frozen=True)
class Row:
    """One row of the file: its cells (as many as the header) and where it stands."""

    line: int  # the physical line it starts on
    end_line: int  # the line it ends on: later than `line` when a quoted cell spans lines
    cells: list[str]
    short: bool  # it had fewer cells than the header: the missing ones are empty
    continuation: list[str] = field(default_factory=list)  # its raw lines after the first

    @property
    def multiline(self) -> bool:
        return self.end_line > self.line


def count_lines(path: Path) -> int:
    """The file's physical lines, counted from its bytes without decoding them."""
    lines, last = 0, b""
    with _open(path) as handle:
        while block := handle.read(COUNT_BLOCK):
            lines += block.count(b"\n")
            last = block
    return lines + (1 if last and not last.endswith(b"\n") else 0)


class CsvFile:
    """An open export: `header`, `delimiter`, then `rows()` once; a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.blank_lines = 0
        self._buffer: list[str] = []
        self._handle = _open(path)
        try:
            self._start()
        except BaseException:
            self._handle.close()
            raise

    def _start(self) -> None:
        lines = self._lines()
        head = list(itertools.islice(lines, SNIFF_LINES))
        if not head:
            raise PortalError(f"{self._where()}: the file is empty; a header row is required")
        self.delimiter = _delimiter(head)
        self._check_separators(head)
        self._reader: Any = csv.reader(
            self._kept(itertools.chain(head, lines)), delimiter=self.delimiter, strict=True
        )
        self.header_line, header = self._first_row()
        self.header = [cell.strip() for cell in header]

    def __enter__(self) -> CsvFile:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._handle.close()

    @property
    def lines_read(self) -> int:
        """Physical lines read so far (for progress)."""
        return int(self._reader.line_num)

    @property
    def delimiter_name(self) -> str:
        return DELIMITER_NAMES[self.delimiter]

    def rows(self) -> Iterator[Row]:
        """Every non-blank row after the header; raises PortalError where the file breaks."""
        width = len(self.header)
        for line, cells in self._records():
            if not any(cell.strip() for cell in cells):
                self.blank_lines += self.lines_read - line + 1
                continue
            extra = [cell for cell in cells[width:] if cell.strip()]
            if extra:
                raise PortalError(self._too_many_cells(line, len(cells), width))
            continuation = self._buffer[1:] if self.lines_read > line else []
            yield Row(
                line=line,
                end_line=self.lines_read,
                cells=cells[:width] + [""] * (width - len(cells)),
                short=len(cells) < width,
                continuation=continuation,
            )

    def _first_row(self) -> tuple[int, list[str]]:
        for line, cells in self._records():
            if any(cell.strip() for cell in cells):
                return line, cells
            self.blank_lines += self.lines_read - line + 1
        raise PortalError(f"{self._where()}: no header row")

    def _records(self) -> Iterator[tuple[int, list[str]]]:
        """(first line, cells) of each record, turning csv's errors into the fix."""
        while True:
            start = self.lines_read + 1
            self._buffer.clear()
            try:
                cells = next(self._reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise PortalError(self._broken(start, str(exc))) from None
            # A blank physical line gives csv an empty record; it is not a row.
            yield start, cells

    def _lines(self) -> Iterator[str]:
        """The file's lines as text, refusing what no CSV reader can read right."""
        for number, raw in enumerate(self._handle, 1):
            if b"\0" in raw:
                raise PortalError(
                    f"{self._where(number)}: a NUL byte: this is not a text file (a spreadsheet, "
                    f"or UTF-16 text?); {SAVE_AS}"
                )
            if b"\r" in raw.rstrip(b"\r\n") and number == 1:
                raise PortalError(
                    f"{self._where(1)}: the lines end in CR only (an old Mac format); save the "
                    "file with LF or CRLF line ends, as CSV UTF-8"
                )
            try:
                yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                raise PortalError(f"{self._where(number)}: not UTF-8 text; {SAVE_AS}") from None

    def _kept(self, lines: Iterator[str]) -> Iterator[str]:
        """The lines as csv takes them, each kept until the record it belongs to is read."""
        for line in lines:
            self._buffer.append(line)
            yield line

    def _broken(self, start: int, message: str) -> str:
        """Why a record could not be read, with the line to look at and the fix."""
        here = self.lines_read
        if "unexpected end of data" in message or "field larger than field limit" in message:
            return (
                f'{self._where(start)}: a quoted cell opens on this line and never closes (a " '
                f'is missing or stray); close the quote, or double each " inside a quoted '
                'cell ("")'
            )
        if "expected after" in message and here > start:
            return (
                f"{self._where(start)}: a quoted cell opens on this line and runs on to line "
                f'{here}, where text follows its closing quote; a " is probably missing or '
                f'stray on line {start}: close the quote, or double each " inside a quoted '
                'cell ("")'
            )
        if "expected after" in message:
            return (
                f"{self._where(here)}: text follows a closing quote; put the whole cell in "
                'quotes and double each " inside it ("")'
            )
        if "new-line character" in message:
            return (
                f"{self._where(here)}: a carriage return (CR) inside a row, outside quotes: "
                "the file mixes line ends; save it with LF or CRLF line ends, as CSV UTF-8"
            )
        return f"{self._where(here)}: {message}"

    def _too_many_cells(self, line: int, cells: int, width: int) -> str:
        sep = self.delimiter_name
        if self.lines_read > line:
            return (
                f"{self._where(line)}: a quoted cell opens on this line and runs on to line "
                f'{self.lines_read}, giving {cells} cells where the header has {width}; a " is '
                f'probably missing or stray on line {line}: close the quote, or double each " '
                'inside a quoted cell ("")'
            )
        return (
            f"{self._where(line)}: {cells} cells, but the header has {width}: a value holds a "
            f"{sep} without quotes, or a column has no header; quote that value, or name the "
            f'column in the header (and --map "COLUMN=-" to ignore it)'
        )

    def _check_separators(self, head: list[str]) -> None:
        """Refuses a file whose separator is not read, or whose rows and header differ."""
        records = _head_records(head, self.delimiter)
        if not records:
            return
        header_line, header = records[0]
        if len(header) == 1:
            foreign = next((sep for sep in FOREIGN_SEPARATORS if sep in header[0]), None)
            if foreign:
                raise PortalError(
                    f"{self._where(header_line)}: the file is separated by '{foreign}'; the "
                    "import reads files separated by commas, semicolons or tabs: export it "
                    "again as CSV (in a spreadsheet: save as CSV UTF-8)"
                )
            return
        other = _rows_separator(head, self.delimiter, records[1:], width=len(header))
        if other:
            line = records[1][0]
            raise PortalError(
                f"{self._where(line)}: this row is separated by {_named(other)}, but the "
                f"header on line {header_line} by {_named(self.delimiter)}; use one separator "
                f"throughout: replace the header's {_named(self.delimiter)} with "
                f"{_named(other)}, or export the file again as CSV"
            )

    def _where(self, line: int | None = None) -> str:
        path = shown(str(self.path))
        return f"{path}:{line}" if line is not None else path


def _open(path: Path) -> IO[bytes]:
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise PortalError(f"cannot read {shown(str(path))}: no such file") from None
    except IsADirectoryError:
        raise PortalError(f"cannot read {shown(str(path))}: it is a folder") from None
    except OSError as exc:
        raise PortalError(f"cannot read {shown(str(path))}: {exc.strerror}") from None


def _named(separator: str) -> str:
    return "tabs" if separator == "\t" else f"'{separator}'"


def _head_records(head: list[str], delimiter: str) -> list[tuple[int, list[str]]]:
    """(first line, cells) of each non-blank record in the first lines, as far as readable."""
    reader = csv.reader(head, delimiter=delimiter)
    records: list[tuple[int, list[str]]] = []
    try:
        while True:
            start = reader.line_num + 1
            cells = next(reader)
            if any(cell.strip() for cell in cells):
                records.append((start, cells))
    except (StopIteration, csv.Error):
        return records


def _rows_separator(
    head: list[str], delimiter: str, rows: list[tuple[int, list[str]]], *, width: int
) -> str | None:
    """Another separator that splits every row the header's leaves whole, into as many
    cells as the header has (short rows aside), if there is one.

    Only then: a row that the header's separator leaves whole holds at most its first
    column, and with another separator in it that is never a valid address, so no row
    that would import is refused."""
    if not rows or any(len(cells) > 1 for _, cells in rows):
        return None
    body = head[rows[0][0] - 1 :]
    for other in DELIMITERS.replace(delimiter, ""):
        widths = [len(cells) for _, cells in _head_records(body, other)]
        if widths and min(widths) > 1 and max(widths) == width:
            return other
    return None


def _delimiter(head: list[str]) -> str:
    """The separator: sniffed from the first lines when the header holds it, else counted."""
    header = next((line for line in head if line.strip()), "")
    try:
        sniffed = csv.Sniffer().sniff("".join(head), delimiters=DELIMITERS).delimiter
    except csv.Error:
        sniffed = ""
    if sniffed and sniffed in header:
        return sniffed
    counts = {sep: header.count(sep) for sep in DELIMITERS}
    best = max(counts.values())
    return next(sep for sep in DELIMITERS if counts[sep] == best) if best else ","
