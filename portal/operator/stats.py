"""Per-partner and per-incident figures for `portal stats` and the admin area."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import Connection, and_, case, func, select

from portal.core.clock import utcnow
from portal.incidents import counters
from portal.incidents.stored import require_incident
from portal.reach import notices, outcomes
from portal.requests.deletions import CLOSED, OPEN
from portal.store import hourly, tables

# The notice figures shown per partner (`portal stats`, /admin/): each status once, so a
# notice that bounced (refused at once, or a bounce read by `portal bounces`) is no longer
# counted as sent.
PARTNER_NOTICES = (notices.QUEUED, notices.SENT, notices.FAILED, notices.BOUNCED)


@dataclass
class PartnerFigures:
    incident: str
    partner: str
    records: int = 0
    requests: dict[str, int] = field(default_factory=dict)
    name: str = ""
    found_affected: int = 0  # verified visits whose address occurs at this partner
    overdue: int = 0
    median_days_to_close: float | None = None
    # Direct notices that name this partner, by status (a notice naming two counts at each).
    notices: dict[str, int] = field(default_factory=dict)
    letters: int = 0  # people written to by post about this partner (portal letters)


@dataclass
class IncidentFigures:
    incident: str
    links_issued: int  # link records still kept (purged a day after expiry)
    verified_visits: int  # counted for good: links confirmed
    mail: dict[str, int]
    distinct_people: int = 0  # distinct addresses over all of its partners' records
    lookups: int = 0  # lookups answered with a link
    notices: dict[str, int] = field(default_factory=dict)  # direct notices by status
    # Mail given up, by reason (the error's kind: "NoSmtpUtf8", "SMTPRecipientRefused", ...).
    mail_failures: dict[str, int] = field(default_factory=dict)


def partner_figures(
    conn: Connection, *, incident: str | None = None, today: date | None = None
) -> list[PartnerFigures]:
    """One row per partner (of one incident, or all), with its records and requests."""
    today = today or utcnow().date()
    p, i = tables.partners, tables.incidents
    query = (
        select(p.c.id, p.c.slug, p.c.name, p.c.incident_id, i.c.slug.label("incident"))
        .join(i)
        .order_by(i.c.slug, p.c.slug)
    )
    if incident is not None:
        _known(conn, incident)
        query = query.where(i.c.slug == incident)
    found = conn.execute(query).all()
    rows = {r.id: PartnerFigures(r.incident, r.slug, name=r.name) for r in found}
    _records(conn, rows)
    _requests(conn, rows, today)
    _notices(conn, rows)
    _letters(conn, rows)
    for incident_id in {r.incident_id for r in found}:
        counted = counters.totals(conn, incident_id=incident_id)
        for partner_id, names in counted.items():
            if partner_id in rows:
                rows[partner_id].found_affected = names.get(counters.FOUND_AFFECTED, 0)
    return list(rows.values())


def _known(conn: Connection, incident: str) -> int:
    return require_incident(conn, incident).id


def _records(conn: Connection, rows: dict[int, PartnerFigures]) -> None:
    """Imported records: a letter's code has exposures too, counted as letters instead."""
    e = tables.exposures
    codes = select(tables.letter_codes.c.code_hash)
    for partner_id, count in conn.execute(
        select(e.c.partner_id, func.count())
        .where(e.c.partner_id.in_(rows), e.c.bidx.not_in(codes))
        .group_by(e.c.partner_id)
    ):
        rows[partner_id].records = count


def _letters(conn: Connection, rows: dict[int, PartnerFigures]) -> None:
    lp = tables.letter_partners.c
    for partner_id, count in conn.execute(
        select(lp.partner_id, func.count()).where(lp.partner_id.in_(rows)).group_by(lp.partner_id)
    ):
        rows[partner_id].letters = count


def _notices(conn: Connection, rows: dict[int, PartnerFigures]) -> None:
    """Per partner, the messages that name it by status: the notices, and for a partner
    recorded after the notice went out, the follow-up notice that names it."""
    n, np, f = tables.notices.c, tables.notice_partners.c, tables.notice_followups.c
    for row in rows.values():
        row.notices = dict.fromkeys(PARTNER_NOTICES, 0)
    named = (
        select(np.partner_id, n.status, func.count())
        .select_from(tables.notice_partners.join(tables.notices))
        .where(np.partner_id.in_(rows), np.named.is_(True))
        .group_by(np.partner_id, n.status)
    )
    followed = (
        select(np.partner_id, f.status, func.count())
        .select_from(tables.notice_partners.join(tables.notice_followups))
        .where(np.partner_id.in_(rows))
        .group_by(np.partner_id, f.status)
    )
    for query in (named, followed):
        for partner_id, status, count in conn.execute(query):
            if status in PARTNER_NOTICES:
                rows[partner_id].notices[status] += count


def _requests(conn: Connection, rows: dict[int, PartnerFigures], today: date) -> None:
    d = tables.deletion_requests.c
    for partner_id, status, count in conn.execute(
        select(d.partner_id, d.status, func.count())
        .where(d.partner_id.in_(rows))
        .group_by(d.partner_id, d.status)
    ):
        rows[partner_id].requests[status] = count
    due = func.coalesce(d.extended_due_on, d.due_on)
    for partner_id, count in conn.execute(
        select(d.partner_id, func.count())
        .where(d.partner_id.in_(rows), d.status.in_(OPEN), due < today)
        .group_by(d.partner_id)
    ):
        rows[partner_id].overdue = count
    durations: dict[int, list[float]] = {}
    for partner_id, received, closed in conn.execute(
        select(d.partner_id, d.received_at, d.closed_at).where(
            d.partner_id.in_(rows), d.status.in_(CLOSED), d.closed_at.is_not(None)
        )
    ):
        durations.setdefault(partner_id, []).append((closed - received) / timedelta(days=1))
    for partner_id, days in durations.items():
        rows[partner_id].median_days_to_close = round(statistics.median(days), 1)


def incident_figures(conn: Connection, *, incident: str | None = None) -> list[IncidentFigures]:
    """Per incident: distinct people, lookups, verified visits, links on record; mail by status."""
    i, links, outbox = tables.incidents, tables.links, tables.outbox
    counts = conn.execute(select(outbox.c.status, func.count()).group_by(outbox.c.status))
    mail: dict[str, int] = {status: count for status, count in counts}
    failures: dict[str, int] = {}
    for error, count in conn.execute(
        select(outbox.c.last_error, func.count())
        .where(outbox.c.status == "failed")
        .group_by(outbox.c.last_error)
    ):
        reason = (error or "unknown").split(":", 1)[0]
        failures[reason] = failures.get(reason, 0) + count
    query = select(i.c.id, i.c.slug).order_by(i.c.slug)
    if incident is not None:
        query = query.where(i.c.id == _known(conn, incident))
    result = []
    for incident_id, slug in conn.execute(query).all():
        issued = conn.scalar(select(func.count()).where(links.c.incident_id == incident_id))
        whole = counters.totals(conn, incident_id=incident_id).get(counters.WHOLE_INCIDENT, {})
        result.append(
            IncidentFigures(
                slug,
                issued or 0,
                whole.get(counters.VERIFIED_VISITS, 0),
                mail,
                distinct_people=_distinct_people(conn, incident_id),
                lookups=whole.get(counters.LOOKUPS, 0),
                notices=outcomes.figures(conn, incident_id=incident_id),
                mail_failures=failures,
            )
        )
    return result


@dataclass(frozen=True)
class RelayFigures:
    """The mail relay as the outbox shows it: the newest delivery and the newest failure."""

    last_sent_at: datetime | None
    last_failed_at: datetime | None  # of a message still waiting to be tried again
    last_error: str | None  # that failure's kind and reason, as kept in the outbox
    waiting: int  # emails waiting to be tried again after a failed attempt

    @property
    def failing(self) -> bool:
        """Whether the newest attempt failed: nothing was delivered since."""
        failed, sent = self.last_failed_at, self.last_sent_at
        return failed is not None and (sent is None or failed > sent)


def relay_figures(conn: Connection) -> RelayFigures:
    """What the newest attempts at the mail relay did, for `portal stats`."""
    o = tables.outbox.c
    email = o.channel == "email"
    # An attempt at the relay says which one in its last_error (outbox.describe); a message
    # that could not even be built is no news of the relay.
    waiting = and_(email, o.status == "queued", o.last_error.contains("(mail relay "))
    last_sent = conn.scalar(select(func.max(o.sent_at)).where(email, o.status == "sent"))
    failed = conn.execute(
        select(o.attempted_at, o.last_error)
        .where(waiting, o.attempted_at.is_not(None))
        .order_by(o.attempted_at.desc())
        .limit(1)
    ).first()
    return RelayFigures(
        last_sent_at=last_sent,
        last_failed_at=failed.attempted_at if failed else None,
        last_error=failed.last_error if failed else None,
        waiting=int(conn.scalar(select(func.count()).where(waiting)) or 0),
    )


def bounces_counted(conn: Connection) -> dict[str, int]:
    """The bounces `portal bounces` read that marked no notice: temporary failures, and the
    ignored ones (forged, untagged, unparseable), over every hour counted."""
    since = datetime(2000, 1, 1)
    return {
        "temporary": hourly.total(conn, hourly.BOUNCES_TEMPORARY, since=since),
        "ignored": hourly.total(conn, hourly.BOUNCES_IGNORED, since=since),
    }


def requests_overdue(conn: Connection, *, today: date) -> int:
    """Deletion requests still open after their (extended) due date, over every incident."""
    d = tables.deletion_requests.c
    due = func.coalesce(d.extended_due_on, d.due_on)
    query = select(func.count()).where(d.status.in_(OPEN), due < today)
    return int(conn.scalar(query) or 0)


def _distinct_people(conn: Connection, incident_id: int) -> int:
    e, p = tables.exposures.c, tables.partners.c
    query = (
        select(func.count(func.distinct(e.bidx)))
        .select_from(tables.exposures.join(tables.partners, e.partner_id == p.id))
        .where(p.incident_id == incident_id)
    )
    return int(conn.scalar(query) or 0)


# -- `portal incident list` ----------------------------------------------------------------


@dataclass(frozen=True)
class PartnerOverview:
    slug: str
    name: str
    records: int
    requests_open: int  # not completed or rejected
    requests_overdue: int  # open, and today is past the (extended) due date


@dataclass(frozen=True)
class IncidentOverview:
    slug: str
    title: str  # in the incident's default language
    partners: list[PartnerOverview]


def incident_overview(conn: Connection, *, today: date) -> list[IncidentOverview]:
    """Each incident with its partners: records imported, deletion requests open and overdue."""
    i, p, e, d = tables.incidents, tables.partners, tables.exposures, tables.deletion_requests
    records = select(e.c.partner_id, func.count().label("n")).group_by(e.c.partner_id).subquery()
    is_open = d.c.status.not_in(sorted(CLOSED))
    late = and_(is_open, func.coalesce(d.c.extended_due_on, d.c.due_on) < today)
    requests = (
        select(
            d.c.partner_id,
            func.sum(case((is_open, 1), else_=0)).label("open"),
            func.sum(case((late, 1), else_=0)).label("overdue"),
        )
        .group_by(d.c.partner_id)
        .subquery()
    )
    rows = conn.execute(
        select(
            i.c.slug.label("incident"),
            i.c.title,
            i.c.languages,
            p.c.slug,
            p.c.name,
            func.coalesce(records.c.n, 0).label("records"),
            func.coalesce(requests.c.open, 0).label("open"),
            func.coalesce(requests.c.overdue, 0).label("overdue"),
        )
        .select_from(i)
        .outerjoin(p, p.c.incident_id == i.c.id)
        .outerjoin(records, records.c.partner_id == p.c.id)
        .outerjoin(requests, requests.c.partner_id == p.c.id)
        .order_by(i.c.slug, p.c.id)
    )
    found: dict[str, IncidentOverview] = {}
    for row in rows:
        if row.incident not in found:
            title = json.loads(row.title)
            found[row.incident] = IncidentOverview(
                row.incident, title.get(json.loads(row.languages)[0], ""), []
            )
        if row.slug is not None:
            found[row.incident].partners.append(
                PartnerOverview(row.slug, row.name, row.records, int(row.open), int(row.overdue))
            )
    return list(found.values())
