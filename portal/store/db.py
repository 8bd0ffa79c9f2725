"""Engine and connection helpers for SQLite and PostgreSQL, and the Alembic migrations."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Executable,
    Table,
    create_engine,
    event,
    func,
    inspect,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, NoSuchModuleError, OperationalError

from portal.core.errors import PortalError
from portal.store import tables

MIGRATIONS = Path(__file__).parent / "migrations"
# pg_advisory_xact_lock's key for migrations: any constant no other code uses.
MIGRATION_LOCK = 0x706F7274616C  # "portal"
# Every connection a process opens stays open: as many as anyio's 40 web threads, the
# lookup writer and the mail worker can hold at once, so that none is an "overflow"
# connection, closed when returned and reopened (on SQLite, its PRAGMAs run again).
KEPT_OPEN: dict[str, Any] = {"pool_size": 48, "max_overflow": 16, "pool_timeout": 30}
DRIVER_HINT = "SQLite needs none; for PostgreSQL: pip install 'breach-portal[postgres]'"


def make_engine(url: str) -> Engine:
    """An engine for the URL; SQLite gets WAL, a busy timeout and secure_delete."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise PortalError(f"PORTAL_DATABASE_URL is not a database URL: {url}") from None
    try:
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            pool = {} if parsed.database in (None, "", ":memory:") else KEPT_OPEN
            engine = create_engine(parsed, connect_args={"timeout": 30}, **pool)
            event.listen(engine, "connect", _sqlite_pragmas)
            return engine
        if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        # No pre-ping: it would double every page's round trips. A connection the server
        # dropped fails one request, and SQLAlchemy then renews the whole pool.
        return create_engine(parsed, **KEPT_OPEN)
    except OSError as exc:
        raise PortalError(f"cannot create the database folder: {exc.strerror}") from None
    except (NoSuchModuleError, ModuleNotFoundError):
        raise PortalError(f"no driver for {parsed.drivername}: {DRIVER_HINT}") from None


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    # An erased value (an outbox recipient, say) must not be readable from the file.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def migrate(engine: Engine) -> None:
    """Creates or upgrades the schema to the newest migration, and the deployment salt."""
    if not _at_head(engine):
        _upgrade(engine)
    with engine.begin() as conn:
        ensure_salt(conn)


def head_revision() -> str:
    """The newest migration's revision: the number its file name starts with (the chain is
    linear; tests/store/test_migrations.py checks this against Alembic's own head)."""
    return max(path.name[:4] for path in (MIGRATIONS / "versions").glob("[0-9]" * 4 + "_*.py"))


def _at_head(engine: Engine) -> bool:
    """Whether the schema is at the newest migration already, read without Alembic: every
    command and server start asks, and importing Alembic costs more than the answer."""
    try:
        with engine.connect() as conn:
            version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    except DatabaseError:  # a new database, or one that does not answer: Alembic will say
        return False
    return version == head_revision()


def _upgrade(engine: Engine) -> None:
    from alembic import command
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as conn:
            _lock_for_migration(conn)
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
    except DatabaseError as exc:
        # psycopg's messages run over lines ("Is the server running ..."): the CLI prints one.
        reason = " ".join(str(exc.orig).split())
        raise PortalError(f"cannot open the database: {reason}") from None


def _lock_for_migration(conn: Connection) -> None:
    """One process migrates at a time: servers on several hosts may start at once.

    The others wait for the lock, then find the schema at head. PostgreSQL: an advisory
    lock held until the transaction ends (its DDL is transactional). SQLite: the write lock,
    taken up front instead of at the first CREATE.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
    elif conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def is_migrated(engine: Engine) -> bool:
    try:
        return inspect(engine).has_table("alembic_version")
    except OperationalError:
        return False


def ensure_salt(conn: Connection) -> bytes:
    """The per-deployment blind-index salt, created once and kept with the data."""
    query = select(tables.meta.c.value).where(tables.meta.c.key == "bidx_salt")
    value = conn.scalar(query)
    if value is None:
        # Another process may create it at the same moment: the first one's value stands.
        insert_ignore(
            conn, tables.meta, {"key": "bidx_salt", "value": secrets.token_hex(16)}, keys=["key"]
        )
        value = conn.execute(query).scalar_one()
    return bytes.fromhex(value)


def upsert(
    conn: Connection,
    table: Table,
    rows: Iterable[Mapping[str, Any]],
    *,
    keys: list[str],
    update: Mapping[str, Any],
) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE, for SQLite and PostgreSQL alike.

    `update` maps column names to expressions built with `excluded(table)` and the table.
    """
    rows = list(rows)
    if not rows:
        return
    conn.execute(upsert_statement(conn.dialect.name, table, keys=keys, update=update), rows)


def upsert_statement(
    dialect: str, table: Table, *, keys: list[str], update: Mapping[str, Any]
) -> Executable:
    """The statement `upsert` runs, for a caller that builds it once and keeps it."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(table)
    values = {
        name: expr(stmt.excluded) if callable(expr) else expr for name, expr in update.items()
    }
    return stmt.on_conflict_do_update(index_elements=keys, set_=values)


def insert_ignore(
    conn: Connection, table: Table, values: Mapping[str, Any], *, keys: list[str]
) -> bool:
    """Inserts unless the keys exist; tells whether a row was inserted.

    The database says so with RETURNING: SQLAlchemy keeps `rowcount` only for UPDATE and
    DELETE, and psycopg answers -1 for an INSERT once the cursor is closed (SQLite's driver
    happens to keep the count), which made every insert look like a conflict there.
    """
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(table).values(**values).on_conflict_do_nothing(index_elements=keys)
    return conn.execute(stmt.returning(*table.primary_key.columns)).first() is not None


def checkpoint(engine: Engine) -> None:
    """Truncates SQLite's write-ahead log, so that erased values leave no copy in it."""
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


def write_exposures(conn: Connection, partner_id: int, indexed: Mapping[bytes, int]) -> None:
    """Adds each blind index's field bits to its exposure at the partner (a set union).

    PostgreSQL: COPY into a temporary table, then one INSERT ... SELECT ... ON CONFLICT;
    SQLite: one prepared INSERT ... ON CONFLICT run per row, in process (no round trips to
    save). Each measured fastest there against multi-row INSERTs (`bench/import_writes.py`).
    """
    if conn.dialect.name == "postgresql":
        copy_exposures(conn, partner_id, indexed)
        return
    t = tables.exposures
    upsert(
        conn,
        t,
        [{"partner_id": partner_id, "bidx": b, "fields": f} for b, f in indexed.items()],
        keys=["partner_id", "bidx"],
        update={"fields": lambda ex: t.c.fields.op("|")(ex.fields)},
    )


def copy_exposures(conn: Connection, partner_id: int, indexed: Mapping[bytes, int]) -> None:
    """PostgreSQL COPY (binary) into a temporary table, merged with one INSERT ... SELECT.

    The temporary table is created in the same transaction that fills it and is emptied
    at its commit, so a pooler that hands out server connections per transaction is fine.
    """
    if not indexed:
        return
    conn.exec_driver_sql(
        "CREATE TEMPORARY TABLE IF NOT EXISTS exposures_in "
        "(bidx bytea NOT NULL, fields bigint NOT NULL) ON COMMIT DELETE ROWS"
    )
    # Emptied at commit, but a second call in the same transaction must not merge the
    # rows of the first again (under this partner).
    conn.exec_driver_sql("TRUNCATE exposures_in")
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy("COPY exposures_in (bidx, fields) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["bytea", "int8"])
        for bidx, bits in indexed.items():
            copy.write_row((bidx, bits))
    # In blind index order: concurrent imports of overlapping files lock the rows they
    # merge in one order, so that they wait for each other but never deadlock.
    conn.exec_driver_sql(_MERGE, {"partner": partner_id})


# Field sets only ever grow: a known exposure gains the new bits.
_MERGE = (
    "INSERT INTO exposures (partner_id, bidx, fields) "
    "SELECT %(partner)s, bidx, fields FROM exposures_in ORDER BY bidx "
    "ON CONFLICT (partner_id, bidx) DO UPDATE SET fields = exposures.fields | excluded.fields"
)
