"""A notice-day rehearsal: the first hour after a notice, at fixed rates stepped up.

Set-up, through the `portal` command as an operator would: a database of its own on the
PostgreSQL server (`notice_day_<pid>`, dropped at the end), a Redis server of its own on a
free port (nothing kept on disk), the relay (aiosmtpd, bench/relay.py) in a process of its
own, `portal init`, `portal incident load docs/incident.example.toml`, `portal import` of
ADDRESSES synthetic addresses at park-a, then two `portal serve --no-mail-worker` on two
ports and one `portal mail-worker`, all sharing the database and Redis.

Load (bench/notice_load.py): per 100 requests 40 incident pages, 25 lookups, 20 link
confirmations (GET then POST, the links read from the relay), 12 results pages and 3
deletion requests, open loop at a fixed rate, over both servers in turn. Each step warms up
for a few seconds, then is measured for SECONDS; the rate goes up step by step until a
step's p99 (of any kind of request) passes 100 ms or a request fails.

Output per step: the rate offered and held, p50/p99 per kind, errors (any answer not 2xx
or 3xx, or none), link mails delivered and their lag (the relay's receipt − the lookup's
answer), each process's peak RSS, and whether the client kept up. Then the bound: raw
argon2id hashes/s on all cores at the incident's cost (the default, t=1 m=8 MiB p=1), ÷
0.25 since a lookup is a quarter of the mix; and the highest rate held with p99 ≤ 100 ms
and 0 errors, as a ratio to that bound (target ≥ 0.3).

Rate limits stay at their defaults: each request comes from a client address of its own
(X-Forwarded-For from 127.0.0.1, a trusted proxy), and each lookup is for another address,
as on notice day; so the limits are exercised (in Redis) and never refused anyone.

Usage: python bench/notice_day.py [--addresses N] [--seconds S] [--rates R,R,...]
           [--clients C] [--quick] [--keep | --reuse NAME] [--postgresql URL]
Example: python bench/notice_day.py                          (200 k addresses, 2 min steps)
Example: python bench/notice_day.py --quick --addresses 5000  (a smoke run, 10 s steps)
Example: python bench/notice_day.py --keep   then   python bench/notice_day.py --reuse NAME
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.bruteforce import KdfParams, cpu_model, guesses_per_second  # noqa: E402
from bench.databases import POSTGRESQL, create_database, database_url, drop_database  # noqa: E402
from bench.http_client import metric  # noqa: E402
from bench.import_scale import write_leak  # noqa: E402
from bench.notice_load import MIX, Plan, Step, StepResult, run_client  # noqa: E402
from bench.procfs import reset_peak, status_kib  # noqa: E402
from bench.relay import running_relay  # noqa: E402
from tests.fixtures_mail import free_port, wait_for_sync  # noqa: E402
from tests.server import portal_env, running_mail_worker, running_portal  # noqa: E402

SLUG, PARTNER = "ticketing-2021", "park-a"
INCIDENT_FILE = ROOT / "docs" / "incident.example.toml"
P99_MS = 100.0
TARGET = 0.3  # the highest rate held, as a share of the bound
SERVERS = 2
CLIENT_SATURATED = 0.8  # of a core: past this a client process is the bottleneck


@dataclass
class StepFigures:
    rate: float
    seconds: float
    result: StepResult
    shed: float
    peaks: dict[str, int]  # process → peak RSS in KiB during the step
    clients: int

    @property
    def held_rate(self) -> float:
        return self.result.completed / self.seconds

    @property
    def errors(self) -> int:
        return sum(self.result.errors.values())

    @property
    def worst_p99(self) -> float:
        return max(p99(values) for values in self.result.latencies.values())

    @property
    def held(self) -> bool:
        unexpected = sum(self.result.unexpected.values())
        return self.worst_p99 <= P99_MS and not self.errors and not unexpected


def main() -> None:
    args = _arguments()
    _print_machine()
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        url = stack.enter_context(_database(args))
        redis_url, redis_pid = stack.enter_context(running_redis(folder))
        relay = stack.enter_context(running_relay())
        extra = {
            "PORTAL_DATABASE_URL": url,
            "PORTAL_REDIS_URL": redis_url,
            "PORTAL_SMTP_URL": relay.smtp_url,
            "PORTAL_TRUSTED_PROXIES": "127.0.0.1",
        }
        addresses = _prepare(folder, extra, args)
        bound = _bound(args.bound_seconds)
        servers = [
            stack.enter_context(running_portal(folder / f"serve-{n}", "--no-mail-worker", **extra))
            for n in range(1, SERVERS + 1)
        ]
        worker = stack.enter_context(
            running_mail_worker(servers[0].env, folder / "mail-worker.log")
        )
        pids = {f"serve-{n}": server.pid for n, server in enumerate(servers, 1)}
        pids |= {"mail-worker": worker.process.pid, "redis": redis_pid, "relay": relay.pid}
        urls = [server.url for server in servers]
        plans = [
            Plan(SLUG, urls, relay.feed_port, n, args.clients, addresses, args.connections)
            for n in range(args.clients)
        ]
        pipes = stack.enter_context(running_clients(plans))
        steps = _steps(args, pipes, urls, pids)
    print(
        f"\nthe relay took {relay.counts.get('link', 0):,} link mails and "
        f"{relay.counts.get('other', 0):,} others (deletion requests to the partner) in all"
    )
    _summary(steps, bound)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addresses", type=int, default=200_000, help="addresses imported")
    parser.add_argument("--seconds", type=float, default=120.0, help="measured, per step")
    parser.add_argument("--warm-up", type=float, default=10.0, help="seconds before each step")
    parser.add_argument(
        "--rates",
        default="100,200,300,400,500,600,800,1000,1200,1500,2000",
        help="requests per second of each step, in order (it stops at the first not held)",
    )
    parser.add_argument("--clients", type=int, default=1, help="load-generating processes")
    parser.add_argument(
        "--connections", type=int, default=256, help="at most, per server and client"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 10 s steps after 3 s warm-ups"
    )
    parser.add_argument("--keep", action="store_true", help="keep the database for --reuse")
    parser.add_argument("--reuse", metavar="NAME", help="a database --keep left: no import")
    parser.add_argument("--postgresql", default=POSTGRESQL, metavar="URL", help="the server")
    parser.add_argument(
        "--bound-seconds", type=float, default=5.0, help="argon2id measured for the bound"
    )
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.warm_up = 10.0, 3.0
    return args


def _print_machine() -> None:
    print(f"{cpu_model()}, {os.cpu_count()} logical cores, Python {platform.python_version()}")
    print(f"load {_load()} (1, 5, 15 min)")


@contextlib.contextmanager
def _database(args: argparse.Namespace) -> Iterator[str]:
    """The rehearsal's own database: new and dropped after, unless kept or reused."""
    if args.reuse:
        print(f"database {args.reuse} (reused: no import)")
        yield database_url(args.postgresql, args.reuse)
        return
    name = f"notice_day_{os.getpid()}"
    url = create_database(args.postgresql, name)
    try:
        yield url
    finally:
        if args.keep:
            print(f"kept database {name}: run again with --reuse {name}")
        else:
            drop_database(args.postgresql, name)


@contextlib.contextmanager
def running_redis(folder: Path) -> Iterator[tuple[str, int]]:
    """A Redis server of the rehearsal's own on a free port, keeping nothing on disk."""
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--dir", str(folder), "--logfile", str(folder / "redis.log")]
    process = subprocess.Popen(command)
    client = redis.Redis(port=port)
    try:
        wait_for_sync(lambda: _pings(client), timeout=30)
        yield f"redis://127.0.0.1:{port}/0", process.pid
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=15)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def _prepare(folder: Path, extra: dict[str, str], args: argparse.Namespace) -> int:
    """The incident and its addresses, through the CLI; how many addresses there are."""
    env = portal_env(folder / "cli", **extra)
    if args.reuse:
        records = _records(env)
        print(f"{records:,} addresses at {PARTNER} already imported")
        return records
    _portal(env, "init")
    _portal(env, "incident", "load", str(INCIDENT_FILE))
    write_leak(folder / "leak.csv", args.addresses)
    started = time.monotonic()
    _portal(env, "import", SLUG, PARTNER, str(folder / "leak.csv"))
    seconds = time.monotonic() - started
    print(
        f"imported {args.addresses:,} addresses at {PARTNER} in {seconds:.0f} s "
        f"({args.addresses / seconds:,.0f}/s, `portal import` on all cores), load {_load()}"
    )
    return args.addresses


def _records(env: dict[str, str]) -> int:
    """The records of the partner, as `portal incident list` shows them."""
    for line in _portal(env, "incident", "list").splitlines():
        if line.split()[:1] == [PARTNER]:
            return int(line.split()[1])
    raise SystemExit(f"no {PARTNER} in that database: prepare it with --keep first")


def _portal(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "portal", *args], env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"portal {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def _bound(seconds: float) -> float:
    """Raw argon2id on every core at the incident's cost, ÷ the lookups' share of the mix.

    On threads: argon2-cffi releases the GIL, so they hash on every core.
    """
    params, cores = KdfParams(), os.cpu_count() or 1
    hashes = guesses_per_second(cores, seconds, params)
    share = MIX["lookup"] / sum(MIX.values())
    print(
        f"bound: argon2id t={params.time_cost} m={params.memory_cost // 1024} MiB "
        f"p={params.parallelism} (the incident's, the default) on {cores} cores for "
        f"{seconds:.0f} s: {hashes:,.0f} hashes/s; a lookup is {share:.0%} of the mix, "
        f"so the bound is {hashes / share:,.0f} req/s"
    )
    return hashes / share


@contextlib.contextmanager
def running_clients(plans: list[Plan]) -> Iterator[list[Pipe]]:
    """The load-generating processes, each ready (its form token read, the feed open)."""
    context = multiprocessing.get_context("spawn")
    pipes, processes = [], []
    for plan in plans:
        ours, theirs = context.Pipe()
        process = context.Process(target=run_client, args=(plan, theirs), daemon=True)
        process.start()
        pipes.append(ours)
        processes.append(process)
    try:
        for pipe in pipes:
            assert pipe.recv() == "ready"
        yield pipes
    finally:
        for pipe in pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()


def _steps(
    args: argparse.Namespace, pipes: list[Pipe], urls: list[str], pids: dict[str, int]
) -> list[StepFigures]:
    print(
        f"steps of {args.seconds:.0f} s after {args.warm_up:.0f} s warm-ups; rate limits at "
        f"their defaults, each request from a client address of its own (X-Forwarded-For "
        f"from 127.0.0.1, trusted); {args.clients} client process(es), {SERVERS} servers in "
        "turn; latency from each request's due time"
    )
    steps: list[StepFigures] = []
    for rate in (float(r) for r in args.rates.split(",")):
        step = _step(rate, args, pipes, urls, pids)
        steps.append(step)
        _print_step(len(steps), step)
        if not step.held:
            break
    return steps


def _step(
    rate: float, args: argparse.Namespace, pipes: list[Pipe], urls: list[str], pids: dict[str, int]
) -> StepFigures:
    for pid in pids.values():
        reset_peak(pid)
    shed_before = sum(metric(url, "portal_lookups_shed_total") for url in urls)
    start = time.monotonic() + 0.5  # every client has it before the first request is due
    for pipe in pipes:
        pipe.send(Step(rate / len(pipes), args.warm_up, args.seconds, start))
    result = StepResult()
    for pipe in pipes:
        result.merge(pipe.recv())
    shed = sum(metric(url, "portal_lookups_shed_total") for url in urls) - shed_before
    peaks = {name: status_kib(pid, "VmHWM") for name, pid in pids.items()}
    return StepFigures(rate, args.seconds, result, shed, peaks, len(pipes))


def _print_step(number: int, step: StepFigures) -> None:
    result = step.result
    print(
        f"\nstep {number}: {step.rate:,.0f} req/s offered for {step.seconds:.0f} s, "
        f"{step.held_rate:,.1f}/s answered within it; {result.offered:,} requests of the mix "
        f"({result.http_requests:,} HTTP), {step.errors} errors, "
        f"{sum(result.unexpected.values())} unexpected, {_counts(result.skipped)} skipped "
        f"(no link or session yet); load {_load()}"
    )
    print(f"  {'kind':10} {'count':>7} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}  errors")
    rows = {kind: result.latencies.get(kind, []) for kind in MIX}
    rows["all"] = [value for values in rows.values() for value in values]
    for kind, values in rows.items():
        bad = sum(
            counts.get(other, 0)
            for counts in (result.errors, result.unexpected)
            for other in (MIX if kind == "all" else [kind])
        )
        print(
            f"  {kind:10} {len(values):7,} {_ms(values, 50):>9} {_ms(values, 99):>9} "
            f"{_ms(values, 100):>9}  {bad}"
        )
    for sample in result.samples:
        print(f"    e.g. {sample}")
    lags = sorted(result.mail_lags)
    print(
        f"  link mails at the relay in the window: {len(lags):,} "
        f"({len(lags) / step.seconds:,.1f}/s), lag p50 {_s(lags, 50)} p99 {_s(lags, 99)} "
        f"max {_s(lags, 100)}; lookups shed by the servers: {step.shed:.0f}"
    )
    peaks = ", ".join(f"{name} {kib / 1024:.0f}" for name, kib in step.peaks.items())
    print(f"  peak RSS (MiB) in the step: {peaks}")
    cpu = result.cpu / result.wall / step.clients if result.wall else 0.0
    # A client near a whole core is late by its own doing; below that, lateness is the
    # machine's scheduling (its cores shared with the servers).
    kept_up = "SATURATED: add --clients" if cpu >= CLIENT_SATURATED else "kept up"
    print(
        f"  client: {step.clients} process(es), {cpu:.0%} of a core each, requests started "
        f"late by p99 {_ms(result.late_starts, 99)} ms: {kept_up}"
    )
    verdict = "held" if step.held else "NOT held"
    print(f"  {verdict} (every kind's p99 ≤ {P99_MS:.0f} ms, no error or unexpected answer)")


def _summary(steps: list[StepFigures], bound: float) -> None:
    print(
        f"\n{'offered':>8} {'held':>8} {'worst kind p99':>15} {'all p99':>10} {'errors':>7}"
        "  verdict"
    )
    for step in steps:
        everything = [value for values in step.result.latencies.values() for value in values]
        print(
            f"{step.rate:8,.0f} {step.held_rate:8,.1f} {step.worst_p99:12.1f} ms "
            f"{p99(everything):7.1f} ms {step.errors:7}  {'held' if step.held else 'NOT held'}"
        )
    held = [step.rate for step in steps if step.held]
    best = max(held, default=0.0)
    ratio = best / bound
    print(
        f"highest rate held with p99 ≤ {P99_MS:.0f} ms and 0 errors: {best:,.0f} req/s = "
        f"{ratio:.2f} × the bound of {bound:,.0f} req/s "
        f"(target ≥ {TARGET}: {'met' if ratio >= TARGET else 'MISSED'})"
    )


def percentile(ordered: list[float], q: int) -> float:
    """The q-th percentile of sorted values (q=100: the largest)."""
    if q == 100 or len(ordered) == 1:
        return ordered[-1]
    return statistics.quantiles(ordered, n=100, method="inclusive")[q - 1]


def p99(values: list[float]) -> float:
    return percentile(sorted(values), 99) if values else 0.0


def _ms(values: list[float], q: int) -> str:
    return f"{percentile(sorted(values), q):.2f}" if values else "-"


def _s(values: list[float], q: int) -> str:
    return f"{percentile(values, q):.2f} s" if values else "-"


def _counts(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    shown = ", ".join(f"{kind} {n}" for kind, n in counts.items() if n)
    return f"{total} ({shown})" if shown else "0"


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    main()
