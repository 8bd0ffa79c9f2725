"""An import killed halfway (kill -9) and run again ends with exactly one clean import's data."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.factories import INCIDENT
from tests.fixtures_mail import wait_for_sync
from tests.server import count, environment, portal

SLUG = "ticketing-2021"
ROWS = 1500
CHUNK = 1000  # portal.incidents.importer.CHUNK: each chunk is committed on its own


def exposures(folder: Path) -> list[tuple[int, bytes, int]]:
    with sqlite3.connect(f"file:{folder / 'instance' / 'portal.db'}?mode=ro", uri=True) as conn:
        return conn.execute(
            "SELECT partner_id, bidx, fields FROM exposures ORDER BY partner_id, bidx"
        ).fetchall()


def committed(folder: Path) -> int:
    with sqlite3.connect(f"file:{folder / 'instance' / 'portal.db'}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT count(*) FROM exposures").fetchone()[0])


def leak(path: Path) -> Path:
    """ROWS distinct addresses; every tenth occurs again later with another field."""
    lines = ["email;naam;telefoon"]
    lines += [f"p{n}@example.org;Naam {n};" for n in range(ROWS)]
    lines += [f"P{n}@Example.org;;06{n:08d}" for n in range(0, ROWS, 10)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def twin_instances(tmp_path: Path) -> tuple[Path, Path]:
    """Two instances with the same incident, salt and secrets: their indexes compare."""
    crashed, clean = tmp_path / "crashed", tmp_path / "clean"
    for folder in (crashed, clean):
        (folder / "instance").mkdir(parents=True)
    (crashed / "incident.toml").write_text(INCIDENT, encoding="utf-8")
    load = portal(crashed, "incident", "load", "incident.toml")
    assert load.returncode == 0, load.stderr
    with (
        sqlite3.connect(crashed / "instance" / "portal.db") as source,
        sqlite3.connect(clean / "instance" / "portal.db") as copy,
    ):
        source.backup(copy)
    return crashed, clean


def test_it_ends_with_one_clean_imports_data_after_a_kill_and_a_rerun(tmp_path: Path) -> None:
    crashed, clean = twin_instances(tmp_path)
    path = leak(tmp_path / "park-a.csv")
    command = [sys.executable, "-m", "portal", "import", SLUG, "park-a", str(path)]

    killed = subprocess.Popen(
        [*command, "--workers", "2"],
        cwd=crashed,
        env=environment(crashed / "instance", None),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_sync(lambda: committed(crashed) >= CHUNK or killed.poll() is not None, 300)
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
    halfway = committed(crashed)
    rerun = portal(crashed, "import", SLUG, "park-a", path)
    reference = portal(clean, "import", SLUG, "park-a", path)

    assert killed.returncode == -signal.SIGKILL, "the import ended before it could be killed"
    assert CHUNK <= halfway < ROWS
    assert rerun.returncode == 0, rerun.stderr
    assert count(rerun.stdout, "unchanged addresses") == halfway
    assert count(rerun.stdout, "new addresses") == ROWS - halfway
    assert reference.returncode == 0, reference.stderr
    assert len(exposures(clean)) == ROWS
    assert exposures(crashed) == exposures(clean)
