"""Links to sessions: a link read, looked at, used once; the session it starts, loaded and ended."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Connection, select, update

from portal.core.clock import utcnow
from portal.core.config import Settings
from portal.core.tokens import (
    LINK_PURPOSE,
    NOTICE_PURPOSE,
    TokenExpired,
    TokenInvalid,
    link_tokens,
    notice_tokens,
    seal,
    session_tokens,
    token_hash,
    unseal,
)
from portal.incidents import counters
from portal.store import tables


class LinkUsed(TokenInvalid):
    """The link was genuine but has been used already."""


class NoticeLinkUsed(LinkUsed):
    """A notice's direct link that has been used already: a lookup gives a new link."""


class NoticeLinkExpired(TokenExpired):
    """A notice's direct link past PORTAL_NOTICE_LINK_TTL: a lookup gives a new link."""


@dataclass(frozen=True)
class VerifiedSession:
    """A visit that proved control of an address by following the emailed link."""

    id: int
    incident_id: int
    incident_slug: str
    bidx: bytes
    lang: str
    verified_at: object
    secret: bytes
    sealed_email: bytes | None
    partner_id: int | None = None  # the entry page's partner, listed first in the results

    def email(self) -> str:
        """The verified address; read only when the person asks for deletion."""
        if self.sealed_email is None:
            raise TokenInvalid
        return unseal(self.secret, self.sealed_email)


def read_link(settings: Settings, token: str) -> tuple[bytes, str]:
    """The secret of a lookup's link or of a notice's direct link, and which of the two."""
    try:
        return link_tokens(settings).read(token), LINK_PURPOSE
    except TokenExpired:
        raise
    except TokenInvalid:
        pass  # signed for another purpose, perhaps a notice
    try:
        return notice_tokens(settings).read(token), NOTICE_PURPOSE
    except TokenExpired:
        raise NoticeLinkExpired from None


def peek_link(conn: Connection, settings: Settings, token: str) -> str:
    """Checks a link without using it (mail scanners open links); returns its incident slug."""
    secret, purpose = read_link(settings, token)
    row = link_row(conn, secret, purpose)
    if row.used_at is not None:
        raise NoticeLinkUsed if purpose == NOTICE_PURPOSE else LinkUsed
    return str(row.slug)


@dataclass(frozen=True)
class LinkOrigin:
    """Which incident a link that no longer works was for, and in which language."""

    incident: str
    lang: str


def genuine_link(settings: Settings, token: str) -> tuple[bytes, str] | None:
    """The secret and purpose of a link this portal signed, however old; None otherwise.
    Reads no database: a token not ours costs nothing more."""
    for tokens, purpose in (
        (link_tokens(settings), LINK_PURPOSE),
        (notice_tokens(settings), NOTICE_PURPOSE),
    ):
        try:
            return tokens.read_any_age(token), purpose
        except TokenInvalid:
            continue
    return None


def link_origin(conn: Connection, secret: bytes, purpose: str) -> LinkOrigin | None:
    """The incident and language of a link, used or expired, so that its page can offer a
    new one there; None when its record has been purged."""
    row = conn.execute(
        select(tables.incidents.c.slug, tables.links.c.lang)
        .select_from(tables.links)
        .join(tables.incidents)
        .where(tables.links.c.token_hash == token_hash(secret), tables.links.c.purpose == purpose)
    ).first()
    return LinkOrigin(row.slug, row.lang) if row else None


def confirm_link(conn: Connection, settings: Settings, token: str) -> tuple[str, VerifiedSession]:
    """Uses a link once and starts a new session; returns (session token, session)."""
    secret, purpose = read_link(settings, token)
    row = link_row(conn, secret, purpose)
    now = utcnow()
    used = conn.execute(
        update(tables.links)
        .where(tables.links.c.id == row.id, tables.links.c.used_at.is_(None))
        .values(used_at=now, sealed_email=None)
    )
    if used.rowcount != 1:
        raise NoticeLinkUsed if purpose == NOTICE_PURPOSE else LinkUsed
    email = unseal(secret, row.sealed_email)
    session_token, session_secret = session_tokens(settings).issue()
    sealed = seal(session_secret, email)
    session_id = conn.execute(
        tables.sessions.insert().values(
            token_hash=token_hash(session_secret),
            incident_id=row.incident_id,
            bidx=row.bidx,
            sealed_email=sealed,
            lang=row.lang,
            created_at=now,
            verified_at=now,
            expires_at=now + timedelta(seconds=settings.session_ttl),
            partner_id=row.partner_id,
        )
    ).inserted_primary_key
    assert session_id is not None
    counters.count_visit(conn, incident_id=row.incident_id, bidx=row.bidx)
    session = VerifiedSession(
        session_id[0],
        row.incident_id,
        row.slug,
        row.bidx,
        row.lang,
        now,
        session_secret,
        sealed,
        row.partner_id,
    )
    return session_token, session


def link_row(conn: Connection, secret: bytes, purpose: str):  # type: ignore[no-untyped-def]
    row = conn.execute(
        select(tables.links, tables.incidents.c.slug)
        .join(tables.incidents)
        .where(
            tables.links.c.token_hash == token_hash(secret),
            tables.links.c.purpose == purpose,
        )
    ).first()
    if row is None:
        raise TokenInvalid
    if row.expires_at <= utcnow():
        raise NoticeLinkExpired if purpose == NOTICE_PURPOSE else TokenExpired
    return row


def load_session(conn: Connection, settings: Settings, token: str | None) -> VerifiedSession | None:
    """The live session behind a cookie value, or None (expiry is enforced here too)."""
    if not token:
        return None
    try:
        secret = session_tokens(settings).read(token)
    except TokenInvalid:
        return None
    row = conn.execute(
        select(tables.sessions, tables.incidents.c.slug)
        .join(tables.incidents)
        .where(tables.sessions.c.token_hash == token_hash(secret))
    ).first()
    if row is None or row.expires_at <= utcnow():
        return None
    return VerifiedSession(
        row.id,
        row.incident_id,
        row.slug,
        row.bidx,
        row.lang,
        row.verified_at,
        secret,
        row.sealed_email,
        row.partner_id,
    )


def end_session(conn: Connection, session: VerifiedSession) -> None:
    conn.execute(tables.sessions.delete().where(tables.sessions.c.id == session.id))
