"""Carriers of built emails: kept-open SMTP connections, or the dev outbox folder."""

from __future__ import annotations

import email
import os
import re
import secrets
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

import aiosmtplib
from anyio import fail_after, to_thread

from portal.core import metrics
from portal.core.config import SMTP_CONNECTIONS, Settings
from portal.core.errors import PortalError
from portal.mail.messages import Email, first_link

SMTP_TIMEOUT = 30.0  # per SMTP step
# The check at start: a relay slower than this is worth a warning, and a stop (a deploy)
# never waits longer for it.
PROBE_TIMEOUT = 5.0  # per step
PROBE_DEADLINE = 10.0  # connect, EHLO, STARTTLS and AUTH together
SMTP_SCHEMES = {  # scheme: (default port, use_tls, start_tls)
    "smtp": (25, False, False),
    "smtp+starttls": (587, False, True),
    "smtps": (465, True, False),
}
# Before DATA nothing was handed over: a connection lost then is replaced and the message
# sent on the new one. A 421 is the server closing the connection.
_GONE = (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError)
CLOSING = 421


class Sender(Protocol):
    """Hands built emails to their carrier, up to `parallel` at once."""

    parallel: int

    async def send(self, email: Email) -> None: ...

    async def close(self) -> None: ...


@dataclass
class SmtpSender:
    """Sends over up to `parallel` kept-open connections to the server of PORTAL_SMTP_URL."""

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    use_tls: bool = False
    start_tls: bool = False
    timeout: float = SMTP_TIMEOUT
    # Kept-open connections (PORTAL_SMTP_CONNECTIONS), each carrying one message at a time: a
    # kept-open connection costs about 1 ms a message, a new one several times that.
    parallel: int = SMTP_CONNECTIONS
    _idle: list[aiosmtplib.SMTP] = field(default_factory=list, init=False, repr=False)
    _lost: int = field(default=0, init=False, repr=False)

    @property
    def relay(self) -> str:
        """host:port, as the log names the relay."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def from_url(cls, url: str, *, parallel: int = SMTP_CONNECTIONS) -> SmtpSender:
        """smtp://[user:pass@]host[:port], smtp+starttls://… or smtps://…, over up to
        `parallel` kept-open connections."""
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
            parallel=parallel,
        )

    async def send(self, email: Email) -> None:
        """One mail transaction; raises when the server did not take the message.

        A connection lost during DATA may have delivered it: that raises too, and the retry
        later carries the same Message-ID.
        """
        client = await self._envelope_on_any(email)
        try:
            await client.data(email.data)
        except aiosmtplib.SMTPResponseException as exc:
            await self._after_refusal(client, exc)
            raise
        except BaseException:
            self._drop(client)
            raise
        self._idle.append(client)

    async def close(self) -> None:
        """Says QUIT on every kept-open connection."""
        idle, self._idle = self._idle, []
        for client in idle:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()

    async def _envelope_on_any(self, email: Email) -> aiosmtplib.SMTP:
        """MAIL FROM and RCPT TO on a kept-open connection, or on a new one if it was lost."""
        client = self._idle.pop() if self._idle else await self._connect()
        try:
            await self._envelope(client, email)
            return client
        except NoSmtpUtf8:
            self._idle.append(client)  # nothing was said: the connection serves the next
            raise
        except aiosmtplib.SMTPResponseException as exc:
            await self._after_refusal(client, exc)
            if exc.code != CLOSING:
                raise
        except _GONE:
            self._drop(client)
        except BaseException:
            self._drop(client)
            raise
        client = await self._connect()
        try:
            await self._envelope(client, email)
        except NoSmtpUtf8:
            self._idle.append(client)
            raise
        except aiosmtplib.SMTPResponseException as exc:
            await self._after_refusal(client, exc)
            raise
        except BaseException:
            self._drop(client)
            raise
        return client

    async def _envelope(self, client: aiosmtplib.SMTP, email: Email) -> None:
        # RFC 6531: a mailbox with non-ASCII letters needs SMTPUTF8, else the server says no.
        utf8 = not (email.sender.isascii() and email.recipient.isascii())
        if utf8:
            if client.is_ehlo_or_helo_needed:
                await client.ehlo()
            if not client.supports_extension("smtputf8"):
                raise NoSmtpUtf8
        options, encoding = (["SMTPUTF8"], "utf-8") if utf8 else ([], "ascii")
        await client.mail(email.sender, options=options, encoding=encoding)
        await client.rcpt(email.recipient, encoding=encoding)

    async def probe(self, timeout: float = PROBE_TIMEOUT) -> str | None:
        """Connects, says EHLO, and STARTTLS and AUTH as configured, then QUIT: None when
        all of that worked, else why not (`failure_reason`). Sends nothing."""
        client = self._client(timeout)
        try:
            with fail_after(max(timeout, PROBE_DEADLINE)):
                await client.connect()
                if client.is_ehlo_or_helo_needed:
                    await client.ehlo()
        except Exception as exc:
            client.close()
            return failure_reason(exc)
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError):
            client.close()
        return None

    async def _connect(self) -> aiosmtplib.SMTP:
        if self._lost:
            self._lost -= 1
            metrics.smtp_reconnects_total.inc()
        client = self._client(self.timeout)
        await client.connect()
        return client

    def _client(self, timeout: float) -> aiosmtplib.SMTP:
        return aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            use_tls=self.use_tls,
            start_tls=self.start_tls,
            timeout=timeout,
        )

    async def _after_refusal(
        self, client: aiosmtplib.SMTP, exc: aiosmtplib.SMTPResponseException
    ) -> None:
        """The server said no to this message: reset the envelope, or drop a closing link."""
        if exc.code == CLOSING:
            self._drop(client)
            return
        try:
            await client.rset()
        except (aiosmtplib.SMTPException, OSError):
            self._drop(client)
        else:
            self._idle.append(client)

    def _drop(self, client: aiosmtplib.SMTP) -> None:
        self._lost += 1
        client.close()


class OutboxDirSender:
    """The dev default: writes each email as an .eml file and prints its link."""

    parallel = 1

    def __init__(self, outbox_dir: Path, console: Callable[[str], None] = print) -> None:
        self.outbox_dir = outbox_dir
        self.console = console

    async def send(self, email: Email) -> None:
        path = await to_thread.run_sync(self._write, email.data)
        link = _first_link(email.data)
        shown = f"mail ({email.kind}) written to {_shown(path)}"
        self.console(shown + (f": {link}" if link else ""))

    async def close(self) -> None:
        pass

    def _write(self, data: bytes) -> Path:
        self.outbox_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.outbox_dir.chmod(0o700)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = self.outbox_dir / f"{stamp}-{secrets.token_hex(4)}.eml"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return path


def _first_link(data: bytes) -> str | None:
    msg = email.message_from_bytes(data, policy=policy.default)
    body = msg.get_body(preferencelist=("plain",)) if isinstance(msg, EmailMessage) else None
    return first_link(body.get_content()) if isinstance(body, EmailMessage) else None


def _shown(path: Path) -> Path:
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def sender_for(settings: Settings) -> Sender:
    """SMTP when PORTAL_SMTP_URL is set, else the instance outbox folder."""
    if settings.smtp_url:
        return SmtpSender.from_url(settings.smtp_url, parallel=settings.smtp_connections)
    return OutboxDirSender(settings.outbox_dir)


class NoSmtpUtf8(Exception):
    """The relay does not offer SMTPUTF8, which a non-ASCII mailbox needs: final for that
    message (a retry would meet the same relay), shown to the operator as the reason."""

    def __str__(self) -> str:
        return "the SMTP relay does not offer SMTPUTF8, needed for a non-ASCII mailbox"


def fails_for_good(exc: BaseException) -> bool:
    """Whether this attempt's failure is final: a 5xx bounce, or no SMTPUTF8 for a mailbox
    that needs it."""
    return isinstance(exc, NoSmtpUtf8) or refused_permanently(exc) is not None


def refused_permanently(exc: BaseException) -> int | None:
    """The SMTP code when the server refused this message for good (a 5xx bounce), else None.

    Only the recipient (RCPT) or the message (DATA) answered 5xx counts: a 5xx to AUTH or
    MAIL FROM is the portal's own setup, which a retry after fixing it delivers.
    """
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [refused.code for refused in exc.recipients]
        return codes[0] if codes and all(500 <= code < 600 for code in codes) else None
    refused = aiosmtplib.SMTPRecipientRefused | aiosmtplib.SMTPDataError
    if isinstance(exc, refused) and 500 <= exc.code < 600:
        return exc.code
    return None


_ADDRESS = re.compile(r"[^\s<>\"'@]+@[^\s<>\"']+")


def failure_reason(exc: BaseException) -> str:
    """Why an attempt to reach the relay or hand it a message failed, in a few words for
    the log and `portal stats`; any address in a server's answer is left out."""
    reason = _ADDRESS.sub("<address>", " ".join(_reason(exc).split()))
    return reason[:200]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):  # aiosmtplib's timeouts are TimeoutErrors too
        return "no answer in time"
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return f"AUTH refused: {exc.code} {exc.message}"
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"answered {exc.code} {exc.message}"
    if isinstance(exc, aiosmtplib.SMTPConnectError) and exc.__cause__ is not None:
        return _reason(exc.__cause__)
    # aiosmtplib says "SMTP STARTTLS extension not supported by server." (AUTH alike).
    if named := re.match(r"SMTP (\S+) extension not supported", str(exc)):
        return f"the relay does not offer {named[1]}"
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return "the relay closed the connection"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    if isinstance(exc, socket.gaierror):
        return "host name not found"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__
