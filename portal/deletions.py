"""Deletion requests: create, date, forward to the partner, and record every change."""

from __future__ import annotations

import calendar
import secrets
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from sqlalchemy import Connection, Engine, select, update

from portal import db, incidents, mail, metrics, tables
from portal.clock import utcnow
from portal.config import Settings
from portal.fields import from_bits
from portal.incidents import Incident, Partner
from portal.lookups import VerifiedSession, exposures_of

RECEIVED, FORWARDED, FORWARD_FAILED = "received", "forwarded", "forward_failed"
COMPLETED, REJECTED = "completed", "rejected"
CLOSED = frozenset({COMPLETED, REJECTED})
# Crockford's base32: no I, L, O or U, so a reference read out on the phone is unambiguous.
REFERENCE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


class PartnerNotFound(LookupError):
    """The partner does not exist, or the session's address does not occur there."""


@dataclass(frozen=True)
class DeletionRequest:
    id: int
    reference: str
    partner_id: int
    status: str
    received_at: datetime
    due_on: date
    extended_due_on: date | None
    closed_at: datetime | None
    reason: str | None

    @property
    def due(self) -> date:
        return self.extended_due_on or self.due_on

    def overdue(self, today: date) -> bool:
        return self.status not in CLOSED and today > self.due


def add_one_month(day: date) -> date:
    """The same day of the next month, or that month's last day when it has no such day."""
    year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def new_reference() -> str:
    """A reference like DR-7K3Q-9XPM: 40 random bits, easy to read out."""
    chars = "".join(secrets.choice(REFERENCE_ALPHABET) for _ in range(8))
    return f"DR-{chars[:4]}-{chars[4:]}"


def requests_for(conn: Connection, *, bidx: bytes, incident_id: int) -> dict[int, DeletionRequest]:
    """The person's requests in an incident, by partner id."""
    rows = conn.execute(
        select(tables.deletion_requests).where(
            tables.deletion_requests.c.bidx == bidx,
            tables.deletion_requests.c.incident_id == incident_id,
        )
    ).all()
    return {r.partner_id: _request(r) for r in rows}


def request_deletion(
    conn: Connection,
    settings: Settings,
    session: VerifiedSession,
    *,
    partner: str,
    templates_dir: Path,
) -> list[DeletionRequest]:
    """Creates the request at one partner (or every partner for 'all'); idempotent.

    Raises PartnerNotFound for a partner where the session's address does not occur.
    """
    incident = incidents.get_incident(conn, session.incident_slug)
    assert incident is not None
    exposed = exposures_of(conn, incident, session.bidx)
    targets = list(exposed) if partner == "all" else [p for p in exposed if p.slug == partner]
    if not targets:
        raise PartnerNotFound(partner)
    existing = requests_for(conn, bidx=session.bidx, incident_id=incident.id)
    created = [
        _create(conn, settings, session, incident, p, exposed[p], templates_dir)
        for p in targets
        if p.id not in existing
    ]
    if created:
        _send_receipt(conn, session, incident, created, exposed, templates_dir)
    return [existing.get(p.id) or next(c for c in created if c.partner_id == p.id) for p in targets]


def _create(
    conn: Connection,
    settings: Settings,
    session: VerifiedSession,
    incident: Incident,
    partner: Partner,
    fields: int,
    templates_dir: Path,
) -> DeletionRequest:
    now = utcnow()
    email = session.email()
    values = {
        "reference": new_reference(),
        "incident_id": incident.id,
        "partner_id": partner.id,
        "bidx": session.bidx,
        "email": email,
        "fields": fields,
        "lang": session.lang,
        "status": RECEIVED,
        "verified_at": session.verified_at,
        "received_at": now,
        "due_on": add_one_month(now.date()),
    }
    if not db.insert_ignore(conn, tables.deletion_requests, values, keys=["partner_id", "bidx"]):
        return requests_for(conn, bidx=session.bidx, incident_id=incident.id)[partner.id]
    row = conn.execute(
        select(tables.deletion_requests).where(
            tables.deletion_requests.c.reference == values["reference"]
        )
    ).one()
    record_change(conn, request_id=row.id, actor="person", old=None, new=RECEIVED)
    _forward(conn, settings, incident, partner, row, templates_dir)
    return _request(row)


def _forward(  # type: ignore[no-untyped-def]
    conn: Connection, settings: Settings, incident: Incident, partner: Partner, row, templates_dir
) -> None:
    """Queues the request to the partner: an email, and a signed webhook when configured."""
    lang = incident.languages[0]
    context = {
        "reference": row.reference,
        "incident_title": incident.text(incident.title, lang),
        "incident_slug": incident.slug,
        "partner_name": partner.name,
        "email": row.email,
        "verified_at": row.verified_at,
        "received_on": row.received_at.date(),
        "due_on": row.due_on,
        "fields": from_bits(row.fields),
        "contact_email": incident.contact_email,
    }
    message = mail.render(templates_dir, "partner_request", lang, **context)
    mail.enqueue_email(
        conn,
        kind="partner_request",
        to=partner.contact_email,
        message=message,
        deletion_request_id=row.id,
    )
    if partner.webhook_url and partner.webhook_secret:
        mail.enqueue_webhook(
            conn,
            kind="partner_webhook",
            url=partner.webhook_url,
            secret=partner.webhook_secret,
            payload=webhook_payload(incident, partner, row),
            deletion_request_id=row.id,
        )


def webhook_payload(incident: Incident, partner: Partner, row) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {
        "type": "gdpr.art17.erasure",
        "reference": row.reference,
        "incident": incident.slug,
        "partner": partner.slug,
        "email": row.email,
        "verified": {"method": "emailed single-use link", "at": row.verified_at.isoformat()},
        "fields": [f.key for f in from_bits(row.fields)],
        "received": row.received_at.isoformat(),
        "due": row.due_on.isoformat(),
        "report_back_to": incident.contact_email,
    }


def _send_receipt(  # type: ignore[no-untyped-def]
    conn: Connection, session: VerifiedSession, incident: Incident, created, exposed, templates_dir
) -> None:
    names = {p.id: p.name for p in exposed}
    message = mail.render(
        templates_dir,
        "deletion_receipt",
        session.lang,
        incident_title=incident.text(incident.title, session.lang),
        requests=[
            {"reference": r.reference, "partner": names[r.partner_id], "due_on": r.due_on}
            for r in created
        ],
        contact_email=incident.contact_email,
    )
    mail.enqueue_email(conn, kind="deletion_receipt", to=session.email(), message=message)


def record_change(
    conn: Connection,
    *,
    request_id: int,
    actor: str,
    old: str | None,
    new: str,
    note: str | None = None,
) -> None:
    """Keeps one change in the request's history (and counts it for /metrics)."""
    metrics.deletion_requests_total.labels(status=new).inc()
    conn.execute(
        tables.deletion_events.insert().values(
            request_id=request_id,
            at=utcnow(),
            actor=actor,
            from_status=old,
            to_status=new,
            note=note,
        )
    )


def mark_forwarded(conn: Connection, outbox_id: int, request_id: int | None) -> None:
    """Mail worker hook: the partner's copy was delivered, so the request is forwarded."""
    _move(conn, outbox_id, request_id, to=FORWARDED, allowed=(RECEIVED, FORWARD_FAILED))


def mark_forward_failed(conn: Connection, outbox_id: int, request_id: int | None) -> None:
    """Mail worker hook: the partner's copy could not be delivered within a day."""
    _move(conn, outbox_id, request_id, to=FORWARD_FAILED, allowed=(RECEIVED,))


def mail_worker(engine: Engine, settings: Settings) -> mail.MailWorker:
    """The outbox worker, telling requests when their partner's copy went out or failed."""
    return mail.MailWorker(engine, settings, on_sent=mark_forwarded, on_failed=mark_forward_failed)


def _move(
    conn: Connection, outbox_id: int, request_id: int | None, *, to: str, allowed: tuple[str, ...]
) -> None:
    kind = conn.scalar(select(tables.outbox.c.kind).where(tables.outbox.c.id == outbox_id))
    if request_id is None or kind != "partner_request":
        return
    table = tables.deletion_requests
    old = conn.scalar(select(table.c.status).where(table.c.id == request_id))
    moved = conn.execute(
        update(table).where(table.c.id == request_id, table.c.status.in_(allowed)).values(status=to)
    )
    if moved.rowcount == 1:
        record_change(conn, request_id=request_id, actor="mail", old=old, new=to)


def _request(row) -> DeletionRequest:  # type: ignore[no-untyped-def]
    return DeletionRequest(
        row.id,
        row.reference,
        row.partner_id,
        row.status,
        row.received_at,
        row.due_on,
        row.extended_due_on,
        row.closed_at,
        row.reason,
    )
