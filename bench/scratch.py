"""A scratch PostgreSQL database for one benchmark run: made on the server, then dropped."""

from __future__ import annotations

import uuid

from sqlalchemy.engine import make_url

from portal.store import db


def scratch_database(admin_url: str) -> str:
    """A new, empty database on the server of `admin_url`; its URL."""
    name = f"portal_bench_{uuid.uuid4().hex[:8]}"
    _admin(admin_url, f'CREATE DATABASE "{name}"')
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, url: str) -> None:
    # FORCE: a run's pool may still hold connections to it (PostgreSQL 13 and later).
    _admin(admin_url, f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


def _admin(admin_url: str, sql: str) -> None:
    engine = db.make_engine(admin_url).execution_options(isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(sql)
    engine.dispose()
