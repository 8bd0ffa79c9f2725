"""Property: an import accounts for every line, or refuses with a line number and writes nothing.

Hypothesis writes CSV files as exports come: random quoting, separators (comma, semicolon,
tab), a BOM or not, CRLF or LF, blank lines, short rows, extra empty cells, cells with
quotes, separators and line breaks, good and bad addresses. A clean file must import
exactly as the rows say (every skipped line with its number, the lookups finding exactly
the valid addresses with their fields). A damaged one (a quote left open, a NUL byte, a
carriage return outside quotes, a row with an extra value) is refused with its line and
writes nothing, or, where the damage leaves it readable, still loses no valid address.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, select

from portal.core import fields
from portal.core.blind_index import InvalidEmail, blind_index, normalise
from portal.core.config import Settings
from portal.core.errors import PortalError
from portal.incidents.importer import ImportSummary, import_csv
from portal.incidents.stored import get_incident
from portal.store import db, tables
from tests.factories import incident_store

SLUG = "ticketing-2021"
GOOD = [
    "ann@example.org",
    "Bob@Example.ORG",
    "  carol@example.net ",
    "dave+tag@example.com",
    "jan@bücher.de",
    "jörg@bücher.de",  # RFC 6531: a non-ASCII local part
]
BAD = ["", "   ", "geen-adres", "a@@example.org", "jan@localhost", "x y@example.org"]
# Cell text: quotes, separators and line breaks, but never an @ (so no line of a cell is
# itself a row with an address, which the importer would rightly refuse as a lost quote).
TEXT = st.text(alphabet=st.sampled_from(list("ab Z\"',;\t\n0é")), max_size=8)
QUOTING = [csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]
DAMAGE = ["none", "open-quote", "nul", "bare-cr", "extra-value"]


@dataclass(frozen=True)
class Record:
    email: str
    name: str
    phone: str
    cut: int  # cells dropped from the end (a short row)
    extra_empty: int  # empty cells added at the end


@dataclass(frozen=True)
class Export:
    """A generated file and what its rows say."""

    content: bytes
    records: list[Record]
    lines: list[int]  # the physical line each record starts on
    email_column: int
    damage: str
    damaged: int  # index of the damaged record


@st.composite
def exports(draw: st.DrawFn) -> Export:
    records = draw(
        st.lists(
            st.builds(
                Record,
                email=st.sampled_from(GOOD + BAD),
                name=TEXT,
                phone=st.sampled_from(["", "0612345678", " "]),
                cut=st.sampled_from([0, 0, 0, 1, 2]),
                extra_empty=st.sampled_from([0, 0, 0, 1]),
            ),
            min_size=1,
            max_size=8,
        )
    )
    email_column = draw(st.integers(0, 2))
    delimiter = draw(st.sampled_from([",", ";", "\t"]))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    quoting = draw(st.sampled_from(QUOTING))
    blanks = draw(st.lists(st.sampled_from(["", "empty-cells"]), max_size=len(records)))
    blank_after = draw(st.lists(st.integers(0, len(records) - 1), max_size=len(blanks)))
    damage = draw(st.sampled_from(DAMAGE))
    damaged = draw(st.integers(0, len(records) - 1))
    bom = draw(st.booleans())

    header = ["naam", "telefoon"]
    header.insert(email_column, draw(st.sampled_from(["email", "E-mailadres", "Mail"])))
    text = _line(header, delimiter, newline, quoting)
    lines: list[int] = []
    for index, record in enumerate(records):
        lines.append(text.count("\n") + 1)
        row = _line(_cells(record, email_column), delimiter, newline, quoting)
        text += _damaged(row, delimiter, damage) if index == damaged else row
        for kind, after in zip(blanks, blank_after, strict=False):
            if after == index:
                text += newline if kind == "" else delimiter * 2 + newline
    content = ("\ufeff" if bom else "") + text
    return Export(content.encode(), records, lines, email_column, damage, damaged)


def _cells(record: Record, email_column: int) -> list[str]:
    cells = [record.name, record.phone]
    cells.insert(email_column, record.email)
    return cells[: len(cells) - record.cut] + [""] * record.extra_empty


def _line(cells: list[str], delimiter: str, newline: str, quoting: int) -> str:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator=newline, quoting=quoting).writerow(cells)
    return out.getvalue()


def _damaged(row: str, delimiter: str, damage: str) -> str:
    body = row.rstrip("\r\n")
    end = row[len(body) :]
    if damage == "open-quote":
        return f'{body}{delimiter}"open{end}'
    if damage == "nul":
        return f"{body}\0{end}"
    if damage == "bare-cr":
        return f"{body}{delimiter}x\ry{end}"
    if damage == "extra-value":
        return f"{body}{delimiter}{delimiter}{delimiter}{delimiter}extra{end}"
    return row


# -- the oracle -----------------------------------------------------------------------------


def values(record: Record, email_column: int) -> tuple[str, str, str]:
    """(email, name, phone) as the file holds them: a cut cell is empty."""
    cells = [*_cells(record, email_column), "", "", ""]
    others = [c for i, c in enumerate(cells[:3]) if i != email_column]
    return cells[email_column], others[0], others[1]


def valid(address: str) -> str | None:
    try:
        return normalise(address)
    except InvalidEmail:
        return None


def is_row(record: Record, email_column: int) -> bool:
    return any(cell.strip() for cell in _cells(record, email_column))


def expected_fields(export: Export) -> dict[str, set[str]]:
    """Each valid address in the rows, with the union of the fields its rows expose."""
    found: dict[str, set[str]] = {}
    for record in export.records:
        email, name, phone = values(record, export.email_column)
        address = valid(email)
        if address is None or not is_row(record, export.email_column):
            continue
        keys = found.setdefault(address, {"email"})
        if name.strip():
            keys.add("name")
        if phone.strip():
            keys.add("phone")
    return found


def expected_skipped(export: Export) -> list[int]:
    return [
        line
        for record, line in zip(export.records, export.lines, strict=True)
        if is_row(record, export.email_column)
        and valid(values(record, export.email_column)[0]) is None
    ]


# -- the property ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Engine, Settings, Path]]:
    folder = tmp_path_factory.mktemp("import-property")
    url = f"sqlite:///{folder}/portal.db"
    engine, config = incident_store(
        folder, url, secret_key="property-secret", pepper=b"property-pepper"
    )
    yield engine, config, folder
    engine.dispose()


def stored(engine: Engine) -> dict[bytes, set[str]]:
    with engine.connect() as conn:
        rows = conn.execute(select(tables.exposures.c.bidx, tables.exposures.c.fields))
        return {bidx: {f.key for f in fields.from_bits(bits)} for bidx, bits in rows}


def index_of(engine: Engine, config: Settings, address: str) -> bytes:
    """The blind index a lookup computes for an address."""
    with engine.connect() as conn:
        salt = db.ensure_salt(conn)
        incident = get_incident(conn, SLUG)
    assert incident is not None
    return blind_index(address, pepper=config.pepper, salt=salt, params=incident.kdf)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(export=exports(), dry_run=st.booleans())
def test_it_accounts_for_every_line_or_refuses_with_a_line_number(
    store: tuple[Engine, Settings, Path], export: Export, dry_run: bool
) -> None:
    engine, config, folder = store
    with engine.begin() as conn:
        conn.execute(delete(tables.exposures))
    path = folder / "leak.csv"
    path.write_bytes(export.content)
    want = expected_fields(export)

    try:
        summary = import_csv(
            engine, config, incident=SLUG, partner="park-a", path=path, dry_run=dry_run
        )
    except PortalError as refused:
        assert stored(engine) == {}, "a refused file wrote something"
        assert_refused_rightly(str(refused), export, want)
        return

    assert summary.rows == summary.imported + len(summary.skipped)
    assert all(skipped.reason for skipped in summary.skipped)
    found = {} if dry_run else stored(engine)
    if dry_run:
        assert stored(engine) == {}, "a dry run wrote something"
    if export.damage == "none":
        assert summary.invalid_lines == expected_skipped(export)
        assert summary.rows == sum(is_row(r, export.email_column) for r in export.records)
        assert summary.addresses == len(want)
        if not dry_run:
            assert found == {index_of(engine, config, a): keys for a, keys in want.items()}
        return
    # A NUL byte, a bare CR and an extra value are always refused; a quote left open is
    # refused unless the lines it takes in hold no address (and then it loses none).
    assert export.damage == "open-quote", f"{export.damage} was not refused"
    assert_no_address_lost(engine, config, export, want, found, dry_run)


def assert_refused_rightly(message: str, export: Export, want: dict[str, set[str]]) -> None:
    """A refusal names a line of the file, or (when no row has an address) every skipped one."""
    if "this row is separated by" in message:
        # Rows that another separator splits as the header's splits the header: allowed
        # only when those rows hold no address that could be imported.
        assert not want, message
        return
    if re.search(r"leak\.csv:\d+: ", message):
        if export.damage == "none":
            pytest.fail(f"a clean file was refused: {message}")
        return
    assert not want or export.damage != "none", message
    assert "no row has a valid email address" in message or "no rows" in message, message


def assert_no_address_lost(
    engine: Engine,
    config: Settings,
    export: Export,
    want: dict[str, set[str]],
    found: dict[bytes, set[str]],
    dry_run: bool,
) -> None:
    """A readable damaged file: only its damaged row may lose its own address, none other."""
    if dry_run:
        return
    indexes = {index_of(engine, config, a): a for a in want}
    assert set(found) <= set(indexes), "an address was stored that no row holds"
    damaged = valid(values(export.records[export.damaged], export.email_column)[0])
    for bidx, address in indexes.items():
        assert bidx in found or address == damaged, "a valid address was lost"


@pytest.mark.parametrize("damage", DAMAGE)
def test_the_generator_makes_every_kind_of_file(damage: str) -> None:
    """Each damage occurs in files that also hold valid, skipped and short rows."""
    found = find(
        exports(),
        lambda e: (
            e.damage == damage
            and bool(expected_fields(e))
            and bool(expected_skipped(e))
            and any(r.cut for r in e.records)
        ),
        settings=settings(max_examples=3000, database=None, phases=[Phase.generate]),
    )
    assert found.damage == damage


def test_it_counts_an_example_as_the_oracle_says(store: tuple[Engine, Settings, Path]) -> None:
    """One fixed export through the same oracle: the property's arithmetic is right."""
    engine, config, folder = store
    with engine.begin() as conn:
        conn.execute(delete(tables.exposures))
    records = [
        Record("ann@example.org", 'a"b\nc', "", 0, 0),
        Record("geen-adres", "x", "", 0, 0),
        Record("Bob@Example.ORG", "", "0612345678", 1, 1),
    ]
    text = "email;naam;telefoon\r\n" + "".join(
        _line(_cells(r, 0), ";", "\r\n", csv.QUOTE_MINIMAL) for r in records
    )
    export = Export(text.encode(), records, [2, 4, 5], 0, "none", 0)
    (folder / "leak.csv").write_bytes(export.content)

    summary: ImportSummary = import_csv(
        engine, config, incident=SLUG, partner="park-a", path=folder / "leak.csv"
    )

    assert expected_skipped(export) == summary.invalid_lines == [4]
    assert expected_fields(export) == {
        "ann@example.org": {"email", "name"},
        "bob@example.org": {"email"},
    }
    assert len(stored(engine)) == 2
