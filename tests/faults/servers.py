"""The fault tests' own servers: PostgreSQL, Redis, an SMTP relay that can refuse, portals.

The tests start what they break, so that stopping it disturbs nothing else on the machine
and nothing needs installing by hand: a PostgreSQL cluster (`initdb`/`pg_ctl` in a
temporary folder, one per session, a database per test copied from a template), and per
test a `redis-server` on a free port and an aiosmtpd relay. Two `portal serve` processes
share them as two hosts would, and a steady load of lookups runs against both while a test
breaks something: each answer is recorded, and each link mail counted at the relay, by
recipient.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.factories import INCIDENT, write_csv
from tests.fixtures_mail import MailHandler, SmtpServer, free_port, wait_for_sync
from tests.server import Portal, portal_env
from tests.server import _wait_until_healthy as wait_until_healthy

SLUG = "ticketing-2021"
PARTNER = "park-a"
# No client limit in the way of the load (it comes from one address); every address is new.
LOAD_LIMITS = {"PORTAL_LIMIT_PER_CLIENT": "1000000/hour", "PORTAL_LIMIT_PER_ADDRESS": "5/hour"}


def address(n: int) -> str:
    return f"person-{n}@example.net"


# -- skipping, the way the rest of the suite does ----------------------------------------


def unavailable(reason: str) -> None:
    """Skips; under CI (the `CI` variable, set by .ci/run) fails instead."""
    if os.environ.get("CI"):
        pytest.fail(f"CI needs it: {reason}", pytrace=False)
    pytest.skip(reason)


def backend_chosen(config: pytest.Config, name: str) -> None:
    """`pytest --backend sqlite` leaves out the tests of the other backend, here too."""
    chosen = config.getoption("backend")
    if chosen and name not in chosen:
        pytest.skip(f"runs on {name}; --backend {' '.join(chosen)} leaves it out")


# -- PostgreSQL of the test's own ---------------------------------------------------------


def postgres_bindir() -> Path | None:
    """Where initdb and pg_ctl are: pg_config's answer, Debian's folder, or the PATH."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        answer = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        folder = Path(answer.stdout.strip())
        if (folder / "initdb").exists():
            return folder
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class OwnPostgres:
    """A PostgreSQL cluster in a temporary folder, on a free port, for one test.

    initdb and postgres refuse to run as root: as root (CI on this machine), they run as
    the `postgres` user, which owns the folder.
    """

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="portal-faults-pg-"))
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.data = self.folder / "data"
        self.options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off -c synchronous_commit=off"
        )

    def url(self, database: str = "portal") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync", "-E",
            "UTF8", "--locale=C",
        )  # fmt: skip

    def start(self) -> None:
        self._pg_ctl("start", "-l", str(self.folder / "postgres.log"), "-o", self.options)

    def stop(self) -> None:
        self._pg_ctl("stop", "-m", "fast")

    def restart(self) -> None:
        self._pg_ctl(
            "restart", "-m", "fast", "-l", str(self.folder / "postgres.log"), "-o", self.options
        )

    def running(self) -> bool:
        return self._run("pg_ctl", "status", "-D", str(self.data), check=False).returncode == 0

    def sql(self, statement: str, database: str = "postgres") -> list[tuple[Any, ...]]:
        """Runs one statement as the superuser, outside the portal's connections."""
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True, connect_timeout=5) as conn:
            cursor = conn.execute(statement)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []

    def cut_connections(self, database: str = "portal") -> int:
        """Ends every connection to `database` from the server side, as a network cut does."""
        rows = self.sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{database}' AND pid <> pg_backend_pid()"
        )
        return len(rows)

    def remove(self) -> None:
        if self.data.exists() and self.running():
            self._pg_ctl("stop", "-m", "immediate")
        shutil.rmtree(self.folder, ignore_errors=True)

    def _pg_ctl(self, action: str, *args: str) -> None:
        self._run("pg_ctl", action, "-D", str(self.data), "-w", "-t", "60", *args)

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [*self.as_user, str(self.bindir / tool), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=90, cwd="/")
        if check and done.returncode != 0:
            raise AssertionError(f"{tool} {args[0]} failed: {done.stderr or done.stdout}")
        return done


@contextmanager
def own_postgres() -> Iterator[OwnPostgres]:
    """A started cluster with an empty database `portal`; stopped and removed afterwards."""
    bindir = postgres_bindir()
    if bindir is None:
        unavailable("no PostgreSQL server programs (initdb, pg_ctl): apt-get install postgresql")
    assert bindir is not None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            unavailable("running as root, and no `postgres` user to run initdb as")
    server = OwnPostgres(bindir)
    try:
        server.init()
        server.start()
        server.sql("CREATE DATABASE portal")
        yield server
    finally:
        server.remove()


# -- Redis of the test's own --------------------------------------------------------------


class OwnRedis:
    """A `redis-server` on a free port that keeps nothing on disk; stopped and started at will."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        program = shutil.which("redis-server")
        if program is None:
            unavailable("no redis-server: apt-get install redis-server")
        assert program is not None
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                program, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.folder),
                "--logfile", str(self.folder / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_sync(self.answers, timeout=20)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        self.process = None

    def answers(self) -> bool:
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False
        finally:
            client.close()


# -- the SMTP relay ------------------------------------------------------------------------


class SwitchableRelay(MailHandler):
    """The test's relay. While `refusing`, it answers each MAIL FROM with 421 and closes
    the connection, as a relay does when it is overloaded or restarting."""

    def __init__(self) -> None:
        super().__init__()
        self.refusing = False
        self.refused = 0

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.refusing:
            self.refused += 1
            asyncio.get_running_loop().call_later(0.05, server.transport.close)
            return "421 4.3.2 service not available, closing transmission channel"
        return await super().handle_MAIL(server, session, envelope, address, options)


@contextmanager
def running_relay() -> Iterator[SmtpServer]:
    handler = SwitchableRelay()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, enable_SMTPUTF8=True)
    controller.start()
    try:
        yield SmtpServer(handler, "127.0.0.1", port)
    finally:
        controller.stop()


# -- a steady load of lookups ---------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What one lookup got: the server that answered (-1: none did) and the status."""

    address: str
    server: int
    status: int
    at: float


class LookupClient:
    """One browser's worth of lookups on one server: its CSRF cookie and token, reused."""

    def __init__(self, portal: Portal) -> None:
        self.http = httpx.Client(base_url=portal.url, timeout=10)
        self.token: str | None = None

    def __enter__(self) -> LookupClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def look_up(self, email: str) -> int:
        if self.token is None:
            self.token = csrf(self.http.get(f"/{SLUG}/"))
        data = {"email": email, "csrf_token": self.token}
        return self.http.post(f"/{SLUG}/lookup", data=data).status_code


class Load:
    """Lookups at a steady `rate` per second, each for a new address, over the servers in
    turn; a server that refuses the connection passes it to the next, as a load balancer
    does. Runs in a thread from `with` to its end."""

    def __init__(self, servers: list[Portal], numbers: Iterator[int], rate: float) -> None:
        self.servers = servers
        self.numbers = numbers
        self.rate = rate
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def answered(self, status: int = 303) -> list[str]:
        return [a.address for a in list(self.answers) if a.status == status]

    def wait_for(self, count: int, *, since: float = 0.0, timeout: float = 60) -> None:
        """Until `count` lookups were answered after `since` (time.monotonic())."""
        wait_for_sync(
            lambda: sum(a.at >= since for a in list(self.answers)) >= count, timeout=timeout
        )

    def _run(self) -> None:
        clients = [LookupClient(server) for server in self.servers]
        tick = time.monotonic()
        turn = 0
        while not self._stop.wait(max(0.0, tick - time.monotonic())):
            self.answers.append(self._ask(clients, turn, address(next(self.numbers))))
            turn += 1
            tick = max(tick + 1 / self.rate, time.monotonic() - 1)  # late: no burst after
        for client in clients:
            client.http.close()

    def _ask(self, clients: list[LookupClient], turn: int, email: str) -> Answer:
        for step in range(len(clients)):
            which = (turn + step) % len(clients)
            try:
                status = clients[which].look_up(email)
            except httpx.TransportError:
                clients[which].token = None
                continue
            return Answer(email, which, status, time.monotonic())
        return Answer(email, -1, 0, time.monotonic())


# -- a site: the servers and what they share -------------------------------------------------


@dataclass
class Site:
    """Portals on one database, one Redis and one relay; the operator's environment."""

    folder: Path
    env: dict[str, str]
    relay: SmtpServer
    database: str = ""  # the site's database on the cluster
    postgres: OwnPostgres | None = None
    redis: OwnRedis | None = None
    servers: list[Portal] = field(default_factory=list)
    # The load's addresses; those below 100 are the tests' own (address(0) is known).
    next_number: Iterator[int] = field(default_factory=lambda: iter(range(100, 10**9)))

    @property
    def handler(self) -> SwitchableRelay:
        assert isinstance(self.relay.handler, SwitchableRelay)
        return self.relay.handler

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`portal ARGS` as the operator runs it, against the site's database."""
        return run_cli(self.env, *args)

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        assert self.postgres is not None
        return self.postgres.sql(statement, self.database)

    def load(self, rate: float = 20.0) -> Load:
        return Load(self.servers, self.next_number, rate)

    def mails(self) -> Counter[str]:
        """Messages the relay took, per recipient."""
        received = list(self.relay.received)
        return Counter(to.lower() for message in received for to in message.rcpt_tos)

    def wait_for_mails(self, addresses: list[str], timeout: float = 60) -> Counter[str]:
        """Until every address has had its mail; the count per address then."""
        wait_for_sync(lambda: all(self.mails()[a] for a in addresses), timeout=timeout)
        return self.mails()

    def link_for(self, email: str, server: int = 0) -> str:
        """A lookup on one server, and the path of the link its mail brings."""
        seen = self.mails()[email]
        client = LookupClient(self.servers[server])
        try:
            assert client.look_up(email) == 303
        finally:
            client.http.close()
        wait_for_sync(lambda: self.mails()[email] > seen, timeout=30)
        message = [m for m in self.relay.received if email in m.rcpt_tos][-1]
        found = re.search(r"/v/[A-Za-z0-9_.\-]+", message.content.decode())
        assert found
        return found[0]

    def sign_in(self, email: str, server: int = 0) -> httpx.Client:
        """A browser on `server` that followed the link mailed to `email`: it holds a session."""
        browser = httpx.Client(base_url=self.servers[server].url, timeout=10)
        assert confirm(browser, self.link_for(email, server)).status_code == 303
        return browser

    def stop_server(self, server: int) -> float:
        """SIGTERM, as a deploy sends it; how many seconds the process took to exit."""
        process = self.servers[server].process
        assert process is not None
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
        return time.monotonic() - started


def csrf(page: httpx.Response) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, page.status_code
    return found[1]


def confirm(browser: httpx.Client, path: str) -> httpx.Response:
    """Opens a link's page and presses its one button."""
    return browser.post(path, data={"csrf_token": csrf(browser.get(path))})


def run_cli(
    env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "portal", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def metric(portal: Portal, name: str) -> float:
    """A counter or gauge of one server's /metrics (its total over every label)."""
    total = 0.0
    for row in httpx.get(f"{portal.url}/metrics", timeout=10).text.splitlines():
        if row.startswith((f"{name} ", f"{name}{{")):
            total += float(row.rsplit(" ", 1)[1])
    return total


def incident_text(*, memory_kib: int = 8192, time_cost: int = 1) -> str:
    kdf = f"[blind_index]\nmemory_kib = {memory_kib}\ntime_cost = {time_cost}\n\n"
    return INCIDENT.replace("[title]", kdf + "[title]", 1)


def known_csv(folder: Path, numbers: range) -> Path:
    """The partner's file: a name and a phone number for each of these addresses."""
    rows = [["email", "name", "phone"]]
    rows += [[address(n), f"Person {n}", f"06{n:08d}"] for n in numbers]
    return write_csv(folder / f"{PARTNER}-{numbers.start}-{numbers.stop}.csv", rows)


def load_and_import(env: dict[str, str], folder: Path, incident: str, known: range) -> None:
    """The operator's part: the incident loaded, the partner's file imported."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "incident.toml").write_text(incident, encoding="utf-8")
    for args in (
        ("incident", "load", str(folder / "incident.toml")),
        ("import", SLUG, PARTNER, str(known_csv(folder, known))),
    ):
        done = run_cli(env, *args)
        assert done.returncode == 0, done.stderr


# The sites a test can start from: the incident (how hard its addresses hash) and which
# of the addresses are in the partner's file. "slow" hashes for some 0.1 s, so that a
# server's queue holds a burst of lookups for a while.
TEMPLATES = {
    "fast": (incident_text(), range(0, 2000, 4)),
    "slow": (incident_text(memory_kib=32768, time_cost=2), range(0, 2000, 100)),
}


class Cluster:
    """The session's own PostgreSQL; each site a database copied from a template."""

    def __init__(self, server: OwnPostgres, folder: Path) -> None:
        self.server = server
        self.folder = folder
        self.made: set[str] = set()
        self.count = itertools.count()

    def database(self, template: str) -> str:
        """A new database: the template's copy (made the first time it is asked for)."""
        if template not in self.made:
            url = self.server.url(template)
            self.server.sql(f'CREATE DATABASE "{template}"')
            env = portal_env(self.folder / template, PORTAL_DATABASE_URL=url)
            load_and_import(env, self.folder / template, *TEMPLATES[template])
            self.made.add(template)
        name = f"site_{next(self.count)}"
        self.server.sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return name


@contextmanager
def running_portals(specs: list[tuple[Path, dict[str, str]]]) -> Iterator[list[Portal]]:
    """`portal serve` in each folder with its settings, started side by side; each stopped
    (SIGTERM) at the end unless it has exited already."""
    with ExitStack() as stack:
        portals = []
        for folder, extra in specs:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            env = portal_env(folder, PORTAL_BASE_URL=url, **extra)
            folder.mkdir(parents=True, exist_ok=True)
            log = stack.enter_context((folder / "server.log").open("w"))
            process = subprocess.Popen(
                [sys.executable, "-m", "portal", "serve", "--port", str(port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            stack.callback(_stop, process)
            portals.append(Portal(url, folder, env, folder / "server.log", process.pid, process))
        for portal in portals:
            assert portal.process is not None
            wait_until_healthy(portal.url, portal.process)
        yield portals


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def running_site(
    folder: Path,
    cluster: Cluster,
    *,
    template: str = "fast",
    servers: int = 2,
    server_env: list[dict[str, str]] | None = None,
    **env: str,
) -> Iterator[Site]:
    """`servers` portals on a copy of a template database, a Redis and a relay of their own."""
    with ExitStack() as stack:
        relay = stack.enter_context(running_relay())
        site = Site(folder, {}, relay, cluster.database(template), cluster.server)
        # Whatever a test did to the cluster, the next one finds it running.
        stack.callback(lambda: cluster.server.running() or cluster.server.start())
        site.redis = OwnRedis(folder / "redis")
        stack.callback(site.redis.stop)
        site.redis.start()
        shared = {
            **LOAD_LIMITS,
            "PORTAL_SMTP_URL": relay.url(),
            "PORTAL_DATABASE_URL": cluster.server.url(site.database),
            "PORTAL_REDIS_URL": site.redis.url,
            **env,
        }
        site.env = portal_env(folder / "operator", **shared)
        specs = [
            (folder / f"server-{n}", {**shared, **(server_env[n] if server_env else {})})
            for n in range(servers)
        ]
        site.servers = stack.enter_context(running_portals(specs))
        yield site
