"""Signed, expiring tokens and sealing with their secret; every purpose, each made here once."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from datetime import timedelta

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from itsdangerous import BadSignature, SignatureExpired, URLSafeSerializer, URLSafeTimedSerializer

from portal.core.config import Settings

SECRET_BYTES = 32
# What a link row's `purpose` says: a lookup's link, or a notice's direct link.
LINK_PURPOSE = "results"
NOTICE_PURPOSE = "notice"
OPERATOR_SESSION_MAX_AGE = timedelta(hours=12)  # however active the operator is
SENT_ADDRESS_MAX_AGE = 600  # seconds the "check your inbox" page shows the address typed


class TokenInvalid(Exception):
    """The token is malformed, tampered with, or for another purpose."""


class TokenExpired(TokenInvalid):
    """The token was genuine but is older than its max age."""


class TokenService:
    """Issues and reads tokens for one purpose; a token carries only a random secret."""

    def __init__(self, secret_key: str, *, purpose: str, max_age: int) -> None:
        self.serializer = URLSafeTimedSerializer(secret_key, salt=f"portal.{purpose}")
        self.max_age = max_age

    def issue(self) -> tuple[str, bytes]:
        """A new (token, secret) pair; keep only `token_hash(secret)` server-side."""
        secret = secrets.token_bytes(SECRET_BYTES)
        return self.serializer.dumps(_b64(secret)), secret

    def read(self, token: str) -> bytes:
        """The secret inside a token; raises TokenExpired or TokenInvalid."""
        try:
            value = self.serializer.loads(token, max_age=self.max_age)
        except SignatureExpired:
            raise TokenExpired from None
        except BadSignature:
            raise TokenInvalid from None
        return _secret(value)

    def read_any_age(self, token: str) -> bytes:
        """The secret inside a genuine token however old: to tell which record an expired
        link was for, never to let it in. Raises TokenInvalid."""
        try:
            value = self.serializer.loads(token)
        except BadSignature:
            raise TokenInvalid from None
        return _secret(value)


def _secret(value: object) -> bytes:
    if not isinstance(value, str):
        raise TokenInvalid
    try:
        secret = base64.urlsafe_b64decode(value.encode())
    except ValueError:
        raise TokenInvalid from None
    if len(secret) != SECRET_BYTES:
        raise TokenInvalid
    return secret


def token_hash(secret: bytes) -> bytes:
    """What the database keeps of a token: its secret's SHA-256."""
    return hashlib.sha256(secret).digest()


def seal(secret: bytes, plaintext: str) -> bytes:
    """Encrypts with a key derived from a token's secret: the database alone cannot read it."""
    nonce = os.urandom(12)
    return nonce + AESGCM(_seal_key(secret)).encrypt(nonce, plaintext.encode(), None)


def unseal(secret: bytes, sealed: bytes) -> str:
    try:
        return AESGCM(_seal_key(secret)).decrypt(sealed[:12], sealed[12:], None).decode()
    except (InvalidTag, ValueError):
        raise TokenInvalid from None


def _seal_key(secret: bytes) -> bytes:
    return hmac.new(secret, b"portal.seal", hashlib.sha256).digest()


class SealedText:
    """Encrypts a short text for one purpose and a max age, for a cookie only the server reads.

    Sealed, not just signed: the browser holds it, and nothing between it and the server may
    read it. Every sealed text has the same length, whatever the text (up to `size` bytes).
    """

    def __init__(self, secret_key: str, *, purpose: str, max_age: int, size: int) -> None:
        self.key = hmac.new(
            secret_key.encode(), f"portal.{purpose}".encode(), hashlib.sha256
        ).digest()
        self.purpose = purpose.encode()
        self.max_age = max_age
        self.size = size

    def seal(self, text: str) -> str:
        """The text sealed; a text longer than `size` bytes is sealed as the empty text."""
        payload = f"{int(time.time())}:{text}".encode()
        if len(payload) > self.size:
            payload = payload.split(b":", 1)[0] + b":"
        nonce = os.urandom(12)
        sealed = AESGCM(self.key).encrypt(nonce, payload.ljust(self.size, b"\0"), self.purpose)
        return _b64(nonce + sealed)

    def open(self, token: str) -> str:
        """The text inside; raises TokenExpired after `max_age`, TokenInvalid if not ours."""
        try:
            data = base64.urlsafe_b64decode(token.encode())
            payload = AESGCM(self.key).decrypt(data[:12], data[12:], self.purpose)
            stamp, _, text = payload.rstrip(b"\0").decode().partition(":")
            age = time.time() - int(stamp)
        except (InvalidTag, ValueError):
            raise TokenInvalid from None
        if age > self.max_age:
            raise TokenExpired
        return text


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


class ReferenceSigner:
    """Signs a public value (a request's reference) for one purpose, without an expiry.

    For links whose lifetime the database decides, such as a partner's link that works
    until 30 days after its request closed.
    """

    def __init__(self, secret_key: str, *, purpose: str) -> None:
        self.serializer = URLSafeSerializer(secret_key, salt=f"portal.{purpose}")

    def sign(self, value: str) -> str:
        token: str = self.serializer.dumps(value)
        return token

    def read(self, token: str) -> str:
        """The signed value; raises TokenInvalid when the signature or the purpose is wrong."""
        try:
            value = self.serializer.loads(token)
        except BadSignature:
            raise TokenInvalid from None
        if not isinstance(value, str):
            raise TokenInvalid
        return value


class TimedSigner:
    """Signs a public value (a partner's id) for one purpose, valid for `max_age` seconds."""

    def __init__(self, secret_key: str, *, purpose: str, max_age: int) -> None:
        self.serializer = URLSafeTimedSerializer(secret_key, salt=f"portal.{purpose}")
        self.max_age = max_age

    def sign(self, value: str) -> str:
        token: str = self.serializer.dumps(value)
        return token

    def read(self, token: str) -> str:
        """The signed value; raises TokenExpired after `max_age`, else TokenInvalid if not ours."""
        try:
            value = self.serializer.loads(token, max_age=self.max_age)
        except SignatureExpired:
            raise TokenExpired from None
        except BadSignature:
            raise TokenInvalid from None
        if not isinstance(value, str):
            raise TokenInvalid
        return value


class BounceTags:
    """The VERP tag of a message's envelope sender (design §8): the message's outbox id and
    an HMAC of it, so that a bounce names its message and a forged one is known as forged.

    Lower-case base32 and digits only, since some mail servers lower-case local parts; short,
    since a local part holds at most 64 octets. It names the message, never the address.
    """

    MAC_BYTES = 10  # 80 bits, 16 base32 characters

    def __init__(self, secret_key: str) -> None:
        self.key = hmac.new(secret_key.encode(), b"portal.bounce", hashlib.sha256).digest()

    def tag(self, message_id: int) -> str:
        return f"{message_id}-{self._mac(message_id)}"

    def read(self, tag: str) -> int:
        """The message id a tag names; raises TokenInvalid when it is not one of ours."""
        number, dash, mac = tag.strip().lower().partition("-")
        if not (dash and number.isascii() and number.isdigit() and len(number) <= 18):
            raise TokenInvalid
        message_id = int(number)
        if not hmac.compare_digest(mac.encode(), self._mac(message_id).encode()):
            raise TokenInvalid
        return message_id

    def _mac(self, message_id: int) -> str:
        digest = hmac.new(self.key, str(message_id).encode(), hashlib.sha256).digest()
        return base64.b32encode(digest[: self.MAC_BYTES]).decode().lower()


# -- every purpose: its own salt and max age, so that no token passes for another ---------


def link_tokens(settings: Settings) -> TokenService:
    """A lookup's emailed link."""
    return TokenService(settings.secret_key, purpose="link", max_age=settings.link_ttl)


def notice_tokens(settings: Settings) -> TokenService:
    """A direct notice's link into the results."""
    return TokenService(settings.secret_key, purpose="notice", max_age=settings.notice_link_ttl)


def session_tokens(settings: Settings) -> TokenService:
    """A person's session cookie, after following a link."""
    return TokenService(settings.secret_key, purpose="session", max_age=settings.session_ttl)


def operator_session_tokens(settings: Settings) -> TokenService:
    """An operator's session cookie in the admin area."""
    max_age = int(OPERATOR_SESSION_MAX_AGE.total_seconds())
    return TokenService(settings.secret_key, purpose="operator", max_age=max_age)


def partner_signer(settings: Settings) -> ReferenceSigner:
    """A partner's link to one deletion request, valid as long as the database says."""
    return ReferenceSigner(settings.secret_key, purpose="partner")


PARTNER_QUEUE_MAX_AGE = timedelta(days=30)


def partner_queue_signer(settings: Settings) -> TimedSigner:
    """A forward="daily" partner's link to its queue page, from its digest: 30 days."""
    max_age = int(PARTNER_QUEUE_MAX_AGE.total_seconds())
    return TimedSigner(settings.secret_key, purpose="partner-queue", max_age=max_age)


def bounce_tags(settings: Settings) -> BounceTags:
    """The signed tag in a message's envelope sender (PORTAL_BOUNCE_ADDRESS)."""
    return BounceTags(settings.secret_key)


def sent_address_sealer(settings: Settings) -> SealedText:
    """The "check your inbox" cookie: the address typed, encrypted, not just signed."""
    return SealedText(
        settings.secret_key, purpose="sent-address", max_age=SENT_ADDRESS_MAX_AGE, size=512
    )
