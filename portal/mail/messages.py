"""Emails as people read them: templates rendered per language, and the MIME message sent."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, make_msgid, parseaddr
from functools import lru_cache
from typing import cast

from portal.mail.sender import from_header

# RFC 5322 allows 998 characters a line; folding at 78 moves a long subject's first word
# onto a continuation line, which some clients show with a leading space.
SMTP = SMTP_POLICY.clone(max_line_length=998)
SMTPUTF8 = SMTP.clone(utf8=True)
_URL = re.compile(r"https?://[^\s<>\"']+")


@dataclass(frozen=True)
class Message:
    """A rendered email: one-line subject, plain text and HTML alternatives."""

    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class Email:
    """An email built for the wire, once: the envelope, the bytes, and their proof."""

    kind: str
    sender: str  # the envelope's MAIL FROM
    recipient: str
    message_id: str
    data: bytes  # CRLF line ends, as the carrier gets them
    payload_sha256: str  # of `data`: the proof kept of what was sent


def refuse_line_breaks(**headers: str) -> None:
    """Header injection defence: a CR or LF in a header value is refused."""
    for name, value in headers.items():
        if "\r" in value or "\n" in value:
            raise ValueError(f"line break in the {name} header refused")


def build_email(
    *,
    kind: str,
    to: str,
    message: Message,
    mail_from: str,
    sender_name: str | None,
    message_id: str | None,
    envelope_from: str | None = None,
) -> Email:
    """The MIME message, text and HTML alternatives in UTF-8, serialised for the carrier.

    `envelope_from` is the MAIL FROM (a VERP address) when not the address of `mail_from`.

    The common case (an ASCII address, lines within 998 octets) is written directly, as
    the email package would write it but about ten times faster, the headers that repeat
    (From, a subject) folded by the package once; anything else goes through the package.
    """
    refuse_line_breaks(to=to, subject=message.subject)
    message_id = message_id or make_msgid(domain=domain_of(mail_from))
    parts = [_body(message.text), _body(message.html)]
    boundary = f"==============={secrets.randbelow(10**19):019d}=="
    plain = _SIMPLE_ADDRESS.fullmatch(to) and _SIMPLE_ID.fullmatch(message_id)
    if not plain or None in parts or any(boundary.encode() in part for part in parts if part):
        data = _with_email_package(kind, to, message, mail_from, sender_name, message_id)
    else:
        head = b"".join(
            (
                _folded("From", from_header(mail_from, sender_name)),
                f"To: {to}\r\n".encode(),
                _folded("Subject", message.subject),
                f"Date: {_now()}\r\nMessage-ID: {message_id}\r\n".encode(),
                _folded("X-Portal-Kind", kind),
                b"MIME-Version: 1.0\r\n",
                f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'.encode(),
            )
        )
        text, html = (cast(bytes, part) for part in parts)
        data = head + _part(boundary, "plain", text) + _part(boundary, "html", html)
        data += f"--{boundary}--\r\n".encode()
    return Email(
        kind=kind,
        sender=envelope_from or parseaddr(mail_from)[1],
        recipient=to,
        message_id=message_id,
        data=data,
        payload_sha256=hashlib.sha256(data).hexdigest(),
    )


# What the email package writes unchanged: a plain ASCII address and Message-ID.
_SIMPLE_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+")
_SIMPLE_ID = re.compile(r"<[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+>")
_LONGEST_LINE = 998


def _body(text: str) -> bytes | None:
    """The body with CRLF line ends, or None when a line is too long to send unencoded."""
    lines = text.encode("utf-8").splitlines()
    if any(len(line) > _LONGEST_LINE for line in lines):
        return None
    return b"\r\n".join(lines) + b"\r\n"


def _part(boundary: str, subtype: str, body: bytes) -> bytes:
    encoding = "7bit" if body.isascii() else "8bit"
    return (
        (
            f'--{boundary}\r\nContent-Type: text/{subtype}; charset="utf-8"\r\n'
            f"Content-Transfer-Encoding: {encoding}\r\n\r\n"
        ).encode()
        + body
        + b"\r\n"
    )


def _now() -> str:
    return format_datetime(datetime.now(UTC))  # "+0000", as RFC 5322 asks (not "GMT")


@lru_cache(maxsize=1024)
def _folded(name: str, value: str) -> bytes:
    """A header line as the email package folds it (encoded words where needed)."""
    header = SMTP.header_factory(name, value)
    return str(header.fold(policy=SMTP)).encode("ascii")


def _with_email_package(
    kind: str, to: str, message: Message, mail_from: str, sender_name: str | None, msgid: str
) -> bytes:
    # A non-ASCII mailbox (RFC 6531) is written as UTF-8 in the headers (RFC 6532): its
    # mail goes only over SMTPUTF8, which portal.mail.delivery asks for and checks.
    policy = SMTP if to.isascii() else SMTPUTF8
    msg = EmailMessage(policy=policy)
    msg["From"] = from_header(mail_from, sender_name)
    msg["To"] = to
    msg["Subject"] = message.subject
    msg["Date"] = _now()
    msg["Message-ID"] = msgid
    msg["X-Portal-Kind"] = kind
    msg.set_content(message.text, charset="utf-8")
    msg.add_alternative(message.html, subtype="html", charset="utf-8")
    return msg.as_bytes(policy=policy)


def domain_of(address: str) -> str:
    """The domain of an address (or of `Name <address>`), for Message-IDs."""
    return parseaddr(address)[1].rpartition("@")[2] or "localhost"


def first_link(text: str) -> str | None:
    """The first URL of a plain-text body, or None."""
    found = _URL.search(text)
    return found.group(0) if found else None
