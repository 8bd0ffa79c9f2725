"""A real portal process for end-to-end tests: `portal serve` under uvicorn on a free port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.databases import database_url_of
from tests.fixtures_mail import free_port


@dataclass
class Portal:
    """A running portal: its base URL, instance folder, environment and captured log."""

    url: str
    instance: Path
    env: dict[str, str]
    log_path: Path
    pid: int = 0  # the server process (for its memory in bench/)
    process: subprocess.Popen[bytes] | None = None  # to signal it as a deploy does

    @property
    def database_url(self) -> str:
        """Where this portal keeps its data (its SQLite file unless a fixture chose)."""
        return self.env.get("PORTAL_DATABASE_URL") or f"sqlite:///{self.instance / 'portal.db'}"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Runs `portal ARGS` against this portal's database and instance folder."""
        return subprocess.run(
            [sys.executable, "-m", "portal", *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            timeout=300,
        )


def lookups_done(portal: Portal) -> int:
    """Lookups the portal's queue has finished with (any outcome) or shed, from /metrics."""
    total = 0.0
    for row in httpx.get(f"{portal.url}/metrics").text.splitlines():
        if row.startswith(("portal_lookups_processed_total{", "portal_lookups_shed_total ")):
            total += float(row.rsplit(" ", 1)[1])
    return int(total)


def portal_env(instance: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")}
    env.update(
        PORTAL_INSTANCE_DIR=str(instance),
        PORTAL_SECRET_KEY="e2e-secret-key",
        PORTAL_PEPPER="e2e-pepper",
        COLUMNS="200",
    )
    # The database a fixture made for this instance (tests/databases.py), per backend.
    if (url := database_url_of(instance)) is not None:
        env["PORTAL_DATABASE_URL"] = url
    env.update(extra)
    return env


@contextmanager
def running_portal(
    instance: Path, *args: str, scheme: str = "http", **extra: str
) -> Iterator[Portal]:
    """Starts `portal serve` (extra: PORTAL_* variables) and waits until /healthz answers.

    With scheme="https" the base URL says https, as behind a TLS-terminating proxy; the
    tests still talk plain http to the process.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = portal_env(instance, PORTAL_BASE_URL=f"{scheme}://127.0.0.1:{port}", **extra)
    log_path = instance / "server.log"
    instance.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "portal", "serve", "--port", str(port), *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_until_healthy(url, process)
            yield Portal(url, instance, env, log_path, process.pid, process)
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"portal exited with {process.returncode} before answering")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError("portal did not answer /healthz within 60 s")


@dataclass
class MailWorkerProcess:
    """A running `portal mail-worker`."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def kill(self) -> None:
        """kill -9: no shutdown, nothing recorded after this instant."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


@contextmanager
def running_mail_worker(env: dict[str, str], log_path: Path) -> Iterator[MailWorkerProcess]:
    """Starts `portal mail-worker` with `env` (a portal's), stopped with Ctrl+C at the end."""
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "portal", "mail-worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield MailWorkerProcess(process, log_path)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
