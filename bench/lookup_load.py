"""Lookups on notice day against a real `portal serve`: paced, then a flood.

Starts the portal (one worker, SQLite, limits out of the way) with a real SMTP server
(aiosmtpd) and a partner of ROWS records, and `portal mail-worker` apart from it (as
docs/deployment.md advises for notice day; MAIL=in-process keeps it in the web process),
then:

1. paced: RATE lookups per second for SECONDS seconds, alternating known and unknown
   addresses, over kept-alive connections; prints the response-time percentiles (target
   p99 ≤ 25 ms) and how long after the last response every link mail was at the SMTP
   server (target ≤ 10 s);
2. flood: 64 connections posting lookups back to back for FLOOD seconds; prints how many
   answers were not a 303 or took over 2 s (target: none), /healthz's time right after
   (target < 1 s), the lookups shed, and the server's peak RSS (target ≤ 300 MB).

Usage: [MAIL=in-process] python bench/lookup_load.py [RATE] [SECONDS] [FLOOD] [ROWS]
       (defaults 200 20 15 2000)
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.import_bench import _cpu
from tests.factories import INCIDENT
from tests.fixtures_mail import running_smtp_server, wait_for_sync
from tests.server import Portal, running_mail_worker, running_portal

SLUG = "ticketing-2021"
FLOOD_CONNECTIONS = 64
TIMEOUT = httpx.Timeout(30, pool=None)  # waiting for a free connection is part of the time
LIMITS = {
    "PORTAL_LIMIT_PER_CLIENT": "10000000/hour",
    "PORTAL_LIMIT_PER_ADDRESS": "10000000/hour",
}


def main(rate: int, seconds: int, flood: int, rows: int) -> None:
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {_cpu()}")
    print(f"load: {Path('/proc/loadavg').read_text().split()[:3]} (1, 5, 15 min)")
    apart = os.environ.get("MAIL", "apart") != "in-process"
    where = "a separate `portal mail-worker`" if apart else "the web process"
    print(f"SQLite, limits in memory, {rows} records, argon2id m=8 MiB t=1 p=1")
    print(f"mail delivered by {where}")
    args = ["--no-mail-worker"] if apart else []
    with tempfile.TemporaryDirectory() as folder, running_smtp_server() as smtp:
        instance = Path(folder) / "instance"
        with running_portal(instance, *args, PORTAL_SMTP_URL=smtp.url(), **LIMITS) as portal:
            _load(portal, Path(folder), rows)
            with contextlib.ExitStack() as stack:
                if apart:
                    stack.enter_context(running_mail_worker(portal.env, instance / "mail.log"))
                paced(portal, smtp, rate, seconds)
                flooded(portal, flood)


def paced(portal: Portal, smtp, rate: int, seconds: int) -> None:  # type: ignore[no-untyped-def]
    count = rate * seconds
    times, statuses, ended = asyncio.run(_paced(portal.url, rate, count))
    shed = _metric(portal, "portal_lookups_shed_total")
    expected = count - int(shed)
    wait_for_sync(lambda: len(smtp.received) >= expected, timeout=600)
    mails_after = time.monotonic() - ended
    times.sort()
    q = statistics.quantiles(times, n=100, method="inclusive")
    achieved = count / (ended - _paced_started)
    print(
        f"paced {rate}/s for {seconds} s: {count} lookups ({achieved:.0f}/s achieved), "
        f"{sum(s != 303 for s in statuses)} not 303, {shed:.0f} shed"
    )
    print(
        f"  response p50 {statistics.median(times):.2f} ms  p95 {q[94]:.2f} ms  "
        f"p99 {q[98]:.2f} ms  max {times[-1]:.2f} ms  (target p99 ≤ 25 ms: "
        f"{'met' if q[98] <= 25 else 'MISSED'})"
    )
    print(
        f"  all {expected} link mails at the SMTP server {mails_after:.2f} s after the last "
        f"response (target ≤ 10 s: {'met' if mails_after <= 10 else 'MISSED'})"
    )


_paced_started = 0.0


async def _paced(url: str, rate: int, count: int) -> tuple[list[float], list[int], float]:
    global _paced_started
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=TIMEOUT) as client:
        token = _csrf((await client.get(f"/{SLUG}/")).text)
        times: list[float] = []
        statuses: list[int] = []

        async def one(i: int) -> None:
            address = f"person{i}@example.org" if i % 2 == 0 else f"nobody{i}@example.org"
            started = time.perf_counter()
            status = await _post(client, address, token)
            times.append((time.perf_counter() - started) * 1000)
            statuses.append(status)

        tasks = []
        _paced_started = start = time.monotonic()
        for i in range(count):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        return times, statuses, time.monotonic()


def flooded(portal: Portal, seconds: int) -> None:
    shed_before = _metric(portal, "portal_lookups_shed_total")
    times, statuses = asyncio.run(_flood(portal.url, seconds))
    started = time.perf_counter()
    health = httpx.get(f"{portal.url}/healthz", timeout=30)
    health_ms = (time.perf_counter() - started) * 1000
    peak = _status(portal.pid, "VmHWM")
    shed = _metric(portal, "portal_lookups_shed_total") - shed_before
    slow = sum(t > 2000 for t in times)
    bad = sum(s != 303 for s in statuses)
    print(
        f"flood {FLOOD_CONNECTIONS} connections for {seconds} s: {len(times)} lookups "
        f"({len(times) / seconds:.0f}/s), {bad} not 303, {slow} over 2 s, max "
        f"{max(times):.0f} ms, {shed:.0f} shed (target none bad or slow: "
        f"{'met' if not (bad or slow) else 'MISSED'})"
    )
    print(
        f"  /healthz right after: {health.status_code} in {health_ms:.1f} ms "
        f"(target < 1000 ms: {'met' if health_ms < 1000 else 'MISSED'})"
    )
    print(
        f"  server peak RSS {peak / 1024:.0f} MB, now {_status(portal.pid, 'VmRSS') / 1024:.0f} "
        f"MB (target ≤ 300 MB: {'met' if peak <= 300 * 1024 else 'MISSED'})"
    )


async def _flood(url: str, seconds: int) -> tuple[list[float], list[int]]:
    limits = httpx.Limits(max_connections=FLOOD_CONNECTIONS)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=TIMEOUT) as client:
        token = _csrf((await client.get(f"/{SLUG}/")).text)
        times: list[float] = []
        statuses: list[int] = []
        end = time.monotonic() + seconds

        async def connection(n: int) -> None:
            i = 0
            while time.monotonic() < end:
                i += 1
                started = time.perf_counter()
                status = await _post(client, f"flood{n}-{i}@example.net", token)
                times.append((time.perf_counter() - started) * 1000)
                statuses.append(status)

        await asyncio.gather(*(connection(n) for n in range(FLOOD_CONNECTIONS)))
        return times, statuses


async def _post(client: httpx.AsyncClient, address: str, token: str) -> int:
    """The lookup's status; 0 when it got no answer (a timeout, a refused connection)."""
    try:
        response = await client.post(
            f"/{SLUG}/lookup", data={"email": address, "csrf_token": token}
        )
    except httpx.HTTPError:
        return 0
    return response.status_code


def _load(portal: Portal, folder: Path, rows: int) -> None:
    (folder / "incident.toml").write_text(INCIDENT, encoding="utf-8")
    portal.cli("incident", "load", str(folder / "incident.toml"))
    path = folder / "park-a.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "naam"])
        writer.writerows([f"person{i}@example.org", f"Naam {i}"] for i in range(rows))
    portal.cli("import", SLUG, "park-a", str(path))


def _metric(portal: Portal, name: str) -> float:
    for row in httpx.get(f"{portal.url}/metrics").text.splitlines():
        if row.startswith(f"{name} "):
            return float(row.rsplit(" ", 1)[1])
    return 0.0


def _status(pid: int, key: str) -> int:
    """A /proc/PID/status figure in KiB (VmHWM: the peak resident set)."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def _csrf(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "no csrf_token in the page"
    return match.group(1)


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    main(*(args + [200, 20, 15, 2000][len(args) :]))
