"""A pepper other than the import's never turns into "not affected": every command that
hashes addresses refuses to start with it, as the operator runs them (real processes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from portal.store import db, tables
from tests.databases import Backend, database_url_of
from tests.factories import INCIDENT, PARK_A, PEPPER_REFUSAL, SLUG, THEATER_B, write_csv
from tests.fixtures_mail import free_port
from tests.server import environment

# README step 3 as it read before: a pepper exported after steps 1-2 had generated one.
EXPORTED_LATER = "the-pepper-exported-in-step-3"
COMMANDS = {
    "serve": ("serve", "--port", "{port}"),
    "import": ("import", SLUG, "theater-b", "theater-b.csv"),
    "notify": ("notify", SLUG, "park-a", "park-a.csv"),
    "letters": ("letters", SLUG, "park-a", "park-a.csv", "--out", "post"),
    "mail-worker": ("mail-worker",),
}


def portal(folder: Path, *args: str, pepper: str | None) -> subprocess.CompletedProcess[str]:
    """`portal ARGS` in `folder`; pepper None: the one generated into the instance folder."""
    env = environment(folder / "instance", None) | {"PORTAL_BASE_URL": "http://lek.example.org"}
    if pepper is None:
        del env["PORTAL_PEPPER"]
    else:
        env["PORTAL_PEPPER"] = pepper
    return subprocess.run(
        [sys.executable, "-m", "portal", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def steps_one_and_two(folder: Path, backend: Backend) -> Path:
    """`portal incident load` and `portal import` without PORTAL_PEPPER set."""
    backend.new_database(folder / "instance")
    (folder / "incident.toml").write_text(INCIDENT, encoding="utf-8")
    write_csv(folder / "park-a.csv", PARK_A)
    write_csv(folder / "theater-b.csv", THEATER_B)
    for args in (("incident", "load", "incident.toml"), ("import", SLUG, "park-a", "park-a.csv")):
        done = portal(folder, *args, pepper=None)
        assert done.returncode == 0, done.stderr
    assert (folder / "instance" / "pepper").is_file()
    return folder


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Path:
    return steps_one_and_two(tmp_path_factory.mktemp("pepper"), backend)


def url_of(folder: Path) -> str:
    instance = folder / "instance"
    return database_url_of(instance) or f"sqlite:///{instance / 'portal.db'}"


def counts(folder: Path) -> tuple[int, int, int]:
    """Records, notices and outbox rows in the instance's database."""
    engine = db.make_engine(url_of(folder))
    try:
        with engine.connect() as conn:
            return tuple(  # type: ignore[return-value]
                int(conn.scalar(select(func.count()).select_from(table)) or 0)
                for table in (tables.exposures, tables.notices, tables.outbox)
            )
    finally:
        engine.dispose()


@pytest.mark.parametrize("command", list(COMMANDS))
def test_it_refuses_to_start_with_another_pepper(imported: Path, command: str) -> None:
    before = counts(imported)
    args = [arg.format(port=free_port()) for arg in COMMANDS[command]]

    refused = portal(imported, *args, pepper=EXPORTED_LATER)

    assert refused.returncode == 1, refused.stderr + refused.stdout
    assert "Traceback" not in refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {PEPPER_REFUSAL}"], refused.stderr
    assert counts(imported) == before


def test_it_runs_the_same_command_with_the_pepper_of_the_import(imported: Path) -> None:
    done = portal(imported, "import", SLUG, "theater-b", "theater-b.csv", pepper=None)
    assert done.returncode == 0, done.stderr
    assert "imported 1 row(s)" in done.stdout


def test_it_adopts_the_pepper_for_records_older_than_fingerprints_with_a_warning(
    tmp_path: Path, backend: Backend
) -> None:
    folder = steps_one_and_two(tmp_path, backend)
    engine = db.make_engine(url_of(folder))
    with engine.begin() as conn:  # as before migration 0009
        conn.execute(update(tables.incidents).values(pepper_fingerprint=None))
    engine.dispose()

    adopted = portal(folder, "import", SLUG, "theater-b", "theater-b.csv", pepper=None)

    assert adopted.returncode == 0, adopted.stderr
    assert (
        f"WARNING: incident {SLUG} holds records imported before pepper fingerprints were kept"
        in adopted.stderr
    )
    again = portal(folder, "import", SLUG, "theater-b", "theater-b.csv", pepper=None)
    assert "fingerprints" not in again.stderr
    refused = portal(folder, "notify", SLUG, "park-a", "park-a.csv", pepper=EXPORTED_LATER)
    assert (refused.returncode, refused.stderr.strip()) == (1, f"error: {PEPPER_REFUSAL}")
