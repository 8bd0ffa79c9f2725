"""A relay that does not answer is said out loud: at start, at each failed attempt, on
/healthz and in `portal stats`. Real SMTP servers; a closed port for a relay that is down."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from starlette.testclient import TestClient

from portal.app import create_app
from portal.core.clock import utcnow
from portal.core.config import Settings
from portal.mail.delivery import SmtpSender
from portal.mail.outbox import enqueue_email
from portal.mail.worker import MailWorker
from portal.store import tables
from tests.factories import Clock, hello
from tests.fixtures_mail import free_port, running_smtp_server, wait_for_sync
from tests.server import environment

ALICE = "alice.r3l4y@example.org"
BOB = "bob.r3l4y@example.org"


def queue(engine: Engine, to: str = ALICE) -> int:
    with engine.begin() as conn:
        return enqueue_email(conn, kind="link", to=to, message=hello())


def last_error(engine: Engine, outbox_id: int) -> str | None:
    with engine.connect() as conn:
        row = conn.execute(select(tables.outbox).where(tables.outbox.c.id == outbox_id)).one()
    return row.last_error


def down(settings: Settings) -> tuple[Settings, int]:
    """Settings whose relay is a port nobody listens on."""
    port = free_port()
    return replace(settings, smtp_url=f"smtp://127.0.0.1:{port}"), port


def healthz(client: TestClient) -> dict[str, str]:
    answer = client.get("/healthz")
    assert answer.status_code == 200, answer.text
    body: dict[str, str] = answer.json()
    return body


@pytest.mark.anyio
async def test_it_finds_a_relay_that_answers_ehlo_and_auth() -> None:
    with running_smtp_server(credentials=("mailer", "s3cret")) as server:
        assert await SmtpSender.from_url(server.url("mailer", "s3cret")).probe() is None
    assert server.received == []  # it sends nothing


@pytest.mark.anyio
async def test_it_says_why_the_relay_does_not_answer() -> None:
    closed = SmtpSender.from_url(f"smtp://127.0.0.1:{free_port()}")
    assert await closed.probe() == "connection refused"
    with running_smtp_server(credentials=("mailer", "s3cret")) as server:
        wrong = SmtpSender.from_url(server.url("mailer", "wrong"))
        assert await wrong.probe() == "AUTH refused: 535 5.7.8 Authentication credentials invalid"
        starttls = SmtpSender.from_url(f"smtp+starttls://127.0.0.1:{server.port}")
        assert await starttls.probe() == "the relay does not offer STARTTLS"
        tls = SmtpSender.from_url(f"smtps://127.0.0.1:{server.port}")
        assert (await tls.probe(timeout=2) or "").startswith("TLS failed: ")
    with socket.socket() as silent:  # takes the connection, never greets
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        mute = SmtpSender.from_url(f"smtp://127.0.0.1:{silent.getsockname()[1]}")
        assert await mute.probe(timeout=0.5) == "no answer in time"


@pytest.mark.anyio
async def test_it_logs_the_relay_and_the_reason_of_each_failed_attempt(
    engine: Engine, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="portal")
    relay_down, port = down(settings)
    outbox_id = queue(engine)
    clock = Clock(utcnow())
    worker = MailWorker(engine, relay_down, clock=clock)

    assert await worker.deliver_due() == 0
    clock.advance(seconds=5)
    assert await worker.deliver_due() == 0

    failed = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert failed == [
        f"outbox {outbox_id} (link) attempt {n} failed at mail relay 127.0.0.1:{port}: "
        "connection refused (SMTPConnectError)"
        for n in (1, 2)
    ]
    assert last_error(engine, outbox_id) == (
        f"SMTPConnectError: connection refused (mail relay 127.0.0.1:{port})"
    )
    assert ALICE not in caplog.text and "r3l4y" not in caplog.text


def test_it_warns_at_start_and_says_mail_failing_until_the_relay_delivers(
    engine: Engine, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="portal")
    relay_down, port = down(settings)
    app = create_app(relay_down)
    with TestClient(app) as client:
        warning = (
            f"mail relay 127.0.0.1:{port} not reachable: connection refused; "
            "mail waits in the outbox"
        )
        wait_for_sync(lambda: warning in caplog.messages)
        assert healthz(client) == {"status": "ok", "mail": "failing"}

        with running_smtp_server(port=port) as server:  # the relay is back
            queue(engine)
            app.state.mail_worker.wake()
            wait_for_sync(lambda: len(server.received) == 1)
            wait_for_sync(lambda: healthz(client) == {"status": "ok"})
    assert [r.levelname for r in caplog.records if warning == r.getMessage()] == ["WARNING"]


def test_it_says_nothing_of_mail_while_the_relay_answers(
    engine: Engine, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="portal")
    with running_smtp_server() as server:
        app = create_app(replace(settings, smtp_url=server.url()))
        with TestClient(app) as client:
            relay = f"mail relay 127.0.0.1:{server.port} answers"
            wait_for_sync(lambda: relay in caplog.messages)
            assert healthz(client) == {"status": "ok"}
    assert "not reachable" not in caplog.text


@pytest.mark.anyio
async def test_it_takes_one_refusal_for_weather_and_two_in_a_row_for_failing(
    engine: Engine, settings: Settings
) -> None:
    with running_smtp_server() as server:
        clock = Clock(utcnow())
        worker = MailWorker(engine, replace(settings, smtp_url=server.url()), clock=clock)
        queue(engine)
        server.fail_next(1)  # "451 try again" once
        assert await worker.deliver_due() == 0
        assert not worker.health.failing

        queue(engine, BOB)
        server.fail_next(2)
        clock.advance(seconds=5)
        assert await worker.deliver_due() == 0
        assert worker.health.failing

        server.handler.refuse = {ALICE}  # a bounce is the message's matter, not the relay's
        clock.advance(seconds=10)
        assert await worker.deliver_due() == 1
        assert not worker.health.failing
        assert [r.rcpt_tos for r in server.received] == [[BOB]]


@pytest.mark.anyio
async def test_it_names_the_reason_in_portal_stats(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    relay_down, port = down(settings)
    queue(engine)
    queue(engine, BOB)
    clock = Clock(utcnow())
    assert await MailWorker(engine, relay_down, clock=clock).deliver_due() == 0

    failing = stats(tmp_path, settings)

    assert (
        f"mail relay failing: the newest attempt, {clock.now:%Y-%m-%d %H:%M} UTC, failed: "
        f"connection refused (mail relay 127.0.0.1:{port}); 2 message(s) wait to be tried "
        "again; last delivery: never"
    ) in failing.splitlines()
    with running_smtp_server(port=port):
        clock.advance(seconds=5)
        assert await MailWorker(engine, relay_down, clock=clock).deliver_due() == 2
    assert "mail relay" not in stats(tmp_path, settings)


def stats(folder: Path, settings: Settings) -> str:
    env = environment(folder / "instance", 200) | {"PORTAL_DATABASE_URL": settings.database_url}
    done = subprocess.run(
        [sys.executable, "-m", "portal", "stats"],
        env=env,
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout
