"""Lookups on notice day against a real `portal serve`: paced, then a flood.

Starts the portal (one worker, SQLite, limits out of the way) with a real SMTP server
(aiosmtpd) and a partner of ROWS records, and `portal mail-worker` apart from it (as
docs/deployment.md advises for notice day; MAIL=in-process keeps it in the web process),
then:

1. paced: RATE lookups per second for SECONDS seconds, alternating known and unknown
   addresses, over 64 kept-alive connections of a minimal HTTP client (httpx cost the
   client more than the server: it, not the portal, set the pace); each lookup's time
   counts from when it was due, waiting for a free connection included; prints the
   response-time percentiles (target p99 ≤ 25 ms) and how long after the last response
   every link mail was at the SMTP server (target ≤ 10 s);
2. flood: wrk, 64 connections posting lookups (each a new address) back to back for FLOOD
   seconds; prints how many
   answers were not a 303 or took over 2 s (target: none), /healthz's time right after
   (target < 1 s), the lookups shed, and the server's peak RSS (target ≤ 300 MB).

Usage: [MAIL=in-process] python bench/lookup_load.py [RATE] [SECONDS] [FLOOD] [ROWS]
       (defaults 200 20 15 2000)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.bruteforce import cpu_model
from bench.http_client import Connection, form_session, metric
from bench.lookup_bench import load_people
from bench.procfs import status_kib
from tests.fixtures_mail import running_smtp_server, wait_for_sync
from tests.server import Portal, running_mail_worker, running_portal

SLUG = "ticketing-2021"
FLOOD_CONNECTIONS = 64
LIMITS = {
    "PORTAL_LIMIT_PER_CLIENT": "10000000/hour",
    "PORTAL_LIMIT_PER_ADDRESS": "10000000/hour",
}


def main(rate: int, seconds: int, flood: int, rows: int) -> None:
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {cpu_model()}")
    print(f"load: {Path('/proc/loadavg').read_text().split()[:3]} (1, 5, 15 min)")
    apart = os.environ.get("MAIL", "apart") != "in-process"
    where = "a separate `portal mail-worker`" if apart else "the web process"
    print(f"SQLite, limits in memory, {rows} records, argon2id m=8 MiB t=1 p=1")
    print(f"mail delivered by {where}")
    args = ["--no-mail-worker"] if apart else []
    with tempfile.TemporaryDirectory() as folder, running_smtp_server() as smtp:
        instance = Path(folder) / "instance"
        with running_portal(instance, *args, PORTAL_SMTP_URL=smtp.url(), **LIMITS) as portal:
            load_people(portal, Path(folder), rows)
            with contextlib.ExitStack() as stack:
                if apart:
                    stack.enter_context(running_mail_worker(portal.env, instance / "mail.log"))
                paced(portal, smtp, rate, seconds)
                flooded(portal, flood)


def paced(portal: Portal, smtp, rate: int, seconds: int) -> None:  # type: ignore[no-untyped-def]
    count = rate * seconds
    times, statuses, ended = asyncio.run(_paced(portal.url, rate, count))
    shed = metric(portal.url, "portal_lookups_shed_total")
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
    """Lookup i is due at start + i / rate; its time counts from then (waiting for a free
    connection included, so a slow server cannot hide behind a slow client)."""
    global _paced_started
    host, port, cookie, token = form_session(url, f"/{SLUG}/")
    connections = [await Connection.open(host, port) for _ in range(PACED_CONNECTIONS)]
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for connection in connections:
        idle.put_nowait(connection)
    times: list[float] = []
    statuses: list[int] = []

    async def one(i: int, due: float) -> None:
        address = f"person{i}@example.org" if i % 2 == 0 else f"nobody{i}@example.org"
        connection = await idle.get()
        response = await connection.request(
            "POST",
            f"/{SLUG}/lookup",
            headers={"Cookie": cookie},
            form={"email": address, "csrf_token": token},
        )
        idle.put_nowait(connection)
        times.append((time.perf_counter() - due) * 1000)
        statuses.append(response.status)

    tasks = []
    _paced_started = start = time.monotonic()
    perf_start = time.perf_counter()
    for i in range(count):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, perf_start + i / rate)))
    await asyncio.gather(*tasks)
    for connection in connections:
        connection.close()
    return times, statuses, time.monotonic()


PACED_CONNECTIONS = 64


def flooded(portal: Portal, seconds: int) -> None:
    shed_before = metric(portal.url, "portal_lookups_shed_total")
    result = _wrk_flood(portal.url, seconds)
    started = time.perf_counter()
    health = httpx.get(f"{portal.url}/healthz", timeout=30)
    health_ms = (time.perf_counter() - started) * 1000
    peak = status_kib(portal.pid, "VmHWM")
    shed = metric(portal.url, "portal_lookups_shed_total") - shed_before
    bad = result["non_3xx"] + result["errors"]
    print(
        f"flood {FLOOD_CONNECTIONS} connections for {seconds} s (wrk): {result['requests']} "
        f"lookups ({result['requests'] / seconds:.0f}/s), {bad} not 303 or no answer, "
        f"p99 {result['p99']} max {result['max']}, {shed:.0f} shed (target every answer a "
        f"303 within 2 s: {'met' if not bad and result['max_ms'] <= 2000 else 'MISSED'})"
    )
    print(
        f"  /healthz right after: {health.status_code} in {health_ms:.1f} ms "
        f"(target < 1000 ms: {'met' if health_ms < 1000 else 'MISSED'})"
    )
    print(
        f"  server peak RSS {peak / 1024:.0f} MB, now {status_kib(portal.pid, 'VmRSS') / 1024:.0f} "
        f"MB (target ≤ 300 MB: {'met' if peak <= 300 * 1024 else 'MISSED'})"
    )


WRK_FLOOD = """
counter = 0
request = function()
  counter = counter + 1
  local body = "email=flood" .. counter .. "%%40example.net&csrf_token=%(token)s"
  return wrk.format("POST", "/%(slug)s/lookup", {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["Cookie"] = "%(cookie)s",
  }, body)
end
"""


def _wrk_flood(url: str, seconds: int) -> dict[str, Any]:
    """wrk posting lookups, each with a new address, on 64 connections (one Lua state, so
    the counter is unique); a 10 s timeout, so that a slow answer is counted, not dropped."""
    _host, _port, cookie, token = form_session(url, f"/{SLUG}/")
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(WRK_FLOOD % {"token": token, "cookie": cookie, "slug": SLUG})
        script.flush()
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{FLOOD_CONNECTIONS}",
                f"-d{seconds}s",
                "--timeout",
                "10s",
                "--latency",
                "-s",
                script.name,
                f"{url}/{SLUG}/lookup",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    latency = re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", out)
    assert latency, out
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    p99 = re.search(r"99%\s+(\S+)", out)
    return {
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        "max": latency.group(3),
        "max_ms": _ms(latency.group(3)),
        "p99": p99.group(1) if p99 else "?",
        "non_3xx": int(non.group(1)) if non else 0,
        "errors": sum(int(n) for n in errors.groups()) if errors else 0,
    }


def _ms(text: str) -> float:
    """A wrk duration ("812.00us", "1.52ms", "2.01s") in milliseconds."""
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    main(*(args + [200, 20, 15, 2000][len(args) :]))
