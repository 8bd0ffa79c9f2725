"""Per-partner figures for `portal stats`: records and deletion requests by status."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Connection, func, select

from portal import tables
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
