"""The notice-day mix, open loop: one client process's share of each step's requests.

Per 100 requests: 40 incident pages, 25 lookups, 20 link confirmations (the link read from
the relay's feed; GET /v/{token}, then POST it), 12 results pages (with a session a
confirmation started) and 3 deletion requests (from a results page that was read). Request
k of a step is due at start + k / rate whatever happened to the others, and its time counts
from then, waiting for a connection included: a slow server cannot slow the load down and
hide its own delay (no coordinated omission).

bench/notice_day.py starts these processes (`run_client`) and sends each step to them.
"""

from __future__ import annotations

import asyncio
import random
import time
import zlib
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe

from bench.http_client import Connection, Response, csrf_of, form_session

MIX = {"incident": 40, "lookup": 25, "confirm": 20, "results": 12, "deletion": 3}
PARTNER = "park-a"  # the partner the imported addresses are at
UNKNOWN_EVERY = 10  # one lookup in ten is an address that is not in the data
TIMEOUT = 30.0  # seconds: an answer later than this is an error


class Unexpected(Exception):
    """A 2xx or 3xx answer that is not what the person should get."""


class Failed(Exception):
    """An answer that is not 2xx or 3xx."""


@dataclass(frozen=True)
class Plan:
    """What every client is told once: where the portal is, and its share."""

    slug: str
    servers: list[str]  # base URLs; requests go to each in turn
    feed_port: int
    index: int
    clients: int
    addresses: int  # person0 … person{N-1}@example.org are in the data
    connections: int  # at most, per server


@dataclass(frozen=True)
class Step:
    rate: float  # this client's share, requests per second
    warm_up: float  # seconds at this rate before the measured window
    seconds: float
    start: float  # time.monotonic() of the warm-up's first request (the same for all)


@dataclass
class StepResult:
    """What one client saw in a step's measured window (lists are merged across clients)."""

    offered: int = 0
    completed: int = 0  # answered within the window
    http_requests: int = 0
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    unexpected: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    skipped: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    samples: list[str] = field(default_factory=list)  # the first few errors, said
    mail_lags: list[float] = field(default_factory=list)  # s, link mails in the window
    late_starts: list[float] = field(default_factory=list)  # ms the loop was late
    cpu: float = 0.0  # CPU seconds of the client process in the step
    wall: float = 0.0

    def record(
        self,
        kind: str,
        due: float,
        ended: float,
        window_end: float,
        requests: int,
        failure: tuple[str, str] | None,
    ) -> None:
        """One request of the mix that was due in the window."""
        self.offered += 1
        self.http_requests += requests
        if requests == 0:
            self.skipped[kind] += 1
            return
        if failure:
            bucket, said = failure
            getattr(self, bucket)[kind] += 1
            if len(self.samples) < 5:
                self.samples.append(f"{kind}: {said}")
        if ended < window_end:
            self.completed += 1
        self.latencies[kind].append((ended - due) * 1000)

    def merge(self, other: StepResult) -> None:
        for name in ("offered", "completed", "http_requests", "cpu"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.wall = max(self.wall, other.wall)
        for kind, values in other.latencies.items():
            self.latencies[kind].extend(values)
        for counts, more in (
            (self.errors, other.errors),
            (self.unexpected, other.unexpected),
            (self.skipped, other.skipped),
        ):
            for kind, count in more.items():
                counts[kind] += count
        self.samples += other.samples[: 5 - len(self.samples)]
        self.mail_lags += other.mail_lags
        self.late_starts += other.late_starts


def mix_order(seed: int = 22) -> list[str]:
    """The 100 requests of the mix in a fixed shuffled order, repeated step after step."""
    order = [kind for kind, count in MIX.items() for _ in range(count)]
    random.Random(seed).shuffle(order)
    return order


@dataclass
class Session:
    """A person's browser after a confirmation: its cookies and what it may do next."""

    cookie: str
    known: bool
    token: str = ""  # the results page's form token, once read


@dataclass
class Link:
    path: str
    known: bool


class Pool:
    """Kept-alive connections to one server, opened as needed up to a maximum."""

    def __init__(self, url: str, most: int) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port, self.most = host, int(port), most
        self.idle: asyncio.Queue[Connection] = asyncio.Queue()
        self.opened = 0

    async def request(
        self, method: str, path: str, *, headers: dict[str, str], form: dict[str, str] | None
    ) -> Response:
        connection = await self._take()
        try:
            response = await asyncio.wait_for(
                connection.request(method, path, headers=headers, form=form), TIMEOUT
            )
        except BaseException:
            connection.close()  # its state is unknown: a new one takes its place
            self.opened -= 1
            raise
        self.idle.put_nowait(connection)
        return response

    async def _take(self) -> Connection:
        if self.idle.empty() and self.opened < self.most:
            self.opened += 1
            try:
                return await Connection.open(self.host, self.port)
            except BaseException:
                self.opened -= 1
                raise
        return await self.idle.get()


class Client:
    """One client process: the people it plays, and the requests of the mix they make."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.pools = [Pool(url, plan.connections) for url in plan.servers]
        self.turn = 0
        self.links: list[Link] = []  # newest last: people click soon after the mail
        self.sessions: deque[Session] = deque(maxlen=500)
        self.deletable: list[Session] = []
        self.answered: dict[str, deque[float]] = defaultdict(deque)
        self.mail: list[tuple[float, float]] = []  # (received, lag) of each link mail
        self.known = self._my_addresses()
        self.lookups = 0
        self.people = 0
        self.order = mix_order()
        self.csrf_cookie = self.csrf_token = ""
        self.result = StepResult()
        self.kinds: dict[str, Callable[[], Awaitable[int]]] = {
            "incident": self.incident,
            "lookup": self.lookup,
            "confirm": self.confirm,
            "results": self.results,
            "deletion": self.deletion,
        }

    def _my_addresses(self) -> list[int]:
        """The imported addresses whose links the relay sends to this client."""
        plan = self.plan
        return [
            n
            for n in range(plan.addresses)
            if zlib.crc32(f"person{n}@example.org".encode()) % plan.clients == plan.index
        ]

    async def start(self) -> None:
        """The visitor's form token (one for all lookups), and the relay's feed."""
        slug = self.plan.slug
        _host, _port, self.csrf_cookie, self.csrf_token = form_session(
            self.plan.servers[0], f"/{slug}/"
        )
        # Both ends kept: a StreamWriter let go of closes its connection.
        reader, self.feed_writer = await asyncio.open_connection("127.0.0.1", self.plan.feed_port)
        self.feed_writer.write(f"{self.plan.index} {self.plan.clients}\n".encode())
        assert await reader.readline() == b"subscribed\n"
        self.feed = asyncio.create_task(self._read_feed(reader))

    async def _read_feed(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            received, recipient, path = line.decode().split()
            answered = self.answered.get(recipient)
            if answered:
                self.mail.append((float(received), float(received) - answered.popleft()))
            self.links.append(Link(path, recipient.startswith("person")))

    async def step(self, step: Step) -> StepResult:
        """Runs a step: the warm-up, then the measured window; what the window saw."""
        self.result = StepResult()
        cpu, wall = time.process_time(), time.monotonic()
        window = (step.start + step.warm_up, step.start + step.warm_up + step.seconds)
        count = round((step.warm_up + step.seconds) * step.rate)
        tasks = []
        offset = self.plan.index * 100 // self.plan.clients
        for k in range(count):
            due = step.start + k / step.rate
            if (delay := due - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            kind = self.order[(k + offset) % 100]
            tasks.append(asyncio.create_task(self._one(kind, due, window)))
        await asyncio.gather(*tasks)
        self.result.mail_lags = [lag for at, lag in self.mail if window[0] <= at < window[1]]
        self.mail = [(at, lag) for at, lag in self.mail if at >= window[1]]
        self.result.cpu = time.process_time() - cpu
        self.result.wall = time.monotonic() - wall
        return self.result

    async def _one(self, kind: str, due: float, window: tuple[float, float]) -> None:
        measured = window[0] <= due < window[1]
        if measured:
            self.result.late_starts.append((time.monotonic() - due) * 1000)
        requests, failure = await self._attempt(kind)
        if measured:
            self.result.record(kind, due, time.monotonic(), window[1], requests, failure)

    async def _attempt(self, kind: str) -> tuple[int, tuple[str, str] | None]:
        """The HTTP requests made (0: skipped), and what went wrong: ("errors" or
        "unexpected", what)."""
        try:
            return await self.kinds[kind](), None
        except (Unexpected, AssertionError) as exc:  # csrf_of asserts a form in the page
            return 1, ("unexpected", str(exc))
        except (Failed, OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            return 1, ("errors", f"{type(exc).__name__} {exc}")

    async def _request(
        self,
        method: str,
        path: str,
        *,
        cookie: str = "",
        form: dict[str, str] | None = None,
    ) -> Response:
        """A request to the next server in turn, as from a person of their own (their own
        client address, through a proxy the portal trusts)."""
        pool = self.pools[self.turn % len(self.pools)]
        self.turn += 1
        self.people += 1
        n = self.people * self.plan.clients + self.plan.index
        headers = {"X-Forwarded-For": f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"}
        if cookie:
            headers["Cookie"] = cookie
        response = await pool.request(method, path, headers=headers, form=form)
        if response.status >= 400:
            raise Failed(f"{method} {path.split('/')[1]}: {response.status}")
        return response

    async def incident(self) -> int:
        response = await self._request("GET", f"/{self.plan.slug}/")
        _expect(response, 200)
        return 1

    async def lookup(self) -> int:
        self.lookups += 1
        if self.lookups % UNKNOWN_EVERY:
            number = self.known[self.lookups % len(self.known)]
            address = f"person{number}@example.org"
        else:
            address = self._unknown_address()
        form = {"email": address, "csrf_token": self.csrf_token}
        response = await self._request(
            "POST", f"/{self.plan.slug}/lookup", cookie=self.csrf_cookie, form=form
        )
        _expect(response, 303, "/sent")
        self.answered[address].append(time.monotonic())
        return 1

    def _unknown_address(self) -> str:
        """An address in nobody's data whose link the relay sends to this client."""
        plan = self.plan
        while True:
            self.lookups += 1
            address = f"nobody{self.lookups}@example.net"
            if zlib.crc32(address.encode()) % plan.clients == plan.index:
                return address

    async def confirm(self) -> int:
        if not self.links:
            return 0
        link = self.links.pop()
        page = await self._request("GET", link.path, cookie=self.csrf_cookie)
        _expect(page, 200)
        form = {"csrf_token": csrf_of(page.body)}
        response = await self._request("POST", link.path, cookie=self.csrf_cookie, form=form)
        _expect(response, 303, "/results")
        cookies = response.cookies()
        if not {"portal_session", "portal_csrf"} <= cookies.keys():
            raise Unexpected("a confirmation without its session and CSRF cookies")
        cookie = "; ".join(f"{name}={cookies[name]}" for name in ("portal_session", "portal_csrf"))
        self.sessions.append(Session(cookie, link.known))
        return 2

    async def results(self) -> int:
        if not self.sessions:
            return 0
        session = random.choice(self.sessions)
        response = await self._request("GET", f"/{self.plan.slug}/results", cookie=session.cookie)
        _expect(response, 200)
        marker = f'data-partner="{PARTNER}"' if session.known else 'data-result="not-affected"'
        if marker.encode() not in response.body:
            raise Unexpected(f"results page without {marker}")
        if session.known and not session.token:
            session.token = csrf_of(response.body)
            self.deletable.append(session)
        return 1

    async def deletion(self) -> int:
        if not self.deletable:
            return 0
        session = self.deletable.pop()
        response = await self._request(
            "POST",
            f"/{self.plan.slug}/deletion",
            cookie=session.cookie,
            form={"partner": PARTNER, "csrf_token": session.token},
        )
        _expect(response, 303, "/results")
        return 1


def _expect(response: Response, status: int, location: str = "") -> None:
    if response.status != status or location not in response.header("location"):
        raise Unexpected(f"{response.status} {response.header('location')}".strip())


def run_client(plan: Plan, pipe: Pipe) -> None:
    """A client process: steps received on the pipe, each one's result sent back; None ends.

    On uvloop (a dependency of the portal's server) where it installs: a cheaper client.
    """
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve_steps(plan, pipe))
    else:
        uvloop.run(_serve_steps(plan, pipe))


async def _serve_steps(plan: Plan, pipe: Pipe) -> None:
    client = Client(plan)
    await client.start()
    pipe.send("ready")
    loop = asyncio.get_running_loop()
    while (step := await loop.run_in_executor(None, pipe.recv)) is not None:
        pipe.send(await client.step(step))
