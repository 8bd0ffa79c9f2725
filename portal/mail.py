"""Email templates, the durable outbox, and its delivery by SMTP, to files, or as webhooks."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate, make_msgid, parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import aiosmtplib
import httpx
from anyio import fail_after, to_thread
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy import ColumnElement, Connection, Engine, Row, and_, case, or_, select, update

from portal import db, metrics, tables
from portal.clock import utcnow
from portal.config import Settings
from portal.errors import PortalError
from portal.i18n import template_context
from portal.sender import from_header

# RFC 5322 allows 998 characters a line; folding at 78 moves a long subject's first word
# onto a continuation line, which some clients show with a leading space.
SMTP = SMTP_POLICY.clone(max_line_length=998)

log = logging.getLogger("portal.mail")

EMAIL, WEBHOOK = "email", "webhook"
QUEUED, SENDING, SENT, FAILED = "queued", "sending", "sent", "failed"
LEASE = timedelta(seconds=60)
GIVE_UP_AFTER = timedelta(hours=24)
SMTP_TIMEOUT = 30.0  # per SMTP step
# A whole delivery ends well inside the lease: past it, another worker may claim the row and
# send it again.
DELIVERY_DEADLINE = LEASE.total_seconds() - 10
WEBHOOK_TIMEOUT = 10.0
ERASED = {"recipient": None, "subject": None, "body_text": None, "body_html": None}
SMTP_SCHEMES = {  # scheme: (default port, use_tls, start_tls)
    "smtp": (25, False, False),
    "smtp+starttls": (587, False, True),
    "smtps": (465, True, False),
}
_ADDRESS = re.compile(r"[^\s<>\"'@]+@[^\s<>\"']+")
_URL = re.compile(r"https?://[^\s<>\"']+")

OutboxHook = Callable[[Connection, int, "int | None"], None]
SecretResolver = Callable[[Connection, "int | None"], "str | None"]


@dataclass(frozen=True)
class Message:
    """A rendered email: one-line subject, plain text and HTML alternatives."""

    subject: str
    text: str
    html: str


def render(templates_dir: Path, name: str, lang: str, **context: Any) -> Message:
    """Renders emails/<name>/{subject.txt,body.txt,body.html} in the language `lang`."""
    env = _environment(Path(templates_dir).resolve())
    values = {**context, **template_context(lang)}

    def part(filename: str) -> str:
        return env.get_template(f"emails/{name}/{filename}").render(values)

    # Template blocks may span lines; a subject header is one line.
    subject = " ".join(part("subject.txt").split())
    values["subject"] = subject  # the HTML part's <title>
    return Message(subject=subject, text=part("body.txt"), html=part("body.html"))


@lru_cache(maxsize=8)
def _environment(templates_dir: Path) -> Environment:
    env = Environment(
        loader=FileSystemLoader(templates_dir),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        extensions=["jinja2.ext.i18n"],
    )
    env.policies["ext.i18n.trimmed"] = True
    env.install_null_translations(newstyle=True)  # type: ignore[attr-defined]
    return env


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
    body = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return _enqueue(
        conn,
        kind=kind,
        channel=WEBHOOK,
        recipient=url,
        body_text=body,
        deletion_request_id=deletion_request_id,
    )


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


def refuse_line_breaks(**headers: str) -> None:
    """Header injection defence: a CR or LF in a header value is refused."""
    for name, value in headers.items():
        if "\r" in value or "\n" in value:
            raise ValueError(f"line break in the {name} header refused")


class Sender(Protocol):
    """Hands one email to its carrier; returns its Message-ID."""

    async def send(self, msg: EmailMessage) -> str: ...


@dataclass(frozen=True)
class SmtpSender:
    """Sends with aiosmtplib to the server of PORTAL_SMTP_URL."""

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    use_tls: bool = False
    start_tls: bool = False
    timeout: float = SMTP_TIMEOUT

    @classmethod
    def from_url(cls, url: str) -> SmtpSender:
        """smtp://[user:pass@]host[:port], smtp+starttls://… or smtps://…"""
        parts = urlsplit(url)
        if parts.scheme not in SMTP_SCHEMES:
            raise PortalError("PORTAL_SMTP_URL must be smtp://, smtp+starttls:// or smtps://")
        port, use_tls, start_tls = SMTP_SCHEMES[parts.scheme]
        return cls(
            host=parts.hostname or "localhost",
            port=parts.port or port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            use_tls=use_tls,
            start_tls=start_tls,
        )

    async def send(self, msg: EmailMessage) -> str:
        message_id = ensure_message_id(msg)
        await aiosmtplib.send(
            wire_bytes(msg),
            sender=parseaddr(str(msg["From"]))[1],
            recipients=[parseaddr(str(msg["To"]))[1]],
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            use_tls=self.use_tls,
            start_tls=self.start_tls,
            timeout=self.timeout,
        )
        return message_id


class OutboxDirSender:
    """The dev default: writes each email as an .eml file and prints its link."""

    def __init__(self, outbox_dir: Path, console: Callable[[str], None] = print) -> None:
        self.outbox_dir = outbox_dir
        self.console = console

    async def send(self, msg: EmailMessage) -> str:
        message_id = ensure_message_id(msg)
        path = await to_thread.run_sync(self._write, wire_bytes(msg))
        link = first_link(msg)
        kind = msg.get("X-Portal-Kind", "message")
        self.console(f"mail ({kind}) written to {_shown(path)}" + (f": {link}" if link else ""))
        return message_id

    def _write(self, data: bytes) -> Path:
        self.outbox_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.outbox_dir.chmod(0o700)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = self.outbox_dir / f"{stamp}-{secrets.token_hex(4)}.eml"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return path


def _shown(path: Path) -> Path:
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def first_link(msg: EmailMessage) -> str | None:
    """The first URL of the plain-text body, or None."""
    body = msg.get_body(preferencelist=("plain",))
    if not isinstance(body, EmailMessage):
        return None
    found = _URL.search(body.get_content())
    return found.group(0) if found else None


def sender_for(settings: Settings) -> Sender:
    """SMTP when PORTAL_SMTP_URL is set, else the instance outbox folder."""
    if settings.smtp_url:
        return SmtpSender.from_url(settings.smtp_url)
    return OutboxDirSender(settings.outbox_dir)


def build_email(row: Row[Any], settings: Settings) -> EmailMessage:
    """The email of an outbox row: text and HTML alternatives, UTF-8."""
    refuse_line_breaks(to=row.recipient, subject=row.subject)
    msg = EmailMessage(policy=SMTP)
    msg["From"] = from_header(settings.mail_from, row.sender_name)
    msg["To"] = row.recipient
    msg["Subject"] = row.subject
    msg["Date"] = formatdate(usegmt=True)
    # Kept from the row's first claim: a copy sent again is recognisably the same message.
    msg["Message-ID"] = row.message_id or make_msgid(domain=_domain(settings.mail_from))
    msg["X-Portal-Kind"] = row.kind
    msg.set_content(row.body_text, charset="utf-8")
    msg.add_alternative(row.body_html, subtype="html", charset="utf-8")
    return msg


def _domain(address: str) -> str:
    return parseaddr(address)[1].rpartition("@")[2] or "localhost"


def ensure_message_id(msg: EmailMessage) -> str:
    if msg["Message-ID"] is None:
        msg["Message-ID"] = make_msgid(domain=_domain(str(msg["From"])))
    return str(msg["Message-ID"])


def wire_bytes(msg: EmailMessage) -> bytes:
    """The bytes handed to the carrier, CRLF line ends: what payload_sha256 is taken of."""
    return msg.as_bytes(policy=SMTP)


class WebhookError(Exception):
    """A webhook was not accepted: no secret to sign with, or a status other than 2xx."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def sign_webhook(secret: str, timestamp: int, body: str) -> str:
    """sha256=<hex HMAC-SHA256 over "<timestamp>.<body>">, the X-Portal-Signature value."""
    digest = hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


async def post_webhook(url: str, body: str, secret: str, *, timestamp: int) -> int:
    """POSTs the signed body; returns the 2xx status, else raises WebhookError."""
    headers = {
        "Content-Type": "application/json",
        "X-Portal-Timestamp": str(timestamp),
        "X-Portal-Signature": sign_webhook(secret, timestamp, body),
    }
    async with httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT) as client:
        response = await client.post(url, content=body.encode(), headers=headers)
    if not response.is_success:
        raise WebhookError(f"answered {response.status_code}", status=response.status_code)
    return response.status_code


def partner_webhook_secret(conn: Connection, deletion_request_id: int | None) -> str | None:
    """The default secret resolver: the webhook secret of the request's partner."""
    if deletion_request_id is None:
        return None
    requests, partners = tables.deletion_requests, tables.partners
    query = (
        select(partners.c.webhook_secret)
        .select_from(requests.join(partners, requests.c.partner_id == partners.c.id))
        .where(requests.c.id == deletion_request_id)
    )
    secret: str | None = conn.scalar(query)
    return secret


@dataclass(frozen=True)
class Delivery:
    """The proof a delivery leaves: message id or response status, and the payload hash."""

    payload_sha256: str
    message_id: str | None = None
    response_status: int | None = None


def backoff(attempts: int) -> timedelta:
    """5 s after the first failed attempt, doubling, capped at 5 minutes."""
    return timedelta(seconds=min(5 * 2 ** min(max(attempts - 1, 0), 10), 300))


def describe(exc: BaseException, recipient: str | None) -> str:
    """The exception for last_error, without the recipient or any address in it."""
    message = str(exc)
    if recipient:
        message = message.replace(recipient, "<recipient>")
    message = _ADDRESS.sub("<address>", message)
    return f"{type(exc).__name__}: {message}"[:300]


def refused_permanently(exc: BaseException) -> int | None:
    """The SMTP code when the server refused this message for good (a 5xx bounce), else None.

    Only the recipient (RCPT) or the message (DATA) answered 5xx counts: a 5xx to AUTH or
    MAIL FROM is the portal's own setup, which a retry after fixing it delivers.
    """
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [refused.code for refused in exc.recipients]
        return codes[0] if codes and all(500 <= code < 600 for code in codes) else None
    if isinstance(exc, aiosmtplib.SMTPDataError) and 500 <= exc.code < 600:
        return exc.code
    return None


def _due(now: datetime) -> ColumnElement[bool]:
    c = tables.outbox.c
    return or_(
        and_(c.status == QUEUED, c.next_attempt_at <= now),
        and_(c.status == SENDING, c.lease_until < now),
    )


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
        batch_size: int = 50,
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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._domain = _domain(settings.mail_from)

    async def deliver_due(self) -> int:
        """Claims due rows (up to a batch) and delivers them; returns how many were sent."""
        _claimed, sent = await self._deliver_batch()
        return sent

    def wake(self) -> None:
        """Delivers at once what was just queued; safe to call from any thread."""
        if self._loop is None or self._loop.is_closed():
            self._wake.set()
        else:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self, stop: asyncio.Event) -> None:
        """Delivers until `stop` is set; an error is logged and the loop goes on.

        Once `stop` is set, the message being sent is finished and recorded, and no other
        is claimed: a worker stopped mid-send leaves nothing behind under a lease.
        """
        self._loop = asyncio.get_running_loop()
        while not stop.is_set():
            self._wake.clear()
            try:
                claimed, _sent = await self._deliver_batch(stop)
            except Exception as exc:
                # The class only: messages of database errors can carry the row's values.
                log.error("delivery round failed: %s", type(exc).__name__)
                claimed = 0
            if claimed < self.batch_size:
                await self._pause(stop)

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
        claimed = sent = erased = 0
        while claimed < self.batch_size and not (stop and stop.is_set()):
            row = await to_thread.run_sync(self._claim_next)
            if row is None:
                break
            claimed += 1
            outcome = await self._attempt(row)
            sent += outcome == SENT
            erased += outcome in (SENT, FAILED)
        if erased:
            # Truncate the WAL, so the erased recipients and bodies leave no copy in it.
            await to_thread.run_sync(db.checkpoint, self.engine)
        return claimed, sent

    def _claim_next(self) -> Row[Any] | None:
        """Takes one due row with a lease; the guarded UPDATE lets only one worker win it.

        On PostgreSQL, FOR UPDATE SKIP LOCKED lets workers pass over the rows another is
        claiming instead of waiting for it; SQLite has one writer and ignores the clause.
        An email gets its Message-ID with its first claim and keeps it: a worker that dies
        after the SMTP server took the message but before the outcome was recorded leaves
        it to be sent again after the lease, and the copy carries the same Message-ID
        (design §4.7: at least once, and at most once as far as the portal can tell).
        """
        outbox, c = tables.outbox, tables.outbox.c
        now = self.clock()
        message_id = case(
            (and_(c.channel == EMAIL, c.message_id.is_(None)), make_msgid(domain=self._domain)),
            else_=c.message_id,
        )
        candidates = (
            select(c.id)
            .where(_due(now))
            .order_by(c.next_attempt_at, c.id)
            .limit(10)
            .with_for_update(skip_locked=True)
        )
        with self.engine.begin() as conn:
            while ids := conn.scalars(candidates).all():
                for outbox_id in ids:
                    taken = conn.execute(
                        update(outbox)
                        .where(c.id == outbox_id, _due(now))
                        .values(
                            status=SENDING,
                            lease_until=now + LEASE,
                            attempts=c.attempts + 1,
                            message_id=message_id,
                        )
                    )
                    if taken.rowcount == 1:
                        return conn.execute(select(outbox).where(c.id == outbox_id)).one()
        return None

    async def _attempt(self, row: Row[Any]) -> str:
        try:
            with fail_after(DELIVERY_DEADLINE):
                delivery = await self._deliver(row)
        except Exception as exc:
            return await to_thread.run_sync(self._record_failure, row, exc)
        await to_thread.run_sync(self._record_success, row, delivery)
        return SENT

    async def _deliver(self, row: Row[Any]) -> Delivery:
        if row.channel == WEBHOOK:
            return await self._post(row)
        msg = build_email(row, self.settings)
        message_id = await self.sender.send(msg)
        return Delivery(payload_sha256=_sha256(wire_bytes(msg)), message_id=message_id)

    async def _post(self, row: Row[Any]) -> Delivery:
        secret = await to_thread.run_sync(self._webhook_secret, row.deletion_request_id)
        if not secret:
            raise WebhookError("no webhook secret to sign with")
        timestamp = int(self.clock().replace(tzinfo=UTC).timestamp())
        status = await post_webhook(row.recipient, row.body_text, secret, timestamp=timestamp)
        return Delivery(payload_sha256=_sha256(row.body_text.encode()), response_status=status)

    def _webhook_secret(self, deletion_request_id: int | None) -> str | None:
        with self.engine.connect() as conn:
            return self.resolve_webhook_secret(conn, deletion_request_id)

    def _record_success(self, row: Row[Any], delivery: Delivery) -> None:
        values = {
            "status": SENT,
            "sent_at": self.clock(),
            "lease_until": None,
            "message_id": delivery.message_id,
            "payload_sha256": delivery.payload_sha256,
            "response_status": delivery.response_status,
            "last_error": None,
            **ERASED,
        }
        self._finish(row, values, self.on_sent)
        metrics.emails_sent_total.labels(row.kind).inc()
        log.info("outbox %d (%s) sent on attempt %d", row.id, row.kind, row.attempts)

    def _record_failure(self, row: Row[Any], exc: Exception) -> str:
        now = self.clock()
        bounced = refused_permanently(exc)
        values: dict[str, Any] = {
            "lease_until": None,
            "last_error": describe(exc, row.recipient),
            "response_status": exc.status if isinstance(exc, WebhookError) else bounced,
        }
        if now - row.created_at < GIVE_UP_AFTER and bounced is None:
            values |= {"status": QUEUED, "next_attempt_at": now + backoff(row.attempts)}
            self._finish(row, values, None)
            log.warning(
                "outbox %d (%s) attempt %d failed: %s",
                row.id,
                row.kind,
                row.attempts,
                type(exc).__name__,
            )
            return QUEUED
        self._finish(row, values | {"status": FAILED, **ERASED}, self.on_failed)
        metrics.emails_failed_total.labels(row.kind).inc()
        log.error("outbox %d (%s) failed after %d attempts", row.id, row.kind, row.attempts)
        return FAILED

    def _finish(self, row: Row[Any], values: dict[str, Any], hook: OutboxHook | None) -> None:
        """Records the outcome, and runs the hook in the same transaction."""
        with self.engine.begin() as conn:
            conn.execute(update(tables.outbox).where(tables.outbox.c.id == row.id).values(values))
            if hook is not None:
                hook(conn, row.id, row.deletion_request_id)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
