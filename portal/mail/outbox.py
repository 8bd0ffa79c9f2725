"""The durable outbox: queue in the caller's transaction, claim in batches, record outcomes."""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    String,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal,
    or_,
    select,
    update,
)

from portal.core import metrics
from portal.core.clock import utcnow
from portal.mail.messages import Message, refuse_line_breaks
from portal.store import hourly, tables

log = logging.getLogger("portal.mail")

EMAIL, WEBHOOK = "email", "webhook"
QUEUED, SENDING, SENT, FAILED = "queued", "sending", "sent", "failed"
LEASE = timedelta(seconds=60)
GIVE_UP_AFTER = timedelta(hours=24)
MAX_BACKOFF = timedelta(minutes=5)  # the longest wait between two attempts at a message
# The overview's figures (portal.hourly) that a delivery moves, by the kind of message.
DELIVERED = {
    "link": hourly.LINK_MAILS,
    "notice": hourly.NOTICES_SENT,
    "notice_followup": hourly.NOTICES_SENT,
}
ERASED = {"recipient": None, "subject": None, "body_text": None, "body_html": None}
_ADDRESS = re.compile(r"[^\s<>\"'@]+@[^\s<>\"']+")

# What the worker tells the modules above of the rows it recorded as sent or given up, in
# the transaction that records them: each row's (outbox id, deletion request id), all of a
# commit at once, so that a hook spends one statement on them rather than one each.
OutboxHook = Callable[[Connection, "Sequence[tuple[int, int | None]]"], None]
RowHook = Callable[[Connection, int, "int | None"], None]


def each(hook: RowHook) -> OutboxHook:
    """An outbox hook that runs `hook` for one row at a time."""

    def run(conn: Connection, rows: Sequence[tuple[int, int | None]]) -> None:
        for outbox_id, request_id in rows:
            hook(conn, outbox_id, request_id)

    return run


def enqueue_email(
    conn: Connection,
    *,
    kind: str,
    to: str,
    message: Message,
    deletion_request_id: int | None = None,
    sender_name: str | None = None,
    not_before: datetime | None = None,
) -> int:
    """Queues an email in the caller's transaction; the worker sends it once that commits.

    `sender_name` names the From header when PORTAL_MAIL_FROM has no name of its own.
    `not_before`: no worker sends it earlier (a throttled schedule kept in the database).
    """
    refuse_line_breaks(to=to, subject=message.subject, sender_name=sender_name or "")
    return _enqueue(
        conn,
        kind=kind,
        channel=EMAIL,
        recipient=to,
        subject=message.subject,
        body_text=message.text,
        body_html=message.html,
        deletion_request_id=deletion_request_id,
        sender_name=sender_name,
        next_attempt_at=not_before,
    )


@dataclass(frozen=True)
class QueuedEmail:
    """One email of a batch for `enqueue_emails`."""

    to: str
    message: Message
    sender_name: str | None = None


def enqueue_emails(conn: Connection, *, kind: str, emails: Sequence[QueuedEmail]) -> int:
    """Queues a batch of emails in one statement of the caller's transaction, logging
    nothing (the lookup writer logs its batch once it has committed). Returns the count."""
    if not emails:
        return 0
    now = utcnow()
    rows = []
    for email in emails:
        subject = email.message.subject
        refuse_line_breaks(to=email.to, subject=subject, sender_name=email.sender_name or "")
        rows.append(
            {
                "kind": kind,
                "channel": EMAIL,
                "status": QUEUED,
                "attempts": 0,
                "created_at": now,
                "next_attempt_at": now,
                "recipient": email.to,
                "subject": subject,
                "body_text": email.message.text,
                "body_html": email.message.html,
                "sender_name": email.sender_name,
            }
        )
    conn.execute(tables.outbox.insert(), rows)
    metrics.emails_queued_total.labels(kind).inc(len(rows))
    return len(rows)


def enqueue_webhook(
    conn: Connection,
    *,
    kind: str,
    url: str,
    secret: str,
    payload: dict[str, Any],
    deletion_request_id: int | None = None,
) -> int:
    """Queues a signed JSON POST; the secret is not stored, the worker resolves it to sign."""
    if not secret:
        raise ValueError("a webhook needs a secret to be signed with")
    if urlsplit(url).scheme not in ("http", "https"):
        raise ValueError("a webhook URL must be http:// or https://")
    return _enqueue(
        conn,
        kind=kind,
        channel=WEBHOOK,
        recipient=url,
        body_text=webhook_body(payload),
        deletion_request_id=deletion_request_id,
    )


def webhook_body(payload: dict[str, Any]) -> str:
    """The bytes signed and POSTed: compact JSON with sorted keys (docs/partners.md)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def _enqueue(
    conn: Connection,
    *,
    kind: str,
    channel: str,
    next_attempt_at: datetime | None = None,
    **values: Any,
) -> int:
    now = utcnow()
    insert = tables.outbox.insert().values(
        kind=kind,
        channel=channel,
        status=QUEUED,
        attempts=0,
        created_at=now,
        next_attempt_at=next_attempt_at or now,
        **values,
    )
    outbox_id: int = conn.execute(insert.returning(tables.outbox.c.id)).scalar_one()
    metrics.emails_queued_total.labels(kind).inc()
    log.info("outbox %d queued (%s, %s)", outbox_id, kind, channel)
    return outbox_id


def _due(now: datetime) -> ColumnElement[bool]:
    c = tables.outbox.c
    return or_(
        and_(c.status == QUEUED, c.next_attempt_at <= now),
        and_(c.status == SENDING, c.lease_until < now),
    )


def claim(conn: Connection, *, now: datetime, limit: int, domain: str) -> list[Row[Any]]:
    """Takes up to `limit` due rows under one lease, in one statement: one worker wins each.

    On PostgreSQL, FOR UPDATE SKIP LOCKED lets workers pass over the rows another is
    claiming instead of waiting for it; SQLite has one writer and ignores the clause.
    An email gets its Message-ID with its first claim and keeps it: a worker that dies
    after the SMTP server took the message but before the outcome was recorded leaves it
    to be sent again after the lease, and the copy carries the same Message-ID (design
    §4.7: at least once, and at most once as far as the portal can tell).
    """
    outbox, c = tables.outbox, tables.outbox.c
    # Materialised, so that PostgreSQL takes the rows once: as a subquery it may run it
    # again while updating, and pass the rows just updated for the next ones due.
    due = (
        select(c.id)
        .where(_due(now))
        .order_by(c.next_attempt_at, c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("due")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )
    # Unique per row (its id) and per claim (the random part), as RFC 5322 asks.
    new_id = literal(f"<{secrets.token_hex(8)}.") + cast(c.id, String) + literal(f"@{domain}>")
    claimed = conn.execute(
        update(outbox)
        .where(c.id.in_(select(due.c.id)), _due(now))
        .values(
            status=SENDING,
            lease_until=now + LEASE,
            attempts=c.attempts + 1,
            message_id=case(
                (and_(c.channel == EMAIL, c.message_id.is_(None)), new_id), else_=c.message_id
            ),
        )
        .returning(*outbox.c)
    ).all()
    return sorted(claimed, key=lambda row: (row.next_attempt_at, row.id))


@dataclass(frozen=True)
class Delivery:
    """The proof a delivery leaves: message id or response status, and the payload hash."""

    payload_sha256: str
    message_id: str | None = None
    response_status: int | None = None


@dataclass(frozen=True)
class Outcome:
    """What became of one claimed row: delivered, failed this attempt, or not attempted.

    Not attempted (neither `delivery` nor `error`): the worker was stopped, or the lease
    was too near its end to start; the row goes back as it was. `bounced`: the server
    refused the message for good (a 5xx to RCPT or DATA), so it fails now.
    """

    row: Row[Any]
    delivery: Delivery | None = None
    error: Exception | None = None
    response_status: int | None = None
    bounced: bool = False
    # An attempt at the mail relay: why it failed, in words, and which relay ("host:port").
    reason: str | None = None
    relay: str | None = None

    def status(self, now: datetime) -> str:
        """The row's status once recorded."""
        if self.delivery is not None:
            return SENT
        if self.error is not None and (self.bounced or now - self.row.created_at >= GIVE_UP_AFTER):
            return FAILED
        return QUEUED


def backoff(attempts: int) -> timedelta:
    """5 s after the first failed attempt, doubling, capped at 5 minutes."""
    seconds = 5 * 2 ** min(max(attempts - 1, 0), 10)
    return min(timedelta(seconds=seconds), MAX_BACKOFF)


def describe(
    exc: BaseException,
    recipient: str | None,
    *,
    reason: str | None = None,
    relay: str | None = None,
) -> str:
    """The exception for last_error (its `reason` in words, and the relay it came from, when
    known), without the recipient or any address in it."""
    message = str(exc) if reason is None else reason
    if relay is not None:
        message = f"{message} (mail relay {relay})"
    if recipient:
        message = message.replace(recipient, "<recipient>")
    message = _ADDRESS.sub("<address>", message)
    return f"{type(exc).__name__}: {message}"[:300]


def record(
    conn: Connection,
    outcomes: Sequence[Outcome],
    *,
    now: datetime,
    on_sent: OutboxHook | None = None,
    on_failed: OutboxHook | None = None,
) -> None:
    """Records outcomes in the caller's transaction, one statement per kind of outcome.

    A delivered or given-up row loses its recipient and bodies; the hooks run once for all
    such rows, in the same transaction.
    """
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    released: list[int] = []
    for outcome in outcomes:
        values = _values(outcome, now)
        if values is None:
            released.append(outcome.row.id)
        else:
            groups.setdefault(tuple(sorted(values)), []).append({"oid": outcome.row.id, **values})
    c = tables.outbox.c
    for names, params in groups.items():
        setters: dict[str, Any] = {name: bindparam(f"v_{name}") for name in names}
        stmt = update(tables.outbox).where(c.id == bindparam("oid")).values(setters)
        conn.execute(stmt, [_prefixed(p) for p in params])
    if released:
        conn.execute(
            update(tables.outbox)
            .where(c.id.in_(released))
            .values(status=QUEUED, lease_until=None, attempts=c.attempts - 1)
        )
    for status, hook in ((SENT, on_sent), (FAILED, on_failed)):
        rows = [(o.row.id, o.row.deletion_request_id) for o in outcomes if o.status(now) == status]
        if hook is not None and rows:
            hook(conn, rows)
    hourly.bump_many(conn, _figures(outcomes, now), at=now)


def _figures(outcomes: Sequence[Outcome], now: datetime) -> Counter[str]:
    """What the outcomes add to the overview's hourly figures."""
    counts: Counter[str] = Counter()
    for outcome in outcomes:
        status, kind = outcome.status(now), outcome.row.kind
        if status == SENT and kind in DELIVERED:
            counts[DELIVERED[kind]] += 1
        elif status == FAILED:
            counts[hourly.MAIL_FAILED] += 1
            code = outcome.response_status
            # Bounced as notices.mark_failed has it: the server refused it for good (5xx).
            if kind in ("notice", "notice_followup") and code is not None and 500 <= code < 600:
                counts[hourly.NOTICES_BOUNCED] += 1
    return counts


def depth(conn: Connection, *, now: datetime) -> int:
    """The messages the workers owe now: due, being sent, or waiting to be tried again
    (at most MAX_BACKOFF away). Notices scheduled for later by their rate are not owed yet,
    so a `portal notify` run does not make the outbox look stuck."""
    c = tables.outbox.c
    queued = select(func.count()).where(c.status == QUEUED, c.next_attempt_at <= now + MAX_BACKOFF)
    sending = select(func.count()).where(c.status == SENDING)
    return int(conn.scalar(queued) or 0) + int(conn.scalar(sending) or 0)


def retrying(conn: Connection, *, now: datetime) -> int:
    """The messages whose last attempt failed, waiting to be tried again."""
    c = tables.outbox.c
    query = select(func.count()).where(
        c.status == QUEUED, c.next_attempt_at <= now + MAX_BACKOFF, c.last_error.is_not(None)
    )
    return int(conn.scalar(query) or 0)


def _values(outcome: Outcome, now: datetime) -> dict[str, Any] | None:
    row, delivery = outcome.row, outcome.delivery
    if delivery is not None:
        return {
            "status": SENT,
            "sent_at": now,
            "lease_until": None,
            "message_id": delivery.message_id,
            "payload_sha256": delivery.payload_sha256,
            "response_status": delivery.response_status,
            "last_error": None,
            "attempted_at": now,
            **ERASED,
        }
    if outcome.error is None:
        return None
    failed = {
        "lease_until": None,
        "last_error": describe(
            outcome.error, row.recipient, reason=outcome.reason, relay=outcome.relay
        ),
        "attempted_at": now,
        "response_status": outcome.response_status,
    }
    if outcome.status(now) == FAILED:
        return failed | {"status": FAILED, **ERASED}
    return failed | {"status": QUEUED, "next_attempt_at": now + backoff(row.attempts)}


def _prefixed(params: dict[str, Any]) -> dict[str, Any]:
    return {key if key == "oid" else f"v_{key}": value for key, value in params.items()}
