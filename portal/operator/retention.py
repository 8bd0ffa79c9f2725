"""The retention rules of design §4.6: what is erased, and when; and erasing a closed incident."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, and_, delete, func, select, update

from portal.core.clock import utcnow
from portal.core.config import Settings
from portal.core.errors import PortalError
from portal.incidents.stored import require_incident
from portal.requests.deletions import OPEN
from portal.store import audit, db, tables

OUTBOX_PROOF_DAYS = 30
UNDELIVERED = ("queued", "sending")


@dataclass(frozen=True)
class PurgeReport:
    links: int
    sessions: int
    outbox: int
    deletion_addresses: int
    operator_sessions: int = 0
    audit_entries: int = 0


@dataclass(frozen=True)
class IncidentPurge:
    incident: str
    partners: int
    exposures: int
    requests: int
    links: int
    sessions: int
    messages: int


def purge(engine: Engine, settings: Settings, *, now: datetime | None = None) -> PurgeReport:
    """Deletes expired links (after a day) and sessions, delivered mail without a request
    to prove, the address of deletion requests closed longer ago than the retention, and
    audit entries older than theirs."""
    now = now or utcnow()
    with engine.begin() as conn:
        links = conn.execute(
            delete(tables.links).where(tables.links.c.expires_at < now - timedelta(days=1))
        ).rowcount
        # A session's further addresses go with it (also by ON DELETE CASCADE).
        expired = select(tables.sessions.c.id).where(tables.sessions.c.expires_at < now)
        conn.execute(
            delete(tables.session_addresses).where(
                tables.session_addresses.c.session_id.in_(expired)
            )
        )
        sessions = conn.execute(
            delete(tables.sessions).where(tables.sessions.c.expires_at < now)
        ).rowcount
        operator_sessions = conn.execute(
            delete(tables.operator_sessions).where(tables.operator_sessions.c.expires_at < now)
        ).rowcount
        outbox = conn.execute(
            delete(tables.outbox).where(
                tables.outbox.c.status.in_(("sent", "failed")),
                tables.outbox.c.deletion_request_id.is_(None),
                tables.outbox.c.created_at < now - timedelta(days=OUTBOX_PROOF_DAYS),
            )
        ).rowcount
        addresses = _forget_addresses(conn, now - timedelta(days=settings.deletion_retention_days))
        entries = conn.execute(
            delete(tables.audit_log).where(
                tables.audit_log.c.at < now - timedelta(days=settings.audit_retention_days)
            )
        ).rowcount
    db.checkpoint(engine)
    return PurgeReport(links, sessions, outbox, addresses, operator_sessions, entries)


def _forget_addresses(conn: Connection, closed_before: datetime) -> int:
    requests = tables.deletion_requests
    return conn.execute(
        update(requests)
        .where(
            and_(
                requests.c.closed_at.is_not(None),
                requests.c.closed_at < closed_before,
                requests.c.email.is_not(None),
            )
        )
        .values(email=None)
    ).rowcount


def purge_incident(engine: Engine, slug: str) -> IncidentPurge:
    """Erases a closed incident entirely: its partners, records, links, sessions, requests
    and their messages. Closed: every deletion request closed and every message out.

    Raises PortalError, erasing nothing, for an unknown or a still open incident.
    """
    with engine.begin() as conn:
        incident_id = require_incident(conn, slug).id
        _refuse_open(conn, slug, incident_id)
        report = _count(conn, slug, incident_id)
        r = tables.deletion_requests.c
        requests = select(r.id).where(r.incident_id == incident_id)
        conn.execute(delete(tables.outbox).where(tables.outbox.c.deletion_request_id.in_(requests)))
        notices = select(tables.notices.c.outbox_id).where(
            tables.notices.c.incident_id == incident_id
        )
        conn.execute(delete(tables.outbox).where(tables.outbox.c.id.in_(notices)))
        f = tables.notice_followups.c
        followups = (
            select(f.outbox_id)
            .join(tables.notices)
            .where(tables.notices.c.incident_id == incident_id)
        )
        conn.execute(delete(tables.outbox).where(tables.outbox.c.id.in_(followups)))
        # A letter's code works until now, and not a moment after (design §8).
        conn.execute(
            delete(tables.letter_codes).where(tables.letter_codes.c.incident_id == incident_id)
        )
        # Everything else goes with the incident row (ON DELETE CASCADE).
        conn.execute(delete(tables.incidents).where(tables.incidents.c.id == incident_id))
        audit.record(
            conn,
            actor="cli",
            action="incident_purged",
            object=slug,
            detail=f"{report.exposures} record(s), {report.requests} request(s)",
        )
    db.checkpoint(engine)
    return report


def _refuse_open(conn: Connection, slug: str, incident_id: int) -> None:
    r = tables.deletion_requests.c
    still_open = conn.scalar(
        select(func.count()).where(r.incident_id == incident_id, r.status.in_(OPEN))
    )
    if still_open:
        raise PortalError(
            f"incident {slug!r} has {still_open} open deletion request(s): close them first "
            "(the queue at /admin/requests?status=open)"
        )
    o = tables.outbox.c
    pending = conn.scalar(
        select(func.count()).where(
            o.deletion_request_id.in_(select(r.id).where(r.incident_id == incident_id)),
            o.status.in_(UNDELIVERED),
        )
    )
    if pending:
        raise PortalError(
            f"incident {slug!r} has {pending} message(s) still being delivered; "
            "run this again once they are out"
        )
    n, f = tables.notices.c, tables.notice_followups.c
    queued = conn.scalar(
        select(func.count()).where(n.incident_id == incident_id, n.status == "queued")
    )
    queued = (queued or 0) + (
        conn.scalar(
            select(func.count())
            .select_from(tables.notice_followups.join(tables.notices))
            .where(n.incident_id == incident_id, f.status == "queued")
        )
        or 0
    )
    if queued:
        raise PortalError(
            f"incident {slug!r} has {queued} notice(s) still queued (portal notify, "
            "follow-ups included); "
            "run this again once they are out"
        )


def _count(conn: Connection, slug: str, incident_id: int) -> IncidentPurge:
    def rows(table: object, condition: object) -> int:
        return int(conn.scalar(select(func.count()).select_from(table).where(condition)) or 0)  # type: ignore[arg-type]

    p = tables.partners.c
    r = tables.deletion_requests.c
    return IncidentPurge(
        incident=slug,
        partners=rows(tables.partners, p.incident_id == incident_id),
        exposures=rows(
            tables.exposures,
            tables.exposures.c.partner_id.in_(select(p.id).where(p.incident_id == incident_id)),
        ),
        requests=rows(tables.deletion_requests, r.incident_id == incident_id),
        links=rows(tables.links, tables.links.c.incident_id == incident_id),
        sessions=rows(tables.sessions, tables.sessions.c.incident_id == incident_id),
        messages=rows(
            tables.outbox,
            tables.outbox.c.deletion_request_id.in_(
                select(r.id).where(r.incident_id == incident_id)
            ),
        ),
    )
