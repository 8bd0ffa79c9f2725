"""The `portal` command as an operator runs it: a real process, exit codes, stdout, stderr."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, text
from typer.testing import CliRunner

from portal.cli import app
from portal.store import db, tables
from tests.databases import Backend
from tests.factories import INCIDENT, PARK_A, THEATER_B, write_csv
from tests.fixtures_mail import wait_for_sync
from tests.server import assert_operator_error, count, environment, portal

SLUG = "ticketing-2021"


def records(stats_output: str, partner: str) -> int:
    match = re.search(rf"{partner}\W+(\d+)", stats_output)
    assert match, f"no {partner!r} in:\n{stats_output}"
    return int(match.group(1))


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> tuple[Path, list[str]]:
    """An instance with the personas' incident and park-a imported: (folder, outputs)."""
    folder = tmp_path_factory.mktemp("cli")
    backend.new_database(folder / "instance")
    (folder / "incident.toml").write_text(INCIDENT, encoding="utf-8")
    write_csv(folder / "park-a.csv", PARK_A)
    write_csv(folder / "theater-b.csv", THEATER_B)
    write_csv(folder / "colours.csv", [["email", "Lievelingskleur"], ["x@example.org", "rood"]])
    load = portal(folder, "incident", "load", "incident.toml")
    assert load.returncode == 0, load.stderr
    imported = portal(folder, "import", SLUG, "park-a", "park-a.csv")
    assert imported.returncode == 0, imported.stderr
    return folder, [load.stdout, imported.stdout]


def test_it_creates_the_database_on_init(tmp_path: Path, backend: Backend) -> None:
    url = backend.new_database(tmp_path / "instance")  # empty: no table in it yet
    result = portal(tmp_path, "init")
    assert result.returncode == 0, result.stderr
    assert backend.name != "sqlite" or (tmp_path / "instance" / "portal.db").is_file()
    engine = db.make_engine(url)
    assert db.is_migrated(engine)
    engine.dispose()
    assert "database ready" in result.stdout
    assert not (tmp_path / "instance" / "secret_key").exists()


@pytest.mark.backends(
    "postgresql", reason="watches PostgreSQL's lock table; SQLite's waiting writers are unseen"
)
def test_it_migrates_one_process_at_a_time(tmp_path: Path, backend: Backend) -> None:
    """Servers on several hosts start together, and each runs the migrations first."""
    engine = db.make_engine(backend.new_database(tmp_path / "instance"))
    with engine.connect() as holder:
        # Hold the migration lock, so that all three reach it before any migrates.
        holder.execute(select(func.pg_advisory_lock(db.MIGRATION_LOCK)))
        starts = [
            subprocess.Popen(
                [sys.executable, "-m", "portal", "init"],
                cwd=tmp_path,
                env=environment(tmp_path / "instance", None),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        wait_for_sync(lambda: waiting_for_a_lock(engine) == 3, timeout=60)
        holder.execute(select(func.pg_advisory_unlock(db.MIGRATION_LOCK)))
    results = [(start.wait(timeout=120), *start.communicate()) for start in starts]
    assert [status for status, _, _ in results] == [0, 0, 0], results
    with engine.connect() as conn:
        assert db.is_migrated(engine)
        assert conn.scalar(select(func.count()).select_from(tables.meta)) == 1  # one salt
    engine.dispose()


def waiting_for_a_lock(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.scalar(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    " AND database = (SELECT oid FROM pg_database"
                    " WHERE datname = current_database())"
                )
            )
            or 0
        )


def test_it_loads_an_incident_and_imports_with_a_summary(loaded: tuple[Path, list[str]]) -> None:
    _, (load, imported) = loaded
    assert f"incident {SLUG} created: 3 partner(s) added" in load
    assert "import summary" in imported
    assert count(imported, "rows read") == 2
    assert count(imported, "rows imported") == 2
    assert count(imported, "new addresses") == 2
    assert count(imported, "exposes email") == 2
    assert count(imported, "exposes phone") == 1


def test_it_writes_nothing_on_a_dry_run(loaded: tuple[Path, list[str]]) -> None:
    folder, _ = loaded
    dry = portal(folder, "import", SLUG, "theater-b", "theater-b.csv", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry run: nothing written" in dry.stdout
    assert count(dry.stdout, "rows that would be imported") == 1
    stats = portal(folder, "stats", SLUG, columns=200)
    assert stats.returncode == 0, stats.stderr
    assert records(stats.stdout, "park-a") == 2
    assert records(stats.stdout, "theater-b") == 0
    assert records(stats.stdout, "omroep-c") == 0


def test_it_stops_at_an_unknown_column_naming_the_fix(loaded: tuple[Path, list[str]]) -> None:
    folder, _ = loaded
    result = portal(folder, "import", SLUG, "omroep-c", "colours.csv")
    assert_operator_error(result, "Lievelingskleur", "--map")
    assert "import summary" not in result.stdout


def test_it_reports_an_unknown_column_on_one_line(loaded: tuple[Path, list[str]]) -> None:
    folder, _ = loaded
    result = portal(folder, "import", SLUG, "omroep-c", "colours.csv")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_it_stops_at_a_missing_file(loaded: tuple[Path, list[str]]) -> None:
    folder, _ = loaded
    result = portal(folder, "import", SLUG, "park-a", "no-such-file.csv")
    assert_operator_error(result, "no-such-file.csv")
    assert len(result.stderr.strip().splitlines()) == 1


def test_it_stops_at_an_unknown_partner_naming_the_known_ones(
    loaded: tuple[Path, list[str]],
) -> None:
    folder, _ = loaded
    result = portal(folder, "import", SLUG, "no-such-partner", "park-a.csv")
    assert_operator_error(result, "no-such-partner", "omroep-c", "park-a", "theater-b")


def test_it_prints_stats_with_whole_slugs_when_not_on_a_terminal(
    loaded: tuple[Path, list[str]],
) -> None:
    folder, _ = loaded
    result = portal(folder, "stats")
    assert result.returncode == 0, result.stderr
    for partner in ("omroep-c", "park-a", "theater-b"):
        assert re.search(rf"{SLUG}\W+{partner}\W+\d+", result.stdout), result.stdout
    for figure in ("found affected", "overdue", "median days"):
        assert figure in result.stdout
    assert re.search(rf"{SLUG}: 2 distinct people in the data, 0 lookup", result.stdout)


def test_it_refuses_stats_for_an_unknown_incident(loaded: tuple[Path, list[str]]) -> None:
    folder, _ = loaded
    assert_operator_error(portal(folder, "stats", "no-such-breach"), "no-such-breach")


def test_it_purges(loaded: tuple[Path, list[str]]) -> None:
    folder, _ = loaded
    result = portal(folder, "purge")
    assert result.returncode == 0, result.stderr
    assert "purged 0 link(s), 0 session(s)" in result.stdout


def test_it_erases_a_closed_incident_only_when_asked_with_all(tmp_path: Path) -> None:
    (tmp_path / "incident.toml").write_text(INCIDENT, encoding="utf-8")
    write_csv(tmp_path / "park-a.csv", PARK_A)
    assert portal(tmp_path, "incident", "load", "incident.toml").returncode == 0
    assert portal(tmp_path, "import", SLUG, "park-a", "park-a.csv").returncode == 0

    half = portal(tmp_path, "purge", "--incident", SLUG)
    assert half.returncode == 2 and "--all" in half.stderr
    assert portal(tmp_path, "purge", "--all").returncode == 2
    assert_operator_error(portal(tmp_path, "purge", "--incident", "no-such", "--all"), "no-such")

    done = portal(tmp_path, "purge", "--incident", SLUG, "--all")
    assert done.returncode == 0, done.stderr
    assert f"erased incident {SLUG}: 3 partner(s), 2 record(s), 0 deletion request(s)" in (
        done.stdout
    )
    assert_operator_error(portal(tmp_path, "stats", SLUG), SLUG)


def test_it_shows_usage_without_arguments(tmp_path: Path) -> None:
    result = portal(tmp_path, *[])
    assert result.returncode == 2
    assert "Usage" in result.stdout + result.stderr
    assert not (tmp_path / "instance").exists()


def test_it_shows_an_example_in_a_real_process(tmp_path: Path) -> None:
    result = portal(tmp_path, "import", "--help")
    assert result.returncode == 0
    assert "Example:" in result.stdout
    assert "--dry-run" in result.stdout


@pytest.mark.parametrize(
    "command",
    [
        ["init"],
        ["incident", "load"],
        ["import"],
        ["serve"],
        ["mail-worker"],
        ["purge"],
        ["stats"],
        ["export"],
        ["demo"],
    ],
)
def test_it_shows_an_example_in_every_help(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example:" in result.output
    assert "portal " in result.output.split("Example:")[1]


@pytest.mark.parametrize(
    ("command", "flags"),
    [
        ([], ["--version", "--help"]),
        (["import"], ["--dry-run", "--help"]),
        (["notify"], ["--dry-run"]),
        (["serve"], ["--no-mail-worker"]),
        (["purge"], ["--all"]),
        (["admin", "create"], ["--password-stdin"]),
        (["incident"], ["--help"]),
        (["incident", "list"], ["--help"]),
        (["stats"], ["--help"]),
    ],
    ids=lambda value: " ".join(value) or "portal",
)
def test_it_shows_flags_in_help_without_a_type(
    tmp_path: Path, command: list[str], flags: list[str]
) -> None:
    result = portal(tmp_path, *command, "--help")

    assert result.returncode == 0, result.stderr
    assert "<bool>" not in result.stdout
    for flag in flags:
        # The flag, then its help text: no value placeholder between them.
        assert re.search(rf"│ {flag} +[A-Z][a-z]", result.stdout), result.stdout


@pytest.mark.parametrize(
    ("database_url", "words"),
    [
        ("sqlite:///{folder}/notes.txt", ("cannot open the database", "not a database")),
        ("mysql://someone@127.0.0.1/portal", ("no driver for mysql", "breach-portal[postgres]")),
    ],
)
def test_it_explains_a_database_it_cannot_use(
    tmp_path: Path, database_url: str, words: tuple[str, ...]
) -> None:
    (tmp_path / "notes.txt").write_text("not a database, just notes\n" * 100)
    (tmp_path / ".env").write_text(f"PORTAL_DATABASE_URL={database_url.format(folder=tmp_path)}\n")
    assert_operator_error(portal(tmp_path, "init"), *words)
