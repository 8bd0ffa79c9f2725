"""A database error in any command: one line on stderr and a log entry, never a traceback.

The error's own text can hold a statement and its parameters (blind indexes, addresses):
neither the line nor the log entry repeats it. The log entry names the error's type and
where it was raised (file and line), for a bug report.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

import portal as portal_package
from tests.factories import INCIDENT, PARK_A, write_csv
from tests.server import portal

SLUG = "ticketing-2021"
LINE = (
    "error: unexpected database error (OperationalError); what was committed before stays, "
    "nothing after it was written"
)
# The portal's own frames: which of its queries it was.
LOGGED = re.compile(r"ERROR: database error OperationalError in \w+\.\w+( < \w+\.\w+)*")
OURS = {path.stem for path in Path(portal_package.__file__).parent.rglob("*.py")}
# Every command that reads or writes the database, with what it needs.
COMMANDS = [
    ("incident", "list"),
    ("incident", "load", "incident.toml"),
    ("import", SLUG, "park-a", "park-a.csv"),
    ("notify", SLUG, "park-a", "park-a.csv", "--dry-run"),
    ("letters", SLUG, "park-a", "park-a.csv", "--out", "post", "--dry-run"),
    ("stats",),
    ("purge",),
    ("export", SLUG, "park-a"),
    ("admin", "list"),
    ("admin", "disable", "nobody"),
    ("mail-worker",),
    ("serve", "--port", "1"),
]


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An instance whose database lost its tables (all but the schema version and salt)."""
    folder = tmp_path_factory.mktemp("broken")
    (folder / "incident.toml").write_text(INCIDENT, encoding="utf-8")
    write_csv(folder / "park-a.csv", PARK_A)
    assert portal(folder, "incident", "load", "incident.toml").returncode == 0
    with sqlite3.connect(folder / "instance" / "portal.db") as conn:
        conn.execute("PRAGMA foreign_keys=OFF")
        names = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        for (name,) in names:
            if name not in ("alembic_version", "meta", "sqlite_sequence"):
                conn.execute(f'DROP TABLE "{name}"')
    return folder


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_it_says_one_line_and_logs_where_without_the_statement(
    broken: Path, command: tuple[str, ...]
) -> None:
    result = portal(broken, *command)

    assert result.returncode == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == LINE
    logged = lines[-2]
    if command[0] in ("serve", "mail-worker"):  # a server's log: JSON lines
        logged = "ERROR: " + json.loads(logged)["message"]
    assert LOGGED.fullmatch(logged), logged
    assert {place.split(".")[0] for place in logged.split(" in ")[1].split(" < ")} <= OURS
    printed = result.stderr + result.stdout
    assert "Traceback" not in printed
    assert "no such table" not in printed  # the database's own words
    assert "SELECT" not in printed and "INSERT" not in printed
    assert "@example.org" not in printed
