"""The benchmarks' own parts: the relay's feed of links, the guard's floors, the rehearsal."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import aiosmtplib
import pytest

from bench.guard import FLOORS, collapsed
from bench.relay import running_relay
from tests.databases import Backend, Postgresql

ROOT = Path(__file__).resolve().parent.parent


def test_it_feeds_each_client_the_links_of_the_addresses_it_looked_up() -> None:
    addresses = [f"person{n}@example.org" for n in range(12)]
    with running_relay() as relay:
        feeds = asyncio.run(_links_fed(relay.smtp_port, relay.feed_port, addresses))
    for index, lines in enumerate(feeds):
        mine = [a for a in addresses if zlib.crc32(a.encode()) % 2 == index]
        assert [line.split()[1] for line in lines] == mine
        assert all(re.fullmatch(r"/v/tok\d+", line.split()[2]) for line in lines)
    assert relay.counts == {"link": 12, "other": 1}


async def _links_fed(smtp_port: int, feed_port: int, addresses: list[str]) -> list[list[str]]:
    feeds = []
    for index in range(2):
        reader, writer = await asyncio.open_connection("127.0.0.1", feed_port)
        writer.write(f"{index} 2\n".encode())
        assert await reader.readline() == b"subscribed\n"
        feeds.append((reader, writer))
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp_port) as smtp:
        for n, address in enumerate(addresses):
            await smtp.sendmail("portal@example.net", [address], _mail("link", f"/v/tok{n}"))
        await smtp.sendmail("portal@example.net", ["privacy@park-a.example"], _mail("deletion"))
    lines: list[list[str]] = [[], []]
    for index, (reader, writer) in enumerate(feeds):
        expected = sum(zlib.crc32(a.encode()) % 2 == index for a in addresses)
        for _ in range(expected):
            lines[index].append((await asyncio.wait_for(reader.readline(), 10)).decode())
        writer.close()
    return lines


def _mail(kind: str, link: str = "") -> bytes:
    body = f"Open http://127.0.0.1:8000{link} to see it." if link else "A deletion request."
    return f"Subject: x\r\nX-Portal-Kind: {kind}\r\n\r\n{body}\r\n".encode()


def test_it_fails_the_guard_only_under_a_floor() -> None:
    at_floors = {name: floor.floor for name, floor in FLOORS.items()}
    assert collapsed(at_floors) == []
    incident = "incident page / hello world"
    assert collapsed(at_floors | {incident: FLOORS[incident].floor * 0.99}) == [incident]
    assert all(floor.floor <= floor.target / 2 for floor in FLOORS.values())


@pytest.mark.e2e
@pytest.mark.backends("postgresql", reason="the rehearsal runs on PostgreSQL, as notice day")
def test_it_rehearses_notice_day_and_reports_every_kind(backend: Backend) -> None:
    if shutil.which("redis-server") is None:
        reason = "the rehearsal starts a redis-server of its own: apt-get install redis"
        pytest.fail(reason) if os.environ.get("CI") else pytest.skip(reason)
    assert isinstance(backend, Postgresql)
    command = [sys.executable, "bench/notice_day.py", "--addresses", "40", "--rates", "20"]
    command += ["--seconds", "4", "--warm-up", "3", "--bound-seconds", "1"]
    command += ["--postgresql", backend.admin_url]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert re.search(r"step 1: 20 req/s offered for 4 s.*, 0 errors, 0 unexpected", out), out
    for kind in ("incident", "lookup", "confirm", "results"):
        assert re.search(rf"^  {kind} +[1-9]", out, re.MULTILINE), (kind, out)
    mails = re.search(r"link mails at the relay in the window: (\d+)", out)
    assert mails and int(mails.group(1)) > 0, out
    assert re.search(r"peak RSS \(MiB\) in the step: serve-1 \d+, serve-2 \d+", out), out
    assert "highest rate held with p99 ≤ 100 ms and 0 errors" in out
