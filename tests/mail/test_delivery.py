"""Mail at volume through a real SMTP server: kept-open connections, in parallel, reconnecting."""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, select

from portal.core.clock import utcnow
from portal.core.config import Settings
from portal.mail import messages
from portal.mail import worker as mail_worker
from portal.mail.outbox import enqueue_email
from portal.mail.worker import MailWorker
from portal.operator.stats import incident_figures
from portal.store import tables
from tests.factories import TEST_MAIL, Clock, load_personas
from tests.fixtures_mail import SmtpServer, running_smtp_server


def queue_many(engine: Engine, count: int) -> list[str]:
    addresses = [f"person{n}@example.org" for n in range(count)]
    with engine.begin() as conn:
        for n, address in enumerate(addresses):
            message = TEST_MAIL.email("hello", "en", incident="Parks", link=f"http://x/v/{n}")
            enqueue_email(conn, kind="link", to=address, message=message)
    return addresses


def outbox_rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(tables.outbox).order_by(tables.outbox.c.id)))


def reconnects() -> float:
    return REGISTRY.get_sample_value("portal_smtp_reconnects_total") or 0.0


def each_once(server: SmtpServer, addresses: list[str]) -> bool:
    return Counter(to for r in server.received for to in r.rcpt_tos) == Counter(addresses)


@pytest.mark.anyio
@pytest.mark.parametrize("with_421", [False, True], ids=["dropped", "421"])
async def test_it_reconnects_when_the_server_hangs_up_mid_batch_and_sends_each_once(
    engine: Engine, mail_settings: Settings, smtp_server: SmtpServer, with_421: bool
) -> None:
    smtp_server.handler.hang_up_after = 3
    smtp_server.handler.hang_up_with_421 = with_421
    addresses = queue_many(engine, 40)
    before = reconnects()
    assert await MailWorker(engine, mail_settings).deliver_due() == 40
    assert each_once(smtp_server, addresses)
    rows = outbox_rows(engine)
    assert {(r.status, r.attempts, r.last_error) for r in rows} == {("sent", 1, None)}
    # 40 messages, 3 a connection: at least 14 connections, all but the first 4 in
    # place of one the server ended.
    assert len({r.peer for r in smtp_server.received}) >= 14
    assert reconnects() - before >= 10


@pytest.mark.anyio
async def test_it_sends_on_all_connections_at_once(
    engine: Engine, mail_settings: Settings, smtp_server: SmtpServer
) -> None:
    smtp_server.handler.delay = 0.05  # a relay that takes its time over each message
    addresses = queue_many(engine, 40)
    assert await MailWorker(engine, mail_settings).deliver_due() == 40
    assert each_once(smtp_server, addresses)
    assert smtp_server.handler.most_in_data == 4
    # Kept open: four connections carried the forty messages.
    assert len({r.peer for r in smtp_server.received}) == 4


@pytest.mark.anyio
async def test_it_keeps_as_many_connections_open_as_the_setting_says(
    engine: Engine, mail_settings: Settings, smtp_server: SmtpServer
) -> None:
    smtp_server.handler.delay = 0.05
    addresses = queue_many(engine, 40)
    eight = replace(mail_settings, smtp_connections=8)  # PORTAL_SMTP_CONNECTIONS=8
    assert await MailWorker(engine, eight).deliver_due() == 40
    assert each_once(smtp_server, addresses)
    assert smtp_server.handler.most_in_data == 8
    assert len({r.peer for r in smtp_server.received}) == 8


@pytest.mark.anyio
async def test_it_builds_each_message_once_in_a_thread(
    engine: Engine,
    mail_settings: Settings,
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[tuple[str, int]] = []

    def build_email(**fields: Any) -> messages.Email:
        built.append((fields["to"], threading.get_ident()))
        return messages.build_email(**fields)

    monkeypatch.setattr(mail_worker, "build_email", build_email)
    smtp_server.handler.hang_up_after = 2  # every other message is sent again elsewhere
    addresses = queue_many(engine, 20)
    assert await MailWorker(engine, mail_settings).deliver_due() == 20
    assert sorted(to for to, _thread in built) == sorted(addresses)
    assert threading.get_ident() not in {thread for _to, thread in built}
    # What the server got is what was built and kept as proof, resent or not.
    proofs = {r.payload_sha256 for r in outbox_rows(engine)}
    assert proofs == {hashlib.sha256(r.content).hexdigest() for r in smtp_server.received}


@pytest.mark.anyio
async def test_it_retries_a_message_whose_connection_broke_during_data_with_its_message_id(
    engine: Engine,
    mail_settings: Settings,
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    [address] = queue_many(engine, 1)
    clock = Clock(utcnow())
    worker = MailWorker(engine, mail_settings, clock=clock)
    smtp_server.handler.delay = 2.0
    monkeypatch.setattr(mail_worker, "DELIVERY_DEADLINE", 0.5)  # it gives up inside DATA
    assert await worker.deliver_due() == 0
    [row] = outbox_rows(engine)
    # The server may have taken it: not sent at once on another connection, but retried.
    assert (row.status, row.attempts, row.recipient) == ("queued", 1, address)
    assert row.next_attempt_at == clock.now + timedelta(seconds=5)
    smtp_server.handler.delay = 0
    clock.advance(seconds=5)
    assert await worker.deliver_due() == 1
    [row] = outbox_rows(engine)
    # Had the server kept the first copy, the two would be recognisably one message.
    assert [r.message["Message-ID"] for r in smtp_server.received] == [row.message_id]


@pytest.mark.anyio
async def test_it_sends_a_non_ascii_mailbox_with_smtputf8(
    engine: Engine, mail_settings: Settings, smtp_server: SmtpServer
) -> None:
    with engine.begin() as conn:
        message = TEST_MAIL.email("hello", "en", incident="Parks", link="http://x/v/1")
        enqueue_email(conn, kind="link", to="jörg@xn--bcher-kva.de", message=message)
    assert await MailWorker(engine, mail_settings).deliver_due() == 1
    [received] = smtp_server.received
    assert received.rcpt_tos == ["jörg@xn--bcher-kva.de"]
    assert received.message["To"] == "jörg@xn--bcher-kva.de"  # UTF-8 header, RFC 6532
    [row] = outbox_rows(engine)
    assert (row.status, row.recipient) == ("sent", None)


@pytest.mark.anyio
async def test_it_fails_a_non_ascii_mailbox_at_once_with_the_reason_on_a_relay_without_smtputf8(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    load_personas(engine, settings, tmp_path)  # an incident for portal stats to report on
    with running_smtp_server(smtputf8=False) as old_relay:
        relay_settings = replace(settings, smtp_url=old_relay.url(), mail_from="p@example.net")
        with engine.begin() as conn:
            for to in ("jörg@example.de", "jan@example.de"):
                message = TEST_MAIL.email("hello", "en", incident="Parks", link="http://x/v/1")
                enqueue_email(conn, kind="link", to=to, message=message)
        assert await MailWorker(engine, relay_settings).deliver_due() == 1
        assert [r.rcpt_tos for r in old_relay.received] == [["jan@example.de"]]
    failed, sent = outbox_rows(engine)
    # Final at the first attempt (the same relay would refuse it again), erased, and said.
    assert (failed.status, failed.attempts, failed.recipient) == ("failed", 1, None)
    assert failed.last_error.startswith("NoSmtpUtf8: the SMTP relay does not offer SMTPUTF8")
    assert "jörg" not in failed.last_error
    assert sent.status == "sent"
    with engine.connect() as conn:
        [figures] = incident_figures(conn, incident="ticketing-2021")
    assert figures.mail_failures == {"NoSmtpUtf8": 1}
