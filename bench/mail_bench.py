"""Mail throughput: queued messages delivered per second to a local SMTP server.

Queues N link emails into a real outbox (a SQLite file, or a database of its own on the
PostgreSQL server of --database-url, dropped afterwards) and delivers them with the portal's
MailWorker to aiosmtpd running in another process, so that the figure is the portal's and
the SMTP server has a core of its own as a relay would. Prints the machine, the figures and
the ratio to the target (1,000 mails/s, issue 12).

Usage: python bench/mail_bench.py [N] [--database-url postgresql://...] [--connections C]
       [--batch-size B] [--profile FILE.html]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import resource
import secrets
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiosmtplib
from prometheus_client import REGISTRY
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from bench.bruteforce import cpu_model
from portal.core.config import Settings
from portal.mail import outbox
from portal.mail.delivery import SMTP_CONNECTIONS, SmtpSender
from portal.mail.messages import Message, build_email
from portal.mail.renderer import Renderer
from portal.mail.worker import BATCH_SIZE, MailWorker
from portal.requests.deletions import mark_forward_failed, mark_forwarded
from portal.store import db, tables

ROOT = Path(__file__).resolve().parent.parent
TARGET = 1000.0  # mails/s

# An SMTP server that keeps nothing: it counts messages and prints the count when its
# stdin closes. aiosmtpd, as in the test suite.
SERVER = textwrap.dedent(
    """
    import socket, sys
    from aiosmtpd.controller import Controller

    class Counting:
        received = 0
        async def handle_DATA(self, server, session, envelope):
            Counting.received += 1
            return "250 OK"

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    controller = Controller(Counting(), hostname="127.0.0.1", port=port)
    controller.start()
    print(port, flush=True)
    sys.stdin.read()
    controller.stop()
    print(Counting.received, flush=True)
    """
)


def main() -> None:
    args = _arguments()
    print(f"python {platform.python_version()}, {os.cpu_count()} cores, {cpu_model()}")
    with tempfile.TemporaryDirectory() as folder, _database(args.database_url, folder) as url:
        backend = make_url(url).get_backend_name()
        print(
            f"{args.n} mails, {args.connections} SMTP connections, batch {args.batch_size}, "
            f"{'SQLite' if backend == 'sqlite' else 'PostgreSQL'}, aiosmtpd in another process"
        )
        settings = Settings(
            instance_dir=Path(folder),
            database_url=url,
            secret_key="bench",
            pepper=b"bench",
            mail_from="Portal <portal@example.net>",
        )
        engine = db.make_engine(url)
        db.migrate(engine)
        _queue(engine, args.n)
        with _smtp_server() as (port, received):
            raw, raw_cpu = _cpu_of(_raw_smtp, port, args.n, args.connections)
            sender = SmtpSender("127.0.0.1", port, parallel=args.connections)
            worker = MailWorker(  # as portal.workers.mail_worker makes it, with its own sender
                engine,
                settings,
                sender=sender,
                on_sent=mark_forwarded,
                on_failed=mark_forward_failed,
                batch_size=args.batch_size,
            )
            seconds, cpu = _cpu_of(_deliver, worker, args.n, args.profile)
        with engine.connect() as conn:
            sent = conn.scalar(select(func.count()).where(tables.outbox.c.status == outbox.SENT))
        engine.dispose()
    rate = args.n / seconds
    print(f"delivered {sent} in {seconds:.2f} s: {rate:,.0f} mails/s")
    print(f"the SMTP server received {received[0] - args.n} from the portal")
    print(
        f"the same server took {raw:,.0f} mails/s from bare aiosmtplib in this run "
        f"({args.connections} kept-open connections, one such message built once): "
        f"portal/bare {rate / raw:.2f}"
    )
    print(
        f"CPU of this process per mail: portal {cpu / args.n * 1000:.2f} ms, "
        f"bare aiosmtplib {raw_cpu / args.n * 1000:.2f} ms "
        f"(one core carries {args.n / cpu:,.0f} portal mails/s besides the SMTP server)"
    )
    print(f"target {TARGET:,.0f} mails/s: ratio {rate / TARGET:.2f}")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=5000)
    parser.add_argument("--database-url", help="a PostgreSQL server to run on (own database)")
    parser.add_argument("--connections", type=int, default=SMTP_CONNECTIONS)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--profile", type=Path, help="write a pyinstrument profile here")
    return parser.parse_args()


@contextlib.contextmanager
def _database(server_url: str | None, folder: str) -> Iterator[str]:
    if not server_url:
        yield f"sqlite:///{folder}/portal.db"
        return
    name = f"mail_bench_{secrets.token_hex(4)}"
    admin = create_engine(
        make_url(server_url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def _message() -> Message:
    return Renderer(ROOT / "templates").email(
        "link",
        "nl",
        incident_title="Datalek bij TicketDienst",
        link="http://127.0.0.1:8000/v/" + "t" * 60,
        minutes=60,
        organisation="TicketDienst B.V.",
        website="https://www.ticketdienst.example",
        portal_url="http://127.0.0.1:8000",
    )


def _queue(engine: object, n: int) -> None:
    message = _message()
    started = time.perf_counter()
    with engine.begin() as conn:  # type: ignore[attr-defined]
        for i in range(n):
            outbox.enqueue_email(
                conn, kind="link", to=f"person{i}@example.org", message=message, sender_name="T"
            )
    seconds = time.perf_counter() - started
    print(f"queued {n} in {seconds:.2f} s ({len(message.text) + len(message.html)} chars each)")


@contextlib.contextmanager
def _smtp_server() -> Iterator[tuple[int, list[int]]]:
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdin and process.stdout
    received = [0]
    try:
        yield int(process.stdout.readline()), received
    finally:
        process.stdin.close()
        received[0] = int(process.stdout.readline() or 0)
        process.wait(timeout=30)


def _cpu_of(function: Callable[..., float], *args: object) -> tuple[float, float]:
    """What `function` returns, and the CPU seconds this process (all threads) spent."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    result = function(*args)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return result, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _raw_smtp(port: int, n: int, connections: int) -> float:
    """The ceiling on this machine now: aiosmtplib alone, the same bytes each time."""
    data = build_email(
        kind="link",
        to="x@example.org",
        message=_message(),
        mail_from="portal@example.net",
        sender_name="T",
        message_id=None,
    ).data

    async def one(count: int) -> None:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as client:
            for _ in range(count):
                await client.sendmail("portal@example.net", ["x@example.org"], data)

    async def run() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(one(n // connections) for _ in range(connections)))
        return (n // connections * connections) / (time.perf_counter() - started)

    return asyncio.run(run())


def _deliver(worker: MailWorker, n: int, profile: Path | None) -> float:
    async def run() -> float:
        stop = asyncio.Event()
        started = time.perf_counter()
        task = asyncio.create_task(worker.run(stop))
        while _sent() < n:
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        stop.set()
        await task
        return elapsed

    if profile is None:
        return asyncio.run(run())
    from pyinstrument import Profiler

    with Profiler(async_mode="disabled") as profiler:
        seconds = asyncio.run(run())
    profile.write_text(profiler.output_html())
    print(profiler.output_text(unicode=False, color=False, show_all=False)[:6000])
    return seconds


def _sent() -> float:
    return REGISTRY.get_sample_value("portal_emails_sent_total", {"kind": "link"}) or 0.0


if __name__ == "__main__":
    main()
