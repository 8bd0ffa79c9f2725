"""A partner's deletion requests as CSV, with every cell safe to open in a spreadsheet.

The admin area's download and `portal export` both call `export_requests`: the same bytes,
and the same entry in the audit log, whoever asks.
"""

from __future__ import annotations

import csv
import io

from sqlalchemy import Connection, select

from portal.core.files import neutralise
from portal.incidents import stored
from portal.requests.deletions import REJECTED
from portal.store import audit, tables

COLUMNS = ("reference", "email", "received", "due", "status", "closed", "outcome")


class ExportNotFound(LookupError):
    """No such incident, or no such partner in it."""


def export_requests(
    conn: Connection, *, incident: str, partner: str, actor: str
) -> tuple[bytes, int]:
    """The CSV file and its number of rows, the export written in the audit log as done by
    `actor`; raises ExportNotFound.

    The log says who took which partner's addresses out and how many, never an address.
    """
    body, rows = partner_requests_csv(conn, incident=incident, partner=partner)
    audit.record(
        conn,
        actor=actor,
        action="export",
        object=f"{incident}/{partner}",
        detail=f"{rows} request(s)",
    )
    return body.encode("utf-8"), rows


def partner_requests_csv(conn: Connection, *, incident: str, partner: str) -> tuple[str, int]:
    """The CSV text and its number of rows; raises ExportNotFound."""
    found = stored.get_incident(conn, incident)
    owner = stored.get_partner(conn, found.id, partner) if found else None
    if owner is None:
        raise ExportNotFound(f"{incident}/{partner}")
    r = tables.deletion_requests.c
    rows = conn.execute(
        select(tables.deletion_requests)
        .where(r.partner_id == owner.id)
        .order_by(r.received_at, r.id)
    ).all()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([neutralise(cell) for cell in _cells(row)])
    return out.getvalue(), len(rows)


def _cells(row) -> list[str]:  # type: ignore[no-untyped-def]
    outcome = ""
    if row.closed_at is not None:
        outcome = f"{row.status}: {row.ground}" if row.status == REJECTED else row.status
    return [
        row.reference,
        row.email or "",
        row.received_at.date().isoformat(),
        (row.extended_due_on or row.due_on).isoformat(),
        row.status,
        row.closed_at.date().isoformat() if row.closed_at else "",
        outcome,
    ]
