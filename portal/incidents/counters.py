"""Aggregate counters per incident, partner and day: figures that never record whose they are."""

from __future__ import annotations

from collections import defaultdict
from datetime import date

from sqlalchemy import Connection, func, select

from portal.core.clock import utcnow
from portal.incidents import stored
from portal.store import db, tables

WHOLE_INCIDENT = 0  # the partner_id of a figure about the incident as a whole
LOOKUPS, VERIFIED_VISITS, FOUND_AFFECTED = "lookups", "verified_visits", "found_affected"


def bump(
    conn: Connection,
    *,
    incident_id: int,
    name: str,
    partner_id: int = WHOLE_INCIDENT,
    by: int = 1,
    day: date | None = None,
) -> None:
    """Adds `by` to today's counter; safe with any number of processes (one upsert)."""
    row = {
        "incident_id": incident_id,
        "partner_id": partner_id,
        "day": day or utcnow().date(),
        "name": name,
        "count": by,
    }
    db.upsert(
        conn,
        tables.counters,
        [row],
        keys=["incident_id", "partner_id", "day", "name"],
        update={"count": lambda excluded: tables.counters.c.count + excluded.count},
    )


def count_visit(conn: Connection, *, incident_id: int, bidx: bytes) -> None:
    """A verified visit, and one 'found affected' for each partner where its address occurs.

    The blind index is used for the look-up only; nothing of it is kept with the counts.
    """
    bump(conn, incident_id=incident_id, name=VERIFIED_VISITS)
    partner_ids = [p.id for p in stored.get_partners(conn, incident_id)]
    found = conn.scalars(
        select(tables.exposures.c.partner_id).where(
            tables.exposures.c.bidx == bidx, tables.exposures.c.partner_id.in_(partner_ids)
        )
    ).all()
    for partner_id in found:
        bump(conn, incident_id=incident_id, partner_id=partner_id, name=FOUND_AFFECTED)


def totals(conn: Connection, *, incident_id: int) -> dict[int, dict[str, int]]:
    """Every counter of an incident summed over the days: {partner_id: {name: count}}."""
    c = tables.counters.c
    rows = conn.execute(
        select(c.partner_id, c.name, func.sum(c.count))
        .where(c.incident_id == incident_id)
        .group_by(c.partner_id, c.name)
    )
    result: dict[int, dict[str, int]] = defaultdict(dict)
    for partner_id, name, total in rows:
        result[partner_id][name] = int(total)
    return result
