"""Where a TOML syntax error is: its line, and the key and value text on that line."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass

# What tomllib says when a value cannot be read, as opposed to a key or a table header.
VALUE_ERRORS = (
    "Invalid value",
    "Invalid date or datetime",
    "Expected newline or end of document after a statement",
    "Unterminated string",
    "Unclosed array",
    "Unclosed inline table",
    "Illegal character",
    "Unescaped",
    "Invalid hex value",
    "Escaped character",
    "Found invalid character",
)
POSITION = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)\s*$")
KEY = r"""(?:[\w-]+|"[^"\n]*"|'[^'\n]*')"""
DOTTED = rf"{KEY}(?:\s*\.\s*{KEY})*"
ASSIGNMENT = re.compile(rf"({DOTTED})\s*=")
STATEMENT = re.compile(rf"^\s*({DOTTED})\s*=\s*(.*)$")
TABLE = re.compile(rf"^\s*\[(\[?)\s*({DOTTED})\s*\]")
OPENS = re.compile(rf"^\s*{DOTTED}\s*=\s*(\"\"\"|'''|\[|\{{)")


@dataclass(frozen=True)
class TomlProblem:
    """A syntax error: the line, tomllib's words, and for a bad value its key and text."""

    line: int
    reason: str
    key: tuple[str | int, ...] | None = None  # ("partners", 0, "slug"): arrays of tables indexed
    value: str | None = None  # the text written as the value, as it stands in the file

    @property
    def about_a_value(self) -> bool:
        return self.key is not None and self.reason.startswith(VALUE_ERRORS)


def locate(text: str, error: tomllib.TOMLDecodeError) -> TomlProblem:
    """The error's line (for "end of document", the line that opened what never closes)."""
    found = POSITION.search(str(error))
    reason = str(error)[: found.start()] if found else str(error)
    lines = text.split("\n")  # TOML counts lines by LF only, unlike str.splitlines
    if found and found[1]:
        line, column = int(found[1]), int(found[2])
        if reason.startswith("Unclosed"):  # said where the next statement starts
            line, column = _unclosed(lines[:line]), 0
    else:
        line, column = _unclosed(lines), 0
    key, value = _key_and_value(lines, line, column)
    return TomlProblem(line, reason, key, value)


def _unclosed(lines: list[str]) -> int:
    """The last line that opens a string, array or table which is still open at the end:
    everything before the culprit parses, and nothing that includes it does."""
    for number in range(len(lines), 0, -1):
        if OPENS.match(lines[number - 1]):
            try:
                tomllib.loads("\n".join(lines[: number - 1]))
            except tomllib.TOMLDecodeError:
                continue
            return number
    return max(len(lines), 1)


def _key_and_value(
    lines: list[str], line: int, column: int
) -> tuple[tuple[str | int, ...] | None, str | None]:
    """The key whose value holds the position, with the table it is in, and that value."""
    if not 0 < line <= len(lines):
        return None, None
    table, start = _context(lines, line)
    if start is None:
        return None, None
    found = STATEMENT.match(lines[start - 1])
    assert found is not None
    key = (*table, *_parts(found[1]))
    if start != line:
        if not found[2].lstrip().startswith(("[", "{")):
            return None, None  # not inside that statement's value: no key to name
        # A list over several lines: the text at the position is the value at fault.
        return key, _value_text(lines[line - 1][max(column - 1, 0) :])
    before = lines[line - 1][: max(column - 1, found.start(2))]
    inner = ASSIGNMENT.findall(before[found.start(2) :])  # keys of an inline table
    if inner:
        last = list(ASSIGNMENT.finditer(before))[-1]
        value = lines[line - 1][last.end() :]
        return (*key, *_parts(inner[-1])), _value_text(re.split(r"[,}]", value)[0])
    return key, _value_text(found[2])


def _context(lines: list[str], line: int) -> tuple[tuple[str | int, ...], int | None]:
    """The table path in force at `line`, and the line of the statement that holds it."""
    table: tuple[str | int, ...] = ()
    counts: dict[tuple[str, ...], int] = {}
    statement: int | None = None
    in_string = False
    for number, raw in enumerate(lines[:line], 1):
        if in_string:
            in_string = not _toggles(raw)
            continue
        if found := TABLE.match(raw):
            parts = _parts(found[2])
            if found[1]:
                counts[parts] = counts.get(parts, -1) + 1
                table = (*parts, counts[parts])
            else:
                table = parts
            statement = None
        elif STATEMENT.match(raw):
            statement = number
            in_string = _toggles(raw)
        elif raw.strip() and not raw.lstrip().startswith("#") and statement is None:
            return table, None
    return table, statement


def _toggles(raw: str) -> bool:
    """Whether the line opens or closes a multi-line string (an odd number of delimiters)."""
    return (raw.count('"""') + raw.count("'''")) % 2 == 1


def _parts(dotted: str) -> tuple[str, ...]:
    return tuple(part.strip().strip("\"'") for part in re.findall(KEY, dotted))


def _value_text(text: str) -> str:
    """The value as written, without a trailing comment or the spaces around it."""
    return re.split(r"\s+#", text, maxsplit=1)[0].strip()
