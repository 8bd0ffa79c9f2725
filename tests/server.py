"""The portal as tests reach it: real processes (`portal serve`, the mail worker, the CLI), and
in process (a TestClient on create_app): its pages, forms and sign-ins."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, select
from starlette.testclient import TestClient

from portal.core.config import Settings
from portal.store import tables
from tests.databases import database_url_of
from tests.factories import DORA, DORA_PASSWORD, SLUG
from tests.fixtures_mail import free_port


class Logged:
    """A process of the tests' own whose output goes to `log_path`."""

    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    @contextmanager
    def log_on_failure(self, lines: int = 40) -> Iterator[None]:
        """An assertion that fails inside says what the server logged last, for a failure
        seen once in CI to be read afterwards."""
        try:
            yield
        except AssertionError as exc:
            tail = "\n".join(self.log().splitlines()[-lines:])
            raise AssertionError(f"{exc}\nthe server's log ended with:\n{tail}") from exc


@dataclass
class Portal(Logged):
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
class MailWorkerProcess(Logged):
    """A running `portal mail-worker`."""

    process: subprocess.Popen[bytes]
    log_path: Path

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


# -- in process: a TestClient on create_app, and the CLI as a real process -----------------


def csrf(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "no csrf_token in the page"
    return match.group(1)


def outbox_links(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        bodies = conn.scalars(
            select(tables.outbox.c.body_text).where(tables.outbox.c.kind == "link")
        ).all()
    return [re.search(r"http://\S+/v/\S+", b).group(0) for b in bodies if b]


def lookup(client: TestClient, address: str, *, on: str = f"/{SLUG}/") -> str:
    """Looks `address` up with the form of the page at `on`, and waits until its link is
    written; returns that page."""
    page = client.get(on)
    response = client.post(
        f"/{SLUG}/lookup",
        data={"email": address, "csrf_token": csrf(page.text)},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == f"/{SLUG}/sent"
    drain_lookups(client)
    return page.text


def drain_lookups(client: TestClient) -> None:
    """Waits until the app's lookup queue has hashed and written every lookup it took."""
    client.portal.call(client.app.state.lookups.drain)  # type: ignore[union-attr, attr-defined]


def sign_in(client: TestClient, engine: Engine, address: str) -> str:
    lookup(client, address)
    link = outbox_links(engine)[-1].removeprefix("http://127.0.0.1:8000")
    page = client.get(link)
    assert page.status_code == 200
    response = client.post(link, data={"csrf_token": csrf(page.text)}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == f"/{SLUG}/results"
    return client.get(f"/{SLUG}/results").text


def environment(instance: Path, columns: int | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")}
    env.pop("COLUMNS", None)
    if columns:
        env["COLUMNS"] = str(columns)
    env.update(
        PORTAL_INSTANCE_DIR=str(instance),
        PORTAL_SECRET_KEY="cli-test-secret-key",
        PORTAL_PEPPER="cli-test-pepper",
        PYTHONIOENCODING="utf-8",
    )
    if (url := database_url_of(instance)) is not None:
        env["PORTAL_DATABASE_URL"] = url
    return env


def portal(
    folder: Path, *args: str | Path, columns: int | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs `python -m portal ARGS` in `folder`, its output not a terminal (as under cron)."""
    return subprocess.run(
        [sys.executable, "-m", "portal", *map(str, args)],
        cwd=folder,
        env=environment(folder / "instance", columns),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def count(output: str, label: str) -> int:
    match = re.search(rf"{label}\W+(\d+)", output)
    assert match, f"no {label!r} in:\n{output}"
    return int(match.group(1))


def assert_operator_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "Traceback" not in result.stdout
    assert result.stderr.strip().startswith("error:")
    for word in words:
        assert word in result.stderr


def sign_in_operator(
    client: TestClient, username: str = DORA, password: str = DORA_PASSWORD
) -> None:
    page = client.get("/admin/login")
    response = client.post(
        "/admin/login",
        data={"username": username, "password": password, "csrf_token": csrf(page.text)},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/admin/"


def post_form(client: TestClient, page_path: str, action: str, **fields: str):  # type: ignore[no-untyped-def]
    """Posts a form of the page at `page_path` with that page's csrf_token, as a browser does."""
    page = client.get(page_path)
    assert page.status_code == 200, page.text
    return client.post(
        action, data={**fields, "csrf_token": csrf(page.text)}, follow_redirects=False
    )


def settings_env(settings: Settings, **env: str) -> dict[str, str]:
    """The environment of a `portal` process on the app's database, instance and secrets."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")}
    environment.update(
        PORTAL_INSTANCE_DIR=str(settings.instance_dir),
        PORTAL_DATABASE_URL=settings.database_url,
        PORTAL_SECRET_KEY=settings.secret_key,
        PORTAL_PEPPER=settings.pepper.decode(),
        PYTHONIOENCODING="utf-8",
        **env,
    )
    return environment


def start_portal_cli(settings: Settings, *args: str, **env: str) -> subprocess.Popen[str]:
    """`portal ARGS` started in a real process on the app's database, output in pipes."""
    return subprocess.Popen(
        [sys.executable, "-m", "portal", *args],
        env=settings_env(settings, **env),
        cwd=settings.instance_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def portal_cli(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[Any]:
    """`portal ARGS` in a real process on the app's database; stdout as bytes, stderr text."""
    done = subprocess.run(
        [sys.executable, "-m", "portal", *args],
        env=settings_env(settings, **env),
        cwd=settings.instance_dir,
        capture_output=True,
        timeout=120,
        check=False,
    )
    done.stderr = done.stderr.decode("utf-8")
    return done


# -- the operator guide's transcripts -------------------------------------------------------
# Each ```console block of docs/operator.md is a shell session (tests/test_docs.py runs them);
# a ```console fault=NAME block shows what its commands print while a failure lasts, and the
# test of tests/faults/ that brings the failure about runs it then (`shows_in_the_guide`).

DOCS = Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"^```console\n(.*?)^```$", re.S | re.M)
GUIDE = (DOCS / "operator.md").read_text(encoding="utf-8")


@dataclass(frozen=True)
class Step:
    command: str
    output: str


def transcript(markdown: str) -> list[Step]:
    return [step for block in BLOCK.findall(markdown) for step in steps_of(block)]


def steps_of(block: str) -> list[Step]:
    steps: list[Step] = []
    for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
        command, _, output = chunk.partition("\n")
        steps.append(Step(command, output))
    return steps


FAULT_BLOCK = re.compile(r"^```console fault=([\w-]+)\n(.*?)^```$", re.S | re.M)
GUIDE_URL = "http://127.0.0.1:8000"
# Each failure the guide shows, and the test of tests/faults/ that runs its transcript.
FAULTS = {
    "postgresql": "test_postgresql.py",
    "redis": "test_redis.py",
    "relay": "test_relay.py",
    "connection-cut": "test_cut_connection.py",
    "disk-full": "test_disk_full.py",
}


def fault_transcripts() -> dict[str, list[Step]]:
    found: dict[str, list[Step]] = {}
    for name, block in FAULT_BLOCK.findall(GUIDE):
        found.setdefault(name, []).extend(steps_of(block))
    return found


def printed_during(step: Step, *, url: str, env: dict[str, str], cwd: Path) -> str:
    """What a fault transcript's command prints: `curl -s` asks the portal at `url` for the
    guide's 127.0.0.1:8000 (the body, on a line of its own); `portal` runs with `env`."""
    words = shlex.split(step.command)
    if words[0] == "curl":
        return str(httpx.get(words[2].replace(GUIDE_URL, url), timeout=10).text) + "\n"
    result = subprocess.run(
        [sys.executable, "-m", "portal", *words[1:]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result.stderr + result.stdout


def shows_in_the_guide(
    fault: str,
    *,
    url: str = GUIDE_URL,
    env: dict[str, str] | None = None,
    cwd: Path = DOCS,
    ran: dict[str, str] | None = None,
) -> None:
    """Runs the guide's transcript of `fault` while it lasts: each command prints what the
    guide shows. `ran`: what a command the test ran itself printed (one that the test
    breaks halfway, say), by the command as the guide writes it."""
    for step in fault_transcripts()[fault]:
        if ran is not None and step.command in ran:
            printed = ran[step.command]
        else:
            printed = printed_during(step, url=url, env=env or {}, cwd=cwd)
        assert printed == step.output, f"$ {step.command}\n{printed}"
