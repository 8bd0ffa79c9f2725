"""Retention (design §4.6): what `purge` erases, and what it must keep."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import anyio
import pytest
from sqlalchemy import Engine, Table, select, update

from portal.core.clock import utcnow
from portal.core.config import Settings
from portal.mail.messages import Message
from portal.mail.outbox import ERASED, enqueue_email
from portal.operator.retention import purge
from portal.person.ratelimit import RateLimiter
from portal.person.sessions import VerifiedSession
from portal.requests.deletions import COMPLETED, REJECTED, request_deletion
from portal.store import tables
from tests.databases import stored_bytes
from tests.factories import ALICE, BOB, CAROL, RENDERER, ask_link, load_personas, sign_in_directly

NOW = utcnow()


@pytest.fixture
def personas(engine: Engine, settings: Settings, tmp_path: Path) -> Engine:
    load_personas(engine, settings, tmp_path)
    return engine


def ids(engine: Engine, table: Table) -> list[int]:
    with engine.connect() as conn:
        return list(conn.scalars(select(table.c.id).order_by(table.c.id)))


def set_row(engine: Engine, table: Table, row_id: int, **values: object) -> None:
    with engine.begin() as conn:
        conn.execute(update(table).where(table.c.id == row_id).values(**values))


def queue_mail(
    engine: Engine, *, status: str, age: timedelta, request_id: int | None = None
) -> int:
    with engine.begin() as conn:
        outbox_id = enqueue_email(
            conn,
            kind="test",
            to="someone@example.org",
            message=Message("subject", "text", "<p>html</p>"),
            deletion_request_id=request_id,
        )
    set_row(engine, tables.outbox, outbox_id, status=status, created_at=NOW - age)
    return outbox_id


def ask_deletion(engine: Engine, settings: Settings, session: VerifiedSession) -> list[int]:
    with engine.begin() as conn:
        made = request_deletion(conn, settings, session, partner="all", renderer=RENDERER)
    return [r.id for r in made]


def test_it_deletes_links_a_day_after_they_expire(personas: Engine, settings: Settings) -> None:
    limiter = RateLimiter(settings)
    for address in (ALICE, BOB, CAROL):
        anyio.run(ask_link, personas, settings, limiter, address)
    old, recent, live = ids(personas, tables.links)
    set_row(personas, tables.links, old, expires_at=NOW - timedelta(days=1, seconds=1))
    set_row(personas, tables.links, recent, expires_at=NOW - timedelta(hours=23))
    report = purge(personas, settings, now=NOW)
    assert report.links == 1
    assert ids(personas, tables.links) == [recent, live]


def test_it_deletes_expired_sessions(personas: Engine, settings: Settings) -> None:
    sign_in_directly(personas, settings, ALICE)
    sign_in_directly(personas, settings, BOB)
    expired, live = ids(personas, tables.sessions)
    set_row(personas, tables.sessions, expired, expires_at=NOW - timedelta(seconds=1))
    report = purge(personas, settings, now=NOW)
    assert report.sessions == 1
    assert ids(personas, tables.sessions) == [live]


def test_it_deletes_old_delivered_mail_but_keeps_proof_of_requests(
    personas: Engine, settings: Settings
) -> None:
    session = sign_in_directly(personas, settings, BOB)
    (request_id,) = ask_deletion(personas, settings, session)
    before = set(ids(personas, tables.outbox))
    old = timedelta(days=31)
    sent = queue_mail(personas, status="sent", age=old)
    failed = queue_mail(personas, status="failed", age=old)
    recent = queue_mail(personas, status="sent", age=timedelta(days=2))
    queued = queue_mail(personas, status="queued", age=old)
    proof = queue_mail(personas, status="sent", age=old, request_id=request_id)
    report = purge(personas, settings, now=NOW)
    assert report.outbox == 2
    left = set(ids(personas, tables.outbox))
    assert sent not in left
    assert failed not in left
    assert {recent, queued, proof} <= left
    assert before <= left


def close(engine: Engine, request_id: int, *, status: str, ago: timedelta) -> None:
    set_row(engine, tables.deletion_requests, request_id, status=status, closed_at=NOW - ago)


def emails(engine: Engine) -> dict[int, str | None]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(tables.deletion_requests.c.id, tables.deletion_requests.c.email)
        ).all()
    return dict(rows)  # type: ignore[arg-type]


def test_it_forgets_the_address_of_requests_closed_long_ago(
    personas: Engine, settings: Settings
) -> None:
    park, theater = ask_deletion(personas, settings, sign_in_directly(personas, settings, ALICE))
    (bob,) = ask_deletion(personas, settings, sign_in_directly(personas, settings, BOB))
    close(personas, park, status=COMPLETED, ago=timedelta(days=91))
    close(personas, theater, status=REJECTED, ago=timedelta(days=89))
    report = purge(personas, settings, now=NOW)
    assert report.deletion_addresses == 1
    assert emails(personas) == {park: None, theater: ALICE, bob: BOB}
    with personas.connect() as conn:
        kept = conn.execute(
            select(tables.deletion_requests).where(tables.deletion_requests.c.id == park)
        ).one()
    assert kept.reference.startswith("DR-")
    assert kept.status == COMPLETED


def test_it_keeps_the_address_of_an_open_request_however_old(
    personas: Engine, settings: Settings
) -> None:
    (bob,) = ask_deletion(personas, settings, sign_in_directly(personas, settings, BOB))
    set_row(personas, tables.deletion_requests, bob, received_at=NOW - timedelta(days=400))
    assert purge(personas, settings, now=NOW).deletion_addresses == 0
    assert emails(personas) == {bob: BOB}


def test_it_follows_the_configured_retention(personas: Engine, settings: Settings) -> None:
    (bob,) = ask_deletion(personas, settings, sign_in_directly(personas, settings, BOB))
    close(personas, bob, status=COMPLETED, ago=timedelta(days=6))
    assert purge(personas, settings, now=NOW).deletion_addresses == 0
    short = replace(settings, deletion_retention_days=5)
    assert purge(personas, short, now=NOW).deletion_addresses == 1
    assert emails(personas) == {bob: None}


def test_it_changes_nothing_the_second_time(personas: Engine, settings: Settings) -> None:
    (bob,) = ask_deletion(personas, settings, sign_in_directly(personas, settings, BOB))
    close(personas, bob, status=COMPLETED, ago=timedelta(days=100))
    queue_mail(personas, status="sent", age=timedelta(days=40))
    first = purge(personas, settings, now=NOW)
    assert (first.outbox, first.deletion_addresses) == (1, 1)
    second = purge(personas, settings, now=NOW)
    assert (second.links, second.sessions, second.outbox, second.deletion_addresses) == (
        0,
        0,
        0,
        0,
    )


def test_it_runs_on_an_empty_database(engine: Engine, settings: Settings) -> None:
    report = purge(engine, settings)
    assert (report.links, report.sessions, report.outbox, report.deletion_addresses) == (
        0,
        0,
        0,
        0,
    )


def test_it_uses_the_clock_when_not_told_the_time(personas: Engine, settings: Settings) -> None:
    sign_in_directly(personas, settings, BOB)
    (session,) = ids(personas, tables.sessions)
    set_row(personas, tables.sessions, session, expires_at=datetime(2000, 1, 1))
    assert purge(personas, settings).sessions == 1


# -- operator sessions, the audit log, a closed incident ---------------------------------


def test_it_deletes_expired_operator_sessions(personas: Engine, settings: Settings) -> None:
    from tests.factories import create_operators, start_operator_session

    create_operators(personas)
    start_operator_session(personas, settings)
    start_operator_session(personas, settings)
    expired, live = ids(personas, tables.operator_sessions)
    set_row(personas, tables.operator_sessions, expired, expires_at=NOW - timedelta(seconds=1))
    report = purge(personas, settings, now=NOW)
    assert report.operator_sessions == 1
    assert ids(personas, tables.operator_sessions) == [live]


def test_it_deletes_audit_entries_older_than_their_retention(
    personas: Engine, settings: Settings
) -> None:
    from portal.store import audit

    with personas.begin() as conn:
        for _ in range(3):
            audit.record(conn, actor="operator:dora", action="login", object="admin")
    old, edge, recent = ids(personas, tables.audit_log)
    set_row(personas, tables.audit_log, old, at=NOW - timedelta(days=731))
    set_row(personas, tables.audit_log, edge, at=NOW - timedelta(days=729))
    assert purge(personas, settings, now=NOW).audit_entries == 1
    assert ids(personas, tables.audit_log) == [edge, recent]
    assert purge(personas, replace(settings, audit_retention_days=30), now=NOW).audit_entries == 1
    assert ids(personas, tables.audit_log) == [recent]


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t.name: len(conn.execute(select(t)).all())
            for t in (tables.incidents, tables.partners, tables.exposures, tables.links,
                      tables.sessions, tables.deletion_requests, tables.deletion_events,
                      tables.outbox, tables.counters)
        }  # fmt: skip


def test_it_erases_a_closed_incident_entirely_and_nothing_else(
    personas: Engine, settings: Settings, tmp_path: Path
) -> None:
    from portal.incidents.stored import load_incident_file
    from portal.operator.retention import purge_incident
    from tests.factories import INCIDENT

    other = tmp_path / "other.toml"
    other.write_text(INCIDENT.replace('slug = "ticketing-2021"', 'slug = "webshop-2022"'))
    load_incident_file(personas, other)
    made = ask_deletion(personas, settings, sign_in_directly(personas, settings, ALICE))
    with personas.begin() as conn:
        conn.execute(update(tables.deletion_requests).values(status=COMPLETED, closed_at=NOW))
        # Delivered, as the mail worker leaves it: the recipient and bodies erased.
        conn.execute(update(tables.outbox).values(status="sent", **ERASED))
    assert len(made) == 2

    gone = purge_incident(personas, "ticketing-2021")

    assert (gone.partners, gone.exposures, gone.requests) == (3, 3, 2)
    left = counts(personas)
    assert left["incidents"] == 1 and left["partners"] == 3  # webshop-2022's
    for table in (
        "exposures",
        "links",
        "sessions",
        "deletion_requests",
        "deletion_events",
        "counters",
    ):
        assert left[table] == 0, table
    with personas.connect() as conn:
        kinds = set(conn.scalars(select(tables.outbox.c.kind)))
        assert conn.scalar(select(tables.incidents.c.slug)) == "webshop-2022"
    assert "partner_request" not in kinds, "the requests' messages went with them"
    assert ALICE.encode() not in stored_bytes(settings.database_url)


def test_it_refuses_to_erase_an_incident_still_open(personas: Engine, settings: Settings) -> None:
    from portal.core.errors import PortalError
    from portal.operator.retention import purge_incident

    ask_deletion(personas, settings, sign_in_directly(personas, settings, BOB))
    before = counts(personas)
    with pytest.raises(PortalError, match="1 open deletion request"):
        purge_incident(personas, "ticketing-2021")
    with personas.begin() as conn:
        conn.execute(update(tables.deletion_requests).values(status=COMPLETED, closed_at=NOW))
    with pytest.raises(PortalError, match="still being delivered"):
        purge_incident(personas, "ticketing-2021")
    with pytest.raises(PortalError, match="unknown incident"):
        purge_incident(personas, "no-such-incident")
    assert counts(personas) == before
