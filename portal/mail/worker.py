"""The outbox worker: claims due rows in batches, sends them in parallel, records as it goes."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import anyio
from anyio import fail_after, to_thread
from sqlalchemy import Connection, Engine, Row

from portal.core import metrics
from portal.core.clock import utcnow
from portal.core.config import Settings
from portal.mail import outbox
from portal.mail.delivery import (
    Sender,
    SmtpSender,
    fails_for_good,
    failure_reason,
    refused_permanently,
    sender_for,
)
from portal.mail.messages import Email, Message, build_email, domain_of
from portal.mail.outbox import FAILED, QUEUED, SENT, WEBHOOK, Delivery, OutboxHook, Outcome
from portal.mail.relay_health import RelayHealth, check_relay
from portal.mail.sender import envelope_sender
from portal.mail.webhooks import WebhookError, partner_webhook_secret, post_webhook
from portal.store import db, db_errors, hourly

log = logging.getLogger("portal.mail")

# A whole delivery ends well inside the lease: past it, another worker may claim the row and
# send it again. A batch shares one lease, so the deadline is counted from its claim.
DELIVERY_DEADLINE = outbox.LEASE.total_seconds() - 10
BATCH_SIZE = 200
IDLE_CLOSE = 30.0  # seconds without mail after which kept-open connections are closed
# While the database is away, recording what was sent is tried again, doubling from the
# first pause up to the most, for as long as the claim's lease lasts (design §6, Failures).
RECORD_RETRY_FIRST, RECORD_RETRY_MOST = 0.5, 5.0
# Outcomes wait this long (seconds) for others to share their commit, up to this many: the
# window in which a crash leaves a message the relay took to be sent again.
RECORD_WINDOW, RECORD_MOST = 0.02, 100
DEPTH_SAMPLE = 30.0  # seconds between two samples of the outbox depth for the overview

SecretResolver = Callable[[Connection, "int | None"], "str | None"]


@dataclass(frozen=True)
class _Job:
    """A claimed row made ready to send: its email built, or its webhook secret found."""

    row: Row[Any]
    email: Email | None = None
    secret: str | None = None
    error: Exception | None = None  # it could not be made ready: a failed attempt


@dataclass
class _Tally:
    sent: int = 0
    erased: int = 0


class MailWorker:
    """Delivers due outbox rows; any number of workers may share one outbox."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        sender: Sender | None = None,
        on_sent: OutboxHook | None = None,
        on_failed: OutboxHook | None = None,
        resolve_webhook_secret: SecretResolver = partner_webhook_secret,
        batch_size: int = BATCH_SIZE,
        poll_interval: float = 1.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.sender = sender if sender is not None else sender_for(settings)
        self.on_sent = on_sent
        self.on_failed = on_failed
        self.resolve_webhook_secret = resolve_webhook_secret
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.clock = clock
        self._wake = asyncio.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._domain = domain_of(settings.mail_from)
        self.health = RelayHealth()  # what /healthz says of the relay
        self._sampled = float("-inf")

    async def deliver_due(self) -> int:
        """Claims due rows (up to a batch) and delivers them; returns how many were sent."""
        try:
            _claimed, sent = await self._deliver_batch()
        finally:
            await self.sender.close()
        return sent

    def wake(self) -> None:
        """Delivers at once what was just queued; safe to call from any thread."""
        if self._loop is None or self._loop.is_closed():
            self._wake.set()
        else:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self, stop: asyncio.Event) -> None:
        """Delivers until `stop` is set; an error is logged and the loop goes on.

        Once `stop` is set, the messages being sent are finished and recorded, and no other
        is started: a worker stopped mid-send leaves nothing behind under a lease.
        """
        self._loop = asyncio.get_running_loop()
        self._stop = stop
        await self.check_relay()
        busy = time.monotonic()
        try:
            while not stop.is_set():
                self._wake.clear()
                await self._sample_depth()  # before the round: the backlog it starts from
                try:
                    claimed, _sent = await self._deliver_batch(stop)
                except Exception as exc:
                    # The class only: messages of database errors can carry the row's values.
                    log.error("delivery round failed: %s", type(exc).__name__)
                    claimed = 0
                if claimed:
                    busy = time.monotonic()
                elif time.monotonic() - busy > IDLE_CLOSE:
                    await self.sender.close()  # before the server times the connections out
                if claimed < self.batch_size:
                    await self._pause(stop)
        finally:
            await self.sender.close()

    async def _sample_depth(self) -> None:
        """Keeps the outbox depth for the overview now and then: the hour's highest stays."""
        if time.monotonic() - self._sampled < DEPTH_SAMPLE:
            return
        self._sampled = time.monotonic()
        try:
            await to_thread.run_sync(self._record_depth)
        except Exception as exc:
            # The class only, as for a delivery round; the figure waits for the next sample.
            log.warning("outbox depth not sampled: %s", type(exc).__name__)

    def _record_depth(self) -> None:
        now = self.clock()
        with self.engine.begin() as conn:
            hourly.record_max(conn, hourly.OUTBOX_DEPTH, outbox.depth(conn, now=now), at=now)

    async def check_relay(self) -> None:
        """Tries the relay once and warns when it does not answer (`check_relay`)."""
        await check_relay(self.sender, self.health)

    async def _pause(self, stop: asyncio.Event) -> None:
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(
                waiters, timeout=self.poll_interval, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    async def run_until_signalled(self, stop: asyncio.Event | None = None) -> None:
        """`run` until SIGINT or SIGTERM (Ctrl+C, or the service manager stopping it).

        `stop` is set then too, so that work running beside the worker ends with it.
        """
        stop = stop if stop is not None else asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await self.run(stop)

    async def _deliver_batch(self, stop: asyncio.Event | None = None) -> tuple[int, int]:
        """Claims a batch, builds it in a thread, sends it on the sender's parallel
        connections, and records outcomes as they come, many in one transaction."""
        rows = await to_thread.run_sync(self._claim)
        if not rows:
            return 0, 0
        deadline = time.monotonic() + DELIVERY_DEADLINE
        todo = deque(await to_thread.run_sync(self._prepare, rows))
        results: asyncio.Queue[Outcome | None] = asyncio.Queue()
        tally = _Tally()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._record_as_they_come, results, tally)
            async with anyio.create_task_group() as senders:
                for _ in range(min(self.sender.parallel, len(todo))):
                    senders.start_soon(self._send_each, todo, results, stop, deadline)
            results.put_nowait(None)
        if tally.erased:
            # Truncate the WAL, so the erased recipients and bodies leave no copy in it.
            await to_thread.run_sync(db.checkpoint, self.engine)
        return len(rows), tally.sent

    def _claim(self) -> list[Row[Any]]:
        with self.engine.begin() as conn:
            return outbox.claim(conn, now=self.clock(), limit=self.batch_size, domain=self._domain)

    def _prepare(self, rows: Sequence[Row[Any]]) -> list[_Job]:
        """Builds and serialises each email once; finds each webhook's secret."""
        jobs = [self._build(row) for row in rows if row.channel != WEBHOOK]
        hooks = [row for row in rows if row.channel == WEBHOOK]
        if hooks:
            with self.engine.connect() as conn:
                jobs += [self._find_secret(conn, row) for row in hooks]
        return jobs

    def _build(self, row: Row[Any]) -> _Job:
        try:
            email = build_email(
                kind=row.kind,
                to=row.recipient,
                message=Message(row.subject, row.body_text, row.body_html),
                mail_from=self.settings.mail_from,
                sender_name=row.sender_name,
                message_id=row.message_id,
                envelope_from=envelope_sender(self.settings, row.id),
            )
        except Exception as exc:
            return _Job(row, error=exc)
        return _Job(row, email=email)

    def _find_secret(self, conn: Connection, row: Row[Any]) -> _Job:
        try:
            secret = self.resolve_webhook_secret(conn, row.deletion_request_id)
        except Exception as exc:
            return _Job(row, error=exc)
        if not secret:
            return _Job(row, error=WebhookError("no webhook secret to sign with"))
        return _Job(row, secret=secret)

    async def _send_each(
        self,
        todo: deque[_Job],
        results: asyncio.Queue[Outcome | None],
        stop: asyncio.Event | None,
        deadline: float,
    ) -> None:
        while todo:
            job = todo.popleft()
            if (stop is not None and stop.is_set()) or time.monotonic() >= deadline:
                results.put_nowait(Outcome(job.row))  # not attempted: back as it was
            else:
                results.put_nowait(await self._attempt(job, deadline))

    async def _attempt(self, job: _Job, deadline: float) -> Outcome:
        if job.error is not None:
            return Outcome(job.row, error=job.error)
        try:
            with fail_after(deadline - time.monotonic()):
                delivery = await self._deliver(job)
        except Exception as exc:
            if isinstance(exc, WebhookError):
                return Outcome(job.row, error=exc, response_status=exc.status)
            code = refused_permanently(exc)
            relay = self.sender.relay if isinstance(self.sender, SmtpSender) else None
            return Outcome(
                job.row,
                error=exc,
                response_status=code,
                bounced=fails_for_good(exc),
                reason=failure_reason(exc),
                relay=relay,
            )
        return Outcome(job.row, delivery=delivery)

    async def _deliver(self, job: _Job) -> Delivery:
        email, body = job.email, job.row.body_text
        if email is not None:
            await self.sender.send(email)
            return Delivery(payload_sha256=email.payload_sha256, message_id=email.message_id)
        if job.secret is None:  # _find_secret made this an error already
            raise WebhookError("no webhook secret to sign with")
        timestamp = int(self.clock().replace(tzinfo=UTC).timestamp())
        status = await post_webhook(job.row.recipient, body, job.secret, timestamp=timestamp)
        return Delivery(payload_sha256=_sha256(body.encode()), response_status=status)

    async def _record_as_they_come(
        self, results: asyncio.Queue[Outcome | None], tally: _Tally
    ) -> None:
        """Writes the outcomes of the last RECORD_WINDOW (at most RECORD_MOST, and those that
        arrived while the last write ran) in one transaction.

        One commit per message cost more than its SMTP transaction; one per batch would leave
        a whole batch to be sent again after a crash. So a message the relay took is on record
        within RECORD_WINDOW plus one commit: a worker killed then leaves only the messages in
        that window and those in flight to be sent again (at least once, docs/operator.md).
        """
        done = False
        while not done:
            batch = await _gathered(results)
            done = batch[-1] is None
            outcomes = [outcome for outcome in batch if outcome is not None]
            if outcomes:
                await to_thread.run_sync(self._record, outcomes, tally)

    def _record(self, outcomes: list[Outcome], tally: _Tally) -> None:
        now = self.clock()
        if len(outcomes) == 1:
            recorded = outcomes if self._record_one(outcomes[0], now) else []
        else:
            try:
                self._write(outcomes, now)
                recorded = outcomes
            except Exception as exc:
                log.warning("recording %d outcomes failed: %s", len(outcomes), type(exc).__name__)
                # One row's hook can fail: that row alone waits for its lease (and is sent
                # again, at least once), the others are recorded one by one. A database
                # still away after the lease would fail each of them in turn.
                recorded = (
                    []
                    if db_errors.passing(exc)
                    else [outcome for outcome in outcomes if self._record_one(outcome, now)]
                )
        for outcome in recorded:
            self._report(outcome, now, tally)
        _log_sent([outcome.row for outcome in recorded if outcome.status(now) == SENT])

    def _record_one(self, outcome: Outcome, now: datetime) -> bool:
        try:
            self._write([outcome], now)
        except Exception as exc:
            log.error("recording outbox %d failed: %s", outcome.row.id, type(exc).__name__)
            return False
        return True

    def _write(self, outcomes: Sequence[Outcome], now: datetime) -> None:
        """Records the outcomes in one transaction. While the database is away it tries
        again, until the lease runs out or the worker stops: a message sent but not recorded
        as such would be sent again after its lease."""
        patience = time.monotonic() + outbox.LEASE.total_seconds()
        delay = RECORD_RETRY_FIRST
        while True:
            try:
                with self.engine.begin() as conn:
                    outbox.record(
                        conn, outcomes, now=now, on_sent=self.on_sent, on_failed=self.on_failed
                    )
                return
            except Exception as exc:
                stopping = self._stop is not None and self._stop.is_set()
                if not db_errors.passing(exc) or stopping or time.monotonic() > patience:
                    raise
                log.warning(
                    "recording %d outcomes waits for the database: %s",
                    len(outcomes),
                    type(exc).__name__,
                )
            time.sleep(delay)  # a worker thread of its own (anyio's), not the event loop
            delay = min(2 * delay, RECORD_RETRY_MOST)

    def _report(self, outcome: Outcome, now: datetime, tally: _Tally) -> None:
        """Logs and counts one recorded outcome (after the commit, outside the transaction)."""
        row, status = outcome.row, outcome.status(now)
        self._tell_health(outcome)
        if status == SENT:
            tally.sent += 1
            tally.erased += 1
            metrics.emails_sent_total.labels(row.kind).inc()
        elif status == FAILED:
            tally.erased += 1
            metrics.emails_failed_total.labels(row.kind).inc()
            log.error(
                "outbox %d (%s) failed after %d attempts%s",
                row.id,
                row.kind,
                row.attempts,
                _why(outcome),
            )
        elif status == QUEUED and outcome.error is not None:
            log.warning(
                "outbox %d (%s) attempt %d failed%s", row.id, row.kind, row.attempts, _why(outcome)
            )

    def _tell_health(self, outcome: Outcome) -> None:
        """A message the relay took, or refused for its own sake (a bounce), shows the relay
        working; any other failure at the relay counts against it."""
        if outcome.row.channel == WEBHOOK or not isinstance(self.sender, SmtpSender):
            return
        if outcome.delivery is not None or outcome.bounced:
            self.health.succeeded()
        elif outcome.relay is not None:  # not a message that could not be built
            self.health.failed(outcome.reason or "")


async def _gathered(results: asyncio.Queue[Outcome | None]) -> list[Outcome | None]:
    """The next outcome, and those that follow it within RECORD_WINDOW (up to RECORD_MOST,
    or the end of the batch: None), and any that arrived while the last commit ran."""
    batch = [await results.get()]
    with anyio.move_on_after(RECORD_WINDOW):
        while batch[-1] is not None and len(batch) < RECORD_MOST:
            batch.append(await results.get())
    while batch[-1] is not None and not results.empty():
        batch.append(results.get_nowait())
    return batch


def _log_sent(rows: list[Row[Any]]) -> None:
    """One line per kind and attempt for the rows of a commit ("outbox 7, 8 (link) sent on
    attempt 1"): a line per message cost a third of recording them, at notice-day volume."""
    groups: dict[tuple[str, int], list[str]] = {}
    for row in rows:
        groups.setdefault((row.kind, row.attempts), []).append(str(row.id))
    for (kind, attempt), ids in groups.items():
        log.info("outbox %s (%s) sent on attempt %d", ", ".join(ids), kind, attempt)


def _why(outcome: Outcome) -> str:
    """Where and why an attempt failed, for the log: the relay's host and port, the
    reason and the error's kind; never an address (failure_reason leaves them out)."""
    error = outcome.error
    if error is None:
        return ""
    kind = type(error).__name__
    if outcome.relay is not None:
        return f" at mail relay {outcome.relay}: {outcome.reason} ({kind})"
    if isinstance(error, WebhookError):  # its text is the portal's own ("answered 503")
        parts = urlsplit(outcome.row.recipient or "")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return f" at webhook {parts.hostname}:{port}: {error} ({kind})"
    # The kind only: the message of an error building a row can carry the row's values.
    return f": {kind}"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
