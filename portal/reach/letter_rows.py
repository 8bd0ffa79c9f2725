"""The people of a partner's file who get a letter: their postal cells, key and fields.

The file is read by the importer (`read_each_row`: the same columns, `--map`, errors and
accounting as `portal import`). A row without a valid address is a letter's; with
`--bounced` also one whose notice bounced, with `--all` every row. Rows with the same key
(the `--key` columns, by default the postal ones) are one person. The postal cells stay in
memory and go only to the files written for the mailing house.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from portal.core import fields
from portal.core.errors import PortalError
from portal.core.printable import shown
from portal.incidents.columns import ColumnPlan
from portal.incidents.csv_file import Row
from portal.incidents.importer import ImportSummary, Progress, read_each_row

POSTAL = ("name", "address", "postcode", "city", "country")
EMAIL_BIT = fields.to_bits(["email"])


@dataclass
class Person:
    """One addressee: the postal block (cells joined per field), key text, fields, lines."""

    key: str
    postal: dict[str, str]
    bits: int
    lines: list[int]
    addresses: set[str] = field(default_factory=set)  # valid email addresses (--bounced)
    no_email: bool = False  # some row of theirs had no valid address


@dataclass
class PeopleRead:
    """What the file held: each person by key, the postal fields it has, and the counts."""

    read: ImportSummary
    people: dict[str, Person]
    postal_fields: list[str]
    without_address: list[int] = field(default_factory=list)  # lines with no postal address


def key_columns(plan: ColumnPlan, key: list[str] | None) -> list[int]:
    """The column indexes of `--key` (names matched as the import matches columns)."""
    if not key:
        return [i for i, k in sorted(plan.fields.items()) if k in POSTAL]
    squashed = [fields.squash(column) for column in plan.header]
    found = []
    for name in key:
        if fields.squash(name) not in squashed:
            raise PortalError(f'--key "{shown(name)}": there is no such column in the file')
        found.append(squashed.index(fields.squash(name)))
    return found


def key_text(cells: list[str], indexes: list[int]) -> str:
    """The key of a row: its key cells NFC, case-folded, spaces collapsed, in order."""
    values = (" ".join(unicodedata.normalize("NFC", cells[i]).casefold().split()) for i in indexes)
    return "\x1f".join(values)


def read_people(
    path: Path,
    *,
    mapping: dict[str, str] | None = None,
    email_column: str | None = None,
    key: list[str] | None = None,
    with_addresses: bool = False,
    progress: Progress | None = None,
) -> PeopleRead:
    """Reads the file as the import does and gathers the people a letter may be for: every
    row without a valid address, and `with_addresses` (`--bounced`, `--all`) the others too."""
    people: dict[str, Person] = {}
    found = PeopleRead(ImportSummary(), people, [])
    state: dict[str, list[int]] = {}

    def visit(plan: ColumnPlan, row: Row, address: str | None) -> None:
        if "key" not in state:
            state["key"] = key_columns(plan, key)
            found.postal_fields = [k for k in POSTAL if k in plan.fields.values()]
            if "address" not in found.postal_fields:
                raise PortalError("the file has no address column: a letter needs one")
        if address is None or with_addresses:
            _gather(found, plan, row, address, state["key"])

    # A postal-only file (no email column) is a letters file: everyone in it has no address.
    found.read = read_each_row(
        path,
        visit,
        mapping=mapping,
        email_column=email_column,
        progress=progress,
        require_email=False,
    )
    return found


def _gather(
    found: PeopleRead, plan: ColumnPlan, row: Row, address: str | None, key: list[int]
) -> None:
    postal = _postal(plan, row.cells)
    if not postal.get("address"):
        found.without_address.append(row.line)
        return
    text = key_text(row.cells, key)
    bits = plan.bits(row.cells)
    if plan.email_index is None or not row.cells[plan.email_index].strip():
        bits &= ~EMAIL_BIT  # no address in the row: the address did not leak
    person = found.people.get(text)
    if person is None:
        person = found.people[text] = Person(text, postal, 0, [])
    person.bits |= bits
    person.lines.append(row.line)
    if address is None:
        person.no_email = True
    else:
        person.addresses.add(address)


def _postal(plan: ColumnPlan, cells: list[str]) -> dict[str, str]:
    joined: dict[str, list[str]] = {}
    for index, key in sorted(plan.fields.items()):
        if key in POSTAL and cells[index].strip():
            joined.setdefault(key, []).append(" ".join(cells[index].split()))
    return {key: " ".join(values) for key, values in joined.items()}
