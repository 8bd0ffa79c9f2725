"""Per-partner figures for `portal stats`: records and deletion requests by status."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date

from sqlalchemy import Connection, and_, case, func, select

from portal import tables
from portal.deletions import CLOSED
from portal.errors import PortalError


@dataclass
class PartnerFigures:
    incident: str
    partner: str
    records: int = 0
    requests: dict[str, int] = field(default_factory=dict)


@dataclass
class IncidentFigures:
    incident: str
    links_issued: int
    verified_visits: int
    mail: dict[str, int]


def partner_figures(conn: Connection, *, incident: str | None = None) -> list[PartnerFigures]:
    """One row per partner (of one incident, or all), with its record count."""
    p, i = tables.partners, tables.incidents
    query = (
        select(p.c.id, p.c.slug, i.c.slug.label("incident")).join(i).order_by(i.c.slug, p.c.slug)
    )
    if incident is not None:
        if conn.scalar(select(i.c.id).where(i.c.slug == incident)) is None:
            raise PortalError(f"unknown incident {incident!r}")
        query = query.where(i.c.slug == incident)
    rows = {r.id: PartnerFigures(r.incident, r.slug) for r in conn.execute(query)}
    e = tables.exposures
    for partner_id, count in conn.execute(
        select(e.c.partner_id, func.count())
        .where(e.c.partner_id.in_(rows))
        .group_by(e.c.partner_id)
    ):
        rows[partner_id].records = count
    d = tables.deletion_requests
    for partner_id, status, count in conn.execute(
        select(d.c.partner_id, d.c.status, func.count())
        .where(d.c.partner_id.in_(rows))
        .group_by(d.c.partner_id, d.c.status)
    ):
        rows[partner_id].requests[status] = count
    return list(rows.values())


def incident_figures(conn: Connection) -> list[IncidentFigures]:
    """Per incident: links issued and verified visits still on record; mail by status."""
    i, links, sessions, outbox = tables.incidents, tables.links, tables.sessions, tables.outbox
    counts = conn.execute(select(outbox.c.status, func.count()).group_by(outbox.c.status))
    mail: dict[str, int] = {status: count for status, count in counts}
    result = []
    for incident_id, slug in conn.execute(select(i.c.id, i.c.slug).order_by(i.c.slug)):
        issued = conn.scalar(select(func.count()).where(links.c.incident_id == incident_id))
        visits = conn.scalar(select(func.count()).where(sessions.c.incident_id == incident_id))
        result.append(IncidentFigures(slug, issued or 0, visits or 0, mail))
    return result


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
