"""Mail test fixtures: a real SMTP server (aiosmtpd), a webhook receiver, and wait_for."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import quote

import anyio
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass(frozen=True)
class Received:
    """One message as the SMTP server got it."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    peer: Any = None  # the client's (address, port): one per connection
    at: float = 0.0  # time.monotonic() when the server took it

    @property
    def message(self) -> EmailMessage:
        return cast(EmailMessage, message_from_bytes(self.content, policy=policy.default))


class MailHandler:
    """Collects envelopes; can answer 451 to the next N messages and insist on AUTH."""

    def __init__(self, credentials: tuple[str, str] | None = None) -> None:
        self.received: list[Received] = []
        self.credentials = credentials
        self._failures = 0
        self.delay = 0.0  # seconds to wait before answering DATA, as a slow server does
        self.refuse: set[str] = set()  # recipients answered "550 no such mailbox" (a bounce)
        self._lock = threading.Lock()
        self._hold = threading.Event()  # armed: keep the next message's answer back
        self._holding = threading.Event()
        self._released = threading.Event()
        self.hang_up_after: int | None = None  # messages a connection may carry, then it ends
        self.hang_up_with_421 = False  # end it with "421 closing" instead of without a word
        self.in_data = self.most_in_data = 0  # messages being received at once, and the peak

    def fail_next(self, count: int) -> None:
        with self._lock:
            self._failures = count

    def hold_next(self) -> None:
        """The next message is received, but its "250 OK" waits for `release()`.

        That is the moment a client can die after the server has taken the message and
        before the client knows it was taken.
        """
        self._released.clear()
        self._holding.clear()
        self._hold.set()

    @property
    def holding(self) -> bool:
        return self._holding.is_set()

    def release(self) -> None:
        self._released.set()

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.credentials and not session.authenticated:
            return "530 5.7.0 Authentication required"
        carried = getattr(session, "carried", 0)
        if self.hang_up_after is not None and carried >= self.hang_up_after:
            if not self.hang_up_with_421:
                server.transport.close()  # as a server that drops an idle connection
                return "250 OK"  # never reaches the client
            asyncio.get_running_loop().call_later(0.05, server.transport.close)
            return "421 4.7.0 too many messages on one connection, closing"
        session.carried = carried + 1  # type: ignore[attr-defined]
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.lower() in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.in_data += 1
        self.most_in_data = max(self.most_in_data, self.in_data)
        try:
            return await self._take(session, envelope)
        finally:
            self.in_data -= 1

    async def _take(self, session: Session, envelope: Envelope) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        with self._lock:
            if self._failures:
                self._failures -= 1
                return "451 4.3.0 try again"
            content = envelope.original_content or b""
            self.received.append(
                Received(
                    str(envelope.mail_from),
                    list(envelope.rcpt_tos),
                    content,
                    session.peer,
                    time.monotonic(),
                )
            )
            held = self._hold.is_set()
            self._hold.clear()
        if held:
            self._holding.set()
            while not self._released.is_set():  # other sessions go on meanwhile
                await asyncio.sleep(0.01)
        return "250 OK"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        given = (
            (data.login.decode(), data.password.decode())
            if isinstance(data, LoginPassword)
            else None
        )
        return AuthResult(success=given is not None and given == self.credentials, handled=False)


@dataclass
class SmtpServer:
    """A running aiosmtpd server on 127.0.0.1."""

    handler: MailHandler
    host: str
    port: int

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    def fail_next(self, count: int) -> None:
        """The next `count` messages are answered "451 try again"."""
        self.handler.fail_next(count)

    def url(self, user: str | None = None, password: str | None = None) -> str:
        userinfo = f"{quote(user, safe='')}:{quote(password or '', safe='')}@" if user else ""
        return f"smtp://{userinfo}{self.host}:{self.port}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running_smtp_server(
    credentials: tuple[str, str] | None = None, *, smtputf8: bool = True, port: int | None = None
) -> Iterator[SmtpServer]:
    """An SMTP server on a free port (or `port`: a relay coming back where it was); with
    credentials it refuses mail before AUTH.

    It offers SMTPUTF8 (RFC 6531) unless `smtputf8` is False, as an older relay would.
    """
    handler = MailHandler(credentials)
    port = port or free_port()
    auth: dict[str, Any] = {"authenticator": handler.authenticate} if credentials else {}
    # AUTH is offered without TLS on this loopback test server only.
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        auth_require_tls=False,
        enable_SMTPUTF8=smtputf8,
        **auth,
    )
    controller.start()
    try:
        yield SmtpServer(handler, "127.0.0.1", port)
    finally:
        controller.stop()


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    with running_smtp_server() as server:
        yield server


@dataclass(frozen=True)
class Hook:
    """One request the webhook receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    answered: int = 0


class WebhookReceiver:
    """A real HTTP server in a thread that records POSTs and answers `status`.

    As a partner's would: with `secret` it checks the signature (401 when it is wrong),
    and `fail_next(n)` makes it answer 503 to the next n calls, as a partner that is down.
    """

    def __init__(self, status: int = 202, secret: str | None = None) -> None:
        self.status = status
        self.secret = secret
        self.requests: list[Hook] = []
        self.url = ""
        self._failures = 0
        self._lock = threading.Lock()

    def fail_next(self, count: int) -> None:
        with self._lock:
            self._failures = count

    def answer(self, headers: dict[str, str], body: bytes) -> int:
        if self.secret is not None and not signature_ok(self.secret, headers, body):
            return 401
        with self._lock:
            if self._failures:
                self._failures -= 1
                return 503
        return self.status

    @property
    def accepted(self) -> list[Hook]:
        return [hook for hook in self.requests if 200 <= hook.answered < 300]


def signature_ok(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """X-Portal-Signature is sha256=HMAC-SHA256(secret, "<X-Portal-Timestamp>.<body>")."""
    timestamp = headers.get("X-Portal-Timestamp", "")
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest(
        f"sha256={expected.hexdigest()}", headers.get("X-Portal-Signature", "")
    )


@contextmanager
def running_webhook_receiver(
    status: int = 202, secret: str | None = None
) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(status, secret)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = dict(self.headers.items())
            answered = receiver.answer(headers, body)
            receiver.requests.append(Hook(self.path, headers, body, answered))
            self.send_response(answered)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/erasure"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    with running_webhook_receiver() as receiver:
        yield receiver


async def wait_for(condition: Callable[[], object], timeout: float = 10.0) -> None:
    """Polls `condition` until it is true; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await anyio.sleep(0.01)


def wait_for_sync(condition: Callable[[], object], timeout: float = 10.0) -> None:
    """wait_for outside an event loop (e2e tests against real processes)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.01)
