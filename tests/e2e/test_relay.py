"""A relay that does not answer, with real processes: `portal serve` warns at start, still
serves, logs each failed attempt, says so on /healthz, and `portal stats` names the reason."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ALICE, Browser, open_browser
from tests.fixtures_mail import free_port, wait_for_sync
from tests.server import running_mail_worker, running_portal

pytestmark = pytest.mark.e2e


def warning(port: int) -> str:
    reason = "connection refused; mail waits in the outbox"
    return f"mail relay 127.0.0.1:{port} not reachable: {reason}"


def test_it_warns_at_start_and_still_serves_with_the_relay_down(
    instance: Path, browsers: list[Browser]
) -> None:
    port = free_port()
    with running_portal(instance, PORTAL_SMTP_URL=f"smtp://127.0.0.1:{port}") as portal:
        wait_for_sync(lambda: warning(port) in portal.log())
        health = httpx.get(f"{portal.url}/healthz", timeout=5)
        assert (health.status_code, health.json()) == (200, {"status": "ok", "mail": "failing"})

        assert open_browser(browsers, portal).look_up(ALICE).status_code == 303
        attempt = f"(link) attempt 1 failed at mail relay 127.0.0.1:{port}: connection refused"
        wait_for_sync(lambda: attempt in portal.log(), timeout=20)
        stats = portal.cli("stats").stdout

    assert f"failed: connection refused (mail relay 127.0.0.1:{port}); 1 message(s)" in stats
    assert ALICE not in portal.log()


def test_it_warns_from_a_server_without_mail_worker_and_from_the_mail_worker(
    instance: Path, tmp_path: Path
) -> None:
    port = free_port()
    url = f"smtp://127.0.0.1:{port}"
    with running_portal(instance, "--no-mail-worker", PORTAL_SMTP_URL=url) as portal:
        assert warning(port) in portal.log()  # said before it serves
        # This process delivers nothing: its health says nothing of mail.
        assert httpx.get(f"{portal.url}/healthz", timeout=5).json() == {"status": "ok"}
        with running_mail_worker(portal.env, tmp_path / "mail-worker.log") as worker:
            wait_for_sync(lambda: warning(port) in worker.log(), timeout=20)
            assert worker.process.poll() is None  # it keeps going: the outbox keeps the mail
