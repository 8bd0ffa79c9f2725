"""Operator accounts and their sessions: argon2id password hashes, short server-side sessions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from importlib.resources import files

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Connection, delete, select, update

from portal.core.clock import utcnow
from portal.core.config import Settings
from portal.core.errors import PortalError
from portal.core.tokens import (
    OPERATOR_SESSION_MAX_AGE,
    TokenInvalid,
    operator_session_tokens,
    token_hash,
)
from portal.store import tables

MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # an argon2id of a megabyte of "password" is work for nothing
# No "@": a username is written into the audit log, which holds no email address.
USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# However often it is used, an operator session ends this long after the login.
SESSION_MAX_AGE = OPERATOR_SESSION_MAX_AGE
# A session's expiry moves on with use, but at most once a minute: one write, not one a page.
SLIDE_STEP = timedelta(seconds=60)

HASHER = PasswordHasher()  # argon2id with argon2-cffi's current recommended parameters


@dataclass(frozen=True)
class Operator:
    id: int
    username: str
    created_at: datetime
    last_login_at: datetime | None
    disabled_at: datetime | None


@dataclass(frozen=True)
class OperatorSession:
    id: int
    operator_id: int
    username: str


# -- accounts ----------------------------------------------------------------------------


def create_operator(conn: Connection, *, username: str, password: str) -> Operator:
    """Creates an account; raises PortalError for a bad name, a taken one or a weak password."""
    check_username(username)
    check_password(password, username=username)
    if _row(conn, username) is not None:
        raise PortalError(f"an operator named {username!r} exists already")
    conn.execute(
        tables.operators.insert().values(
            username=username, password_hash=HASHER.hash(password), created_at=utcnow()
        )
    )
    operator = get_operator(conn, username)
    assert operator is not None
    return operator


def check_username(username: str) -> None:
    if not USERNAME.fullmatch(username):
        raise PortalError(
            "a username is 1-64 lower-case letters, digits, dots, hyphens or underscores "
            "(no @: it is written into the audit log, which holds no email address)"
        )


def check_password(password: str, *, username: str) -> None:
    """A minimum length, a maximum, and none of the most common passwords."""
    if len(password) < MIN_PASSWORD:
        raise PortalError(f"the password must be at least {MIN_PASSWORD} characters long")
    if len(password) > MAX_PASSWORD:
        raise PortalError(f"the password must be at most {MAX_PASSWORD} characters long")
    lowered = password.lower()
    if lowered in common_passwords() or username.lower() in lowered:
        raise PortalError("that password is too easy to guess: it is common or holds the name")


@cache
def common_passwords() -> frozenset[str]:
    """The 10,000 most common passwords, shipped in portal/data/common-passwords.txt."""
    text = files("portal").joinpath("data/common-passwords.txt").read_text(encoding="utf-8")
    return frozenset(line.strip().lower() for line in text.splitlines() if line.strip())


def get_operator(conn: Connection, username: str) -> Operator | None:
    row = _row(conn, username)
    return _operator(row) if row is not None else None


def list_operators(conn: Connection) -> list[Operator]:
    rows = conn.execute(select(tables.operators).order_by(tables.operators.c.username))
    return [_operator(row) for row in rows]


def disable_operator(conn: Connection, username: str) -> Operator:
    """Disables an account and ends its sessions at once; raises PortalError if unknown."""
    operator = get_operator(conn, username)
    if operator is None:
        raise PortalError(f"no operator named {username!r}")
    t = tables.operators
    conn.execute(
        update(t)
        .where(t.c.id == operator.id, t.c.disabled_at.is_(None))
        .values(disabled_at=utcnow())
    )
    sessions = tables.operator_sessions
    conn.execute(delete(sessions).where(sessions.c.operator_id == operator.id))
    disabled = get_operator(conn, username)
    assert disabled is not None
    return disabled


def authenticate(conn: Connection, *, username: str, password: str) -> Operator | None:
    """The operator if the password is right and the account enabled, else None.

    An unknown name costs one argon2id too, against a dummy hash: the answer takes as long.
    """
    row = _row(conn, username) if len(password) <= MAX_PASSWORD else None
    if row is None:
        _verify(_dummy_hash(), password[:MAX_PASSWORD])
        return None
    if not _verify(row.password_hash, password) or row.disabled_at is not None:
        return None
    values: dict[str, object] = {"last_login_at": utcnow()}
    if HASHER.check_needs_rehash(row.password_hash):
        values["password_hash"] = HASHER.hash(password)
    conn.execute(update(tables.operators).where(tables.operators.c.id == row.id).values(values))
    return get_operator(conn, username)


def _verify(hashed: str, password: str) -> bool:
    try:
        return HASHER.verify(hashed, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@cache
def _dummy_hash() -> str:
    return HASHER.hash("not the password of anyone: only spent time for unknown names")


def _row(conn: Connection, username: str):  # type: ignore[no-untyped-def]
    t = tables.operators
    return conn.execute(select(t).where(t.c.username == username)).first()


def _operator(row) -> Operator:  # type: ignore[no-untyped-def]
    return Operator(row.id, row.username, row.created_at, row.last_login_at, row.disabled_at)


# -- sessions ----------------------------------------------------------------------------


def start_session(conn: Connection, settings: Settings, operator: Operator) -> str:
    """A new session (a new id at every login); returns the cookie value."""
    token, secret = operator_session_tokens(settings).issue()
    now = utcnow()
    conn.execute(
        tables.operator_sessions.insert().values(
            token_hash=token_hash(secret),
            operator_id=operator.id,
            created_at=now,
            expires_at=now + timedelta(seconds=settings.admin_session_ttl),
        )
    )
    return token


def load_session(conn: Connection, settings: Settings, token: str | None) -> OperatorSession | None:
    """The live session of an enabled operator behind a cookie value, or None.

    Idle for PORTAL_ADMIN_SESSION_TTL, or older than SESSION_MAX_AGE, and it is over.
    """
    if not token:
        return None
    try:
        secret = operator_session_tokens(settings).read(token)
    except TokenInvalid:
        return None
    s, o = tables.operator_sessions, tables.operators
    row = conn.execute(
        select(s, o.c.username, o.c.disabled_at)
        .join(o, s.c.operator_id == o.c.id)
        .where(s.c.token_hash == token_hash(secret))
    ).first()
    now = utcnow()
    if row is None or row.disabled_at is not None or row.expires_at <= now:
        return None
    if row.created_at + SESSION_MAX_AGE <= now:
        return None
    renewed = now + timedelta(seconds=settings.admin_session_ttl)
    if renewed - row.expires_at >= SLIDE_STEP:
        conn.execute(update(s).where(s.c.id == row.id).values(expires_at=renewed))
    return OperatorSession(row.id, row.operator_id, row.username)


def end_session(conn: Connection, session_id: int) -> None:
    s = tables.operator_sessions
    conn.execute(delete(s).where(s.c.id == session_id))
