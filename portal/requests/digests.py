"""Partners in bulk: a forward="daily" partner's digest email and batch webhook, once a day.

A request to such a partner is not sent by itself (forwarding.forward leaves it); once a day
one digest lists the partner's new requests (reference and due date) with one link to its
queue page, and a webhook partner gets one signed call whose body lists them. The requests
are claimed for the digest (`digest_id`) in the transaction that queues it, so no request
is in two digests, and they become forwarded when the worker delivers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from anyio import to_thread
from sqlalchemy import Connection, Engine, func, insert, select, update

from portal.core.clock import utcnow
from portal.core.config import Settings
from portal.core.errors import PortalError
from portal.core.printable import quoted
from portal.core.tokens import partner_queue_signer
from portal.incidents import stored
from portal.incidents.stored import Incident, Partner
from portal.mail import outbox
from portal.mail.renderer import Renderer
from portal.requests import forwarding
from portal.requests.deletions import (
    FORWARD_FAILED,
    FORWARDED,
    RECEIVED,
    move_by_mail,
)
from portal.store import audit, tables

log = logging.getLogger("portal.digests")

DAILY = forwarding.DAILY
EVERY = timedelta(days=1)  # at most one digest per partner in this time
DIGEST, DIGEST_WEBHOOK = "partner_digest", "partner_digest_webhook"
KINDS = frozenset({DIGEST, DIGEST_WEBHOOK})
WAITING = (RECEIVED, FORWARD_FAILED)  # a request not (or no longer) in a digest
DIGEST_INTERVAL = 600.0  # seconds between two looks for digests that are due


@dataclass(frozen=True)
class Listed:
    """One request as a digest lists it."""

    reference: str
    due: date


def queue_link(settings: Settings, partner_id: int) -> str:
    """The digest's one link: `{BASE_URL}/r/partner/{token}`, valid 30 days."""
    return f"{settings.base_url}/r/partner/{partner_queue_signer(settings).sign(str(partner_id))}"


def due_partners(conn: Connection, *, now: datetime, incident_id: int | None = None) -> list[int]:
    """The forward="daily" partners with new requests and no digest in the last day."""
    p, r, d = tables.partners.c, tables.deletion_requests.c, tables.partner_digests.c
    last = select(func.max(d.created_at)).where(d.partner_id == p.id).scalar_subquery()
    waiting = select(r.id).where(r.partner_id == p.id, r.digest_id.is_(None), r.status.in_(WAITING))
    query = select(p.id).where(
        p.forward == DAILY,
        waiting.exists(),
        func.coalesce(last, datetime(1970, 1, 1)) <= now - EVERY,
    )
    if incident_id is not None:
        query = query.where(p.incident_id == incident_id)
    return list(conn.scalars(query.order_by(p.id)))


def send_due_digests(
    engine: Engine,
    settings: Settings,
    *,
    renderer: Renderer,
    incident: str | None = None,
    now: datetime | None = None,
) -> int:
    """Queues every digest that is due (of one incident's partners, if named); returns how
    many. Each in its own transaction, so that several processes may run this at once."""
    now = now or utcnow()
    with engine.connect() as conn:
        found = stored.get_incident(conn, incident) if incident else None
        if incident and found is None:
            raise PortalError(f"no incident {quoted(incident)}: see portal incident list")
        due = due_partners(conn, now=now, incident_id=found.id if found else None)
    queued = 0
    for partner_id in due:
        with engine.begin() as conn:
            queued += queue_digest(conn, settings, partner_id, now=now, renderer=renderer)
    return queued


def queue_digest(
    conn: Connection, settings: Settings, partner_id: int, *, now: datetime, renderer: Renderer
) -> int:
    """Claims the partner's new requests and queues their digest, in the caller's
    transaction; 0 when another process did so first (or nothing is new)."""
    p = tables.partners
    # The partner's row is the lock: a write that changes nothing takes it (the row on
    # PostgreSQL, the file on SQLite) before anything is read, so a second process waits,
    # then sees the digest of the first and finds it not due.
    conn.execute(update(p).where(p.c.id == partner_id).values(forward=p.c.forward))
    if partner_id not in due_partners(conn, now=now):
        return 0
    digest_id = conn.execute(
        insert(tables.partner_digests)
        .values(partner_id=partner_id, created_at=now, requests=0)
        .returning(tables.partner_digests.c.id)
    ).scalar_one()
    r = tables.deletion_requests
    claimed = conn.execute(
        update(r)
        .where(r.c.partner_id == partner_id, r.c.digest_id.is_(None), r.c.status.in_(WAITING))
        .values(digest_id=digest_id)
    )
    if claimed.rowcount == 0:  # another process claimed them after we looked (SQLite)
        d = tables.partner_digests
        conn.execute(d.delete().where(d.c.id == digest_id))
        return 0
    rows = list(
        conn.execute(
            select(r).where(r.c.digest_id == digest_id).order_by(r.c.due_on, r.c.reference)
        )
    )
    incident, partner = forwarding.owner_of(conn, partner_id)
    ids = _queue(conn, settings, incident, partner, rows, renderer=renderer)
    conn.execute(
        update(tables.partner_digests)
        .where(tables.partner_digests.c.id == digest_id)
        .values(requests=len(rows), outbox_id=ids[0], webhook_outbox_id=ids[1])
    )
    audit.record(
        conn,
        actor="system",
        action="partner_digest",
        object=f"{incident.slug}/{partner.slug}",
        detail=f"{len(rows)} request(s)",
    )
    return 1


def _queue(
    conn: Connection,
    settings: Settings,
    incident: Incident,
    partner: Partner,
    rows: list[Any],
    *,
    renderer: Renderer,
) -> tuple[int, int | None]:
    """The digest's email, and its batch webhook when the partner has one. Each outbox row
    names the first request: that finds the partner's webhook secret, and tells the
    worker's hook (`mark_forwarded`) to look for its digest."""
    lang = forwarding.partner_language(incident, partner)
    listed = [Listed(row.reference, row.extended_due_on or row.due_on) for row in rows]
    message = renderer.email(
        "partner_digest",
        lang,
        incident_title=incident.text(incident.title, lang),
        incident_slug=incident.slug,
        partner_name=partner.name,
        requests=listed,
        link=queue_link(settings, partner.id),
        contact_email=incident.contact_email,
        organisation=incident.organisation,
        website=incident.website,
        portal_url=settings.base_url,
    )
    email_id = outbox.enqueue_email(
        conn,
        kind=DIGEST,
        to=partner.contact_email,
        message=message,
        deletion_request_id=rows[0].id,
        sender_name=incident.organisation,
    )
    webhook_id = None
    if partner.webhook_url and partner.webhook_secret:
        webhook_id = outbox.enqueue_webhook(
            conn,
            kind=DIGEST_WEBHOOK,
            url=partner.webhook_url,
            secret=partner.webhook_secret,
            payload=batch_payload(settings, incident, partner, rows),
            deletion_request_id=rows[0].id,
        )
    return email_id, webhook_id


def batch_payload(
    settings: Settings, incident: Incident, partner: Partner, rows: list[Any]
) -> dict[str, object]:
    """The JSON body of the daily batch webhook (docs/partners.md): each request as the
    single webhook carries it, and the queue page."""
    return {
        "type": "gdpr.art17.erasure.batch",
        "incident": incident.slug,
        "partner": partner.slug,
        "requests": [forwarding.webhook_payload(settings, incident, partner, r) for r in rows],
        "queue": queue_link(settings, partner.id),
    }


# -- the mail worker reports -----------------------------------------------------------


def mark_forwarded(conn: Connection, outbox_id: int, request_id: int | None) -> None:
    """Mail worker hook: a digest (email or batch webhook) was delivered, so each request
    it lists is forwarded."""
    _move(conn, outbox_id, request_id, to=FORWARDED, allowed=WAITING)


def mark_failed(conn: Connection, outbox_id: int, request_id: int | None) -> None:
    """Mail worker hook: a digest could not be delivered within a day."""
    _move(conn, outbox_id, request_id, to=FORWARD_FAILED, allowed=(RECEIVED,))


def _move(
    conn: Connection, outbox_id: int, request_id: int | None, *, to: str, allowed: tuple[str, ...]
) -> None:
    if request_id is None:  # most mail (links, receipts) costs no query here
        return
    kind = conn.scalar(select(tables.outbox.c.kind).where(tables.outbox.c.id == outbox_id))
    if kind not in KINDS:
        return
    d, r = tables.partner_digests.c, tables.deletion_requests.c
    column = d.outbox_id if kind == DIGEST else d.webhook_outbox_id
    digest_id = conn.scalar(select(d.id).where(column == outbox_id))
    for listed_id in conn.scalars(select(r.id).where(r.digest_id == digest_id).order_by(r.id)):
        move_by_mail(conn, listed_id, to=to, allowed=allowed)


async def send_periodically(
    engine: Engine,
    settings: Settings,
    stop: asyncio.Event,
    *,
    renderer: Renderer,
    queued: Callable[[], None] | None = None,
    interval: float = DIGEST_INTERVAL,
) -> None:
    """Looks for digests that are due every `interval` seconds until `stop` is set."""
    while not stop.is_set():
        try:
            sent = await to_thread.run_sync(
                lambda: send_due_digests(engine, settings, renderer=renderer)
            )
        except Exception as exc:
            log.error("digest round failed: %s", type(exc).__name__)
            sent = 0
        if sent:
            log.info("%d partner digest(s) queued", sent)
            if queued is not None:
                queued()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
