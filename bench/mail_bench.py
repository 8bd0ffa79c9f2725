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
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiosmtplib
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from portal.core import metrics
from portal.core.config import SMTP_CONNECTIONS, Settings
from portal.mail import outbox
from portal.mail.delivery import SmtpSender
from portal.mail.messages import Message, build_email
from portal.mail.renderer import Renderer
from portal.mail.worker import BATCH_SIZE, MailWorker
from portal.requests.deletions import mark_forward_failed, mark_forwarded
from portal.store import db, tables

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.bruteforce import cpu_model  # noqa: E402
from bench.databases import scratch_database  # noqa: E402
from bench.relay import running_relay  # noqa: E402

TARGET = 1000.0  # mails/s


@dataclass(frozen=True)
class MailRun:
    """What one run measured: the portal's delivery and bare aiosmtplib's, to one server."""

    n: int
    backend: str
    queued_seconds: float
    seconds: float  # the portal's delivery of all n
    cpu: float  # CPU seconds of this process during it
    raw: float  # mails/s of bare aiosmtplib
    raw_cpu: float
    sent: int  # rows marked sent in the outbox
    received: int  # messages the SMTP server took from the portal
    raw_rounds: tuple[float, float] = (0.0, 0.0)  # bare aiosmtplib before and after the portal

    @property
    def rate(self) -> float:
        return self.n / self.seconds

    @property
    def ratio_to_bare(self) -> float:
        return self.rate / self.raw


def main() -> None:
    args = _arguments()
    print(f"python {platform.python_version()}, {os.cpu_count()} cores, {cpu_model()}")
    print(f"load average {load()} before the run (the machine is shared)")
    print(
        f"{args.n} mails, {args.connections} SMTP connections, batch {args.batch_size}, "
        f"{'PostgreSQL' if args.database_url else 'SQLite'}, aiosmtpd in another process"
    )
    run = measure(
        args.n,
        database_url=args.database_url,
        connections=args.connections,
        batch_size=args.batch_size,
        profile=args.profile,
    )
    message = _message()
    chars = len(message.text) + len(message.html)
    print(f"queued {run.n} in {run.queued_seconds:.2f} s ({chars} chars each)")
    print(f"delivered {run.sent} in {run.seconds:.2f} s: {run.rate:,.0f} mails/s")
    print(f"the SMTP server received {run.received} from the portal")
    print(
        f"the same server took {run.raw:,.0f} mails/s from bare aiosmtplib in this run "
        f"({run.raw_rounds[0]:,.0f} before the portal, {run.raw_rounds[1]:,.0f} after; "
        f"{args.connections} kept-open connections, one such message built once): "
        f"portal/bare {run.ratio_to_bare:.2f}"
    )
    print(
        f"CPU of this process per mail: portal {run.cpu / run.n * 1000:.2f} ms, "
        f"bare aiosmtplib {run.raw_cpu / run.n * 1000:.2f} ms "
        f"(one core carries {run.n / run.cpu:,.0f} portal mails/s besides the SMTP server)"
    )
    print(f"target {TARGET:,.0f} mails/s: ratio {run.rate / TARGET:.2f}")
    print(f"load average {load()} after the run")


def load() -> str:
    """The load average of the last 1, 5 and 15 minutes: how shared the machine was."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def measure(
    n: int,
    *,
    database_url: str | None = None,
    connections: int = SMTP_CONNECTIONS,
    batch_size: int = BATCH_SIZE,
    profile: Path | None = None,
) -> MailRun:
    """N link mails queued, then delivered by the portal's MailWorker; bare aiosmtplib's
    rate to the same server, measured just before and just after."""
    with tempfile.TemporaryDirectory() as folder, _database(database_url, folder) as url:
        settings = Settings(
            instance_dir=Path(folder),
            database_url=url,
            secret_key="bench",
            pepper=b"bench",
            mail_from="Portal <portal@example.net>",
        )
        engine = db.make_engine(url)
        db.migrate(engine)
        queued_seconds = _queue(engine, n)
        with running_relay() as relay:
            first, first_cpu = _cpu_of(_raw_smtp, relay.smtp_port, n, connections)
            sender = SmtpSender("127.0.0.1", relay.smtp_port, parallel=connections)
            worker = MailWorker(  # as portal.workers.mail_worker makes it, with its own sender
                engine,
                settings,
                sender=sender,
                on_sent=outbox.each(mark_forwarded),
                on_failed=outbox.each(mark_forward_failed),
                batch_size=batch_size,
            )
            seconds, cpu = _cpu_of(_deliver, worker, n, profile)
            # Bare aiosmtplib again: a shared machine's load drifts, so the portal's run is
            # compared with the bare rounds on either side of it (their harmonic mean).
            second, second_cpu = _cpu_of(_raw_smtp, relay.smtp_port, n, connections)
        raw, raw_cpu = 2 / (1 / first + 1 / second), (first_cpu + second_cpu) / 2
        with engine.connect() as conn:
            sent = conn.scalar(select(func.count()).where(tables.outbox.c.status == outbox.SENT))
        engine.dispose()
    backend = make_url(url).get_backend_name()
    received = sum(relay.counts.values()) - 2 * (n // connections * connections)
    return MailRun(
        n, backend, queued_seconds, seconds, cpu, raw, raw_cpu, sent or 0, received, (first, second)
    )


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
    with scratch_database(server_url, f"mail_bench_{secrets.token_hex(4)}") as url:
        yield url


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


def _queue(engine: object, n: int) -> float:
    message = _message()
    started = time.perf_counter()
    with engine.begin() as conn:  # type: ignore[attr-defined]
        for i in range(n):
            outbox.enqueue_email(
                conn, kind="link", to=f"person{i}@example.org", message=message, sender_name="T"
            )
    return time.perf_counter() - started


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
        before = _sent()  # the counter is the process's: a second run starts above zero
        started = time.perf_counter()
        task = asyncio.create_task(worker.run(stop))
        while _sent() - before < n:
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


def _sent(kind: str = "link") -> float:
    """The worker's count of `kind` delivered. Read from that one counter: the registry's
    get_sample_value collects every metric (the process collector reads /proc), which
    polled every 50 ms cost about a tenth of the worker's CPU in a profile."""
    for metric in metrics.emails_sent_total.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels.get("kind") == kind:
                return sample.value
    return 0.0


if __name__ == "__main__":
    main()
