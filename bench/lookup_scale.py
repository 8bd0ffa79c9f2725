"""Lookup latency against the size of the data, and database bytes per exposure.

For each size (default 10,000 and 2,000,000 exposures) a fresh database gets a small set of
known addresses imported the real way (`import_csv`, hashed), and the rest as random 32-byte
blind indexes written in bulk: nothing hashes two million addresses. Then:

- at the database level, the results query (`stored.exposures_of`: the partners where a
  blind index occurs) for known and unknown blind indexes;
- through a real `portal serve`: a lookup per known address (POST, 303), its link read from
  the instance outbox, the link confirmed (GET and POST /v/...), and the results page
  fetched again and again with that session;
- the size on disk: SQLite's file after VACUUM, PostgreSQL's pg_total_relation_size (the
  primary key is the exposures' only index since migration 0008).

Latency should be flat from 10 k to 2 M (B-tree lookups); bytes per exposure on SQLite
should be <= 120.

Usage: python bench/lookup_scale.py [SIZE ...] [--postgresql URL [--skip-sqlite]] [--queries N]
Example: python bench/lookup_scale.py 10000 2000000 --postgresql postgresql://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bruteforce import cpu_model  # noqa: E402
from bench.databases import drop_scratch, new_scratch  # noqa: E402
from portal.core.blind_index import blind_index  # noqa: E402
from portal.core.config import Settings  # noqa: E402
from portal.incidents import stored  # noqa: E402
from portal.incidents.importer import import_csv  # noqa: E402
from portal.incidents.stored import exposures_of, load_incident_file  # noqa: E402
from portal.store import db  # noqa: E402
from tests.factories import INCIDENT, write_csv  # noqa: E402
from tests.server import portal_env, running_portal  # noqa: E402

SLUG = "ticketing-2021"
KNOWN = 20
BULK = 50_000  # rows per transaction when filling
PEPPER = portal_env(Path("."))["PORTAL_PEPPER"].encode()  # what running_portal serves with
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
LINK = re.compile(r"/v/([A-Za-z0-9_.\-]+)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", type=int, nargs="*", default=[10_000, 2_000_000])
    parser.add_argument("--postgresql", metavar="URL")
    parser.add_argument(
        "--skip-sqlite", action="store_true", help="with --postgresql: PostgreSQL only"
    )
    parser.add_argument("--queries", type=int, default=2000, help="database queries per kind")
    parser.add_argument("--pages", type=int, default=400, help="results pages per size")
    args = parser.parse_args()
    print(f"{cpu_model()}, {os.cpu_count()} logical cores, Python {platform.python_version()}")
    print(f"{KNOWN} known addresses (hashed) + random blind indexes; load {_load()}")
    backends = ([] if args.skip_sqlite else ["sqlite"]) + (
        ["postgresql"] if args.postgresql else []
    )
    for backend in backends:
        for size in args.sizes:
            with tempfile.TemporaryDirectory() as folder:
                instance = Path(folder) / "instance"
                url = (
                    new_scratch(args.postgresql)
                    if backend == "postgresql"
                    else f"sqlite:///{instance}/portal.db"
                )
                try:
                    _measure(backend, instance, url, size, args)
                finally:
                    if backend == "postgresql":
                        drop_scratch(args.postgresql, url)


def _measure(backend: str, instance: Path, url: str, size: int, args: argparse.Namespace) -> None:
    settings = Settings(instance_dir=instance, database_url=url, secret_key="b", pepper=PEPPER)
    engine = db.make_engine(url)
    known = _fill(engine, settings, instance, size)
    if backend == "postgresql":
        # As autovacuum would after a large import, and docs/deployment.md advises.
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE exposures")
    print(f"{backend} {size:,} exposures (filled in {known.seconds:.0f} s), load {_load()}")
    _database_level(engine, known.bidx, args.queries)
    print(f"  {_size(engine, size)}")
    engine.dispose()
    _through_server(instance, url, known.addresses, args.pages)


class Known:
    def __init__(self, addresses: list[str], bidx: list[bytes], seconds: float) -> None:
        self.addresses, self.bidx, self.seconds = addresses, bidx, seconds


def _fill(engine: Engine, settings: Settings, instance: Path, size: int) -> Known:
    started = time.perf_counter()
    instance.mkdir(parents=True, exist_ok=True)
    db.migrate(engine)
    (instance / "incident.toml").write_text(INCIDENT, encoding="utf-8")
    load_incident_file(engine, instance / "incident.toml")
    addresses = [f"known{n}@example.org" for n in range(KNOWN)]
    rows = [["email", "naam", "telefoon"]] + [[a, "Naam", "06"] for a in addresses]
    import_csv(
        engine,
        settings,
        incident=SLUG,
        partner="park-a",
        path=write_csv(instance / "known.csv", rows),
    )
    with engine.begin() as conn:
        incident = stored.get_incident(conn, SLUG)
        assert incident is not None
        partners = [p.id for p in stored.get_partners(conn, incident.id)]
        salt = db.ensure_salt(conn)
    remaining = size - KNOWN
    while remaining > 0:
        batch = min(BULK, remaining)
        with engine.begin() as conn:
            for n, partner_id in enumerate(partners):
                share = batch // len(partners) + (n < batch % len(partners))
                db.write_exposures(
                    conn, partner_id, {secrets.token_bytes(32): 0b1011 for _ in range(share)}
                )
        remaining -= batch
    bidx = [
        blind_index(a, pepper=settings.pepper, salt=salt, params=incident.kdf) for a in addresses
    ]
    return Known(addresses, bidx, time.perf_counter() - started)


def _database_level(engine: Engine, known: list[bytes], queries: int) -> None:
    with engine.connect() as conn:
        incident = stored.get_incident(conn, SLUG)
        assert incident is not None
        for kind, keys in (("known", known), ("unknown", None)):
            times = []
            for n in range(queries):
                bidx = keys[n % len(keys)] if keys else secrets.token_bytes(32)
                started = time.perf_counter()
                found = exposures_of(conn, incident, bidx)
                times.append(time.perf_counter() - started)
                assert bool(found) == (keys is not None)
            print(f"  database  exposures_of {kind:<7} {_figures(times, 'us')}")


def _through_server(instance: Path, url: str, addresses: list[str], pages: int) -> None:
    extra = {
        "PORTAL_DATABASE_URL": url,
        "PORTAL_LIMIT_PER_CLIENT": "1000000/hour",
        "PORTAL_LIMIT_PER_ADDRESS": "1000/hour",
    }
    with running_portal(instance, **extra) as portal:
        links = _links(portal.url, instance, addresses)
        clients = [_session(portal.url, link) for link in links]
        times = []
        for n in range(pages):
            client = clients[n % len(clients)]
            started = time.perf_counter()
            response = client.get(f"/{SLUG}/results")
            times.append(time.perf_counter() - started)
            assert response.status_code == 200 and "data-partner" in response.text
        for client in clients:
            client.close()
    print(f"  server    GET results page  {_figures(times, 'ms')}")


def _links(base: str, instance: Path, addresses: list[str]) -> list[str]:
    with httpx.Client(base_url=base) as client:
        for address in addresses:
            form = client.get(f"/{SLUG}/")
            csrf = CSRF.search(form.text)
            assert csrf is not None
            sent = client.post(
                f"/{SLUG}/lookup", data={"email": address, "csrf_token": csrf.group(1)}
            )
            assert sent.status_code == 303, sent.status_code
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        mails = list((instance / "outbox").glob("*.eml")) if (instance / "outbox").exists() else []
        if len(mails) >= len(addresses):
            break
        time.sleep(0.1)
    links = []
    for mail in mails:
        found = LINK.search(mail.read_text(encoding="utf-8"))
        assert found is not None
        links.append(found.group(1))
    assert len(links) == len(addresses), f"{len(links)} links for {len(addresses)} lookups"
    return links


def _session(base: str, token: str) -> httpx.Client:
    client = httpx.Client(base_url=base)
    page = client.get(f"/v/{token}")
    csrf = CSRF.search(page.text)
    assert csrf is not None, page.status_code
    confirmed = client.post(f"/v/{token}", data={"csrf_token": csrf.group(1)})
    assert confirmed.status_code == 303, confirmed.status_code
    return client


def _size(engine: Engine, size: int) -> str:
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            total = conn.scalar(text("SELECT pg_total_relation_size('exposures')"))
            table = conn.scalar(text("SELECT pg_relation_size('exposures')"))
        return (
            f"PostgreSQL pg_total_relation_size(exposures): {total:,} bytes = "
            f"{total / size:.1f} bytes per exposure (table alone {table / size:.1f})"
        )
    path = make_url(str(engine.url)).database
    assert path
    # VACUUM INTO writes a compact copy in rollback-journal mode: in WAL mode a VACUUM's
    # pages would sit in the -wal file, and the main file would not shrink until later.
    copy = Path(path).with_name("vacuumed.db")
    with sqlite3.connect(path) as conn:
        conn.execute("VACUUM INTO ?", (str(copy),))
    whole = copy.stat().st_size
    copy.unlink()
    return f"SQLite file after VACUUM: {whole:,} bytes = {whole / size:.1f} bytes per exposure"


def _figures(seconds: list[float], unit: str) -> str:
    scale = 1e6 if unit == "us" else 1e3
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"n={len(seconds)}  median {statistics.median(ordered) * scale:7.1f} {unit}"
        f"  p99 {p99 * scale:7.1f} {unit}"
    )


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    main()
