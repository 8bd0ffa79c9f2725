"""Mail delivery with real processes: queued mail outlives a crash; a separate mail worker."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    ALICE,
    PARTNERS,
    SLUG,
    Browser,
    mails_to,
    open_browser,
    partners_on,
    portal_link,
    wait_for_mail,
)
from tests.fixtures_mail import SmtpServer, free_port, wait_for_sync
from tests.server import Portal, running_mail_worker, running_portal

pytestmark = pytest.mark.e2e


def server_pid(portal: Portal) -> int:
    """The uvicorn process, as its own log names it."""
    found = re.search(r"Started server process \[(\d+)\]", portal.log())
    assert found, portal.log()
    return int(found[1])


def test_it_survives_a_crash_with_mail_queued(
    instance: Path, smtp_server: SmtpServer, browsers: list[Browser]
) -> None:
    nobody_listens = f"smtp://127.0.0.1:{free_port()}"
    with running_portal(instance, PORTAL_SMTP_URL=nobody_listens) as portal:
        first_url = portal.url
        assert open_browser(browsers, portal).look_up(ALICE).status_code == 303
        wait_for_sync(lambda: "(link) attempt 1 failed" in portal.log())
        os.kill(server_pid(portal), signal.SIGKILL)  # no shutdown, no checkpoint
    assert not smtp_server.received

    with running_portal(instance, PORTAL_SMTP_URL=smtp_server.url()) as portal:
        message = wait_for_mail(smtp_server, ALICE, timeout=20)  # after the 5 s backoff
        link = portal_link(message, first_url)  # sent with the base URL it was queued with
        alice = open_browser(browsers, portal)
        assert alice.confirm(link).status_code == 303
        assert set(partners_on(alice.results())) == set(PARTNERS)
    assert len(mails_to(smtp_server, ALICE)) == 1


def test_it_retries_when_the_server_answers_try_again(
    instance: Path, smtp_server: SmtpServer, browsers: list[Browser]
) -> None:
    smtp_server.fail_next(1)
    with running_portal(instance, PORTAL_SMTP_URL=smtp_server.url()) as portal:
        assert open_browser(browsers, portal).look_up(ALICE).status_code == 303
        wait_for_sync(lambda: "(link) attempt 1 failed" in portal.log())
        message = wait_for_mail(smtp_server, ALICE, timeout=20)
        portal_link(message, portal.url)
        # The server has the mail before the portal records and logs the delivery.
        wait_for_sync(lambda: "(link) sent on attempt 2" in portal.log())
    assert len(mails_to(smtp_server, ALICE)) == 1


def test_it_serves_a_separate_mail_worker(
    instance: Path, smtp_server: SmtpServer, browsers: list[Browser], tmp_path: Path
) -> None:
    url = smtp_server.url()
    with running_portal(instance, "--no-mail-worker", PORTAL_SMTP_URL=url) as portal:
        alice = open_browser(browsers, portal)
        assert alice.look_up(ALICE).status_code == 303
        wait_for_sync(lambda: "links written: 1, their mails queued" in portal.log())
        assert not smtp_server.received

        output = tmp_path / "mail-worker.log"
        with output.open("w") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "portal", "mail-worker"],
                env=portal.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                message = wait_for_mail(smtp_server, ALICE, timeout=20)
                assert alice.confirm(portal_link(message, portal.url)).status_code == 303
                page = alice.get(f"/{SLUG}/results")
                assert alice.submit(page, f"/{SLUG}/deletion", partner="park-a").status_code == 303
                wait_for_mail(smtp_server, "privacy@park-a.example")
                wait_for_mail(smtp_server, ALICE, count=2)  # the receipt
                wait_for_sync(
                    lambda: 'data-deletion-status="forwarded"' in alice.get(f"/{SLUG}/results").text
                )
            finally:
                worker.send_signal(signal.SIGINT)
                try:
                    worker.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait()
        assert worker.returncode == 0, output.read_text()
        assert "Traceback" not in output.read_text()
    assert len(mails_to(smtp_server, ALICE)) == 2  # the link and the receipt, each once


def test_it_finishes_the_message_it_is_sending_when_stopped(
    instance: Path, smtp_server: SmtpServer, browsers: list[Browser], tmp_path: Path
) -> None:
    url = smtp_server.url()
    with running_portal(instance, "--no-mail-worker", PORTAL_SMTP_URL=url) as portal:
        assert open_browser(browsers, portal).look_up(ALICE).status_code == 303
        smtp_server.handler.hold_next()
        with running_mail_worker(portal.env, tmp_path / "mail-worker.log") as worker:
            wait_for_sync(lambda: smtp_server.handler.holding, timeout=20)
            worker.process.send_signal(signal.SIGTERM)  # as a service manager stops it
            smtp_server.handler.release()
            assert worker.process.wait(timeout=30) == 0, worker.log()
        # The message it was sending was recorded as sent, not left under a lease.
        assert "(link) sent on attempt 1" in worker.log()
    assert len(mails_to(smtp_server, ALICE)) == 1
