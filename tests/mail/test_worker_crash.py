"""A mail worker killed mid-batch (kill -9, a real process): nothing lost, and only what was
between the relay's 250 and the commit sent again (design §4.7, at least once)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from portal.core.clock import utcnow
from portal.core.config import Settings
from portal.mail import outbox
from portal.mail.worker import BATCH_SIZE, RECORD_MOST, MailWorker
from portal.store import tables
from tests.fixtures_mail import SmtpServer, wait_for_sync
from tests.mail.test_delivery import outbox_rows, queue_many
from tests.server import portal_env

CONNECTIONS = 4


def start_worker(settings: Settings, smtp: SmtpServer, log: Path) -> subprocess.Popen[bytes]:
    env = portal_env(
        settings.instance_dir,
        PORTAL_DATABASE_URL=settings.database_url,
        PORTAL_SECRET_KEY=settings.secret_key,
        PORTAL_PEPPER=settings.pepper.decode(),
        PORTAL_SMTP_URL=smtp.url(),
        PORTAL_MAIL_FROM="Portal <portal@example.net>",
        PORTAL_SMTP_CONNECTIONS=str(CONNECTIONS),
    )
    with log.open("w") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "portal", "mail-worker"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def message_ids(smtp: SmtpServer) -> Counter[str]:
    return Counter(str(received.message["Message-ID"]) for received in smtp.received)


@pytest.mark.anyio
async def test_it_loses_nothing_when_killed_mid_batch_and_resends_only_the_unrecorded(
    engine: Engine, settings: Settings, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    addresses = queue_many(engine, 2 * BATCH_SIZE)
    smtp_server.handler.delay = 0.02  # a relay's pace: the batch takes a second or two
    worker = start_worker(settings, smtp_server, tmp_path / "worker.log")
    try:
        # Well into the first batch: a commit per batch would leave all of these unrecorded.
        wait_for_sync(lambda: len(smtp_server.received) >= 3 * BATCH_SIZE // 4, timeout=60)
        worker.send_signal(signal.SIGKILL)
    finally:
        worker.kill()
        worker.wait()
    # A message whose DATA had arrived is still taken (and answered into the void).
    wait_for_sync(lambda: smtp_server.handler.in_data == 0)
    at_kill = message_ids(smtp_server)
    rows = outbox_rows(engine)
    recorded = {row.message_id for row in rows if row.status == outbox.SENT}
    assert len(at_kill) < len(addresses), "killed after the end: nothing was mid-batch"
    assert any(row.status == outbox.SENDING for row in rows), "no batch was under way"
    assert recorded <= set(at_kill)  # nothing is recorded as sent that the relay lacks
    unrecorded = set(at_kill) - recorded
    # Only what the relay took in the last RECORD_WINDOW (and one commit) waits for a resend.
    assert len(unrecorded) <= RECORD_MOST + CONNECTIONS, len(unrecorded)

    # The lease runs out; a worker (here in process, its clock past the lease) sends the rest.
    later = utcnow() + outbox.LEASE
    mail = replace(settings, smtp_url=smtp_server.url(), mail_from="portal@example.net")
    rescuer = MailWorker(engine, mail, clock=lambda: later, batch_size=len(addresses))
    await rescuer.deliver_due()
    assert {row.status for row in outbox_rows(engine)} == {outbox.SENT}

    received = Counter(to for message in smtp_server.received for to in message.rcpt_tos)
    assert set(received) == set(addresses)  # every message arrived
    again = {mid for mid, count in message_ids(smtp_server).items() if count > 1}
    assert again == unrecorded  # and only the unrecorded ones twice, with their Message-ID
    with engine.connect() as conn:
        left = set(conn.scalars(select(tables.outbox.c.recipient)))
    assert left == {None}  # every address erased on delivery
