"""Mail: templates, the outbox, delivery through a real SMTP server and a real webhook."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import stat
from dataclasses import replace
from datetime import UTC, date, timedelta
from typing import Any

import anyio
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Connection, Engine, Row, select, update

from portal.core.clock import utcnow
from portal.core.config import Settings
from portal.mail.delivery import OutboxDirSender, SmtpSender, sender_for
from portal.mail.messages import Message
from portal.mail.outbox import backoff, describe, each, enqueue_email, enqueue_webhook
from portal.mail.worker import MailWorker
from portal.store import db, tables
from tests.databases import stored_bytes
from tests.factories import LINK, Clock, hello
from tests.fixtures_mail import (
    SmtpServer,
    WebhookReceiver,
    running_smtp_server,
    running_webhook_receiver,
    wait_for,
)

ALICE = "alice.k7q2@example.org"


def queue(engine: Engine, *, to: str = ALICE, kind: str = "link", **fields: Any) -> int:
    with engine.begin() as conn:
        return enqueue_email(conn, kind=kind, to=to, message=hello(), **fields)


def outbox_row(engine: Engine, outbox_id: int) -> Row[Any]:
    with engine.connect() as conn:
        return conn.execute(select(tables.outbox).where(tables.outbox.c.id == outbox_id)).one()


def counted(name: str, kind: str) -> float:
    return REGISTRY.get_sample_value(name, {"kind": kind}) or 0.0


def file_bytes(settings: Settings) -> bytes:
    return stored_bytes(settings.database_url)


def test_it_renders_text_and_html_in_dutch_and_english() -> None:
    nl, en = hello("nl"), hello("en")
    assert nl.subject == "Uw link voor Parks & Co <b>"
    assert en.subject == "Your link for Parks & Co <b>"
    assert nl.text.startswith("Hallo, open deze link") and LINK in nl.text
    assert en.text.startswith("Hello, open this link") and LINK in en.text
    assert "Parks & Co <b>" in en.text
    assert "Parks &amp; Co &lt;b&gt;" in en.html and "<b>" not in en.html
    assert nl.html.startswith("<p>Hallo") and f'<a href="{LINK}">' in nl.html


def test_it_refuses_line_breaks_in_recipient_and_subject(engine: Engine) -> None:
    message = hello()
    with engine.begin() as conn:
        with pytest.raises(ValueError, match="to header"):
            enqueue_email(conn, kind="link", to=f"{ALICE}\r\nBcc: eve@example.org", message=message)
        with pytest.raises(ValueError, match="subject header"):
            bad = replace(message, subject="Hi\nBcc: eve@example.org")
            enqueue_email(conn, kind="link", to=ALICE, message=bad)
        assert conn.scalar(select(tables.outbox.c.id)) is None


@pytest.mark.anyio
async def test_it_does_not_send_a_row_with_a_line_break_in_a_header(
    engine: Engine, mail_settings: Settings, smtp_server: SmtpServer
) -> None:
    outbox_id = queue(engine)
    with engine.begin() as conn:
        conn.execute(update(tables.outbox).values(subject="Hi\r\nBcc: eve@example.org"))
    worker = MailWorker(engine, mail_settings)
    assert await worker.deliver_due() == 0
    row = outbox_row(engine, outbox_id)
    assert row.status == "queued"
    assert row.last_error == "ValueError: line break in the subject header refused"
    assert smtp_server.received == []


@pytest.mark.anyio
async def test_it_delivers_a_queued_email_through_smtp(
    engine: Engine,
    mail_settings: Settings,
    smtp_server: SmtpServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="portal.mail")
    before = counted("portal_emails_sent_total", "link")
    outbox_id = queue(engine)
    assert await MailWorker(engine, mail_settings).deliver_due() == 1
    [received] = smtp_server.received
    assert received.mail_from == "portal@example.net" and received.rcpt_tos == [ALICE]
    msg = received.message
    assert msg["From"] == "Portal <portal@example.net>" and msg["To"] == ALICE
    assert msg["Subject"] == "Your link for Parks & Co <b>"
    assert msg.get_content_type() == "multipart/alternative"
    plain, html = msg.iter_parts()
    assert plain.get_content_type() == "text/plain" and LINK in plain.get_content()
    assert html.get_content_type() == "text/html" and "Parks &amp; Co" in html.get_content()
    row = outbox_row(engine, outbox_id)
    assert row.status == "sent" and row.attempts == 1 and row.sent_at is not None
    assert row.message_id == msg["Message-ID"] and row.message_id.endswith("@example.net>")
    assert row.payload_sha256 == hashlib.sha256(received.content).hexdigest()
    assert counted("portal_emails_sent_total", "link") == before + 1
    assert ALICE not in caplog.text and LINK not in caplog.text and "Parks" not in caplog.text


@pytest.mark.anyio
async def test_it_erases_recipient_and_bodies_from_the_database_file(
    engine: Engine, mail_settings: Settings, smtp_server: SmtpServer
) -> None:
    outbox_id = queue(engine)
    assert ALICE.encode() in file_bytes(mail_settings)  # the check below can fail
    assert await MailWorker(engine, mail_settings).deliver_due() == 1
    row = outbox_row(engine, outbox_id)
    assert (row.recipient, row.subject, row.body_text, row.body_html) == (None,) * 4
    engine.dispose()
    contents = file_bytes(mail_settings)
    assert ALICE.encode() not in contents
    assert b"tok3n-secret" not in contents


@pytest.mark.anyio
async def test_it_retries_with_backoff_until_the_server_accepts(
    engine: Engine, mail_settings: Settings, smtp_server: SmtpServer
) -> None:
    outbox_id = queue(engine)
    clock = Clock(utcnow())
    worker = MailWorker(engine, mail_settings, clock=clock)
    smtp_server.fail_next(3)
    for attempt, wait in ((1, 5), (2, 10), (3, 20)):
        assert await worker.deliver_due() == 0
        row = outbox_row(engine, outbox_id)
        assert (row.status, row.attempts) == ("queued", attempt)
        assert row.next_attempt_at == clock.now + timedelta(seconds=wait)
        assert row.last_error.startswith("SMTPDataError: ") and ALICE not in row.last_error
        clock.advance(seconds=wait - 0.5)
        assert await worker.deliver_due() == 0  # not due yet
        clock.advance(seconds=0.5)
    assert await worker.deliver_due() == 1
    row = outbox_row(engine, outbox_id)
    assert (row.status, row.attempts, row.last_error) == ("sent", 4, None)
    assert len(smtp_server.received) == 1


def test_it_backs_off_from_5_seconds_doubling_to_5_minutes() -> None:
    waits = [backoff(n).total_seconds() for n in range(1, 10)]
    assert waits == [5, 10, 20, 40, 80, 160, 300, 300, 300]
    assert backoff(500) == timedelta(minutes=5)


def test_it_keeps_addresses_out_of_the_error() -> None:
    error = RuntimeError(f"({ALICE!r}, 'refused'); also bob@example.com")
    assert describe(error, ALICE) == "RuntimeError: ('<recipient>', 'refused'); also <address>"


@pytest.mark.anyio
async def test_it_gives_up_after_24_hours_and_calls_on_failed(
    engine: Engine, mail_settings: Settings, smtp_server: SmtpServer
) -> None:
    before = counted("portal_emails_failed_total", "receipt")
    outbox_id = queue(engine, kind="receipt")
    seen: list[tuple[int, int | None, str]] = []

    def on_failed(conn: Connection, failed_id: int, request_id: int | None) -> None:
        status = conn.scalar(select(tables.outbox.c.status).where(tables.outbox.c.id == failed_id))
        seen.append((failed_id, request_id, status))

    clock = Clock(utcnow())
    worker = MailWorker(engine, mail_settings, on_failed=each(on_failed), clock=clock)
    smtp_server.fail_next(100)
    assert await worker.deliver_due() == 0
    assert seen == []
    clock.advance(hours=24)
    assert await worker.deliver_due() == 0
    assert seen == [(outbox_id, None, "failed")]
    row = outbox_row(engine, outbox_id)
    assert (row.status, row.attempts) == ("failed", 2)
    assert (row.recipient, row.subject, row.body_text, row.body_html) == (None,) * 4
    assert row.last_error.startswith("SMTPDataError")
    assert counted("portal_emails_failed_total", "receipt") == before + 1
    clock.advance(hours=1)
    assert await worker.deliver_due() == 0
    assert smtp_server.received == []


@pytest.mark.anyio
async def test_it_picks_up_a_row_a_crashed_worker_left_sending(
    engine: Engine, mail_settings: Settings, smtp_server: SmtpServer
) -> None:
    outbox_id = queue(engine)
    clock = Clock(utcnow())
    with engine.begin() as conn:  # what a worker that died mid-send leaves behind
        conn.execute(
            update(tables.outbox).values(
                status="sending", attempts=1, lease_until=clock.now + timedelta(seconds=60)
            )
        )
    worker = MailWorker(engine, mail_settings, clock=clock)
    clock.advance(seconds=59)
    assert await worker.deliver_due() == 0
    clock.advance(seconds=2)
    assert await worker.deliver_due() == 1
    row = outbox_row(engine, outbox_id)
    assert (row.status, row.attempts, row.lease_until) == ("sent", 2, None)
    assert [r.rcpt_tos for r in smtp_server.received] == [[ALICE]]


@pytest.mark.anyio
async def test_it_sends_each_message_once_with_two_workers(
    engine: Engine, mail_settings: Settings, smtp_server: SmtpServer
) -> None:
    addresses = [f"person{n}@example.org" for n in range(30)]
    for address in addresses:
        queue(engine, to=address)
    other_engine = db.make_engine(mail_settings.database_url)
    try:
        one = MailWorker(engine, mail_settings, batch_size=100)
        two = MailWorker(other_engine, mail_settings, batch_size=100)
        counts = await asyncio.gather(one.deliver_due(), two.deliver_due())
    finally:
        other_engine.dispose()
    assert sum(counts) == 30
    assert sorted(r.rcpt_tos[0] for r in smtp_server.received) == sorted(addresses)
    with engine.connect() as conn:
        statuses = conn.scalars(select(tables.outbox.c.status).distinct()).all()
        attempts = conn.scalars(select(tables.outbox.c.attempts).distinct()).all()
    assert (statuses, attempts) == (["sent"], [1])


@pytest.mark.anyio
async def test_it_logs_in_with_the_credentials_in_the_url(
    engine: Engine, settings: Settings
) -> None:
    with running_smtp_server(credentials=("mailer", "s3cr@t:/")) as server:
        wrong = replace(settings, smtp_url=server.url("mailer", "wrong"))
        right = replace(settings, smtp_url=server.url("mailer", "s3cr@t:/"))
        outbox_id = queue(engine)
        clock = Clock(utcnow())
        assert await MailWorker(engine, wrong, clock=clock).deliver_due() == 0
        assert outbox_row(engine, outbox_id).last_error.startswith("SMTPAuthenticationError")
        clock.advance(seconds=5)
        assert await MailWorker(engine, right, clock=clock).deliver_due() == 1
        assert [r.rcpt_tos for r in server.received] == [[ALICE]]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://mail.example.org", ("mail.example.org", 25, None, None, False, False)),
        ("smtp://u:p@10.0.0.5:2525", ("10.0.0.5", 2525, "u", "p", False, False)),
        (
            "smtp+starttls://me%40example.org:p%40ss%2Fw@smtp.example.org",
            ("smtp.example.org", 587, "me@example.org", "p@ss/w", False, True),
        ),
        ("smtps://u:p@smtp.example.org", ("smtp.example.org", 465, "u", "p", True, False)),
        ("smtps://smtp.example.org:1465", ("smtp.example.org", 1465, None, None, True, False)),
    ],
)
def test_it_reads_the_three_smtp_url_schemes(url: str, expected: tuple[Any, ...]) -> None:
    sender = SmtpSender.from_url(url)
    got = (sender.host, sender.port, sender.username, sender.password)
    assert (*got, sender.use_tls, sender.start_tls) == expected
    assert "p@ss" not in repr(sender)


@pytest.mark.anyio
async def test_it_writes_an_eml_file_and_prints_the_link_without_smtp(
    engine: Engine, settings: Settings
) -> None:
    assert isinstance(sender_for(settings), OutboxDirSender)
    printed: list[str] = []
    sender = OutboxDirSender(settings.outbox_dir, console=printed.append)
    outbox_id = queue(engine)
    assert await MailWorker(engine, settings, sender=sender).deliver_due() == 1
    [eml] = settings.outbox_dir.glob("*.eml")
    assert stat.S_IMODE(eml.stat().st_mode) == 0o600
    assert stat.S_IMODE(settings.outbox_dir.stat().st_mode) == 0o700
    assert printed == [f"mail (link) written to {eml}: {LINK}"]
    assert f"To: {ALICE}" in eml.read_text()
    row = outbox_row(engine, outbox_id)
    assert row.payload_sha256 == hashlib.sha256(eml.read_bytes()).hexdigest()


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    signed = f"{headers['X-Portal-Timestamp']}.".encode() + body
    expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["X-Portal-Signature"])


@pytest.mark.anyio
async def test_it_posts_a_signed_webhook_and_keeps_the_status(
    engine: Engine, settings: Settings, webhook_receiver: WebhookReceiver
) -> None:
    payload = {"reference": "DR-7Q2K", "email": ALICE, "fields": ["email", "name"]}
    with engine.begin() as conn:
        outbox_id = enqueue_webhook(
            conn, kind="partner_webhook", url=webhook_receiver.url, secret="whsec", payload=payload
        )
    clock = Clock(utcnow())
    worker = MailWorker(
        engine, settings, resolve_webhook_secret=lambda conn, request_id: "whsec", clock=clock
    )
    assert await worker.deliver_due() == 1
    [hook] = webhook_receiver.requests
    assert hook.path == "/hooks/erasure" and hook.headers["Content-Type"] == "application/json"
    assert json.loads(hook.body) == payload
    assert hook.body == json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    assert hook.headers["X-Portal-Timestamp"] == str(int(clock.now.replace(tzinfo=UTC).timestamp()))
    assert verify("whsec", hook.headers, hook.body) and not verify("other", hook.headers, hook.body)
    row = outbox_row(engine, outbox_id)
    assert (row.status, row.response_status, row.recipient, row.body_text) == (
        "sent",
        202,
        None,
        None,
    )
    assert row.payload_sha256 == hashlib.sha256(hook.body).hexdigest()
    assert row.message_id is None


@pytest.mark.anyio
async def test_it_retries_a_webhook_the_partner_refused(engine: Engine, settings: Settings) -> None:
    with running_webhook_receiver(status=500) as receiver:
        with engine.begin() as conn:
            outbox_id = enqueue_webhook(
                conn, kind="partner_webhook", url=receiver.url, secret="s", payload={"a": 1}
            )
        clock = Clock(utcnow())
        worker = MailWorker(engine, settings, resolve_webhook_secret=lambda c, r: "s", clock=clock)
        assert await worker.deliver_due() == 0
        row = outbox_row(engine, outbox_id)
        assert (row.status, row.response_status) == ("queued", 500)
        assert row.last_error == "WebhookError: answered 500"
        receiver.status = 204
        clock.advance(seconds=5)
        assert await worker.deliver_due() == 1
        assert outbox_row(engine, outbox_id).response_status == 204
        assert len(receiver.requests) == 2


def a_deletion_request(conn: Connection, *, webhook_secret: str) -> int:
    now = utcnow()
    incident_id = conn.execute(
        tables.incidents.insert().values(
            slug="parks", languages='["nl"]', title="{}", notice="{}", faq="[]",
            contact_email="privacy@example.org", regulator_notified=False, kdf_time_cost=1,
            kdf_memory_cost=8, kdf_parallelism=1, created_at=now, updated_at=now,
        ).returning(tables.incidents.c.id)
    ).scalar_one()  # fmt: skip
    partner_id = conn.execute(
        tables.partners.insert().values(
            incident_id=incident_id, slug="park-a", name="Park A",
            contact_email="privacy@park-a.example", webhook_secret=webhook_secret,
        ).returning(tables.partners.c.id)
    ).scalar_one()  # fmt: skip
    request_id: int = conn.execute(
        tables.deletion_requests.insert().values(
            reference="DR-1", incident_id=incident_id, partner_id=partner_id, bidx=b"x" * 32,
            email=ALICE, fields=1, lang="nl", status="received", verified_at=now,
            received_at=now, due_on=date.today(),
        ).returning(tables.deletion_requests.c.id)
    ).scalar_one()  # fmt: skip
    return request_id


@pytest.mark.anyio
async def test_it_signs_with_the_partner_secret_and_calls_on_sent(
    engine: Engine, settings: Settings, webhook_receiver: WebhookReceiver
) -> None:
    with engine.begin() as conn:
        request_id = a_deletion_request(conn, webhook_secret="park-a-secret")
        outbox_id = enqueue_webhook(
            conn,
            kind="partner_webhook",
            url=webhook_receiver.url,
            secret="park-a-secret",
            payload={"reference": "DR-1"},
            deletion_request_id=request_id,
        )
    seen: list[tuple[int, int | None, str]] = []

    def on_sent(conn: Connection, sent_id: int, sent_request_id: int | None) -> None:
        status = conn.scalar(select(tables.outbox.c.status).where(tables.outbox.c.id == sent_id))
        seen.append((sent_id, sent_request_id, status))

    assert await MailWorker(engine, settings, on_sent=each(on_sent)).deliver_due() == 1
    [hook] = webhook_receiver.requests
    assert verify("park-a-secret", hook.headers, hook.body)
    assert seen == [(outbox_id, request_id, "sent")]


@pytest.mark.anyio
async def test_it_delivers_at_once_when_woken(
    engine: Engine, mail_settings: Settings, smtp_server: SmtpServer
) -> None:
    queue(engine, to="first@example.org")
    worker = MailWorker(engine, mail_settings, poll_interval=60)
    stop = asyncio.Event()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(worker.run, stop)
        await wait_for(lambda: len(smtp_server.received) == 1)
        queue(engine, to="second@example.org")
        worker.wake()  # the poll interval is a minute, the wait below 10 seconds
        await wait_for(lambda: len(smtp_server.received) == 2)
        stop.set()
    assert [r.rcpt_tos for r in smtp_server.received] == [
        ["first@example.org"],
        ["second@example.org"],
    ]


@pytest.mark.anyio
async def test_it_keeps_running_after_an_error_and_sends_again_after_the_lease(
    engine: Engine,
    mail_settings: Settings,
    smtp_server: SmtpServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []

    def on_sent(conn: Connection, outbox_id: int, request_id: int | None) -> None:
        calls.append(outbox_id)
        if len(calls) == 1:
            raise RuntimeError(f"hook broke for {ALICE}")

    outbox_id = queue(engine)
    clock = Clock(utcnow())
    worker = MailWorker(engine, mail_settings, on_sent=each(on_sent), poll_interval=60, clock=clock)
    stop = asyncio.Event()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(worker.run, stop)
        await wait_for(lambda: f"recording outbox {outbox_id} failed: RuntimeError" in caplog.text)
        assert outbox_row(engine, outbox_id).status == "sending"  # the hook's rollback
        clock.advance(seconds=61)  # the lease ran out: at least once, so it is sent again
        worker.wake()
        await wait_for(lambda: outbox_row(engine, outbox_id).status == "sent")
        stop.set()
    assert len(smtp_server.received) == 2 and calls == [outbox_id, outbox_id]
    assert ALICE not in caplog.text
    # The copy is recognisably the same message: one Message-ID, the one on record.
    ids = {received.message["Message-ID"] for received in smtp_server.received}
    assert ids == {outbox_row(engine, outbox_id).message_id}


@pytest.mark.anyio
async def test_it_keeps_a_long_subject_on_the_header_line(
    engine: Engine, mail_settings: Settings, smtp_server: SmtpServer
) -> None:
    subject = "DR-HNWG-C7FB: GDPR Art. 17 erasure request (Datalek bij TicketDienst (demo))"
    with engine.begin() as conn:
        enqueue_email(conn, kind="link", to=ALICE, message=Message(subject, "text", "<p>html</p>"))
    assert await MailWorker(engine, mail_settings).deliver_due() == 1
    [received] = smtp_server.received
    assert f"Subject: {subject}\r\n".encode() in received.content


@pytest.mark.anyio
async def test_it_gives_up_an_attempt_before_its_lease_runs_out(
    engine: Engine,
    mail_settings: Settings,
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("portal.mail.worker.DELIVERY_DEADLINE", 0.3)
    smtp_server.handler.delay = 3.0
    outbox_id = queue(engine)
    assert await MailWorker(engine, mail_settings).deliver_due() == 0
    row = outbox_row(engine, outbox_id)
    assert row.status == "queued" and row.lease_until is None
    assert row.last_error.startswith("TimeoutError")
