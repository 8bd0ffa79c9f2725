"""`portal import` killed with SIGKILL mid-run, on both backends: the rerun repairs everything.

The killed run leaves whole chunks in the database and its spill of keyed indexes in the
instance folder; the rerun erases that spill, completes the import, and ends with exactly
the exposures of the file, each with the union of its rows' fields.
"""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import Engine, func, select

from portal.core import fields
from portal.core.blind_index import normalise
from portal.core.config import Settings
from portal.incidents.importer import CHUNK, Hasher
from portal.incidents.stored import get_incident, load_incident_file
from portal.store import db, tables
from tests.factories import INCIDENT
from tests.fixtures_mail import wait_for_sync
from tests.server import count, portal_cli, start_portal_cli

SLUG = "ticketing-2021"
ROWS = 2 * CHUNK + 500


def leak(path: Path) -> Path:
    """ROWS distinct addresses, every tenth again later with a phone, and two bad rows."""
    lines = ["email;naam;telefoon"]
    lines += [f"p{n}@example.org;Naam {n};" for n in range(ROWS)]
    lines += [f"P{n}@Example.org;;06{n:08d}" for n in range(0, ROWS, 10)]
    lines += ["not-an-address;Naam;", ";Naam;"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def stored(engine: Engine) -> dict[bytes, set[str]]:
    t = tables.exposures.c
    with engine.connect() as conn:
        rows = conn.execute(select(t.bidx, t.fields))
        return {bidx: {f.key for f in fields.from_bits(bits)} for bidx, bits in rows}


def committed(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(tables.exposures)) or 0)


def expected(engine: Engine, settings: Settings) -> dict[bytes, set[str]]:
    """What the file holds, indexed here as a lookup would index each address."""
    with engine.connect() as conn:
        salt = db.ensure_salt(conn)
        incident = get_incident(conn, SLUG)
    assert incident is not None
    hasher = Hasher(settings.pepper, salt, incident.kdf)
    with ThreadPoolExecutor() as pool:
        indexes = pool.map(hasher, [normalise(f"p{n}@example.org") for n in range(ROWS)])
        return {
            bidx: {"email", "name", "phone"} if n % 10 == 0 else {"email", "name"}
            for n, bidx in enumerate(indexes)
        }


def test_a_killed_import_leaves_nothing_a_rerun_does_not_repair(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "incident.toml").write_text(INCIDENT, encoding="utf-8")
    load_incident_file(engine, tmp_path / "incident.toml")
    path = leak(tmp_path / "park-a.csv")
    spill = settings.instance_dir / "spill"

    killed = start_portal_cli(settings, "import", SLUG, "park-a", str(path), "--workers", "2")
    try:
        wait_for_sync(lambda: committed(engine) >= CHUNK or killed.poll() is not None, 300)
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.communicate(timeout=30)
    halfway = committed(engine)
    left = list(spill.iterdir())
    rerun = portal_cli(settings, "import", SLUG, "park-a", str(path))

    assert killed.returncode == -signal.SIGKILL, "the import ended before it could be killed"
    assert CHUNK <= halfway < ROWS
    assert left, "the killed run left no spill folder: killed too late to tell"
    assert rerun.returncode == 0, rerun.stderr
    out = rerun.stdout.decode()
    assert count(out, "rows read") == ROWS + ROWS // 10 + 2
    assert count(out, "rows imported") == ROWS + ROWS // 10
    assert count(out, "rows skipped") == 2
    assert count(out, "distinct addresses") == ROWS
    # A chunk is whole or absent: the rerun finds every committed address complete.
    assert count(out, "unchanged addresses") == halfway
    assert count(out, "new addresses") == ROWS - halfway
    assert list(spill.iterdir()) == []
    assert stored(engine) == expected(engine, settings)
