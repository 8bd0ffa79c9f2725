"""Pages at the framework's speed: `portal serve` against a bare Starlette hello-world.

Starts, one worker each and in the same run, a Starlette app answering "hello" on uvicorn
with uvloop and httptools, and `portal serve` (SQLite) with the standard incident, two
partners' records and a verified session. Then loads each with wrk (Debian package `wrk`)
for DURATION seconds at CONNECTIONS connections, one after the other in each of three
rounds, and prints the requests per second and the ratios the pages are judged by (the
median over the rounds of each page's rate over hello's in the same round):
the incident page ≥ 0.3 × hello, the results page (with its session cookie) ≥ 0.15 ×.

Usage: python bench/page_bench.py [DURATION] [CONNECTIONS]   (defaults 10 and 32)
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.bruteforce import cpu_model
from bench.http_client import csrf_of
from tests.factories import INCIDENT, PARK_A, THEATER_B, write_csv
from tests.fixtures_mail import free_port, running_smtp_server, wait_for_sync
from tests.server import Portal, running_portal

SLUG = "ticketing-2021"
ALICE = "alice@example.org"
HELLO = """
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def hello(request):
    return PlainTextResponse("hello")


app = Starlette(routes=[Route("/", hello)])
"""
TARGETS = {"incident page": 0.3, "results page": 0.15}
ROUNDS = 3


def main(duration: int, connections: int) -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: apt-get install wrk")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {cpu_model()}")
    print(f"load: {Path('/proc/loadavg').read_text().split()[:3]} (1, 5, 15 min)")
    print(f"wrk -t1 -c{connections} -d{duration}s per target, one worker per server, SQLite")
    rates = measure(duration, connections, rounds=ROUNDS)
    for name, runs in rates.items():
        shown = " ".join(f"{rate:7.0f}" for rate in runs)
        print(f"{name:14} req/s per round: {shown}")
    for name, per_round in round_ratios(rates).items():
        ratio, target = statistics.median(per_round), TARGETS[name]
        verdict = "met" if ratio >= target else "MISSED"
        print(
            f"{name:14} ratio to hello, median of rounds: {ratio:.3f} "
            f"(target ≥ {target}: {verdict})"
        )


def measure(
    duration: int, connections: int, *, rounds: int, warm_up: int = 2
) -> dict[str, list[float]]:
    """Requests per second of hello world and of each page, per round."""
    rates: dict[str, list[float]] = {"hello world": [], **{name: [] for name in TARGETS}}
    with running_pages() as (urls, _portal):
        # Rounds of one run each, so that a busy spell of the machine hits all three.
        for _ in range(rounds):
            for name, (url, with_cookie) in urls.items():
                rates[name].append(
                    wrk(url, duration, connections, cookie=with_cookie, warm_up=warm_up)
                )
    return rates


@contextmanager
def running_pages() -> Iterator[tuple[dict[str, tuple[str, str | None]], Portal]]:
    """Hello world and `portal serve` with the standard incident and Alice's session: each
    target's URL and cookie, and the portal (for its pid)."""
    with tempfile.TemporaryDirectory() as folder, running_smtp_server() as smtp:
        instance = Path(folder) / "instance"
        with (
            running_hello(Path(folder)) as hello,
            running_portal(instance, PORTAL_SMTP_URL=smtp.url()) as portal,
        ):
            _load(portal, Path(folder))
            cookie = _session_cookie(portal.url, smtp)
            yield (
                {
                    "hello world": (hello + "/", None),
                    "incident page": (f"{portal.url}/{SLUG}/", None),
                    "results page": (f"{portal.url}/{SLUG}/results", cookie),
                },
                portal,
            )


def round_ratios(rates: dict[str, list[float]]) -> dict[str, list[float]]:
    """Each page's rate over hello's in the same round, per round."""
    hello = rates["hello world"]
    return {
        name: [rate / of_hello for rate, of_hello in zip(rates[name], hello, strict=True)]
        for name in TARGETS
    }


@contextmanager
def running_hello(folder: Path) -> Iterator[str]:
    (folder / "hello.py").write_text(HELLO, encoding="utf-8")
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "hello:app", "--port", str(port)]
    command += ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level"]
    process = subprocess.Popen([*command, "warning"], cwd=folder)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_sync(lambda: _answers(url), timeout=30)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _load(portal, folder: Path) -> None:  # type: ignore[no-untyped-def]
    (folder / "incident.toml").write_text(INCIDENT, encoding="utf-8")
    portal.cli("incident", "load", str(folder / "incident.toml"))
    portal.cli("import", SLUG, "park-a", str(write_csv(folder / "park-a.csv", PARK_A)))
    portal.cli("import", SLUG, "theater-b", str(write_csv(folder / "theater-b.csv", THEATER_B)))


def _session_cookie(url: str, smtp) -> str:  # type: ignore[no-untyped-def]
    """Alice's session: a lookup, the link from the mail, the confirmation."""
    with httpx.Client(base_url=url) as client:
        token = csrf_of(client.get(f"/{SLUG}/").text)
        client.post(f"/{SLUG}/lookup", data={"email": ALICE, "csrf_token": token})
        wait_for_sync(lambda: smtp.received, timeout=30)
        link = re.search(r"/v/[^\s\"<]+", smtp.received[-1].content.decode())
        assert link, "no link in the mail"
        page = client.get(link.group(0))
        client.post(link.group(0), data={"csrf_token": csrf_of(page.text)})
        assert "data-partner=" in client.get(f"/{SLUG}/results").text
        return f"portal_session={client.cookies['portal_session']}"


def wrk(
    url: str, duration: int, connections: int, *, cookie: str | None = None, warm_up: int = 2
) -> float:
    """Requests per second wrk measured (after a warm-up); non-2xx answers fail it."""
    headers = ["-H", f"Cookie: {cookie}"] if cookie else []
    warm = ["wrk", "-t1", "-c8", f"-d{warm_up}s", *headers, url]
    subprocess.run(warm, capture_output=True, check=True)
    time.sleep(0.5)
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", *headers, url]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"{url} answered non-2xx under load:\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    return float(match.group(1))


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    main(*(args + [10, 32][len(args) :]))
