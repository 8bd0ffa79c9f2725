"""The demo incident: a valid incident file and partner CSVs that import as documented."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from sqlalchemy import Engine

from portal.core.blind_index import normalise
from portal.core.config import Settings
from portal.incidents.demo import (
    DEMO_ADDRESSES,
    DEMO_SLUG,
    PARTNER_COLUMNS,
    is_loaded,
    write_demo_files,
)
from portal.incidents.file import parse_incident_file
from portal.incidents.importer import import_csv
from portal.incidents.stored import load_incident_file

RECORDS = 50


@pytest.fixture
def demo_files(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "demo"
    folder.mkdir()
    return write_demo_files(folder, records=RECORDS)


def addresses(path: Path) -> list[str]:
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter=";"))
    return [row[0] for row in rows[1:]]


def test_it_writes_a_valid_incident_and_one_csv_per_partner(demo_files: list[Path]) -> None:
    incident, *csvs = demo_files
    data = parse_incident_file(incident)
    assert data["slug"] == DEMO_SLUG
    assert [p["slug"] for p in data["partners"]] == list(PARTNER_COLUMNS)
    assert [p.stem for p in csvs] == list(PARTNER_COLUMNS)


def test_it_writes_the_documented_headers(demo_files: list[Path]) -> None:
    for path in demo_files[1:]:
        with path.open(encoding="utf-8", newline="") as handle:
            header = next(csv.reader(handle, delimiter=";"))
        assert header == PARTNER_COLUMNS[path.stem]


def test_it_writes_only_addresses_that_normalise(demo_files: list[Path]) -> None:
    for path in demo_files[1:]:
        found = addresses(path)
        assert found
        for address in found:
            assert normalise(address) == address.lower()


def test_it_places_the_demo_addresses_as_promised(demo_files: list[Path]) -> None:
    by_partner = {path.stem: set(addresses(path)) for path in demo_files[1:]}
    alles, park, nowhere = DEMO_ADDRESSES
    assert all(alles in found for found in by_partner.values())
    assert [slug for slug, found in by_partner.items() if park in found] == ["park-a"]
    assert not any(nowhere in found for found in by_partner.values())


def test_it_makes_the_same_people_from_the_same_seed(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    a = write_demo_files(first, records=20, seed=7)
    b = write_demo_files(second, records=20, seed=7)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]


def test_it_knows_when_every_partner_is_loaded(
    demo_files: list[Path], engine: Engine, settings: Settings
) -> None:
    incident, *csvs = demo_files
    assert not is_loaded(engine)
    load_incident_file(engine, incident)
    assert not is_loaded(engine)
    for path in csvs:
        assert not is_loaded(engine)
        summary = import_csv(engine, settings, incident=DEMO_SLUG, partner=path.stem, path=path)
        assert summary.invalid_lines == []
        assert summary.imported == len(addresses(path))
    assert is_loaded(engine)
