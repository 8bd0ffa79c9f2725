"""Notices delivered per second: `portal notify --rate 100000`, then `portal mail-worker`.

The direct notice as an operator runs it, every step a real `portal` process: a synthetic
partner file of N addresses imported, `portal notify --rate 100000` (so that every notice
is due at once), then `portal mail-worker` started and timed until the outbox holds nothing
queued or being sent, with aiosmtpd as the relay in a process of its own. Beside it, bare
aiosmtplib sends the same rendered notices (the outbox's rows built once beforehand, with
the portal's own build_email) on the same number of kept-open connections to the same
relay, just before: the ceiling of that relay on this machine at that moment.

The worker's time counts from its start (imports, the pepper check, the relay probe
included), as the operator waits for it; the time from the first delivery is printed too.

Usage: python bench/notify_mail_bench.py [N] [--database-url postgresql://...]
       [--connections C]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiosmtplib
from sqlalchemy import Engine, func, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.bruteforce import cpu_model  # noqa: E402
from bench.mail_bench import _database, load  # noqa: E402
from bench.notify_bench import PARTNER, SLUG, _leak  # noqa: E402
from bench.relay import running_relay  # noqa: E402
from portal.core.config import SMTP_CONNECTIONS  # noqa: E402
from portal.mail import outbox  # noqa: E402
from portal.mail.messages import Message, build_email  # noqa: E402
from portal.store import db, tables  # noqa: E402
from tests.factories import INCIDENT  # noqa: E402

MAIL_FROM = "Portal <portal@example.net>"


@dataclass(frozen=True)
class NoticeRun:
    """What one run measured: the mail worker's delivery of n notices, and bare aiosmtplib's."""

    n: int
    seconds: float  # from the worker's start until the outbox was empty
    from_first: float  # from its first delivery until the outbox was empty
    cpu: float  # CPU seconds of the worker process
    raw: float  # mails/s of bare aiosmtplib, the same messages
    received: int  # notices the relay took from the worker

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
    backend = "PostgreSQL" if args.database_url else "SQLite"
    print(
        f"{args.n} notices, {args.connections} SMTP connections, {backend}, "
        "portal notify --rate 100000 then portal mail-worker, aiosmtpd in another process"
    )
    run = measure(args.n, database_url=args.database_url, connections=args.connections)
    print(
        f"portal mail-worker emptied the outbox in {run.seconds:.2f} s from its start: "
        f"{run.rate:,.0f} notices/s ({run.n / run.from_first:,.0f}/s from its first delivery)"
    )
    print(f"the relay received {run.received} notices from the worker")
    print(
        f"the same relay took {run.raw:,.0f} mails/s of the same notices from bare aiosmtplib "
        f"({args.connections} kept-open connections): portal/bare {run.ratio_to_bare:.2f} "
        f"({run.n / run.from_first / run.raw:.2f} from the first delivery)"
    )
    print(f"CPU of the worker process per notice: {run.cpu / run.n * 1000:.2f} ms")
    print(f"load average {load()} after the run")


def measure(n: int, *, database_url: str | None, connections: int) -> NoticeRun:
    """N notices queued by the CLI, delivered by `portal mail-worker`; bare aiosmtplib's
    rate with the same messages to the same relay, measured just before."""
    with tempfile.TemporaryDirectory() as folder, _database(database_url, folder) as url:
        instance = Path(folder)
        env = _environment(instance, url, connections)
        _queue_notices(instance, env, n)
        engine = db.make_engine(url)
        messages = _built(engine)
        with running_relay() as relay:
            raw = asyncio.run(_bare(relay.smtp_port, messages, connections))
            env["PORTAL_SMTP_URL"] = relay.smtp_url
            seconds, cpu = _worker_until_empty(engine, env, instance / "worker.log")
            from_first = _from_first_delivery(engine, seconds)
        engine.dispose()
    received = relay.counts.get("other", 0) - len(messages) // connections * connections
    return NoticeRun(n, seconds, from_first, cpu, raw, received)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=5000)
    parser.add_argument("--database-url", help="a PostgreSQL server to run on (own database)")
    parser.add_argument("--connections", type=int, default=SMTP_CONNECTIONS)
    return parser.parse_args()


def _environment(instance: Path, url: str, connections: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")}
    env.update(
        PORTAL_INSTANCE_DIR=str(instance),
        PORTAL_DATABASE_URL=url,
        PORTAL_SECRET_KEY="bench",
        PORTAL_PEPPER="bench",
        PORTAL_BASE_URL="https://portal.example.net",
        PORTAL_MAIL_FROM=MAIL_FROM,
        PORTAL_SMTP_CONNECTIONS=str(connections),
    )
    return env


def _queue_notices(instance: Path, env: dict[str, str], n: int) -> None:
    (instance / "incident.toml").write_text(INCIDENT, encoding="utf-8")
    leaked = str(_leak(instance / "park-a.csv", n))
    started = time.perf_counter()
    _portal(env, "init")
    _portal(env, "incident", "load", str(instance / "incident.toml"))
    _portal(env, "import", SLUG, PARTNER, leaked)
    _portal(env, "notify", SLUG, PARTNER, leaked, "--rate", "100000")
    print(f"imported and queued {n} notices in {time.perf_counter() - started:.1f} s")


def _portal(env: dict[str, str], *args: str) -> None:
    command = [sys.executable, "-m", "portal", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"portal {args[0]} failed: {done.stderr.strip()}")


def _built(engine: Engine) -> list[tuple[str, bytes]]:
    """Each queued notice built for the wire as the worker builds it: (recipient, bytes)."""
    c = tables.outbox.c
    query = select(c.recipient, c.subject, c.body_text, c.body_html, c.sender_name, c.kind)
    with engine.connect() as conn:
        rows = conn.execute(query.where(c.status == outbox.QUEUED).order_by(c.id)).all()
    return [
        (
            row.recipient,
            build_email(
                kind=row.kind,
                to=row.recipient,
                message=Message(row.subject, row.body_text, row.body_html),
                mail_from=MAIL_FROM,
                sender_name=row.sender_name,
                message_id=None,
            ).data,
        )
        for row in rows
    ]


async def _bare(port: int, messages: list[tuple[str, bytes]], connections: int) -> float:
    """aiosmtplib alone, each connection kept open and sending its share of the messages."""

    async def one(share: list[tuple[str, bytes]]) -> None:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as client:
            for recipient, data in share:
                await client.sendmail("portal@example.net", [recipient], data)

    each = len(messages) // connections
    shares = [messages[i * each : (i + 1) * each] for i in range(connections)]
    started = time.perf_counter()
    await asyncio.gather(*(one(share) for share in shares))
    return each * connections / (time.perf_counter() - started)


def _worker_until_empty(engine: Engine, env: dict[str, str], log: Path) -> tuple[float, float]:
    """Seconds from starting `portal mail-worker` until nothing is owed; its CPU seconds."""
    with _running_worker(env, log) as process:
        started = time.perf_counter()
        while _owed(engine):
            if process.poll() is not None:
                sys.exit(f"portal mail-worker exited with {process.returncode}: {log.read_text()}")
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        cpu = _cpu_seconds(process.pid)
    return seconds, cpu


@contextlib.contextmanager
def _running_worker(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "portal", "mail-worker"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            yield process
        finally:
            process.terminate()
            process.wait(timeout=60)


def _owed(engine: Engine) -> int:
    c = tables.outbox.c
    with engine.connect() as conn:
        query = select(func.count()).where(c.status.in_((outbox.QUEUED, outbox.SENDING)))
        return int(conn.scalar(query) or 0)


def _from_first_delivery(engine: Engine, seconds: float) -> float:
    """Seconds between the first and the last notice recorded as sent (at most `seconds`)."""
    c = tables.outbox.c
    with engine.connect() as conn:
        first, last = conn.execute(select(func.min(c.sent_at), func.max(c.sent_at))).one()
    return min(seconds, (last - first).total_seconds()) if first and last else seconds


def _cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a running process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    main()
