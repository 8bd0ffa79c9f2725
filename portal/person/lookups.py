"""A lookup's steps for the lookup queue: limits, blind index, the link and its email."""

from __future__ import annotations

import dataclasses
import logging
import secrets
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Connection, Engine, select

from portal.core import metrics
from portal.core.blind_index import blind_index
from portal.core.clock import utcnow
from portal.core.config import Settings
from portal.core.tokens import (
    LINK_PURPOSE,
    link_tokens,
    seal,
    token_hash,
)
from portal.incidents import counters
from portal.incidents.stored import Incident, Partner
from portal.mail import messages, outbox
from portal.mail.renderer import Renderer
from portal.person.ratelimit import RateLimiter
from portal.person.sessions import load_session
from portal.store import db, hourly, tables

log = logging.getLogger("portal.lookups")


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
        hourly.bump(conn, hourly.LOOKUPS, by=len(batch))
    # Logged after the commit: nothing waits inside the transaction on a log handler.
    log.info("links written: %d, their mails queued", len(batch))


def links_written(engine: Engine, batch: list[PendingLink]) -> bool:
    """Whether a batch's links are in the database (its commit made it, its answer lost)."""
    with engine.connect() as conn:
        found = conn.scalar(
            select(tables.links.c.id).where(
                tables.links.c.token_hash == batch[0].link["token_hash"]
            )
        )
    return found is not None


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
