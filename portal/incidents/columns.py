"""A partner file's columns: which one holds the address, which expose which field (--map)."""

from __future__ import annotations

from dataclasses import dataclass

from portal.core import fields
from portal.core.errors import PortalError
from portal.core.printable import shown

IGNORE = "-"
# How much of a file's own text an error message repeats: names, not megabytes.
NAMES_SHOWN = 5
NAME_LENGTH = 60


@dataclass(frozen=True)
class ColumnPlan:
    """Which column holds the address and which columns expose which field."""

    header: list[str]
    email_index: int | None  # None: a file without one (`portal letters` only)
    fields: dict[int, str]  # column index -> field key
    ignored: list[str]

    @property
    def columns(self) -> dict[str, str]:
        """Each used column's name and its field key."""
        named = {} if self.email_index is None else {self.header[self.email_index]: "email"}
        named.update((self.header[i], key) for i, key in self.fields.items())
        return named

    def bits(self, row: list[str]) -> int:
        keys = {"email"} if self.email_index is not None else set()
        keys.update(key for i, key in self.fields.items() if i < len(row) and row[i].strip())
        return fields.to_bits(keys)


def plan_columns(
    header: list[str],
    *,
    mapping: dict[str, str],
    email_column: str | None,
    require_email: bool = True,
) -> ColumnPlan:
    """Maps each header column to a field; raises PortalError naming what to fix.

    `require_email=False` (`portal letters`) takes a file without an email column, whose
    rows then all have no address; a named `--email-column` must still exist."""
    wanted = _check_mapping(header, mapping)
    email_index = _email_index(header, wanted, email_column, required=require_email)
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
        raise PortalError(_unknown_columns(unknown))
    return ColumnPlan(header, email_index, mapped, ignored)


def _check_mapping(header: list[str], mapping: dict[str, str]) -> dict[str, str]:
    present = {fields.squash(column) for column in header}
    wanted: dict[str, str] = {}
    for column, key in mapping.items():
        key = key.strip()
        if key != IGNORE and key not in fields.BY_KEY:
            raise PortalError(
                f'--map "{shown(column)}={shown(key)}": unknown field "{shown(key)}" '
                f"(fields: {_field_list()}, or - to ignore the column)"
            )
        if fields.squash(column) not in present:
            raise PortalError(
                f'--map "{shown(column)}={shown(key)}": there is no column "{shown(column)}" '
                f"(columns: {_names(header)})"
            )
        wanted[fields.squash(column)] = key
    return wanted


def _email_index(
    header: list[str], wanted: dict[str, str], email_column: str | None, *, required: bool
) -> int | None:
    squashed = [fields.squash(column) for column in header]
    if email_column is not None:
        if fields.squash(email_column) not in squashed:
            raise PortalError(
                f'--email-column "{shown(email_column)}": there is no such column '
                f"(columns: {_names(header)})"
            )
        return squashed.index(fields.squash(email_column))
    found = [
        index
        for index, name in enumerate(squashed)
        if wanted.get(name, fields.field_for_column(name)) == "email"
    ]
    if len(found) > 1:
        raise PortalError(_several_email_columns([header[i] for i in found]))
    if found:
        return found[0]
    if not required:
        return None
    looked_for = ", ".join(fields.BY_KEY["email"].columns)
    raise PortalError(
        f"no email column (looked for: {looked_for}; columns: {_names(header)}); "
        "name it with --email-column COLUMN"
    )


def _several_email_columns(columns: list[str]) -> str:
    named = " and ".join(f'"{shown(c, NAME_LENGTH)}"' for c in columns)
    first = shown(columns[0], NAME_LENGTH)
    return (
        f"{len(columns)} columns name the email address: {named}; choose the one to look "
        f'up with --email-column, e.g. --email-column "{first}" (to look up the addresses '
        "of another column too, import the file once more naming that one)"
    )


def _unknown_columns(unknown: list[str]) -> str:
    first = shown(unknown[0], NAME_LENGTH)
    if len(unknown) == 1:
        return (
            f'unknown column "{first}": map it with --map "{first}=FIELD" '
            f'(fields: {_field_list()}) or ignore it with --map "{first}=-"'
        )
    return (
        f"{len(unknown)} unknown columns: {_names(unknown)}; map each with "
        f'--map "COLUMN=FIELD" (fields: {_field_list()}) or ignore it with '
        f'--map "COLUMN=-", e.g. --map "{first}=-"'
    )


def _names(columns: list[str]) -> str:
    """Some of a file's column names, quoted and escaped: never the whole of a huge header."""
    named = ", ".join(f'"{shown(c, NAME_LENGTH)}"' for c in columns[:NAMES_SHOWN])
    more = len(columns) - NAMES_SHOWN
    return f"{named} and {more:,} more" if more > 0 else named


def _field_list() -> str:
    return ", ".join(f.key for f in fields.FIELDS)
