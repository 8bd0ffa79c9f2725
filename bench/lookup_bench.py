"""Lookup latency against a real `portal serve`: the response, and the mail behind it.

Starts the portal on a free port with a real SMTP server (aiosmtpd), imports a partner
with ROWS synthetic records, then sends N lookups alternating known and unknown addresses.
Prints response-time percentiles for each, and how long until each link mail arrived.

Usage: python bench/lookup_bench.py [N] [ROWS]   (defaults 200 and 2000)
"""

from __future__ import annotations

import csv
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.bruteforce import cpu_model
from tests.factories import INCIDENT
from tests.fixtures_mail import running_smtp_server, wait_for_sync
from tests.server import Portal, running_portal

SLUG = "ticketing-2021"


def main(lookups: int, rows: int) -> None:
    print(f"{cpu_model()}; {lookups} lookups against {rows} records; SQLite, limits in memory")
    with tempfile.TemporaryDirectory() as folder, running_smtp_server() as smtp:
        instance = Path(folder) / "instance"
        limits = {"PORTAL_LIMIT_PER_CLIENT": "100000/hour", "PORTAL_LIMIT_PER_ADDRESS": "1000/hour"}
        with running_portal(instance, PORTAL_SMTP_URL=smtp.url(), **limits) as portal:
            load_people(portal, Path(folder), rows)
            known, unknown, sent = _measure(portal.url, lookups, smtp)
            wait_for_sync(lambda: len(smtp.received) >= lookups, timeout=600)
            all_done = time.perf_counter() - sent
    _report("known address", known)
    _report("unknown address", unknown)
    print(f"all {lookups} link mails delivered {all_done:.2f} s after the last response")


def load_people(portal: Portal, folder: Path, rows: int) -> None:
    """The standard incident with `rows` made-up people at park-a, through the CLI."""
    (folder / "incident.toml").write_text(INCIDENT, encoding="utf-8")
    portal.cli("incident", "load", str(folder / "incident.toml"))
    path = folder / "park-a.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "naam"])
        writer.writerows([f"person{i}@example.org", f"Naam {i}"] for i in range(rows))
    portal.cli("import", SLUG, "park-a", str(path))


def _measure(url: str, lookups: int, smtp) -> tuple[list[float], list[float], float]:  # type: ignore[no-untyped-def]
    known: list[float] = []
    unknown: list[float] = []
    with httpx.Client(base_url=url) as client:
        page = client.get(f"/{SLUG}/").text
        cookies = dict(client.cookies)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    for i in range(lookups):
        address = f"person{i}@example.org" if i % 2 == 0 else f"nobody{i}@example.org"
        # A connection per lookup, as people arrive: no request queues behind another's
        # background work on a kept-alive connection.
        with httpx.Client(base_url=url, cookies=cookies) as client:
            started = time.perf_counter()
            response = client.post(f"/{SLUG}/lookup", data={"email": address, "csrf_token": token})
            elapsed = time.perf_counter() - started
        assert response.status_code == 303, response.status_code
        (known if i % 2 == 0 else unknown).append(elapsed * 1000)
    return known, unknown, time.perf_counter()


def _report(name: str, times: list[float]) -> None:
    times.sort()
    q = statistics.quantiles(times, n=100, method="inclusive")
    print(
        f"{name:16} n={len(times)}  median {statistics.median(times):.2f} ms  "
        f"p95 {q[94]:.2f} ms  p99 {q[98]:.2f} ms  max {times[-1]:.2f} ms"
    )


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    main(*(args + [200, 2000][len(args) :]))
