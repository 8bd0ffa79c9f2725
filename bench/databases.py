"""Databases of their own for the benchmarks, on a PostgreSQL server: made by name, dropped."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

# The shared server of this machine (trust auth); a benchmark makes its own database there.
POSTGRESQL = "postgresql://postgres@127.0.0.1:5432/test"


def database_url(server_url: str, name: str) -> str:
    """The URL of database `name` on the server of `server_url`."""
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def create_database(server_url: str, name: str) -> str:
    _admin(server_url, f'CREATE DATABASE "{name}"')
    return database_url(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def scratch_database(server_url: str, name: str) -> Iterator[str]:
    """A new database `name`, dropped afterwards."""
    url = create_database(server_url, name)
    try:
        yield url
    finally:
        drop_database(server_url, name)


def _admin(server_url: str, sql: str) -> None:
    url = make_url(server_url).set(drivername="postgresql+psycopg")
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(sql))
    engine.dispose()


def new_scratch(server_url: str) -> str:
    """A new, empty database with a name of its own on the server; its URL."""
    return create_database(server_url, f"portal_bench_{uuid.uuid4().hex[:8]}")


def drop_scratch(server_url: str, url: str) -> None:
    """Drops the database of `url` (a run's pool may still hold connections to it)."""
    drop_database(server_url, str(make_url(url).database))
