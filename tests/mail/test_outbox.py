"""The outbox claimed in batches: one row to one worker, under the lease, on both backends."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

from sqlalchemy import Engine, select

from portal.core.clock import utcnow
from portal.core.config import Settings
from portal.mail.messages import Message
from portal.mail.outbox import LEASE, claim, enqueue_email
from portal.store import db, tables

MESSAGE = Message("Subject", "text", "<p>html</p>")


def queue(engine: Engine, count: int) -> set[int]:
    with engine.begin() as conn:
        return {
            enqueue_email(conn, kind="link", to=f"p{n}@example.org", message=MESSAGE)
            for n in range(count)
        }


def test_it_never_hands_one_row_to_two_claimers(engine: Engine, settings: Settings) -> None:
    queued = queue(engine, 300)
    now = utcnow()
    claimed: list[int] = []
    start = threading.Barrier(4)

    def worker() -> None:
        own = db.make_engine(settings.database_url)  # a process of its own, as it were
        try:
            start.wait()
            while True:
                with own.begin() as conn:
                    rows = claim(conn, now=now, limit=7, domain="example.net")
                if not rows:
                    return
                claimed.extend(row.id for row in rows)
        finally:
            own.dispose()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Counter(claimed).most_common(1)[0][1] == 1  # nobody got a row twice
    assert set(claimed) == queued
    with engine.connect() as conn:
        rows = conn.execute(select(tables.outbox)).all()
    assert {(r.status, r.attempts) for r in rows} == {("sending", 1)}
    assert len({r.message_id for r in rows}) == 300


def test_it_claims_a_row_again_only_after_its_lease_with_the_same_message_id(
    engine: Engine,
) -> None:
    queue(engine, 5)
    now = utcnow()
    with engine.begin() as conn:
        first = claim(conn, now=now, limit=3, domain="example.net")
        rest = claim(conn, now=now, limit=10, domain="example.net")
        assert claim(conn, now=now + LEASE, limit=10, domain="example.net") == []
        again = claim(conn, now=now + LEASE + timedelta(seconds=1), limit=10, domain="x")
    assert (len(first), len(rest)) == (3, 2)
    assert [r.id for r in again] == sorted(r.id for r in first + rest)
    assert {r.message_id for r in again} == {r.message_id for r in first + rest}
    assert all(r.message_id.endswith("@example.net>") for r in again)
    assert {r.attempts for r in again} == {2}
