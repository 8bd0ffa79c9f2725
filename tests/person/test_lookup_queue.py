"""The lookup queue in-process: the writer batches, and the results page is one query."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, event, func, select
from starlette.testclient import TestClient

from portal.app import create_app
from portal.core.config import Settings
from portal.store import tables
from tests.factories import ALICE, BOB, load_personas
from tests.fixtures_mail import wait_for_sync
from tests.server import csrf, drain_lookups, sign_in

SLUG = "ticketing-2021"


def metric(client: TestClient, name: str) -> float:
    for row in client.get("/metrics").text.splitlines():
        if row.startswith(f"{name} "):
            return float(row.rsplit(" ", 1)[1])
    return 0.0


@contextmanager
def writes_held(engine: Engine) -> Iterator[None]:
    """Another transaction holds the lock that inserting a link needs, until the end."""
    with engine.connect() as conn, conn.begin() as transaction:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("LOCK TABLE links IN SHARE ROW EXCLUSIVE MODE")
        else:  # SQLite: any write takes the database's one write lock
            conn.execute(tables.meta.insert().values(key="held", value="1"))
        yield
        transaction.rollback()


def links(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(tables.links)) or 0)


def test_it_writes_what_piled_up_in_one_transaction(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    load_personas(engine, settings, tmp_path)
    app = create_app(replace(settings, hash_threads=2), deliver_mail=False)
    addresses = [ALICE, BOB, *(f"pile-{n}@example.net" for n in range(6))]
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        token = csrf(client.get(f"/{SLUG}/").text)
        hashed, written, batches = (
            metric(client, name)
            for name in (
                "portal_hashes_total",
                "portal_links_written_total",
                "portal_link_batches_total",
            )
        )
        with writes_held(engine):
            for address in addresses:
                client.post(f"/{SLUG}/lookup", data={"email": address, "csrf_token": token})
            # Every address hashed; the first batch waits for the lock, the rest for it.
            wait_for_sync(lambda: metric(client, "portal_hashes_total") == hashed + 8, timeout=60)
            assert links(engine) == 0
        drain_lookups(client)

        assert links(engine) == 8
        assert metric(client, "portal_links_written_total") == written + 8
        assert metric(client, "portal_link_batches_total") <= batches + 2


def test_it_reads_the_results_page_in_one_query(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    load_personas(engine, settings, tmp_path)
    app = create_app(replace(settings, incident_cache_ttl=3600), deliver_mail=False)
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        first = sign_in(client, engine, ALICE)
        statements: list[str] = []

        def record(conn: Connection, cursor: Any, statement: str, *args: Any) -> None:
            statements.append(statement)

        event.listen(app.state.engine, "before_cursor_execute", record)
        try:
            page = client.get(f"/{SLUG}/results").text
        finally:
            event.remove(app.state.engine, "before_cursor_execute", record)

    assert len(statements) == 1, statements
    assert re.findall(r'data-partner="([^"]+)"', page) == re.findall(
        r'data-partner="([^"]+)"', first
    )
    assert sorted(re.findall(r'data-partner="([^"]+)"', page)) == ["park-a", "theater-b"]
