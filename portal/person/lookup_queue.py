"""The lookups' background work: a bounded queue, hashing threads and one batching writer.

A lookup's answer (the 303) waits for none of this: `submit` puts the lookup on a bounded
asyncio queue and returns at once; when the queue is full, the lookup is shed (counted,
nothing sent: the person sees the same page and may ask again). `hashers` tasks, as many
as there are threads in the hashing pool (one per core by default), each take one lookup:
client limit, blind index (argon2id, so its memory is at most `hashers` × the incident's
memory cost), address limit, then the link and its mail rendered. One writer takes what is
ready, as much as has piled up (up to `MAX_BATCH`), and writes it in one transaction.
While the database is away (or its disk full), the writer tries again with backoff for as
long as it takes, holding its batch; the queue fills meanwhile, then sheds (design §6).

The hashing and writing threads are the queue's own: the web requests' thread limiter
(anyio's) never waits behind a hash, so /healthz and the pages stay quick meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Engine

from portal.core import metrics
from portal.core.config import Settings
from portal.incidents.cache import IncidentCache
from portal.mail.renderer import Renderer
from portal.person import lookups
from portal.person.lookups import LookupRequest, PendingLink
from portal.person.ratelimit import RateLimiter
from portal.store import db_errors, hourly

log = logging.getLogger("portal.lookup_queue")

MAX_BATCH = 500  # links in one transaction at most
# A batch that failed for another reason than the database being away or full (a bug) is
# given up after this many attempts (counted failed); for those two, never.
WRITE_ATTEMPTS = 3
RETRY_FIRST, RETRY_MOST = 0.5, 5.0  # seconds between attempts: doubling, capped
SHED_FLUSH_SECONDS = 5.0  # how often the lookups shed are written to the hourly counters
HASH_NICENESS = 10  # CFS weight ~1/9 of a normal thread's
T = TypeVar("T")


def _yield_to_the_web() -> None:
    """Lowers this hashing thread's CPU priority below the event loop's (Linux: per thread).

    With a hash thread per core busy, the thread that answers requests would otherwise get
    only its fair share of a core; at `HASH_NICENESS` it gets the core whenever it needs it,
    and the hashes take what is left.
    """
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_NICENESS)


class LookupQueue:
    """Accepts lookups without waiting, and works them off in the background."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        limiter: RateLimiter,
        cache: IncidentCache,
        *,
        renderer: Renderer,
        written: Callable[[], None] = lambda: None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.limiter = limiter
        self.cache = cache
        self.renderer = renderer
        self.written = written  # called after each batch commits (wakes the mail worker)
        self.hashers = settings.hash_threads or os.cpu_count() or 1
        self.incoming: asyncio.Queue[LookupRequest] = asyncio.Queue(settings.lookup_queue_size)
        # Ready links wait here for the writer; bounded, so a slow database slows the
        # hashers (and then sheds lookups) instead of piling rendered mails up in memory.
        self.ready: asyncio.Queue[PendingLink] = asyncio.Queue(MAX_BATCH * 2)
        self.tasks: list[asyncio.Task[None]] = []
        self.unfinished = 0  # accepted lookups not yet written (or given another outcome)
        self.salt: bytes | None = None
        # Shedding is what happens when every moment counts: counted in memory, written
        # every few seconds, not a transaction per lookup.
        self.shed = hourly.Tally(hourly.LOOKUPS_SHED)
        self.hash_pool = self.write_pool = ThreadPoolExecutor(1)  # made anew by each start()

    def submit(self, lookup: LookupRequest) -> bool:
        """Queues a lookup; False when it was shed. Never waits."""
        metrics.lookups_total.inc()
        try:
            self.incoming.put_nowait(lookup)
        except asyncio.QueueFull:
            metrics.lookups_shed_total.inc()
            self.shed.add()
            return False
        metrics.lookup_queue_depth.inc()
        self.unfinished += 1
        return True

    def start(self) -> None:
        """Starts the hashers and the writer on the running loop, with threads of their own."""
        self.hash_pool = ThreadPoolExecutor(
            self.hashers, thread_name_prefix="portal-hash", initializer=_yield_to_the_web
        )
        self.write_pool = ThreadPoolExecutor(1, thread_name_prefix="portal-write")
        self.tasks = [asyncio.create_task(self._hash_forever()) for _ in range(self.hashers)]
        self.tasks.append(asyncio.create_task(self._write_forever()))
        self.tasks.append(asyncio.create_task(self._count_shed_forever()))

    async def drain(self) -> None:
        """Waits until every lookup accepted so far is hashed and written (or dropped)."""
        await self.incoming.join()
        await self.ready.join()

    async def close(self, timeout: float) -> None:
        """Drains the queue (for up to `timeout` seconds), then stops; what is left is lost,
        counted as shed and logged (how many, nothing else)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.drain(), max(timeout, 0))
        left = self.unfinished
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if left:
            metrics.lookups_shed_total.inc(left)
            log.error(
                "%d accepted lookups lost at shutdown: not written within the shutdown timeout "
                "(PORTAL_SHUTDOWN_TIMEOUT; counted as shed)",
                left,
            )
            self.shed.add(left)
        await self._in(self.write_pool, self.shed.flush, self.engine)
        self.hash_pool.shutdown(wait=True, cancel_futures=True)
        self.write_pool.shutdown(wait=True)

    async def _hash_forever(self) -> None:
        while True:
            lookup = await self.incoming.get()
            metrics.lookup_queue_depth.dec()
            try:
                outcome = await self._prepare_patiently(lookup)
            except Exception as exc:
                # The class only: an exception's text may hold the address.
                log.error("a lookup failed before writing: %s", type(exc).__name__)
                outcome = "failed"
            finally:
                self.incoming.task_done()
            if outcome != "ready":
                self.unfinished -= 1
                metrics.lookups_processed_total.labels(outcome).inc()

    async def _prepare_patiently(self, lookup: LookupRequest) -> str:
        """`_prepare`, tried again while the database is away (the salt or the incident not
        yet read): the lookup waits, it is not lost."""
        delay = RETRY_FIRST
        while True:
            try:
                return await self._prepare(lookup)
            except Exception as exc:
                if not db_errors.passing(exc):
                    raise
                log.warning("a lookup waits for the database: %s", type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(2 * delay, RETRY_MOST)

    async def _prepare(self, lookup: LookupRequest) -> str:
        """Limits, hash and mail for one lookup; hands it to the writer. Returns the outcome."""
        if not await lookups.within_client_limit(self.limiter, lookup):
            return "client_limited"
        incident = await self.cache.incident(lookup.incident)
        if incident is None:
            return "no_incident"
        if self.salt is None:
            self.salt = await self._in(self.write_pool, lookups.deployment_salt, self.engine)
        bidx = await self._in(
            self.hash_pool, lookups.hash_address, self.settings, incident, self.salt, lookup
        )
        if not await lookups.within_address_limit(self.limiter, bidx):
            return "address_limited"
        partner = None
        if lookup.partner:
            partner = lookups.entry_partner(await self.cache.partners(incident), lookup.partner)
        pending = await self._in(
            self.hash_pool,
            lookups.prepare_link,
            self.settings,
            incident,
            bidx,
            lookup,
            self.renderer,
            partner,
        )
        await self.ready.put(pending)
        return "ready"

    async def _write_forever(self) -> None:
        while True:
            batch = [await self.ready.get()]
            while len(batch) < MAX_BATCH and not self.ready.empty():
                batch.append(self.ready.get_nowait())
            try:
                outcome = await self._write(batch)
            finally:
                for _ in batch:
                    self.ready.task_done()
            self.unfinished -= len(batch)
            metrics.lookups_processed_total.labels(outcome).inc(len(batch))

    async def _write(self, batch: list[PendingLink]) -> str:
        """Writes a batch; tries again, with backoff, after a database error: for as long as
        the database is away or full, `WRITE_ATTEMPTS` times after any other error."""
        attempt, delay = 0, RETRY_FIRST
        while True:
            attempt += 1
            try:
                await self._write_once(batch, again=attempt > 1)
            except Exception as exc:
                passing = db_errors.passing(exc)
                # The class only: an exception's text can hold the statement's values.
                log.error(
                    "%d lookup links not written (attempt %d): %s; %s",
                    len(batch),
                    attempt,
                    type(exc).__name__,
                    f"trying again in {delay:g} s"
                    if passing or attempt < WRITE_ATTEMPTS
                    else "given up (counted failed)",
                )
                if not passing and attempt >= WRITE_ATTEMPTS:
                    return "failed"
                await asyncio.sleep(delay)
                delay = min(2 * delay, RETRY_MOST)
            else:
                metrics.link_batches_total.inc()
                metrics.links_written_total.inc(len(batch))
                self.written()
                return "queued"

    async def _write_once(self, batch: list[PendingLink], *, again: bool) -> None:
        # A connection cut during the commit leaves it unknown whether the commit was made:
        # written already, the batch must not be written (and mailed) twice.
        if again and await self._in(self.write_pool, lookups.links_written, self.engine, batch):
            return
        await self._in(self.write_pool, lookups.write_links, self.engine, self.settings, batch)

    async def _count_shed_forever(self) -> None:
        while True:
            await asyncio.sleep(SHED_FLUSH_SECONDS)
            await self._in(self.write_pool, self.shed.flush, self.engine)

    async def _in(self, pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
