"""Several `portal import` processes at once on one PostgreSQL database: the exact union.

Two files of one partner that share addresses, imported by two real processes at the same
time, leave each shared address with the fields of both; the two parts of one file
(`--part 1/2`, `--part 2/2`) together leave exactly what one import of the whole file does,
and each part's summary adds up: rows read = imported + skipped + other parts.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from portal.core import fields
from portal.core.blind_index import normalise
from portal.core.config import Settings
from portal.incidents.importer import Hasher
from portal.incidents.stored import get_incident, load_incident_file
from portal.store import db, tables
from tests.factories import INCIDENT
from tests.server import count, start_portal_cli

SLUG = "ticketing-2021"

pytestmark = pytest.mark.backends(
    "postgresql", reason="many hosts share PostgreSQL; SQLite serves one machine"
)


def write(path: Path, numbers: range, column: str) -> Path:
    lines = [f"email,{column}", *(f"p{n}@example.org,x{n}" for n in numbers), "bad,x"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def stored(engine: Engine, partner: str) -> dict[bytes, set[str]]:
    e, p = tables.exposures.c, tables.partners.c
    query = select(e.bidx, e.fields).join(tables.partners).where(p.slug == partner)
    with engine.connect() as conn:
        return {b: {f.key for f in fields.from_bits(bits)} for b, bits in conn.execute(query)}


def indexed(engine: Engine, settings: Settings, numbers: range) -> dict[int, bytes]:
    with engine.connect() as conn:
        salt = db.ensure_salt(conn)
        incident = get_incident(conn, SLUG)
    assert incident is not None
    hasher = Hasher(settings.pepper, salt, incident.kdf)
    with ThreadPoolExecutor() as pool:
        found = pool.map(hasher, [normalise(f"p{n}@example.org") for n in numbers])
        return dict(zip(numbers, found, strict=True))


def run_at_once(settings: Settings, *commands: list[str]) -> list[str]:
    """Starts every command before waiting for any; each one's output."""
    started = [start_portal_cli(settings, *command) for command in commands]
    outputs = [process.communicate(timeout=600) for process in started]
    for process, (_, stderr) in zip(started, outputs, strict=True):
        assert process.returncode == 0, stderr
    return [stdout for stdout, _ in outputs]


@pytest.fixture
def incident(engine: Engine, tmp_path: Path) -> None:
    (tmp_path / "incident.toml").write_text(INCIDENT, encoding="utf-8")
    load_incident_file(engine, tmp_path / "incident.toml")


@pytest.mark.usefixtures("incident")
def test_two_files_imported_at_once_give_each_shared_address_both_field_sets(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    names = write(tmp_path / "names.csv", range(0, 1200), "naam")
    phones = write(tmp_path / "phones.csv", range(600, 1800), "telefoon")

    run_at_once(
        settings,
        ["import", SLUG, "park-a", str(names)],
        ["import", SLUG, "park-a", str(phones)],
    )

    bidx = indexed(engine, settings, range(1800))
    want = {bidx[n]: {"email", "name"} for n in range(0, 600)}
    want |= {bidx[n]: {"email", "name", "phone"} for n in range(600, 1200)}
    want |= {bidx[n]: {"email", "phone"} for n in range(1200, 1800)}
    assert stored(engine, "park-a") == want


@pytest.mark.usefixtures("incident")
def test_two_parts_at_once_give_what_one_whole_import_gives(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    path = write(tmp_path / "leak.csv", range(1500), "naam")

    first, second = run_at_once(
        settings,
        ["import", SLUG, "park-a", str(path), "--part", "1/2"],
        ["import", SLUG, "park-a", str(path), "--part", "2/2"],
    )
    whole = run_at_once(settings, ["import", SLUG, "theater-b", str(path)])[0]

    for out in (first, second):
        assert count(out, "rows read") == 1501
        read = count(out, "rows imported") + count(out, "rows skipped")
        assert read + count(out, "rows left to other parts") == 1501
    assert count(first, "rows skipped") == 1 and count(second, "rows skipped") == 0
    assert count(first, "rows imported") + count(second, "rows imported") == 1500
    assert 600 < count(first, "new addresses") < 900
    assert count(whole, "new addresses") == 1500
    assert stored(engine, "park-a") == stored(engine, "theater-b")
