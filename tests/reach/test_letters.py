"""portal letters, in process: codes for people without email, the merge file, the PDF."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader
from sqlalchemy import Engine, select

from portal.core import letter_codes
from portal.core.clock import utcnow
from portal.core.config import Settings
from portal.core.errors import PortalError
from portal.incidents.importer import Hasher
from portal.incidents.stored import get_incident
from portal.reach.letter_files import LetterContext, LetterFiles, write_letters
from portal.reach.letters import LettersSummary, Options, make_letters
from portal.store import db, tables
from tests.databases import stored_bytes
from tests.factories import ALICE, INCIDENT, RENDERER, load_personas, write_csv

SLUG = "ticketing-2021"
PARK_ROWS = [
    ["E-mailadres", "Naam", "Straat", "Huisnummer", "Postcode", "Woonplaats", "Telefoon"],
    ["", "Dirk de Vries", "Kerkstraat", "12", "1234 AB", "Utrecht", "0612345678"],
    ["geen", "Els Jansen", "Dorpsweg", "3a", "9999 ZZ", "Appelscha", ""],
    [ALICE, "Alice Aap", "Laan", "1", "1111 AA", "Amsterdam", ""],
    ["", "=HYPERLINK(1)", "Markt", "5", "5555 EE", "Breda", ""],
    ["", "Zonder Adres", "", "", "", "", ""],
]
THEATER_ROWS = [
    ["email", "naam", "postcode", "adres", "IBAN"],
    ["", "Dirk de Vries", "1234 AB", "Kerkstraat 12", "NL91ABNA0417164300"],
]


@pytest.fixture
def files(engine: Engine, settings: Settings, tmp_path: Path) -> Path:
    load_personas(engine, settings, tmp_path, incident_text=INCIDENT)
    write_csv(tmp_path / "park-letters.csv", PARK_ROWS)
    write_csv(tmp_path / "theater-letters.csv", THEATER_ROWS)
    return tmp_path


def run(
    engine: Engine, settings: Settings, folder: Path, partner: str, name: str, **given: Any
) -> LettersSummary:
    return make_letters(
        engine,
        settings,
        incident=SLUG,
        partner=partner,
        path=folder / name,
        options=Options(**given),
    )


def merge_rows(folder: Path, summary: LettersSummary, settings: Settings) -> list[dict[str, str]]:
    write_letters(folder / "out", summary.letters, summary.postal_fields, None)
    text = (folder / "out" / "letters.csv").read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def test_it_writes_a_letter_for_each_person_without_email(
    engine: Engine, settings: Settings, files: Path
) -> None:
    summary = run(engine, settings, files, "park-a", "park-letters.csv")
    rows = merge_rows(files, summary, settings)
    assert list(rows[0]) == ["code", "lang", "name", "address", "postcode", "city"]
    assert [(r["name"], r["address"], r["city"]) for r in rows] == [
        ("Dirk de Vries", "Kerkstraat 12", "Utrecht"),
        ("Els Jansen", "Dorpsweg 3a", "Appelscha"),
        ("'=HYPERLINK(1)", "Markt 5", "Breda"),
    ]
    assert {r["lang"] for r in rows} == {"nl"}
    assert len({r["code"] for r in rows}) == 3
    for row in rows:
        letter_codes.canonical(row["code"])
    assert (summary.read.rows, summary.read.imported, len(summary.read.skipped)) == (5, 1, 4)
    assert summary.without_address == [6]
    assert (summary.first, summary.with_email) == (3, 0)


def test_the_portal_keeps_no_postal_address_nor_code(
    engine: Engine, settings: Settings, files: Path, database_url: str
) -> None:
    summary = run(engine, settings, files, "park-a", "park-letters.csv")
    held = stored_bytes(database_url)
    for letter in summary.letters:
        for value in [letter.code, letter.code.replace("-", ""), *letter.postal.values()]:
            assert value.encode() not in held, value
    assert b"Kerkstraat" not in held


def test_a_code_finds_its_partner_and_fields(
    engine: Engine, settings: Settings, files: Path
) -> None:
    summary = run(engine, settings, files, "park-a", "park-letters.csv")
    dirk = next(x for x in summary.letters if x.postal["name"] == "Dirk de Vries")
    hashed = letter_codes.code_hash(settings.pepper, dirk.code.lower().replace("-", " "))
    e = tables.exposures.c
    with engine.connect() as conn:
        found = conn.execute(select(e.partner_id, e.fields).where(e.bidx == hashed)).all()
    assert len(found) == 1
    assert [f.key for f in dirk.fields] == ["address", "phone", "name", "postcode", "city"] or {
        f.key for f in dirk.fields
    } == {"name", "address", "postcode", "city", "phone"}
    assert "email" not in {f.key for f in dirk.fields}


def test_running_again_makes_no_second_letter_unless_asked(
    engine: Engine, settings: Settings, files: Path
) -> None:
    first = run(engine, settings, files, "park-a", "park-letters.csv")
    again = run(engine, settings, files, "park-a", "park-letters.csv")
    assert (again.letters, again.already) == ([], 3)
    everyone = run(engine, settings, files, "park-a", "park-letters.csv", everyone=True)
    assert everyone.again == 3 and everyone.first == 1  # alice, who has an address, too
    codes = {x.postal["name"]: x.code for x in first.letters}
    assert all(codes[x.postal["name"]] == x.code for x in everyone.letters if x.kind == "again")


def test_a_later_partner_gives_one_follow_up_with_the_same_code(
    engine: Engine, settings: Settings, files: Path
) -> None:
    key = ["naam", "postcode"]
    first = run(engine, settings, files, "park-a", "park-letters.csv", key=key)
    later = run(engine, settings, files, "theater-b", "theater-letters.csv", key=key)
    assert [(x.kind, [p.slug for p in x.partners]) for x in later.letters] == [
        ("follow-up", ["theater-b"])
    ]
    dirk = next(x for x in first.letters if x.postal["name"] == "Dirk de Vries")
    assert later.letters[0].code == dirk.code
    assert {f.key for f in later.letters[0].fields} == {"name", "postcode", "address", "iban"}
    twice = run(engine, settings, files, "theater-b", "theater-letters.csv", key=key)
    assert (twice.letters, twice.already) == ([], 1)


def test_bounced_adds_the_people_whose_notice_bounced(
    engine: Engine, settings: Settings, files: Path
) -> None:
    with engine.begin() as conn:
        incident = get_incident(conn, SLUG)
        assert incident is not None
        hasher = Hasher(settings.pepper, db.ensure_salt(conn), incident.kdf)
        now = utcnow()
        conn.execute(
            tables.notices.insert().values(
                incident_id=incident.id,
                bidx=hasher(ALICE),
                status="bounced",
                lang="nl",
                send_after=now,
                created_at=now,
            )
        )
    without = run(engine, settings, files, "park-a", "park-letters.csv")
    assert "Alice Aap" not in {x.postal["name"] for x in without.letters}
    bounced = run(engine, settings, files, "park-a", "park-letters.csv", bounced=True)
    assert [x.postal["name"] for x in bounced.letters] == ["Alice Aap"]
    assert bounced.bounced == 1


def test_a_dry_run_stores_nothing(engine: Engine, settings: Settings, files: Path) -> None:
    dry = run(engine, settings, files, "park-a", "park-letters.csv", dry_run=True)
    assert dry.first == 3
    with engine.connect() as conn:
        assert conn.execute(select(tables.letter_codes)).all() == []


MM = 72 / 25.4  # points per millimetre


def test_the_pdf_has_a_page_per_letter_with_the_address_in_the_window(
    engine: Engine, settings: Settings, files: Path
) -> None:
    summary = run(engine, settings, files, "park-a", "park-letters.csv")
    with engine.connect() as conn:
        incident = get_incident(conn, SLUG)
    assert incident is not None
    write_letters(
        files / "out",
        summary.letters,
        summary.postal_fields,
        LetterContext(incident, settings, RENDERER),
    )
    reader = PdfReader(files / "out" / "letters.pdf")
    assert len(reader.pages) == len(summary.letters) == 3
    left, top, width, height = settings.letter_window
    for page, letter in zip(reader.pages, summary.letters, strict=True):
        assert letter.code in page.extract_text()
        assert "Datalek bij TicketDienst" in page.extract_text()
        placed: dict[str, tuple[float, float]] = {}

        def visit(text: str, cm: Any, tm: Any, font: Any, size: Any) -> None:
            if text.strip():
                placed.setdefault(text.strip(), (tm[4], tm[5]))  # noqa: B023

        page.extract_text(visitor_text=visit)
        page_height = float(page.mediabox.height)
        for line in ("Dirk de Vries", "Kerkstraat 12", "1234 AB Utrecht"):
            if letter.postal["name"] != "Dirk de Vries":
                break
            x, y = placed[line]
            x_mm, y_mm = x / MM, (page_height - y) / MM
            assert left <= x_mm <= left + width, (line, x_mm)
            assert top <= y_mm <= top + height, (line, y_mm)


def test_letters_that_could_not_be_written_are_not_recorded(
    engine: Engine, settings: Settings, files: Path
) -> None:
    (files / "a-file").write_text("not a folder", encoding="utf-8")
    with pytest.raises(PortalError, match="cannot make"):
        make_letters(
            engine,
            settings,
            incident=SLUG,
            partner="park-a",
            path=files / "park-letters.csv",
            options=Options(),
            output=LetterFiles(files / "a-file" / "out"),  # the letters cannot be written
        )
    with engine.connect() as conn:
        assert conn.execute(select(tables.letter_codes)).all() == []
    out = files / "out"
    output = LetterFiles(out)
    made = make_letters(
        engine,
        settings,
        incident=SLUG,
        partner="park-a",
        path=files / "park-letters.csv",
        options=Options(),
        output=output,
    )
    assert made.first == 3
    assert output.written == [out / "letters.csv"]
    assert sorted(p.name for p in out.iterdir()) == ["letters.csv"]


def test_the_figures_count_letters_per_partner_apart_from_records(
    engine: Engine, settings: Settings, files: Path
) -> None:
    from portal.operator.stats import partner_figures

    def figures() -> dict[str, tuple[int, int]]:
        with engine.connect() as conn:
            rows = partner_figures(conn, incident=SLUG)
        return {row.partner: (row.records, row.letters) for row in rows}

    before = figures()
    run(engine, settings, files, "park-a", "park-letters.csv")
    assert figures()["park-a"] == (before["park-a"][0], 3)


def test_purging_the_incident_deletes_its_codes(
    engine: Engine, settings: Settings, files: Path
) -> None:
    from portal.operator.retention import purge_incident

    run(engine, settings, files, "park-a", "park-letters.csv")
    purge_incident(engine, SLUG)
    with engine.connect() as conn:
        assert conn.execute(select(tables.letter_codes)).all() == []
        assert conn.execute(select(tables.letter_partners)).all() == []


@pytest.mark.parametrize(
    ("lang", "words"),
    [
        ("nl", ["Is deze brief echt?", "Telefoonnummer", "/ticketing-2021/code"]),
        ("en", ["Is this letter genuine?", "Phone number", "/ticketing-2021/code"]),
    ],
)
def test_the_letter_says_what_leaked_what_to_do_and_how_to_check_it(
    engine: Engine, settings: Settings, files: Path, lang: str, words: list[str]
) -> None:
    from dataclasses import replace

    summary = run(engine, settings, files, "park-a", "park-letters.csv")
    with engine.connect() as conn:
        incident = get_incident(conn, SLUG)
    assert incident is not None
    dirk = next(x for x in summary.letters if x.postal["name"] == "Dirk de Vries")
    text = LetterContext(incident, settings, RENDERER).text(replace(dirk, lang=lang))
    for word in [*words, dirk.code, "Attractiepark A", "Dirk de Vries"]:
        assert word in text, word


SCREENING_ROWS = [  # a screening programme's records: postal only, no email column at all
    ["naam", "adres", "postcode", "woonplaats", "geboortedatum"],
    ["Dirk de Vries", "Kerkstraat 12", "1234 AB", "Utrecht", "1970-01-02"],
    ["Els Jansen", "Dorpsweg 3a", "9999 ZZ", "Appelscha", "1980-03-04"],
    ["Dirk de Vries", "Kerkstraat 12", "1234 AB", "Utrecht", "1970-01-02"],  # twice: one letter
    ["Piet Smit", "Markt 5", "5555 EE", "Breda", "1990-05-06"],
]


def test_a_file_without_an_email_column_gives_everyone_a_letter(
    engine: Engine, settings: Settings, files: Path
) -> None:
    write_csv(files / "screening.csv", SCREENING_ROWS)
    summary = run(engine, settings, files, "park-a", "screening.csv")
    read = summary.read
    assert (read.rows, read.imported, len(read.skipped)) == (4, 0, 4)
    assert {s.reason for s in read.skipped} == {"no email address"}
    assert "email" not in read.columns.values()
    assert (summary.people, summary.first) == (3, 3)
    names = sorted(x.postal["name"] for x in summary.letters)
    assert names == ["Dirk de Vries", "Els Jansen", "Piet Smit"]
    dirk = next(x for x in summary.letters if x.postal["name"] == "Dirk de Vries")
    assert {f.key for f in dirk.fields} == {"name", "address", "postcode", "city", "birth_date"}
    with engine.connect() as conn:
        incident = get_incident(conn, SLUG)
    assert incident is not None
    write_letters(
        files / "out",
        summary.letters,
        summary.postal_fields,
        LetterContext(incident, settings, RENDERER),
    )
    rows = list(csv.DictReader(io.StringIO((files / "out" / "letters.csv").read_text("utf-8"))))
    assert sorted(r["name"] for r in rows) == names
    assert len(PdfReader(files / "out" / "letters.pdf").pages) == 3


def test_a_file_without_an_email_column_is_keyed_by_the_given_columns(
    engine: Engine, settings: Settings, files: Path
) -> None:
    rows = [*SCREENING_ROWS, ["D. de Vries", "Kerkstraat 12", "1234 AB", "Utrecht", "1970-01-02"]]
    write_csv(files / "screening.csv", rows)
    by_postal = run(engine, settings, files, "park-a", "screening.csv", dry_run=True)
    assert by_postal.people == 4  # the name differs: another person by the postal columns
    keyed = ["postcode", "geboortedatum"]
    summary = run(engine, settings, files, "park-a", "screening.csv", key=keyed)
    assert (summary.people, summary.first) == (3, 3)
    again = run(engine, settings, files, "park-a", "screening.csv", key=keyed)
    assert (again.letters, again.already) == ([], 3)


def test_importing_a_file_without_an_email_column_is_still_refused(
    engine: Engine, settings: Settings, files: Path
) -> None:
    from portal.incidents.importer import import_csv

    write_csv(files / "screening.csv", SCREENING_ROWS)
    with pytest.raises(PortalError, match=r"no email column .*name it with --email-column"):
        import_csv(engine, settings, incident=SLUG, partner="park-a", path=files / "screening.csv")
