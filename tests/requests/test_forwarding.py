"""Forwarding to partners: signed webhooks to a real receiver, a partner down an hour, reminders."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import re
import threading
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import anyio
import pytest
from sqlalchemy import Engine, func, select, update

from portal.core.clock import utcnow
from portal.core.config import Settings
from portal.incidents.importer import import_csv
from portal.incidents.stored import load_incident_file
from portal.mail.outbox import each
from portal.mail.worker import MailWorker
from portal.requests.deletions import DeletionRequest, mark_forward_failed, mark_forwarded
from portal.requests.forwarding import remind_periodically, send_due_reminders
from portal.store import tables
from tests.factories import BOB, INCIDENT, PARK_A, RENDERER, Clock, ask_deletion, write_csv
from tests.fixtures_mail import SmtpServer, WebhookReceiver, running_webhook_receiver, wait_for

SLUG = "ticketing-2021"
SECRET = "park-a-hook-secret"


@pytest.fixture
def receiver() -> object:
    with running_webhook_receiver(secret=SECRET) as running:
        yield running


@pytest.fixture
def mail_settings(settings: Settings, smtp_server: SmtpServer) -> Settings:
    return replace(settings, smtp_url=smtp_server.url())


def load(
    engine: Engine, settings: Settings, folder: Path, webhook_url: str, secret: str = SECRET
) -> None:
    line = 'contact_email = "privacy@park-a.example"\n'
    text = INCIDENT.replace(
        line, line + f'webhook_url = "{webhook_url}"\nwebhook_secret = "{secret}"\n'
    )
    (folder / "incident.toml").write_text(text, encoding="utf-8")
    load_incident_file(engine, folder / "incident.toml")
    import_csv(
        engine,
        settings,
        incident=SLUG,
        partner="park-a",
        path=write_csv(folder / "park-a.csv", PARK_A),
    )


def worker(engine: Engine, settings: Settings, clock: Clock) -> MailWorker:
    """The outbox worker as the portal runs it, on a clock the test moves."""
    return MailWorker(
        engine,
        settings,
        on_sent=each(mark_forwarded),
        on_failed=each(mark_forward_failed),
        clock=clock,
    )


def proof(engine: Engine, made: DeletionRequest, kind: str):  # type: ignore[no-untyped-def]
    o = tables.outbox.c
    with engine.connect() as conn:
        return conn.execute(
            select(tables.outbox).where(o.deletion_request_id == made.id, o.kind == kind)
        ).one()


def status(engine: Engine, made: DeletionRequest) -> str:
    t = tables.deletion_requests.c
    with engine.connect() as conn:
        return str(conn.scalar(select(t.status).where(t.id == made.id)))


@pytest.mark.anyio
async def test_it_posts_a_webhook_the_partner_can_verify(
    engine: Engine,
    mail_settings: Settings,
    tmp_path: Path,
    receiver: WebhookReceiver,
    smtp_server: SmtpServer,
) -> None:
    load(engine, mail_settings, tmp_path, receiver.url)
    (made,) = await anyio.to_thread.run_sync(ask_deletion, engine, mail_settings, BOB, "park-a")

    await worker(engine, mail_settings, Clock(utcnow())).deliver_due()

    (hook,) = receiver.accepted
    payload = json.loads(hook.body)
    assert payload["reference"] == made.reference and payload["email"] == BOB
    assert payload["type"] == "gdpr.art17.erasure" and payload["partner"] == "park-a"
    assert (
        payload["report_back"]["api"] == f"{mail_settings.base_url}/api/requests/{made.reference}"
    )
    assert payload["report_back"]["page"].startswith(f"{mail_settings.base_url}/r/")
    row = proof(engine, made, "partner_webhook")
    assert (row.status, row.response_status) == ("sent", 202)
    assert row.payload_sha256 == hashlib.sha256(hook.body).hexdigest()
    assert row.sent_at is not None and row.body_text is None and row.recipient is None
    mail = proof(engine, made, "partner_request")
    assert mail.status == "sent" and mail.message_id.startswith("<")
    assert status(engine, made) == "forwarded"
    assert [r.rcpt_tos for r in smtp_server.received if "privacy@park-a.example" in r.rcpt_tos]


@pytest.mark.anyio
async def test_it_retries_a_webhook_refused_for_a_wrong_signature(
    engine: Engine, mail_settings: Settings, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    load(engine, mail_settings, tmp_path, receiver.url, secret="a secret the partner does not know")
    (made,) = await anyio.to_thread.run_sync(ask_deletion, engine, mail_settings, BOB, "park-a")

    await worker(engine, mail_settings, Clock(utcnow())).deliver_due()

    assert [hook.answered for hook in receiver.requests] == [401]
    row = proof(engine, made, "partner_webhook")
    assert (row.status, row.response_status, row.last_error) == (
        "queued",
        401,
        "WebhookError: answered 401",
    )
    assert row.body_text is not None, "kept to be sent again"


@pytest.mark.anyio
async def test_it_loses_nothing_while_the_partner_is_down_for_an_hour(
    engine: Engine, mail_settings: Settings, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    load(engine, mail_settings, tmp_path, receiver.url)
    (made,) = await anyio.to_thread.run_sync(ask_deletion, engine, mail_settings, BOB, "park-a")
    receiver.fail_next(10_000)
    start = utcnow()
    clock = Clock(start)
    deliver = worker(engine, mail_settings, clock)
    attempts: list[datetime] = []

    while clock.now - start < timedelta(hours=1):
        before = len(receiver.requests)
        await deliver.deliver_due()
        if len(receiver.requests) > before:
            attempts.append(clock.now)
        clock.advance(seconds=5)
    receiver.fail_next(0)  # the partner is back
    while not receiver.accepted:
        await deliver.deliver_due()
        clock.advance(seconds=5)

    assert len(receiver.accepted) == 1
    assert [hook.answered for hook in receiver.requests[:-1]] == [503] * (
        len(receiver.requests) - 1
    )
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(attempts)]
    assert gaps[:6] == [5, 10, 20, 40, 80, 160]
    assert max(gaps) == 300, "backoff capped at 5 minutes"
    assert 15 <= len(receiver.requests) <= 20  # an hour of 5-minute retries, and the last one
    assert len({hook.body for hook in receiver.requests}) == 1, "the same payload each time"
    row = proof(engine, made, "partner_webhook")
    assert (row.status, row.response_status, row.attempts) == ("sent", 202, len(receiver.requests))
    assert row.payload_sha256 == hashlib.sha256(receiver.accepted[0].body).hexdigest()


# -- reminders -------------------------------------------------------------------------


def forwarded_long_ago(engine: Engine, made: DeletionRequest, days: int) -> datetime:
    at = utcnow() - timedelta(days=days)
    t = tables.deletion_requests
    with engine.begin() as conn:
        conn.execute(
            update(t)
            .where(t.c.id == made.id)
            .values(status="forwarded", received_at=at, forwarded_at=at)
        )
    return at


def reminders(engine: Engine) -> list:
    o = tables.outbox.c
    with engine.connect() as conn:
        return conn.execute(
            select(tables.outbox).where(o.kind == "partner_reminder").order_by(o.id)
        ).all()


def remind(engine: Engine, settings: Settings, now: datetime) -> int:
    return send_due_reminders(engine, settings, renderer=RENDERER, now=now)


def test_it_reminds_the_partner_every_n_days_until_the_request_closes(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    load(engine, settings, tmp_path, "http://127.0.0.1:9/hook")
    (made,) = ask_deletion(engine, settings, BOB, "park-a")
    at = forwarded_long_ago(engine, made, 0)
    day = timedelta(days=1)

    assert remind(engine, settings, at + 6 * day) == 0
    assert remind(engine, settings, at + 7 * day) == 1
    assert remind(engine, settings, at + 7 * day) == 0
    assert remind(engine, settings, at + 13 * day) == 0
    assert remind(engine, settings, at + 14 * day) == 1
    t = tables.deletion_requests
    with engine.begin() as conn:
        conn.execute(update(t).values(status="completed", closed_at=at + 15 * day))
    assert remind(engine, settings, at + 30 * day) == 0

    first, _second = reminders(engine)
    assert first.recipient == "privacy@park-a.example" and first.deletion_request_id == made.id
    assert made.reference in first.subject and first.subject.startswith("Herinnering")  # nl
    assert f"{settings.base_url}/r/" in first.body_text and BOB in first.body_text
    with engine.connect() as conn:
        assert conn.scalar(select(t.c.reminders_sent)) == 2


def test_it_follows_the_configured_reminder_interval(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    load(engine, settings, tmp_path, "http://127.0.0.1:9/hook")
    (made,) = ask_deletion(engine, settings, BOB, "park-a")
    at = forwarded_long_ago(engine, made, 0)
    every_three = replace(settings, partner_reminder_days=3)
    assert remind(engine, every_three, at + timedelta(days=3)) == 1
    assert remind(engine, settings, at + timedelta(days=6)) == 0


def test_it_does_not_remind_a_partner_that_never_got_the_request(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    load(engine, settings, tmp_path, "http://127.0.0.1:9/hook")
    ask_deletion(engine, settings, BOB, "park-a")  # still received: the partner has nothing yet
    assert remind(engine, settings, utcnow() + timedelta(days=30)) == 0


def test_it_sends_each_reminder_once_when_two_processes_look_at_once(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    load(engine, settings, tmp_path, "http://127.0.0.1:9/hook")
    alice_and_bob = [
        *ask_deletion(engine, settings, BOB, "park-a"),
        *ask_deletion(engine, settings, "alice@example.org", "park-a"),
    ]
    for made in alice_and_bob:
        forwarded_long_ago(engine, made, 8)
    start = threading.Barrier(2, timeout=30)
    sent: list[int] = []

    def process() -> None:
        start.wait()
        sent.append(remind(engine, settings, utcnow()))

    threads = [threading.Thread(target=process) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sum(sent) == 2
    assert sorted(r.deletion_request_id for r in reminders(engine)) == sorted(
        m.id for m in alice_and_bob
    )


@pytest.mark.anyio
async def test_it_reminds_from_the_periodic_task_next_to_the_mail_worker(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    load(engine, settings, tmp_path, "http://127.0.0.1:9/hook")
    (made,) = await anyio.to_thread.run_sync(ask_deletion, engine, settings, BOB, "park-a")
    forwarded_long_ago(engine, made, 8)
    stop, woken = asyncio.Event(), asyncio.Event()

    async with anyio.create_task_group() as group:
        group.start_soon(
            lambda: remind_periodically(
                engine, settings, stop, renderer=RENDERER, queued=woken.set, interval=0.05
            )
        )
        await wait_for(woken.is_set)
        await wait_for(lambda: len(reminders(engine)) == 1)
        stop.set()

    with engine.connect() as conn:
        assert (
            conn.scalar(
                select(func.count())
                .select_from(tables.outbox)
                .where(tables.outbox.c.kind == "partner_reminder")
            )
            == 1
        )


def snippets() -> list[str]:
    text = (Path(__file__).parent.parent.parent / "docs" / "partners.md").read_text(
        encoding="utf-8"
    )
    return re.findall(r"```python\n(.*?)```", text, re.S)


@pytest.mark.anyio
async def test_it_is_verified_by_the_snippet_in_the_partner_docs(
    engine: Engine, mail_settings: Settings, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    load(engine, mail_settings, tmp_path, receiver.url)
    await anyio.to_thread.run_sync(ask_deletion, engine, mail_settings, BOB, "park-a")
    await worker(engine, mail_settings, Clock(utcnow())).deliver_due()
    (hook,) = receiver.accepted
    namespace: dict[str, object] = {}
    exec(snippets()[0], namespace)
    verify = namespace["verify"]

    assert verify(SECRET, hook.headers, hook.body) is True  # type: ignore[operator]
    assert verify("another secret", hook.headers, hook.body) is False  # type: ignore[operator]
    assert verify(SECRET, hook.headers, hook.body + b" ") is False  # type: ignore[operator]
