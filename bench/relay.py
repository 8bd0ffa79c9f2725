"""An SMTP relay for the benchmarks, in a process of its own: it keeps nothing, it counts.

A relay on notice day is another machine; here aiosmtpd runs in its own process, so that
its CPU is not the client's or the portal's. It prints its SMTP port and its feed port on
one line, then takes mail until its stdin closes, and then prints what it received as
JSON: {"link": n, "other": n}.

The feed: a load generator that needs the links the portal mailed connects to the feed
port and sends one line "INDEX COUNT", answered "subscribed". From then on, each link mail
whose recipient's CRC-32 modulo COUNT is INDEX is sent to it as a line "RECEIVED RECIPIENT
PATH": the time.monotonic() of its receipt (one clock for every process of the machine),
the recipient, and the link's path (/v/...). So several client processes each get the
links of the addresses they looked up.

Usage: python bench/relay.py   (the benchmarks start it with running_relay())
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LINK = re.compile(rb"/v/[A-Za-z0-9_.~-]+")
KIND = re.compile(rb"^X-Portal-Kind: (\S+)", re.MULTILINE)


class Relay:
    """The SMTP handler: counts each message, and feeds each link to its subscriber."""

    def __init__(self) -> None:
        self.counts = {"link": 0, "other": 0}
        self.subscribers: list[tuple[int, int, asyncio.StreamWriter]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        received = time.monotonic()
        content: bytes = envelope.original_content or b""
        kind = KIND.search(content[:4096])
        link = LINK.search(content) if kind and kind.group(1) == b"link" else None
        if link is None:
            self.counts["other"] += 1
            return "250 OK"
        self.counts["link"] += 1
        recipient = envelope.rcpt_tos[0]
        line = f"{received:.6f} {recipient} {link.group(0).decode()}\n".encode()
        crc = zlib.crc32(recipient.encode())
        for index, count, writer in self.subscribers:
            if crc % count == index:
                writer.write(line)
        return "250 OK"

    async def subscribe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Feeds a subscriber until it hangs up (the handler must live as long as the feed)."""
        index, count = (int(n) for n in (await reader.readline()).split())
        subscriber = (index, count, writer)
        self.subscribers.append(subscriber)
        writer.write(b"subscribed\n")  # from here on, no link of its share is missed
        try:
            await reader.read()
        finally:
            self.subscribers.remove(subscriber)
            writer.close()

    async def hang_up(self) -> None:
        """Ends every feed, so that each handler returns before the loop stops."""
        for _index, _count, writer in list(self.subscribers):
            writer.close()
            await writer.wait_closed()
        while self.subscribers:
            await asyncio.sleep(0.01)


async def serve() -> None:
    from aiosmtpd.smtp import SMTP

    relay = Relay()
    loop = asyncio.get_running_loop()
    smtp = await loop.create_server(
        lambda: SMTP(relay, hostname="relay.example", enable_SMTPUTF8=True), "127.0.0.1", 0
    )
    feed = await asyncio.start_server(relay.subscribe, "127.0.0.1", 0)
    ports = (server.sockets[0].getsockname()[1] for server in (smtp, feed))
    print(*ports, flush=True)
    await loop.run_in_executor(None, sys.stdin.read)
    smtp.close()
    feed.close()
    await relay.hang_up()
    print(json.dumps(relay.counts), flush=True)


@dataclass
class RunningRelay:
    """A relay process: its ports and pid; `counts` is filled in when it has stopped."""

    smtp_port: int
    feed_port: int
    pid: int
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def smtp_url(self) -> str:
        return f"smtp://127.0.0.1:{self.smtp_port}"


@contextlib.contextmanager
def running_relay() -> Iterator[RunningRelay]:
    command = [sys.executable, str(Path(__file__).resolve())]
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as process:
        assert process.stdin and process.stdout
        smtp_port, feed_port = (int(port) for port in process.stdout.readline().split())
        relay = RunningRelay(smtp_port, feed_port, process.pid)
        try:
            yield relay
        finally:
            process.stdin.close()
            relay.counts = json.loads(process.stdout.readline() or "{}")
            process.wait(timeout=30)


if __name__ == "__main__":
    asyncio.run(serve())
