"""The database backends the suite runs on: a SQLite file, or PostgreSQL, one fresh one a test.

Every test that asks for `backend` (directly, or through `database_url`, `settings`, `engine`,
the e2e `instance` or the security `site`) runs once per backend: `test_x[sqlite]` and
`test_x[postgresql]`. `pytest --backend sqlite` (or `postgresql`) runs one of them only.
A test that can only hold on one backend says so: `@pytest.mark.backends("sqlite",
reason="reads the SQLite file")`.

On PostgreSQL the test session makes one database of its own and drops it at the end. A test
gets its own schema in it (the connection URL sets `search_path`). Measured on the 2-core
machine, per test: an empty schema migrated by the `engine` fixture, then dropped, about
0.2 s; a clone of a migrated template database (`CREATE DATABASE ... TEMPLATE`), its no-op
migration, then `DROP DATABASE`, about 0.35 s (the drop alone about 0.2 s). Data that a test
copies (the e2e seed: an instance with every CSV imported) cannot be cloned as a schema: it
lives in a database of its own, which each test clones as a template.

Where no PostgreSQL answers at PORTAL_TEST_POSTGRESQL_URL, the postgresql variants are
skipped with that reason; under CI (the `CI` variable, set by `.ci/run`) they fail.
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy.engine import make_url

BACKENDS = ("sqlite", "postgresql")
POSTGRESQL_URL = os.environ.get(
    "PORTAL_TEST_POSTGRESQL_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
# Databases a session makes are named PREFIX<pid>_<random>; one left by a killed session on
# this machine is dropped by the next session (its pid no longer runs).
PREFIX = "portal_test_"

# The database URL of each instance folder that a fixture made, read by tests/server.py so
# that `running_portal(instance)` and the CLI use the test's database.
_attached: dict[Path, str] = {}


def attach(folder: Path, url: str) -> None:
    """Remembers that the instance in `folder` keeps its data at `url`."""
    _attached[folder.resolve()] = url


def database_url_of(folder: Path) -> str | None:
    """The database URL attached to an instance folder, or None (its own SQLite file)."""
    return _attached.get(folder.resolve())


class Backend:
    """Where a test's database lives; `name` is "sqlite" or "postgresql"."""

    name: str

    def new_database(self, folder: Path, *, copyable: bool = False) -> str:
        """The URL of a new, empty database for the instance in `folder`, attached to it.

        `copyable`: a database `copy_database` can copy (on PostgreSQL, a whole database).
        """
        raise NotImplementedError

    def copy_database(self, source: Path, target: Path) -> str:
        """Copies the instance folder `source` (its database too) to `target`."""
        raise NotImplementedError


class Sqlite(Backend):
    name = "sqlite"

    def new_database(self, folder: Path, *, copyable: bool = False) -> str:
        # The portal's default: the file in the instance folder, so nothing to attach.
        return f"sqlite:///{folder / 'portal.db'}"

    def copy_database(self, source: Path, target: Path) -> str:
        shutil.copytree(source, target)  # the SQLite file is in the instance folder
        return self.new_database(target)


@dataclass
class Postgresql(Backend):
    """One database for the session; a schema per test; whole databases to copy."""

    admin_url: str
    name: str = "postgresql"
    database: str = field(default_factory=lambda: f"{PREFIX}{os.getpid()}_{secrets.token_hex(3)}")
    _schemas: Iterator[int] = field(default_factory=itertools.count)
    _copies: Iterator[int] = field(default_factory=itertools.count)
    _databases: list[str] = field(default_factory=list)

    def start(self) -> None:
        self._drop_stale_databases()
        self._create(self.database)

    def stop(self) -> None:
        for name in reversed(self._databases):
            self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def new_database(self, folder: Path, *, copyable: bool = False) -> str:
        if copyable:
            name = f"{self.database}_c{next(self._copies)}"
            self._create(name)
            url = self.url(name)
        else:
            schema = f"test_{next(self._schemas)}"
            self._admin(f'CREATE SCHEMA "{schema}"', database=self.database)
            url = self.url(self.database, schema=schema)
        attach(folder, url)
        return url

    def copy_database(self, source: Path, target: Path) -> str:
        shutil.copytree(source, target)
        template = make_url(database_url_of(source) or "").database
        name = f"{self.database}_c{next(self._copies)}"
        self._databases.append(name)
        self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        url = self.url(name)
        attach(target, url)
        return url

    def url(self, database: str, *, schema: str | None = None) -> str:
        url = make_url(self.admin_url).set(database=database)
        rendered = url.render_as_string(hide_password=False)
        # A test's commits need not wait for the disk: what other sessions see is the same.
        options = "-csynchronous_commit=off"
        if schema is not None:
            options += f" -csearch_path={schema}"
        return f"{rendered}?options={quote(options)}"

    def _create(self, name: str) -> None:
        self._databases.append(name)
        self._admin(f'CREATE DATABASE "{name}"')

    def _admin(self, sql: str, *, database: str | None = None) -> None:
        url = make_url(self.admin_url)
        if database is not None:
            url = url.set(database=database)
        with closing(_connect(url)) as conn:
            conn.execute(sql)

    def _drop_stale_databases(self) -> None:
        """Drops databases that a killed session on this machine left behind."""
        if make_url(self.admin_url).host not in ("127.0.0.1", "localhost", "::1", None):
            return
        with closing(_connect(make_url(self.admin_url))) as conn:
            names = [
                row[0]
                for row in conn.execute(
                    "SELECT datname FROM pg_database WHERE datname LIKE %s", (PREFIX + "%",)
                )
            ]
        for name in names:
            pid = name.removeprefix(PREFIX).split("_", 1)[0]
            if pid.isdigit() and not _running(int(pid)):
                self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _connect(url: Any) -> Any:
    import psycopg

    params = url.translate_connect_args(username="user", database="dbname")
    return psycopg.connect(**params, **dict(url.query), autocommit=True, connect_timeout=5)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _postgresql(admin_url: str) -> Postgresql:
    """The session's PostgreSQL backend; skips (fails under CI) when none answers."""
    shown = make_url(admin_url).render_as_string(hide_password=True)
    try:
        import psycopg
    except ImportError:
        _unavailable("psycopg is not installed (pip install -e '.[test]')")
    server = Postgresql(admin_url)
    try:
        server.start()
    except psycopg.OperationalError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        _unavailable(f"no PostgreSQL at {shown} ({first_line}); start it, or let .ci/run do it")
    return server


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI needs PostgreSQL: {reason}", pytrace=False)
    pytest.skip(reason)


# -- pytest hooks and fixtures -----------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend",
        action="append",
        choices=BACKENDS,
        help="run the database tests on this backend only (repeatable; default: both)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" not in metafunc.fixturenames:
        return
    names = metafunc.config.getoption("backend") or list(BACKENDS)
    marker = metafunc.definition.get_closest_marker("backends")
    if marker is not None:
        names = [name for name in names if name in marker.args]
    metafunc.parametrize("backend", names, indirect=True, scope="session")


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield Sqlite()
        return
    server = _postgresql(POSTGRESQL_URL)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def database_url(backend: Backend, tmp_path: Path) -> str:
    """A new, empty database of the test's backend (migrate it, or let the portal do it)."""
    return backend.new_database(tmp_path)


def stored_bytes(url: str) -> bytes:
    """Everything a database holds, to search for what must not be there.

    SQLite: the file and its write-ahead log, as they lie on disk. PostgreSQL: every row of
    every table of the URL's schema, as text (bytea in hex, so no blind index matches text).
    """
    from sqlalchemy import create_engine, text

    if make_url(url).get_backend_name() == "sqlite":
        path = Path(make_url(url).database or "")
        parts = [path, path.with_name(path.name + "-wal")]
        return b"".join(p.read_bytes() for p in parts if p.exists())
    engine = create_engine(make_url(url).set(drivername="postgresql+psycopg"))
    try:
        with engine.connect() as conn:
            names = conn.scalars(
                text(
                    "SELECT table_name FROM information_schema.tables"
                    " WHERE table_schema = current_schema()"
                )
            ).all()
            rows = [
                row
                for name in names
                for row in conn.scalars(text(f'SELECT CAST(t AS text) FROM "{name}" AS t'))
            ]
    finally:
        engine.dispose()
    return "\n".join(rows).encode()
