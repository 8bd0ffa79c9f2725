"""What became of each notice: the mail worker's hooks on delivery, and the figures by status."""

from __future__ import annotations

from sqlalchemy import Connection, func, select, update

from portal.core.clock import utcnow
from portal.reach.notices import BOUNCED, FAILED, QUEUED, SENT
from portal.store import tables


def mark_sent(conn: Connection, outbox_id: int, _request_id: int | None) -> None:
    """The outbox hook on delivery: the notice went out (its address is erased with it)."""
    n = tables.notices.c
    conn.execute(
        update(tables.notices)
        .where(n.outbox_id == outbox_id, n.status != BOUNCED)  # a bounce read may be first
        .values(status=SENT, sent_at=utcnow())
    )


def mark_failed(conn: Connection, outbox_id: int, _request_id: int | None) -> None:
    """The outbox hook on giving up: bounced when the server refused it for good (5xx)."""
    code = conn.scalar(
        select(tables.outbox.c.response_status).where(tables.outbox.c.id == outbox_id)
    )
    status = BOUNCED if code is not None and 500 <= code < 600 else FAILED
    conn.execute(
        update(tables.notices).where(tables.notices.c.outbox_id == outbox_id).values(status=status)
    )


def figures(conn: Connection, *, incident_id: int) -> dict[str, int]:
    """Notices by status (queued, sent, failed, bounced), and partners recorded after sending."""
    n, np = tables.notices.c, tables.notice_partners.c
    counted = {s: 0 for s in (QUEUED, SENT, FAILED, BOUNCED)}
    for status, count in conn.execute(
        select(n.status, func.count()).where(n.incident_id == incident_id).group_by(n.status)
    ):
        counted[status] = count
    counted["partners added after sending"] = int(
        conn.scalar(
            select(func.count())
            .select_from(tables.notice_partners.join(tables.notices))
            .where(n.incident_id == incident_id, np.named.is_(False))
        )
        or 0
    )
    return counted
