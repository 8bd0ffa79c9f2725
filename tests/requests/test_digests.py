"""Partners in bulk: the daily digest to a forward="daily" partner, through a real SMTP server,
and its signed batch webhook to a real HTTP server."""

from __future__ import annotations

import json
import re
import threading
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.exc import OperationalError

from portal.core.clock import utcnow
from portal.core.config import Settings
from portal.mail.outbox import each
from portal.mail.worker import MailWorker
from portal.requests import digests
from portal.requests.decisions import retry
from portal.requests.deletions import Actor, DeletionRequest
from portal.store import tables
from tests.factories import (
    ALICE,
    BOB,
    DAILY_SECRET,
    RENDERER,
    Clock,
    ask_deletion,
    load_daily_partner,
)
from tests.fixtures_mail import Received, SmtpServer, WebhookReceiver, running_webhook_receiver
from tests.server import portal_cli

BASE = "http://127.0.0.1:8000"


@pytest.fixture
def mail_settings(settings: Settings, smtp_server: SmtpServer) -> Settings:
    return replace(settings, smtp_url=smtp_server.url())


@pytest.fixture
def receiver() -> object:
    with running_webhook_receiver(secret=DAILY_SECRET) as running:
        yield running


def worker(engine: Engine, settings: Settings) -> MailWorker:
    return MailWorker(
        engine, settings, on_sent=each(digests.mark_forwarded), on_failed=each(digests.mark_failed)
    )


def statuses(engine: Engine, *made: DeletionRequest) -> list[str]:
    t = tables.deletion_requests.c
    with engine.connect() as conn:
        return [str(conn.scalar(select(t.status).where(t.id == r.id))) for r in made]


def kinds(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.scalars(select(tables.outbox.c.kind).order_by(tables.outbox.c.id)))


def to_park_a(smtp_server: SmtpServer) -> list[Received]:
    return [r for r in smtp_server.received if r.rcpt_tos == ["privacy@park-a.example"]]


def asked(engine: Engine, settings: Settings) -> list[DeletionRequest]:
    return [ask_deletion(engine, settings, who, "park-a")[0] for who in (ALICE, BOB)]


@pytest.mark.anyio
async def test_it_mails_one_digest_with_each_reference_and_one_queue_link(
    engine: Engine, mail_settings: Settings, tmp_path: Path, smtp_server: SmtpServer
) -> None:
    load_daily_partner(engine, mail_settings, tmp_path)
    made = await anyio.to_thread.run_sync(asked, engine, mail_settings)
    assert "partner_request" not in kinds(engine), "no email per request"
    assert statuses(engine, *made) == ["received", "received"]

    queued = digests.send_due_digests(engine, mail_settings, renderer=RENDERER)
    await worker(engine, mail_settings).deliver_due()

    assert queued == 1
    (digest,) = to_park_a(smtp_server)
    message = digest.message
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert message["Subject"].startswith("2 new GDPR Art. 17 erasure request(s)")
    for request in made:
        assert f"{request.reference} - {request.due_on.strftime('%-d %B %Y')}" in text
    links = set(re.findall(re.escape(BASE) + r"/[^\s\"<>]+", text + html))
    assert len(links) == 1 and re.fullmatch(re.escape(BASE) + r"/r/partner/[\w.-]+", links.pop())
    assert ALICE not in text and BOB not in text, "the addresses are on the queue page only"
    assert statuses(engine, *made) == ["forwarded", "forwarded"]


@pytest.mark.anyio
async def test_it_never_puts_a_request_in_two_digests(
    engine: Engine, mail_settings: Settings, tmp_path: Path, smtp_server: SmtpServer
) -> None:
    load_daily_partner(engine, mail_settings, tmp_path)
    (alice,) = await anyio.to_thread.run_sync(ask_deletion, engine, mail_settings, ALICE, "park-a")
    now = utcnow()
    assert digests.send_due_digests(engine, mail_settings, renderer=RENDERER, now=now) == 1
    assert digests.send_due_digests(engine, mail_settings, renderer=RENDERER, now=now) == 0
    # A new request the same day waits for tomorrow's digest, which lists it alone.
    (bob,) = await anyio.to_thread.run_sync(ask_deletion, engine, mail_settings, BOB, "park-a")
    later = now + timedelta(hours=23)
    assert digests.send_due_digests(engine, mail_settings, renderer=RENDERER, now=later) == 0
    tomorrow = now + timedelta(days=1, minutes=1)
    assert digests.send_due_digests(engine, mail_settings, renderer=RENDERER, now=tomorrow) == 1
    await worker(engine, mail_settings).deliver_due()

    bodies = [r.content.decode() for r in to_park_a(smtp_server)]
    assert len(bodies) == 2
    assert alice.reference in bodies[0] and bob.reference not in bodies[0]
    assert bob.reference in bodies[1] and alice.reference not in bodies[1]
    with engine.connect() as conn:
        counts = list(conn.scalars(select(tables.partner_digests.c.requests).order_by("id")))
    assert counts == [1, 1]


def test_it_claims_the_requests_in_the_transaction_that_queues_the_digest(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    load_daily_partner(engine, settings, tmp_path)
    made = asked(engine, settings)
    # A digest whose transaction does not commit claims nothing and queues nothing.
    with pytest.raises(RuntimeError), engine.begin() as conn:
        (partner_id,) = digests.due_partners(conn, now=utcnow())
        digests.queue_digest(conn, settings, partner_id, now=utcnow(), renderer=RENDERER)
        raise RuntimeError("the process dies before the commit")
    t = tables.deletion_requests.c
    with engine.connect() as conn:
        assert list(conn.scalars(select(t.digest_id).where(t.id.in_([r.id for r in made])))) == [
            None,
            None,
        ]
    assert "partner_digest" not in kinds(engine)
    assert digests.send_due_digests(engine, settings, renderer=RENDERER) == 1


@pytest.mark.anyio
async def test_it_posts_one_signed_batch_a_day_to_a_webhook_partner(
    engine: Engine, mail_settings: Settings, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    load_daily_partner(engine, mail_settings, tmp_path, webhook_url=receiver.url)
    made = await anyio.to_thread.run_sync(asked, engine, mail_settings)
    assert "partner_webhook" not in kinds(engine), "no call per request"

    digests.send_due_digests(engine, mail_settings, renderer=RENDERER)
    await worker(engine, mail_settings).deliver_due()

    (hook,) = receiver.accepted  # its signature checked by the receiver, as a partner would
    body = json.loads(hook.body)
    assert body["type"] == "gdpr.art17.erasure.batch" and body["partner"] == "park-a"
    assert {r["reference"] for r in body["requests"]} == {r.reference for r in made}
    assert {r["email"] for r in body["requests"]} == {ALICE, BOB}
    assert body["queue"].startswith(f"{BASE}/r/partner/")
    assert statuses(engine, *made) == ["forwarded", "forwarded"]


@pytest.mark.anyio
async def test_it_marks_the_requests_failed_when_the_digest_cannot_be_sent(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    load_daily_partner(engine, settings, tmp_path)
    made = await anyio.to_thread.run_sync(asked, engine, settings)
    digests.send_due_digests(engine, settings, renderer=RENDERER)
    with engine.begin() as conn:  # a day of failed attempts
        conn.execute(update(tables.outbox).values(created_at=utcnow() - timedelta(days=2)))
    deliver = MailWorker(
        engine,
        replace(settings, smtp_url="smtp://127.0.0.1:9"),
        on_sent=each(digests.mark_forwarded),
        on_failed=each(digests.mark_failed),
        clock=Clock(utcnow()),
    )
    await deliver.deliver_due()
    assert statuses(engine, *made) == ["forward_failed", "forward_failed"]


def test_it_sends_due_digests_from_the_command_line(
    engine: Engine, mail_settings: Settings, tmp_path: Path, smtp_server: SmtpServer
) -> None:
    load_daily_partner(engine, mail_settings, tmp_path)
    asked(engine, mail_settings)

    smtp = {"PORTAL_SMTP_URL": mail_settings.smtp_url or ""}
    result = portal_cli(mail_settings, "partners", "digest", "ticketing-2021", **smtp)
    again = portal_cli(mail_settings, "partners", "digest", **smtp)
    unknown = portal_cli(mail_settings, "partners", "digest", "no-such-incident", **smtp)

    assert result.returncode == 0, result.stderr
    assert b"1 digest(s) queued" in result.stdout
    assert b"0 digest(s) queued" in again.stdout
    assert unknown.returncode == 1 and "no incident 'no-such-incident'" in unknown.stderr
    assert len(to_park_a(smtp_server)) == 1


def test_it_sends_one_digest_when_two_workers_look_at_once(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    load_daily_partner(engine, settings, tmp_path)
    asked(engine, settings)
    start = threading.Barrier(2)
    queued: list[int] = []

    def look() -> None:
        start.wait()
        try:
            queued.append(digests.send_due_digests(engine, settings, renderer=RENDERER))
        except OperationalError:  # SQLite: the other writer held the file; nothing written
            queued.append(0)

    workers = [threading.Thread(target=look) for _ in range(2)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()

    assert sorted(queued) == [0, 1]
    assert kinds(engine).count("partner_digest") == 1
    t = tables.deletion_requests.c
    with engine.connect() as conn:
        assert set(conn.scalars(select(t.digest_id))) == {1}


def test_it_puts_a_retried_request_in_the_next_digest(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    load_daily_partner(engine, settings, tmp_path)
    (alice,) = ask_deletion(engine, settings, ALICE, "park-a")
    now = utcnow()
    digests.send_due_digests(engine, settings, renderer=RENDERER, now=now)
    with engine.begin() as conn:  # its digest failed for a day
        o = tables.outbox.c
        (outbox_id,) = conn.scalars(select(o.id).where(o.kind == "partner_digest"))
        digests.mark_failed(conn, outbox_id, alice.id)
        retry(
            conn,
            settings,
            reference=alice.reference,
            actor=Actor("operator", "dora", "admin"),
            renderer=RENDERER,
        )
    later = now + timedelta(days=1, minutes=1)
    assert digests.send_due_digests(engine, settings, renderer=RENDERER, now=later) == 1
    with engine.connect() as conn:
        counts = list(conn.scalars(select(tables.partner_digests.c.requests).order_by("id")))
    assert counts == [1, 1]
    assert "partner_request" not in kinds(engine)
