"""portal letters stopped between two chunks of codes, as real processes: a second run with
the same --out makes exactly the letters the first did not put in place, and no more."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest
from pypdf import PdfReader
from sqlalchemy import func, select

from portal.store import db, tables
from tests.databases import Backend, database_url_of
from tests.factories import INCIDENT, SLUG, write_csv
from tests.server import environment, portal

PEOPLE = [
    ["naam", "adres", "postcode", "woonplaats", "geboortedatum"],
    *[[f"Persoon {n}", f"Laan {n}", f"{1000 + n} AA", "Utrecht", "1970-01-02"] for n in range(5)],
]
# A real process that dies (no clean-up, no exception handlers) as the third chunk of two
# people begins: the first two chunks (four people) are committed, the fifth person is not.
CRASH = """
import os, sys
from portal.reach import letters
letters.CHUNK = 2
store, calls = letters._store_chunk, []
def store_or_die(*args, **kwargs):
    calls.append(1)
    if len(calls) == 3:
        os._exit(9)
    store(*args, **kwargs)
letters._store_chunk = store_or_die
sys.argv = ["portal", *sys.argv[1:]]
from portal.cli import main
main()
"""
COMMAND = ("letters", SLUG, "park-a", "screening.csv", "--out", "post", "--pdf")


def codes(folder: Path) -> int:
    instance = folder / "instance"
    engine = db.make_engine(database_url_of(instance) or f"sqlite:///{instance / 'portal.db'}")
    try:
        with engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(tables.letter_codes)) or 0)
    finally:
        engine.dispose()


def names_in(out: Path) -> list[str]:
    text = (out / "letters.csv").read_text(encoding="utf-8")
    return sorted(row["name"] for row in csv.DictReader(io.StringIO(text)))


def test_a_run_stopped_between_chunks_is_completed_by_the_next_one_exactly(
    tmp_path: Path, backend: Backend
) -> None:
    backend.new_database(tmp_path / "instance")
    (tmp_path / "incident.toml").write_text(INCIDENT, encoding="utf-8")
    assert portal(tmp_path, "incident", "load", "incident.toml").returncode == 0
    write_csv(tmp_path / "screening.csv", PEOPLE)

    crashed = subprocess.run(
        [sys.executable, "-c", CRASH, *COMMAND],
        cwd=tmp_path,
        env=environment(tmp_path / "instance", None),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert crashed.returncode == 9, crashed.stderr
    assert codes(tmp_path) == 4  # recorded, and their letters not in place
    assert not (tmp_path / "post" / "letters.csv").exists()
    assert not (tmp_path / "post" / "letters.pdf").exists()
    assert (tmp_path / "post" / "letters.unfinished").exists()

    again = portal(tmp_path, *COMMAND)

    assert again.returncode == 0, again.stderr
    assert "of an interrupted run, made again" in again.stdout
    assert names_in(tmp_path / "post") == [f"Persoon {n}" for n in range(5)]
    assert len(PdfReader(tmp_path / "post" / "letters.pdf").pages) == 5
    assert not (tmp_path / "post" / "letters.unfinished").exists()
    assert sorted(p.name for p in (tmp_path / "post").iterdir()) == ["letters.csv", "letters.pdf"]
    assert codes(tmp_path) == 5

    third = portal(tmp_path, "letters", SLUG, "park-a", "screening.csv", "--out", "more")
    assert third.returncode == 0, third.stderr
    assert "0 letter(s)" in third.stdout
    assert not (tmp_path / "more").exists()


def test_an_interrupted_run_of_another_partner_is_not_taken_for_this_one(
    tmp_path: Path, backend: Backend
) -> None:
    backend.new_database(tmp_path / "instance")
    (tmp_path / "incident.toml").write_text(INCIDENT, encoding="utf-8")
    assert portal(tmp_path, "incident", "load", "incident.toml").returncode == 0
    write_csv(tmp_path / "screening.csv", PEOPLE)
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH, *COMMAND],
        cwd=tmp_path,
        env=environment(tmp_path / "instance", None),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert crashed.returncode == 9, crashed.stderr

    other = portal(tmp_path, "letters", SLUG, "theater-b", "screening.csv", "--out", "post")

    assert other.returncode == 1
    assert "holds an interrupted run of `portal letters ticketing-2021 park-a`" in other.stderr
    assert codes(tmp_path) == 4


def test_a_run_stopped_between_its_two_files_has_its_merge_file_put_in_place(
    tmp_path: Path,
) -> None:
    from portal.core.errors import PortalError
    from portal.reach.letter_files import LetterFiles

    out = tmp_path / "post"
    out.mkdir()
    (out / "letters.pdf").write_bytes(b"%PDF the stopped run's letters")
    (out / "letters.csv.pending").write_bytes(b"code,lang\r\n")
    (out / "letters.unfinished").write_text('{"incident": "i", "partner": "p"}', encoding="utf-8")

    with pytest.raises(PortalError, match=r"letters\.csv exists"):
        LetterFiles(out)

    assert sorted(p.name for p in out.iterdir()) == ["letters.csv", "letters.pdf"]
    assert (out / "letters.csv").read_bytes() == b"code,lang\r\n"
