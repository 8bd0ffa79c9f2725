"""A lookup's steps (limits, hash, link, mail) for the lookup queue; a link to a session."""

from __future__ import annotations

import dataclasses
import logging
import secrets
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Connection, Engine, select, update

from portal.core import metrics
from portal.core.blind_index import blind_index
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
from portal.incidents.stored import Incident, Partner
from portal.mail import messages, outbox
from portal.mail.renderer import Renderer
from portal.person.ratelimit import RateLimiter
from portal.store import db, tables

log = logging.getLogger("portal.lookups")


class LinkUsed(TokenInvalid):
    """The link was genuine but has been used already."""


class NoticeLinkUsed(LinkUsed):
    """A notice's direct link that has been used already: a lookup gives a new link."""


class NoticeLinkExpired(TokenExpired):
    """A notice's direct link past PORTAL_NOTICE_LINK_TTL: a lookup gives a new link."""


@dataclass(frozen=True)
class LookupRequest:
    """A valid, normalised address someone typed into an incident's form."""

    incident: str
    address: str
    client: str
    lang: str
    # The hidden `partner` of an entry page's form, unchecked: an unknown one is ignored.
    partner: str | None = None
    # The visitor's session cookie, if any: a link asked from a verified session joins it.
    session_token: str | None = dataclasses.field(default=None, repr=False)


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


@dataclass(frozen=True)
class PendingLink:
    """A lookup hashed and within its limits: the link row and the mail, ready to write."""

    incident: Incident
    lookup: LookupRequest
    link: dict[str, object]
    message: messages.Message


async def within_client_limit(limiter: RateLimiter, lookup: LookupRequest) -> bool:
    if await limiter.hit("client", lookup.client):
        return True
    metrics.rate_limited_total.labels(limit="client").inc()
    return False


async def within_address_limit(limiter: RateLimiter, bidx: bytes) -> bool:
    if await limiter.hit("address", bidx.hex()):
        return True
    metrics.rate_limited_total.labels(limit="address").inc()
    return False


def hash_address(
    settings: Settings, incident: Incident, salt: bytes, lookup: LookupRequest
) -> bytes:
    """The address's blind index with the incident's parameters: CPU-bound, off the loop."""
    bidx = blind_index(lookup.address, pepper=settings.pepper, salt=salt, params=incident.kdf)
    metrics.hashes_total.inc()
    return bidx


def deployment_salt(engine: Engine) -> bytes:
    with engine.begin() as conn:
        return db.ensure_salt(conn)


def prepare_link(
    settings: Settings,
    incident: Incident,
    bidx: bytes,
    lookup: LookupRequest,
    renderer: Renderer,
    partner: Partner | None = None,
) -> PendingLink:
    """Issues the link and renders its mail (CPU only: nothing is written yet).

    `partner`: the entry page's partner (`entry_partner`); the mail is sent on its behalf.
    """
    token, secret = link_tokens(settings).issue()
    now = utcnow()
    message = _link_message(renderer, settings, incident, lookup.lang, token, partner)
    link = {
        "token_hash": token_hash(secret),
        "purpose": LINK_PURPOSE,
        "incident_id": incident.id,
        "bidx": bidx,
        "sealed_email": seal(secret, lookup.address),
        "lang": lookup.lang,
        "created_at": now,
        "expires_at": now + timedelta(seconds=settings.link_ttl),
        "partner_id": partner.id if partner else None,
        "session_id": None,
    }
    return PendingLink(incident, lookup, link, message)


def write_links(engine: Engine, settings: Settings, batch: list[PendingLink]) -> None:
    """Writes the links, their mails and the lookup counts of a batch in one transaction.

    A lookup asked from a live session of its incident records that session on its link,
    so that confirming the link in the same browser adds the address to the session.
    """
    per_incident = Counter(pending.incident.id for pending in batch)
    with engine.begin() as conn:
        rows = [
            pending.link
            | {
                "session_id": asking_session(
                    conn, settings, pending.incident, pending.lookup.session_token
                )
                if pending.lookup.session_token
                else None
            }
            for pending in batch
        ]
        conn.execute(tables.links.insert(), rows)
        mails = [
            outbox.QueuedEmail(p.lookup.address, p.message, p.incident.organisation) for p in batch
        ]
        outbox.enqueue_emails(conn, kind="link", emails=mails)
        for incident_id, count in per_incident.items():
            counters.bump(conn, incident_id=incident_id, name=counters.LOOKUPS, by=count)
    # Logged after the commit: nothing waits inside the transaction on a log handler.
    log.info("links written: %d, their mails queued", len(batch))


def entry_partner(partners: list[Partner], slug: str | None) -> Partner | None:
    """The partner whose entry page the lookup came from; None for none or an unknown one
    (a tampered hidden field changes nothing the person can see)."""
    if not slug:
        return None
    return next((p for p in partners if p.slug == slug), None)


def asking_session(
    conn: Connection, settings: Settings, incident: Incident, token: str | None
) -> int | None:
    """The id of the live session of this incident that asks for another address's link."""
    session = load_session(conn, settings, token)
    return session.id if session is not None and session.incident_id == incident.id else None


def _link_message(
    renderer: Renderer,
    settings: Settings,
    incident: Incident,
    lang: str,
    token: str,
    partner: Partner | None,
) -> messages.Message:
    """The link email; from an entry page, sent on that partner's behalf and naming it.

    Rendered once per incident, language and partner with a marker where the token goes
    (the template costs about 1 ms of the GIL, 20 % of a core at 200 lookups a second);
    each link email is that text with its token put in. The renderer keeps it; a reloaded
    incident is a new object in the cache (portal.incidents.cache), and renders anew.
    """
    key = ("link", settings.base_url, settings.link_ttl, incident.id, lang, partner and partner.id)

    def rendered() -> messages.Message:
        return renderer.email(
            "partner_link" if partner else "link",
            lang,
            incident_title=incident.text(incident.title, lang),
            link=f"{settings.base_url}/v/{_TOKEN_MARKER}",
            minutes=settings.link_ttl // 60,
            organisation=incident.organisation,
            website=incident.website,
            portal_url=settings.base_url,
            partner_name=partner.name if partner else None,
        )

    template = renderer.kept(key, (incident, partner), rendered)
    return messages.Message(
        template.subject.replace(_TOKEN_MARKER, token),
        template.text.replace(_TOKEN_MARKER, token),
        template.html.replace(_TOKEN_MARKER, token),
    )


# Letters and digits only, so that no escaping changes it; no template text contains it.
_TOKEN_MARKER = f"token{secrets.token_hex(16)}"


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
