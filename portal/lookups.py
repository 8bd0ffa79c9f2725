"""From a submitted address to a queued link; from a confirmed link to a session and results."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Connection, Engine, select, update
from starlette.concurrency import run_in_threadpool

from portal import counters, db, incidents, mail, metrics, tables
from portal.blind_index import blind_index
from portal.clock import utcnow
from portal.config import Settings
from portal.fields import Field, from_bits
from portal.incidents import Incident, Partner
from portal.ratelimit import RateLimiter
from portal.tokens import TokenExpired, TokenInvalid, TokenService, seal, token_hash, unseal

log = logging.getLogger("portal.lookups")

LINK_PURPOSE = "results"


class LinkUsed(TokenInvalid):
    """The link was genuine but has been used already."""


@dataclass(frozen=True)
class LookupRequest:
    """A valid, normalised address someone typed into an incident's form."""

    incident: str
    address: str
    client: str
    lang: str


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


def session_tokens(settings: Settings) -> TokenService:
    return TokenService(settings.secret_key, purpose="session", max_age=settings.session_ttl)


@dataclass(frozen=True)
class PendingLink:
    """A lookup hashed and within its limits: the link row and the mail, ready to write."""

    incident: Incident
    lookup: LookupRequest
    link: dict[str, object]
    message: mail.Message


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
    pending = await run_in_threadpool(prepare_link, settings, incident, bidx, lookup, templates_dir)
    await run_in_threadpool(write_links, engine, [pending])
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
) -> PendingLink:
    """Issues the link and renders its mail (CPU only: nothing is written yet)."""
    token, secret = link_tokens(settings).issue()
    now = utcnow()
    message = mail.render(
        templates_dir,
        "link",
        lookup.lang,
        incident_title=incident.text(incident.title, lookup.lang),
        link=f"{settings.base_url}/v/{token}",
        minutes=settings.link_ttl // 60,
        organisation=incident.organisation,
        website=incident.website,
        portal_url=settings.base_url,
    )
    link = {
        "token_hash": token_hash(secret),
        "purpose": LINK_PURPOSE,
        "incident_id": incident.id,
        "bidx": bidx,
        "sealed_email": seal(secret, lookup.address),
        "lang": lookup.lang,
        "created_at": now,
        "expires_at": now + timedelta(seconds=settings.link_ttl),
    }
    return PendingLink(incident, lookup, link, message)


def write_links(engine: Engine, batch: list[PendingLink]) -> None:
    """Writes the links, their mails and the lookup counts of a batch in one transaction."""
    per_incident = Counter(pending.incident.id for pending in batch)
    with engine.begin() as conn:
        conn.execute(tables.links.insert(), [pending.link for pending in batch])
        for pending in batch:
            mail.enqueue_email(
                conn,
                kind="link",
                to=pending.lookup.address,
                message=pending.message,
                sender_name=pending.incident.organisation,
            )
        for incident_id, count in per_incident.items():
            counters.bump(conn, incident_id=incident_id, name=counters.LOOKUPS, by=count)


def peek_link(conn: Connection, settings: Settings, token: str) -> str:
    """Checks a link without using it (mail scanners open links); returns its incident slug."""
    secret = link_tokens(settings).read(token)
    row = _link_row(conn, secret)
    if row.used_at is not None:
        raise LinkUsed
    return str(row.slug)


def confirm_link(conn: Connection, settings: Settings, token: str) -> tuple[str, VerifiedSession]:
    """Uses a link once and starts a new session; returns (session token, session)."""
    secret = link_tokens(settings).read(token)
    row = _link_row(conn, secret)
    now = utcnow()
    used = conn.execute(
        update(tables.links)
        .where(tables.links.c.id == row.id, tables.links.c.used_at.is_(None))
        .values(used_at=now, sealed_email=None)
    )
    if used.rowcount != 1:
        raise LinkUsed
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
        )
    ).inserted_primary_key
    assert session_id is not None
    counters.count_visit(conn, incident_id=row.incident_id, bidx=row.bidx)
    session = VerifiedSession(
        session_id[0], row.incident_id, row.slug, row.bidx, row.lang, now, session_secret, sealed
    )
    return session_token, session


def _link_row(conn: Connection, secret: bytes):  # type: ignore[no-untyped-def]
    row = conn.execute(
        select(tables.links, tables.incidents.c.slug)
        .join(tables.incidents)
        .where(
            tables.links.c.token_hash == token_hash(secret),
            tables.links.c.purpose == LINK_PURPOSE,
        )
    ).first()
    if row is None:
        raise TokenInvalid
    if row.expires_at <= utcnow():
        raise TokenExpired
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
