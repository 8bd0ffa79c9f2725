"""What goes to a partner: the request by email and signed webhook, its /r/ link, reminders."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from anyio import to_thread
from sqlalchemy import Connection, Engine, func, select, update

from portal.core.clock import utcnow
from portal.core.config import Settings
from portal.core.fields import from_bits
from portal.core.tokens import partner_signer
from portal.incidents import stored
from portal.incidents.stored import Incident, Partner
from portal.mail import outbox
from portal.mail.renderer import Renderer
from portal.store import tables

log = logging.getLogger("portal.forwarding")

FORWARDED = "forwarded"
DAILY = "daily"  # a partner's `forward` that takes its requests in a daily digest
# A partner's link works while its request is open and this long after it closed.
LINK_DAYS_AFTER_CLOSE = 30
REMINDER_INTERVAL = 600.0  # seconds between two looks for partners to remind
REMINDER_BATCH = 200


# What a partner reads for a request made with a letter's code (design §8): no address.
NO_ADDRESS = "(none: the person was written to by post and identified by a letter's code)"


def partner_link(settings: Settings, reference: str) -> str:
    """The one portal link of a partner's request email: `{BASE_URL}/r/{token}`."""
    return f"{settings.base_url}/r/{partner_signer(settings).sign(reference)}"


def api_url(settings: Settings, reference: str) -> str:
    return f"{settings.base_url}/api/requests/{reference}"


def owner_of(conn: Connection, partner_id: int) -> tuple[Incident, Partner]:
    """The incident and the partner a partner id belongs to."""
    p, i = tables.partners, tables.incidents
    slug = conn.scalar(
        select(i.c.slug).join(p, p.c.incident_id == i.c.id).where(p.c.id == partner_id)
    )
    incident = stored.get_incident(conn, slug) if slug else None
    assert incident is not None, "a request's partner always exists"
    partner = next(p for p in stored.get_partners(conn, incident.id) if p.id == partner_id)
    return incident, partner


def partner_language(incident: Incident, partner: Partner) -> str:
    return partner.language or incident.languages[0]


def forward(
    conn: Connection,
    settings: Settings,
    incident: Incident,
    partner: Partner,
    row: Any,
    *,
    renderer: Renderer,
) -> None:
    """Queues the request to the partner: an email, and a signed webhook when configured.

    A forward="daily" partner gets it in its next digest (digests.py) instead: the request
    is left for that digest to claim (again, when a digest that carried it failed).
    """
    if partner.forward == DAILY:
        if row.digest_id is not None:  # a retry after its digest failed
            t = tables.deletion_requests
            conn.execute(update(t).where(t.c.id == row.id).values(digest_id=None))
        return
    lang = partner_language(incident, partner)
    message = renderer.email(
        "partner_request", lang, **_context(settings, incident, partner, row, lang)
    )
    outbox.enqueue_email(
        conn,
        kind="partner_request",
        to=partner.contact_email,
        message=message,
        deletion_request_id=row.id,
        sender_name=incident.organisation,
    )
    if partner.webhook_url and partner.webhook_secret:
        outbox.enqueue_webhook(
            conn,
            kind="partner_webhook",
            url=partner.webhook_url,
            secret=partner.webhook_secret,
            payload=webhook_payload(settings, incident, partner, row),
            deletion_request_id=row.id,
        )


def _context(
    settings: Settings, incident: Incident, partner: Partner, row: Any, lang: str
) -> dict[str, Any]:
    return {
        "reference": row.reference,
        "incident_title": incident.text(incident.title, lang),
        "incident_slug": incident.slug,
        "partner_name": partner.name,
        # A person who came with a letter's code has no address: the fields identify them.
        "email": row.email or NO_ADDRESS,
        "verified_at": row.verified_at,
        "received_on": row.received_at.date(),
        "due_on": row.extended_due_on or row.due_on,
        "fields": from_bits(row.fields),
        "contact_email": incident.contact_email,
        "link": partner_link(settings, row.reference),
        "organisation": incident.organisation,
        "website": incident.website,
        "portal_url": settings.base_url,
    }


def webhook_payload(
    settings: Settings, incident: Incident, partner: Partner, row: Any
) -> dict[str, object]:
    """The JSON body of the webhook (docs/partners.md)."""
    return {
        "type": "gdpr.art17.erasure",
        "reference": row.reference,
        "incident": incident.slug,
        "partner": partner.slug,
        "email": row.email,
        "verified": {"method": "emailed single-use link", "at": row.verified_at.isoformat()},
        "fields": [f.key for f in from_bits(row.fields)],
        "received": row.received_at.isoformat(),
        "due": (row.extended_due_on or row.due_on).isoformat(),
        "report_back": {
            "api": api_url(settings, row.reference),
            "page": partner_link(settings, row.reference),
        },
        "report_back_to": incident.contact_email,
    }


# -- reminders ---------------------------------------------------------------------------


def send_due_reminders(
    engine: Engine,
    settings: Settings,
    *,
    renderer: Renderer,
    now: datetime | None = None,
) -> int:
    """Reminds the partner of every forwarded request not reported back for N days.

    Each reminder is claimed with a guarded UPDATE of `last_reminded_at` in the transaction
    that queues it, so that several processes running this at once send it once.
    """
    now = now or utcnow()
    cutoff = now - timedelta(days=settings.partner_reminder_days)
    r = tables.deletion_requests.c
    last = func.coalesce(r.last_reminded_at, r.forwarded_at, r.received_at)
    with engine.connect() as conn:
        due = conn.execute(
            select(r.id, r.last_reminded_at)
            .where(r.status == FORWARDED, last <= cutoff)
            .order_by(r.id)
            .limit(REMINDER_BATCH)
        ).all()
    sent = 0
    for request_id, seen in due:
        with engine.begin() as conn:
            sent += _remind(conn, settings, request_id, seen, now, renderer)
    return sent


def _remind(
    conn: Connection,
    settings: Settings,
    request_id: int,
    seen: datetime | None,
    now: datetime,
    renderer: Renderer,
) -> int:
    t = tables.deletion_requests
    unchanged = t.c.last_reminded_at.is_(None) if seen is None else t.c.last_reminded_at == seen
    claimed = conn.execute(
        update(t)
        .where(t.c.id == request_id, t.c.status == FORWARDED, unchanged)
        .values(last_reminded_at=now, reminders_sent=t.c.reminders_sent + 1)
    )
    if claimed.rowcount != 1:
        return 0  # another process took it, or the request moved on
    row = conn.execute(select(t).where(t.c.id == request_id)).one()
    incident, partner = owner_of(conn, row.partner_id)
    lang = partner_language(incident, partner)
    context = _context(settings, incident, partner, row, lang) | {"reminder": row.reminders_sent}
    message = renderer.email("partner_reminder", lang, **context)
    outbox.enqueue_email(
        conn,
        kind="partner_reminder",
        to=partner.contact_email,
        message=message,
        deletion_request_id=row.id,
        sender_name=incident.organisation,
    )
    return 1


async def remind_periodically(
    engine: Engine,
    settings: Settings,
    stop: asyncio.Event,
    *,
    renderer: Renderer,
    queued: Callable[[], None] | None = None,
    interval: float = REMINDER_INTERVAL,
) -> None:
    """Looks for partners to remind every `interval` seconds until `stop` is set."""
    while not stop.is_set():
        try:
            sent = await to_thread.run_sync(
                lambda: send_due_reminders(engine, settings, renderer=renderer)
            )
        except Exception as exc:
            log.error("reminder round failed: %s", type(exc).__name__)
            sent = 0
        if sent:
            log.info("%d partner reminder(s) queued", sent)
            if queued is not None:
                queued()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
