"""Import writes alone: ways of writing exposure chunks, timed without any hashing.

Random 32-byte blind indexes stand for hashed addresses. Each method writes ROWS new
exposures in chunks of the importer's size, then the same rows again with one more field
(every one an update: the field-set union), each chunk in its own transaction as the
importer does. `portal.store.db.write_exposures` uses what wins here: COPY on PostgreSQL, the
prepared INSERT run per row on SQLite.

Usage: python bench/import_writes.py [ROWS] [--postgresql URL]
Example: python bench/import_writes.py 100000 --postgresql postgresql://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Connection, Engine, text

from portal.incidents.importer import CHUNK
from portal.incidents.stored import load_incident_file
from portal.store import db, tables

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.databases import drop_scratch, new_scratch
from tests.factories import INCIDENT

Method = Callable[[Connection, int, dict[bytes, int]], None]


def executemany(conn: Connection, partner_id: int, indexed: dict[bytes, int]) -> None:
    """One INSERT ... ON CONFLICT, executed once per row (psycopg: in a pipeline)."""
    t = tables.exposures
    db.upsert(
        conn,
        t,
        [{"partner_id": partner_id, "bidx": b, "fields": f} for b, f in indexed.items()],
        keys=["partner_id", "bidx"],
        update={"fields": lambda ex: t.c.fields.op("|")(ex.fields)},
    )
    # What portal.store.db.write_exposures does on SQLite.


def multirow(conn: Connection, partner_id: int, indexed: dict[bytes, int]) -> None:
    """One INSERT ... VALUES (...), (...), ... ON CONFLICT per chunk.

    Written as text: SQLAlchemy compiles a multi-row VALUES anew for each chunk (it cannot
    cache it), which measured 3 to 4 times slower than this.
    """
    mark = "%s" if conn.dialect.name == "postgresql" else "?"
    values = ", ".join([f"({mark}, {mark}, {mark})"] * len(indexed))
    params = tuple(value for bidx, bits in indexed.items() for value in (partner_id, bidx, bits))
    conn.exec_driver_sql(
        f"INSERT INTO exposures (partner_id, bidx, fields) VALUES {values} "
        "ON CONFLICT (partner_id, bidx) DO UPDATE SET fields = exposures.fields | excluded.fields",
        params,
    )


def copy(conn: Connection, partner_id: int, indexed: dict[bytes, int]) -> None:
    """COPY into a temporary table, then one INSERT ... SELECT ... ON CONFLICT."""
    db.copy_exposures(conn, partner_id, indexed)


def run(engine: Engine, name: str, method: Method, rows: int) -> None:
    with engine.begin() as conn:
        partner_id = conn.execute(text("SELECT min(id) FROM partners")).scalar_one()
    keys = [secrets.token_bytes(32) for _ in range(rows)]
    for label, bits in (("insert", 0b11), ("union", 0b111)):
        started = time.perf_counter()
        for start in range(0, rows, CHUNK):
            with engine.begin() as conn:
                method(conn, partner_id, dict.fromkeys(keys[start : start + CHUNK], bits))
        seconds = time.perf_counter() - started
        print(f"  {name:<12} {label:<6} {rows / seconds:>9,.0f} rows/s  ({seconds:.2f} s)")
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT count(*), min(fields) FROM exposures")).one()
    assert tuple(stored) == (rows, 0b111), stored


def prepared(url: str, folder: Path) -> Engine:
    engine = db.make_engine(url)
    db.migrate(engine)
    (folder / "incident.toml").write_text(INCIDENT, encoding="utf-8")
    load_incident_file(engine, folder / "incident.toml")
    return engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", type=int, nargs="?", default=50_000)
    parser.add_argument("--postgresql", metavar="URL")
    args = parser.parse_args()
    print(f"{args.rows:,} exposures in chunks of {CHUNK:,}, one transaction per chunk")
    backends = ["sqlite"] + (["postgresql"] if args.postgresql else [])
    for backend in backends:
        print(backend)
        methods: dict[str, Method] = {"executemany": executemany, "multirow": multirow}
        if backend == "postgresql":
            methods["copy"] = copy
        for name, method in methods.items():
            # A fresh database for each method: none inherits another's free pages.
            with tempfile.TemporaryDirectory() as folder:
                if backend == "postgresql":
                    url = new_scratch(args.postgresql)
                else:
                    url = f"sqlite:///{folder}/bench.db"
                engine = prepared(url, Path(folder))
                run(engine, name, method, args.rows)
                engine.dispose()
                if backend == "postgresql":
                    drop_scratch(args.postgresql, url)


if __name__ == "__main__":
    main()
