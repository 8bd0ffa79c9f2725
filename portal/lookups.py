"""From a submitted address to a queued link; from a confirmed link to a session and results."""

from __future__ import annotations

import dataclasses
import logging
import secrets
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Connection, Engine, select, update
from starlette.concurrency import run_in_threadpool

from portal import counters, db, hourly, incidents, messages, metrics, outbox, tables
from portal.blind_index import blind_index
from portal.clock import utcnow
from portal.config import Settings
from portal.fields import Field, from_bits
from portal.incidents import Incident, Partner
from portal.ratelimit import RateLimiter
from portal.tokens import TokenExpired, TokenInvalid, TokenService, seal, token_hash, unseal

log = logging.getLogger("portal.lookups")

LINK_PURPOSE = "results"
NOTICE_PURPOSE = "notice"  # the direct link in a notice (portal/notices.py)


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


@dataclass(frozen=True)
class PartnerResult:
    partner: Partner
    fields: list[Field]


@dataclass(frozen=True)
class Results:
    incident: Incident
    partners: list[PartnerResult]

    @property
    def advice(self) -> list[Field]:
        """The union of advice over every exposed field, most serious first."""
        seen: dict[str, Field] = {}
        for result in self.partners:
            for field in result.fields:
                seen[field.key] = field
        return sorted(seen.values(), key=lambda f: -f.severity)


def link_tokens(settings: Settings) -> TokenService:
    return TokenService(settings.secret_key, purpose="link", max_age=settings.link_ttl)


def notice_tokens(settings: Settings) -> TokenService:
    return TokenService(settings.secret_key, purpose="notice", max_age=settings.notice_link_ttl)


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


def session_tokens(settings: Settings) -> TokenService:
    return TokenService(settings.secret_key, purpose="session", max_age=settings.session_ttl)


@dataclass(frozen=True)
class PendingLink:
    """A lookup hashed and within its limits: the link row and the mail, ready to write."""

    incident: Incident
    lookup: LookupRequest
    link: dict[str, object]
    message: messages.Message


async def request_link(
    engine: Engine,
    settings: Settings,
    limiter: RateLimiter,
    lookup: LookupRequest,
    *,
    templates_dir: Path,
) -> bool:
    """Hashes the address and queues a link email, unless a limit is reached.

    One lookup on its own (the web's lookups go through `portal.lookup_queue`, which runs
    the same steps in batches). Tells whether a mail was queued.
    """
    metrics.lookups_total.inc()
    if not await within_client_limit(limiter, lookup):
        return False
    incident, salt = await run_in_threadpool(_incident_and_salt, engine, lookup.incident)
    if incident is None:
        return False
    bidx = await run_in_threadpool(hash_address, settings, incident, salt, lookup)
    if not await within_address_limit(limiter, bidx):
        return False
    partner = await run_in_threadpool(_entry_partner_of, engine, incident, lookup.partner)
    pending = await run_in_threadpool(
        prepare_link, settings, incident, bidx, lookup, templates_dir, partner
    )
    await run_in_threadpool(write_links, engine, settings, [pending])
    return True


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


def _incident_and_salt(engine: Engine, slug: str) -> tuple[Incident | None, bytes]:
    with engine.begin() as conn:
        return incidents.get_incident(conn, slug), db.ensure_salt(conn)


def deployment_salt(engine: Engine) -> bytes:
    with engine.begin() as conn:
        return db.ensure_salt(conn)


def prepare_link(
    settings: Settings,
    incident: Incident,
    bidx: bytes,
    lookup: LookupRequest,
    templates_dir: Path,
    partner: Partner | None = None,
) -> PendingLink:
    """Issues the link and renders its mail (CPU only: nothing is written yet).

    `partner`: the entry page's partner (`entry_partner`); the mail is sent on its behalf.
    """
    token, secret = link_tokens(settings).issue()
    now = utcnow()
    message = _link_message(templates_dir, settings, incident, lookup.lang, token, partner)
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
        hourly.bump(conn, hourly.LOOKUPS, by=len(batch))
    # Logged after the commit: nothing waits inside the transaction on a log handler.
    log.info("links written: %d, their mails queued", len(batch))


def entry_partner(partners: list[Partner], slug: str | None) -> Partner | None:
    """The partner whose entry page the lookup came from; None for none or an unknown one
    (a tampered hidden field changes nothing the person can see)."""
    if not slug:
        return None
    return next((p for p in partners if p.slug == slug), None)


def _entry_partner_of(engine: Engine, incident: Incident, slug: str | None) -> Partner | None:
    if not slug:
        return None
    with engine.connect() as conn:
        return entry_partner(incidents.get_partners(conn, incident.id), slug)


def asking_session(
    conn: Connection, settings: Settings, incident: Incident, token: str | None
) -> int | None:
    """The id of the live session of this incident that asks for another address's link."""
    session = load_session(conn, settings, token)
    return session.id if session is not None and session.incident_id == incident.id else None


def _link_message(
    templates_dir: Path,
    settings: Settings,
    incident: Incident,
    lang: str,
    token: str,
    partner: Partner | None,
) -> messages.Message:
    """The link email; from an entry page, sent on that partner's behalf and naming it.

    Rendered once per incident, language and partner with a marker where the token goes
    (the template costs about 1 ms of the GIL, 20 % of a core at 200 lookups a second);
    each link email is that text with its token put in. A reloaded incident is a new object
    in the cache (portal.incident_cache), and renders anew.
    """
    key = (
        str(templates_dir),
        settings.base_url,
        settings.link_ttl,
        incident.id,
        lang,
        partner.id if partner else None,
    )
    kept = _LINK_MESSAGES.get(key)
    if kept is None or kept[0] is not incident or kept[1] is not partner:
        template = messages.render(
            templates_dir,
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
        if len(_LINK_MESSAGES) > 1000:  # incidents x languages x partners: never near it
            _LINK_MESSAGES.clear()
        _LINK_MESSAGES[key] = kept = (incident, partner, template)
    template = kept[2]
    return messages.Message(
        template.subject.replace(_TOKEN_MARKER, token),
        template.text.replace(_TOKEN_MARKER, token),
        template.html.replace(_TOKEN_MARKER, token),
    )


# Letters and digits only, so that no escaping changes it; no template text contains it.
_TOKEN_MARKER = f"token{secrets.token_hex(16)}"
_LINK_MESSAGES: dict[
    tuple[str, str, int, int, str, int | None],
    tuple[Incident, Partner | None, messages.Message],
] = {}


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


def exposures_of(conn: Connection, incident: Incident, bidx: bytes) -> dict[Partner, int]:
    """The incident's partners where an address occurs, each with its field bit set."""
    by_id = {p.id: p for p in incidents.get_partners(conn, incident.id)}
    rows = conn.execute(
        select(tables.exposures.c.partner_id, tables.exposures.c.fields).where(
            tables.exposures.c.bidx == bidx,
            tables.exposures.c.partner_id.in_(by_id),
        )
    ).all()
    return {by_id[r.partner_id]: r.fields for r in rows}


def results_for(conn: Connection, session: VerifiedSession) -> Results:
    """Per partner where the session's address occurs, the exposed fields."""
    incident = incidents.get_incident(conn, session.incident_slug)
    assert incident is not None
    exposed = exposures_of(conn, incident, session.bidx)
    found = [PartnerResult(partner, from_bits(bits)) for partner, bits in exposed.items()]
    found.sort(key=lambda r: r.partner.name.lower())
    return Results(incident, found)
