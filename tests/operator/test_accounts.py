"""Operator accounts: argon2id hashes, password rules, rehashing, sessions, the admin CLI."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from sqlalchemy import Engine, select, update
from typer.testing import CliRunner

from portal.cli import app
from portal.core.clock import utcnow
from portal.core.config import Settings
from portal.core.errors import PortalError
from portal.operator import accounts
from portal.store import tables
from tests.databases import stored_bytes
from tests.factories import start_operator_session
from tests.server import environment

PASSWORD = "a long passphrase she keeps"


def create(engine: Engine, username: str = "dora", password: str = PASSWORD) -> accounts.Operator:
    with engine.begin() as conn:
        return accounts.create_operator(conn, username=username, password=password)


def authenticate(engine: Engine, username: str, password: str) -> accounts.Operator | None:
    with engine.begin() as conn:
        return accounts.authenticate(conn, username=username, password=password)


def stored_hash(engine: Engine, username: str = "dora") -> str:
    with engine.connect() as conn:
        t = tables.operators.c
        return str(conn.scalar(select(t.password_hash).where(t.username == username)))


def test_it_keeps_only_an_argon2id_hash_of_the_password(engine: Engine, settings: Settings) -> None:
    create(engine)
    assert stored_hash(engine).startswith("$argon2id$")
    engine.dispose()
    assert PASSWORD.encode() not in stored_bytes(settings.database_url)


@pytest.mark.parametrize(
    ("username", "password", "message"),
    [
        ("dora", "short pass", "at least 12 characters"),
        ("dora", "x" * 1025, "at most 1024"),
        ("dora", "Password1234", "too easy to guess"),
        ("dora", "1qaz2wsx3edc", "too easy to guess"),
        ("dora", "dora's very own secret", "too easy to guess"),
        ("dora@example.org", PASSWORD, "no @"),
        ("Dora Explorer", PASSWORD, "lower-case"),
        ("", PASSWORD, "1-64"),
    ],
)
def test_it_refuses_a_weak_password_or_a_bad_name(
    engine: Engine, username: str, password: str, message: str
) -> None:
    with pytest.raises(PortalError, match=message):
        create(engine, username, password)
    with engine.connect() as conn:
        assert accounts.list_operators(conn) == []


def test_it_ships_thousands_of_common_passwords() -> None:
    common = accounts.common_passwords()
    assert len(common) >= 5000
    assert {"123456", "password", "qwerty", "iloveyou"} <= common


def test_it_refuses_a_name_taken_already(engine: Engine) -> None:
    create(engine)
    with pytest.raises(PortalError, match="exists already"):
        create(engine, "dora", "some other long passphrase")


def test_it_signs_in_with_the_right_password_only(engine: Engine) -> None:
    create(engine)
    assert authenticate(engine, "dora", "a long passphrase she keep") is None
    assert authenticate(engine, "DORA", PASSWORD) is None
    signed_in = authenticate(engine, "dora", PASSWORD)
    assert signed_in is not None and signed_in.username == "dora"
    assert signed_in.last_login_at is not None


def test_it_answers_an_unknown_name_as_a_wrong_password(engine: Engine) -> None:
    create(engine)
    assert authenticate(engine, "nobody", PASSWORD) is None
    assert authenticate(engine, "nobody", "x" * 5000) is None


def test_it_rehashes_on_login_when_the_parameters_changed(engine: Engine) -> None:
    create(engine)
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    with engine.begin() as conn:
        conn.execute(update(tables.operators).values(password_hash=weak))
    assert authenticate(engine, "dora", "wrong, and no rehash then") is None
    assert stored_hash(engine) == weak

    assert authenticate(engine, "dora", PASSWORD) is not None

    renewed = stored_hash(engine)
    assert renewed != weak
    assert not accounts.HASHER.check_needs_rehash(renewed)
    assert authenticate(engine, "dora", PASSWORD) is not None


def load(engine: Engine, settings: Settings, token: str) -> accounts.OperatorSession | None:
    with engine.begin() as conn:
        return accounts.load_session(conn, settings, token)


def test_it_starts_a_new_session_at_each_login(engine: Engine, settings: Settings) -> None:
    create(engine)
    first, second = (
        start_operator_session(engine, settings),
        start_operator_session(engine, settings),
    )
    assert first != second
    one, other = load(engine, settings, first), load(engine, settings, second)
    assert one is not None and other is not None and one.id != other.id
    assert one.username == "dora"


def test_it_ends_sessions_at_once_when_the_account_is_disabled(
    engine: Engine, settings: Settings
) -> None:
    create(engine)
    token = start_operator_session(engine, settings)
    with engine.begin() as conn:
        accounts.disable_operator(conn, "dora")
    assert load(engine, settings, token) is None
    assert authenticate(engine, "dora", PASSWORD) is None
    with engine.connect() as conn:
        assert conn.scalar(select(tables.operator_sessions.c.id)) is None
        (listed,) = accounts.list_operators(conn)
    assert listed.disabled_at is not None


def test_it_ends_an_idle_session_and_an_old_one(engine: Engine, settings: Settings) -> None:
    create(engine)
    idle, old = start_operator_session(engine, settings), start_operator_session(engine, settings)
    s = tables.operator_sessions
    with engine.begin() as conn:
        idle_id, old_id = conn.scalars(select(s.c.id).order_by(s.c.id)).all()
        conn.execute(update(s).where(s.c.id == idle_id).values(expires_at=utcnow()))
        long_ago = utcnow() - accounts.SESSION_MAX_AGE - timedelta(minutes=1)
        conn.execute(update(s).where(s.c.id == old_id).values(created_at=long_ago))
    assert load(engine, settings, idle) is None
    assert load(engine, settings, old) is None


def test_it_refuses_a_person_session_token_as_an_operator_one(
    engine: Engine, settings: Settings
) -> None:
    from portal.core.tokens import session_tokens

    create(engine)
    person_token, _ = session_tokens(settings).issue()
    assert load(engine, settings, person_token) is None
    assert load(engine, settings, "") is None


# -- the CLI ---------------------------------------------------------------------------


def portal(folder: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "portal", *args],
        cwd=folder,
        env=environment(folder / "instance", None),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_it_creates_lists_and_disables_operators_from_the_cli(tmp_path: Path) -> None:
    created = portal(tmp_path, "admin", "create", "dora", "--password-stdin", stdin=PASSWORD + "\n")
    assert created.returncode == 0, created.stderr
    assert "operator dora created" in created.stdout

    listed = portal(tmp_path, "admin", "list")
    assert listed.returncode == 0, listed.stderr
    for column in ("name", "created", "last login", "disabled"):
        assert column in listed.stdout
    row = next(line for line in listed.stdout.splitlines() if "dora" in line)
    assert "never" in row and "UTC" in row

    disabled = portal(tmp_path, "admin", "disable", "dora")
    assert disabled.returncode == 0, disabled.stderr
    assert "their sessions have ended" in disabled.stdout
    row = next(
        line for line in portal(tmp_path, "admin", "list").stdout.splitlines() if "dora" in line
    )
    assert "never" in row and row.count("UTC") == 2


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (("create", "dora", "--password-stdin"), "secret\n", "at least 12 characters"),
        (("create", "dora", "--password-stdin"), "qwerty123456\n", "too easy to guess"),
        (("create", "dora", "--password-stdin"), "", "no password on standard input"),
        (("create", "dora@example.org", "--password-stdin"), PASSWORD, "no @"),
        (("disable", "nobody"), "", "no operator named 'nobody'"),
    ],
)
def test_it_refuses_operator_mistakes_in_one_line(
    tmp_path: Path, args: tuple[str, ...], stdin: str, message: str
) -> None:
    done = portal(tmp_path, "admin", *args, stdin=stdin)
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error:") and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


def test_it_asks_the_password_twice_without_showing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in environment(tmp_path / "instance", None).items():
        monkeypatch.setenv(name, value)
    runner = CliRunner()

    mismatch = runner.invoke(app, ["admin", "create", "dora"], input=f"{PASSWORD}\nother\n")
    assert mismatch.exit_code != 0
    assert PASSWORD not in mismatch.output

    done = runner.invoke(app, ["admin", "create", "dora"], input=f"{PASSWORD}\n{PASSWORD}\n")
    assert done.exit_code == 0, done.output
    assert "Repeat for confirmation" in done.output
    assert PASSWORD not in done.output
    assert "operator dora created" in done.output


@pytest.mark.parametrize("command", [["admin", "create"], ["admin", "list"], ["admin", "disable"]])
def test_it_shows_an_example_in_every_admin_help(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "portal " in result.output.split("Example:")[1]
