"""Deletion requests: their lifecycle and dates, creating them, and the history of each.

The lifecycle (design §5): received → forwarded → completed | rejected, and forward_failed
(retried, retriable by hand) → forwarded. A partner's report is proof it has the request,
so an open request may be closed from any open state; a closed one is final. What operators
and partners decide is in decisions.py.
"""

from __future__ import annotations

import calendar
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol

from sqlalchemy import Connection, select, update

from portal.core import metrics
from portal.core.clock import utcnow
from portal.core.config import Settings
from portal.core.errors import PortalError
from portal.core.tokens import TokenInvalid
from portal.incidents import stored
from portal.mail.renderer import Renderer
from portal.requests import forwarding, receipts
from portal.store import db, hourly, tables

RECEIVED, FORWARDED, FORWARD_FAILED = "received", "forwarded", "forward_failed"
COMPLETED, REJECTED = "completed", "rejected"
STATUSES = (RECEIVED, FORWARDED, FORWARD_FAILED, COMPLETED, REJECTED)
CLOSED = frozenset({COMPLETED, REJECTED})
OPEN = frozenset({RECEIVED, FORWARDED, FORWARD_FAILED})
NEXT = {
    RECEIVED: frozenset({FORWARDED, FORWARD_FAILED, COMPLETED, REJECTED}),
    FORWARD_FAILED: frozenset({FORWARDED, COMPLETED, REJECTED}),
    FORWARDED: frozenset({COMPLETED, REJECTED}),
}
# Art. 17(3): the grounds on which a partner may keep data.
GROUNDS = ("legal_obligation", "legal_claims", "public_interest", "other")
EXTENSION_MONTHS = (1, 2)
# Crockford's base32: no I, L, O or U, so a reference read out on the phone is unambiguous.
REFERENCE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


class PartnerNotFound(LookupError):
    """The partner does not exist, or the session's address does not occur there."""


class RequestNotFound(LookupError):
    """No request has this reference."""


class RequestRefused(PortalError):
    """A change the lifecycle refuses: the message says why (HTTP 409).

    `fields` names the form fields at fault, each with what is wrong with it, so that a
    form can show it beside the field; a refusal of the whole change names none. Where a
    value given was not one of those allowed, `value` and `allowed` say which.
    """

    def __init__(
        self,
        message: str,
        *,
        fields: Mapping[str, str] | None = None,
        value: str | None = None,
        allowed: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.fields = dict(fields or {})
        self.value, self.allowed = value, allowed

    @property
    def field(self) -> str | None:
        """The first field at fault, if any."""
        return next(iter(self.fields), None)


class Requester(Protocol):
    """Who asks: a session that proved control of the address (a person's verified session)."""

    @property
    def incident_slug(self) -> str: ...
    @property
    def bidx(self) -> bytes: ...
    @property
    def lang(self) -> str: ...
    @property
    def verified_at(self) -> object: ...
    def email(self) -> str:
        """The verified address, read only now."""
        ...


@dataclass(frozen=True)
class Actor:
    """Who changes a request: an operator, a partner or the portal, and through what."""

    kind: str  # operator, partner or system
    name: str  # the operator's username, the partner's slug, or what acted for the portal
    via: str  # admin, link, api, mail, portal

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.name}"


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
    ground: str | None = None
    note: str | None = None
    extension_reason: str | None = None
    version: int = 0
    closed_by: str | None = None
    closed_via: str | None = None
    partner_reference: str | None = None
    kept_fields: int = 0
    incident_id: int = 0
    lang: str = "en"

    @property
    def due(self) -> date:
        return self.extended_due_on or self.due_on

    @property
    def is_closed(self) -> bool:
        return self.status in CLOSED

    def overdue(self, today: date) -> bool:
        return self.status not in CLOSED and today > self.due

    def days_left(self, today: date) -> int:
        return (self.due - today).days


def add_months(day: date, months: int) -> date:
    """The same day `months` months later, or that month's last day when it has no such day."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def add_one_month(day: date) -> date:
    """The same day of the next month, or that month's last day when it has no such day."""
    return add_months(day, 1)


def new_reference() -> str:
    """A reference like DR-7K3Q-9XPM: 40 random bits, easy to read out."""
    chars = "".join(secrets.choice(REFERENCE_ALPHABET) for _ in range(8))
    return f"DR-{chars[:4]}-{chars[4:]}"


def actor_kind(actor: str) -> str:
    """The contract's actor of a history entry: operator, partner or system.

    The person's own request ("person") and the mail worker's moves ("mail") are the
    portal acting: system.
    """
    kind = actor.partition(":")[0]
    return kind if kind in ("operator", "partner") else "system"


# -- reading ---------------------------------------------------------------------------


def requests_for(conn: Connection, *, bidx: bytes, incident_id: int) -> dict[int, DeletionRequest]:
    """The person's requests in an incident, by partner id."""
    rows = conn.execute(
        select(tables.deletion_requests).where(
            tables.deletion_requests.c.bidx == bidx,
            tables.deletion_requests.c.incident_id == incident_id,
        )
    ).all()
    return {r.partner_id: request_from_row(r) for r in rows}


def get_request(conn: Connection, reference: str) -> DeletionRequest:
    """The request with this reference; raises RequestNotFound."""
    row = request_row(conn, reference)
    if row is None:
        raise RequestNotFound(reference)
    return request_from_row(row)


def request_row(conn: Connection, reference: str) -> Any:
    t = tables.deletion_requests
    return conn.execute(select(t).where(t.c.reference == reference)).first()


# -- the person asks -------------------------------------------------------------------


def request_deletion(
    conn: Connection,
    settings: Settings,
    session: Requester,
    *,
    partner: str,
    renderer: Renderer,
) -> list[DeletionRequest]:
    """Creates the request at one partner (or every partner for 'all'); idempotent.

    Raises PartnerNotFound for a partner where the session's address does not occur.
    """
    incident = stored.get_incident(conn, session.incident_slug)
    assert incident is not None
    exposed = stored.exposures_of(conn, incident, session.bidx)
    targets = list(exposed) if partner == "all" else [p for p in exposed if p.slug == partner]
    if not targets:
        raise PartnerNotFound(partner)
    existing = requests_for(conn, bidx=session.bidx, incident_id=incident.id)
    created = [
        _create(conn, settings, session, incident, p, exposed[p], renderer)
        for p in targets
        if p.id not in existing
    ]
    address = _email_of(session)
    if created and address is not None:  # a letter's code has none: the page shows it
        names = {p.id: p.name for p in exposed}
        receipts.send_receipt(
            conn,
            to=address,
            lang=session.lang,
            incident=incident,
            requests=[
                receipts.Receipted(r.reference, names[r.partner_id], r.due_on) for r in created
            ],
            renderer=renderer,
        )
    return [existing.get(p.id) or next(c for c in created if c.partner_id == p.id) for p in targets]


def _email_of(session: Requester) -> str | None:
    """The session's verified address; None for a session a letter's code started."""
    try:
        return session.email()
    except TokenInvalid:
        return None


def _create(
    conn: Connection,
    settings: Settings,
    session: Requester,
    incident: stored.Incident,
    partner: stored.Partner,
    fields: int,
    renderer: Renderer,
) -> DeletionRequest:
    now = utcnow()
    values = {
        "reference": new_reference(),
        "incident_id": incident.id,
        "partner_id": partner.id,
        "bidx": session.bidx,
        "email": _email_of(session),
        "fields": fields,
        "lang": session.lang,
        "status": RECEIVED,
        "verified_at": session.verified_at,
        "received_at": now,
        "due_on": add_one_month(now.date()),
    }
    if not db.insert_ignore(conn, tables.deletion_requests, values, keys=["partner_id", "bidx"]):
        return requests_for(conn, bidx=session.bidx, incident_id=incident.id)[partner.id]
    row = request_row(conn, str(values["reference"]))
    record_change(conn, request_id=row.id, actor="person", old=None, new=RECEIVED, via="portal")
    forwarding.forward(conn, settings, incident, partner, row, renderer=renderer)
    return request_from_row(row)


# -- history ---------------------------------------------------------------------------


def record_change(
    conn: Connection,
    *,
    request_id: int,
    actor: str,
    old: str | None,
    new: str,
    note: str | None = None,
    via: str | None = None,
) -> None:
    """Keeps one change of status in the request's history (and counts it for /metrics and
    the overview's hourly figures)."""
    metrics.deletion_requests_total.labels(status=new).inc()
    if old is None:
        hourly.bump(conn, hourly.REQUESTS_OPENED)
    elif new in CLOSED and old not in CLOSED:
        hourly.bump(conn, hourly.REQUESTS_CLOSED)
    record_event(conn, request_id=request_id, actor=actor, old=old, new=new, note=note, via=via)


def record_event(
    conn: Connection,
    *,
    request_id: int,
    actor: str,
    old: str | None,
    new: str,
    note: str | None,
    via: str | None,
) -> None:
    conn.execute(
        tables.deletion_events.insert().values(
            request_id=request_id, at=utcnow(), actor=actor, from_status=old, to_status=new,
            note=note, via=via,
        )
    )  # fmt: skip


# -- the mail worker reports -----------------------------------------------------------

PARTNER_COPIES = frozenset({"partner_request", "partner_webhook"})


def mark_forwarded(conn: Connection, outbox_id: int, request_id: int | None) -> None:
    """Mail worker hook: the partner's email or webhook was delivered, so it is forwarded."""
    _move(conn, outbox_id, request_id, to=FORWARDED, allowed=(RECEIVED, FORWARD_FAILED))


def mark_forward_failed(conn: Connection, outbox_id: int, request_id: int | None) -> None:
    """Mail worker hook: the partner's copy could not be delivered within a day."""
    _move(conn, outbox_id, request_id, to=FORWARD_FAILED, allowed=(RECEIVED,))


def _move(
    conn: Connection, outbox_id: int, request_id: int | None, *, to: str, allowed: tuple[str, ...]
) -> None:
    if request_id is None:  # most mail (links, receipts) costs no query here
        return
    kind = conn.scalar(select(tables.outbox.c.kind).where(tables.outbox.c.id == outbox_id))
    if kind in PARTNER_COPIES:
        move_by_mail(conn, request_id, to=to, allowed=allowed)


def move_by_mail(conn: Connection, request_id: int, *, to: str, allowed: tuple[str, ...]) -> None:
    """Moves one request as the mail worker reports its partner's copy (or a digest of it)."""
    table = tables.deletion_requests
    old = conn.scalar(select(table.c.status).where(table.c.id == request_id))
    if old not in allowed:
        return
    values: dict[str, Any] = {"status": to}
    if to == FORWARDED:
        values["forwarded_at"] = utcnow()
    # The version stays: a form shown before the partner got its copy is still valid.
    moved = conn.execute(
        update(table).where(table.c.id == request_id, table.c.status == old).values(values)
    )
    if moved.rowcount == 1:
        record_change(conn, request_id=request_id, actor="mail", old=old, new=to, via="mail")


def request_from_row(row: Any) -> DeletionRequest:
    """A deletion request from its row (any object with the columns as attributes)."""
    return DeletionRequest(
        id=row.id,
        reference=row.reference,
        partner_id=row.partner_id,
        status=row.status,
        received_at=row.received_at,
        due_on=row.due_on,
        extended_due_on=row.extended_due_on,
        closed_at=row.closed_at,
        reason=row.reason,
        ground=row.ground,
        note=row.note,
        extension_reason=row.extension_reason,
        version=row.version,
        closed_by=row.closed_by,
        closed_via=row.closed_via,
        partner_reference=row.partner_reference,
        kept_fields=row.kept_fields or 0,
        incident_id=row.incident_id,
        lang=row.lang,
    )
