"""The operator's view of deletion requests: the queue, and one request with its history."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import ColumnElement, Connection, and_, func, select

from portal.core.fields import Field, from_bits
from portal.requests.deletions import (
    CLOSED,
    OPEN,
    STATUSES,
    DeletionRequest,
    RequestNotFound,
    actor_kind,
    get_request,
)
from portal.store import tables

PAGE_SIZE = 200
DUE_SOON_DAYS = 7
# Besides each status, the queue filters on these two groups.
STATUS_GROUPS = {"open": OPEN, "closed": CLOSED}


@dataclass(frozen=True)
class QueueFilter:
    incident: str | None = None
    partner: str | None = None
    status: str | None = None  # a status, "open" or "closed"
    overdue: bool = False
    page: int = 1


@dataclass(frozen=True)
class QueueRow:
    reference: str
    incident: str
    partner: str
    partner_name: str
    status: str
    received_at: datetime
    due: date
    extended: bool
    closed_at: datetime | None
    overdue: bool
    days_left: int | None  # None once closed
    due_soon: bool


@dataclass(frozen=True)
class Queue:
    rows: list[QueueRow]
    total: int
    page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // PAGE_SIZE))


@dataclass(frozen=True)
class HistoryEntry:
    at: datetime
    actor: str  # as stored: "operator:NAME", "partner:SLUG", "person", "mail"
    kind: str  # operator, partner or system
    via: str | None
    from_status: str | None
    to_status: str
    note: str | None

    @property
    def who(self) -> str:
        name = self.actor.partition(":")[2]
        return f"{self.kind} {name}" if name else f"system ({self.actor})"


@dataclass(frozen=True)
class DeliveryProof:
    """One message to the partner or the person: what proves it went out."""

    kind: str
    channel: str
    status: str
    attempts: int
    created_at: datetime
    sent_at: datetime | None
    message_id: str | None
    response_status: int | None
    payload_sha256: str | None
    last_error: str | None


@dataclass(frozen=True)
class RequestDetail:
    request: DeletionRequest
    incident: str
    incident_title: str
    partner: str
    partner_name: str
    email: str | None
    fields: list[Field]
    kept: list[Field]
    verified_at: datetime
    forwarded_at: datetime | None
    last_reminded_at: datetime | None
    reminders_sent: int
    history: list[HistoryEntry]
    deliveries: list[DeliveryProof]


def due_expr() -> ColumnElement[date]:
    r = tables.deletion_requests.c
    return func.coalesce(r.extended_due_on, r.due_on)


def list_requests(conn: Connection, wanted: QueueFilter, *, today: date) -> Queue:
    """One page of requests matching the filter, the soonest due first."""
    r, p, i = tables.deletion_requests.c, tables.partners.c, tables.incidents.c
    conditions = _conditions(wanted, today)
    base = (
        select(
            tables.deletion_requests,
            p.slug.label("partner_slug"),
            p.name.label("partner_name"),
            i.slug.label("incident_slug"),
        )
        .join(tables.partners, r.partner_id == p.id)
        .join(tables.incidents, r.incident_id == i.id)
        .where(*conditions)
    )
    total = conn.scalar(select(func.count()).select_from(base.subquery())) or 0
    page = max(1, wanted.page)
    rows = conn.execute(
        base.order_by(due_expr(), r.received_at, r.id)
        .limit(PAGE_SIZE)
        .offset((page - 1) * PAGE_SIZE)
    )
    return Queue([_queue_row(row, today) for row in rows], int(total), page)


def _conditions(wanted: QueueFilter, today: date) -> list[ColumnElement[bool]]:
    r, p, i = tables.deletion_requests.c, tables.partners.c, tables.incidents.c
    found: list[ColumnElement[bool]] = []
    if wanted.incident:
        found.append(i.slug == wanted.incident)
    if wanted.partner:
        found.append(p.slug == wanted.partner)
    if wanted.status in STATUS_GROUPS:
        found.append(r.status.in_(STATUS_GROUPS[wanted.status]))
    elif wanted.status:
        found.append(r.status == wanted.status)
    if wanted.overdue:
        found.append(and_(r.status.in_(OPEN), due_expr() < today))
    return found


def _queue_row(row, today: date) -> QueueRow:  # type: ignore[no-untyped-def]
    due: date = row.extended_due_on or row.due_on
    closed = row.status in CLOSED
    days_left = None if closed else (due - today).days
    return QueueRow(
        reference=row.reference,
        incident=row.incident_slug,
        partner=row.partner_slug,
        partner_name=row.partner_name,
        status=row.status,
        received_at=row.received_at,
        due=due,
        extended=row.extended_due_on is not None,
        closed_at=row.closed_at,
        overdue=not closed and today > due,
        days_left=days_left,
        due_soon=days_left is not None and 0 <= days_left <= DUE_SOON_DAYS,
    )


def filter_choices(conn: Connection) -> dict[str, list[str]]:
    """The values the queue's filters offer: incident slugs, partner slugs, statuses."""
    incidents = conn.scalars(select(tables.incidents.c.slug).order_by(tables.incidents.c.slug))
    partners = conn.scalars(
        select(tables.partners.c.slug).distinct().order_by(tables.partners.c.slug)
    )
    return {
        "incident": list(incidents),
        "partner": list(partners),
        "status": [*STATUS_GROUPS, *STATUSES],
    }


def request_detail(conn: Connection, reference: str) -> RequestDetail:
    """A request with everything the operator needs; raises RequestNotFound."""
    request = get_request(conn, reference)
    r, p, i = tables.deletion_requests.c, tables.partners.c, tables.incidents.c
    row = conn.execute(
        select(
            tables.deletion_requests,
            p.slug.label("partner_slug"),
            p.name.label("partner_name"),
            i.slug.label("incident_slug"),
            i.title,
        )
        .join(tables.partners, r.partner_id == p.id)
        .join(tables.incidents, r.incident_id == i.id)
        .where(r.id == request.id)
    ).first()
    if row is None:
        raise RequestNotFound(reference)
    return RequestDetail(
        request=request,
        incident=row.incident_slug,
        incident_title=_first_title(row.title),
        partner=row.partner_slug,
        partner_name=row.partner_name,
        email=row.email,
        fields=from_bits(row.fields),
        kept=from_bits(row.kept_fields or 0),
        verified_at=row.verified_at,
        forwarded_at=row.forwarded_at,
        last_reminded_at=row.last_reminded_at,
        reminders_sent=row.reminders_sent,
        history=history(conn, request.id),
        deliveries=deliveries(conn, request.id),
    )


def _first_title(title_json: str) -> str:
    titles = json.loads(title_json)
    return str(titles.get("en") or next(iter(titles.values()), ""))


def history(conn: Connection, request_id: int) -> list[HistoryEntry]:
    e = tables.deletion_events.c
    rows = conn.execute(
        select(tables.deletion_events).where(e.request_id == request_id).order_by(e.at, e.id)
    )
    return [
        HistoryEntry(
            row.at,
            row.actor,
            actor_kind(row.actor),
            row.via,
            row.from_status,
            row.to_status,
            row.note,
        )
        for row in rows
    ]


def deliveries(conn: Connection, request_id: int) -> list[DeliveryProof]:
    o = tables.outbox.c
    rows = conn.execute(
        select(tables.outbox).where(o.deletion_request_id == request_id).order_by(o.id)
    )
    return [
        DeliveryProof(
            row.kind,
            row.channel,
            row.status,
            row.attempts,
            row.created_at,
            row.sent_at,
            row.message_id,
            row.response_status,
            row.payload_sha256,
            row.last_error,
        )
        for row in rows
    ]
