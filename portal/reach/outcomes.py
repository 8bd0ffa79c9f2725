"""What became of each notice: the mail worker's hooks on delivery, and the figures by status."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, func, select, update

from portal.core.clock import utcnow
from portal.reach.notices import BOUNCED, FAILED, QUEUED, SENT
from portal.store import tables


def mark_sent(conn: Connection, rows: Sequence[tuple[int, int | None]]) -> None:
    """The outbox hook on delivery: these notices went out (their addresses are erased with
    them), in one statement for all the rows of the worker's commit."""
    n = tables.notices.c
    conn.execute(
        update(tables.notices)
        .where(
            n.outbox_id.in_([outbox_id for outbox_id, _ in rows]),
            n.status != BOUNCED,  # a bounce read may be first
        )
        .values(status=SENT, sent_at=utcnow())
    )


def mark_failed(conn: Connection, rows: Sequence[tuple[int, int | None]]) -> None:
    """The outbox hook on giving up: bounced when the server refused it for good (5xx)."""
    o = tables.outbox.c
    answered = conn.execute(
        select(o.id, o.response_status).where(o.id.in_([outbox_id for outbox_id, _ in rows]))
    )
    for outbox_id, code in answered:
        status = BOUNCED if code is not None and 500 <= code < 600 else FAILED
        conn.execute(
            update(tables.notices)
            .where(tables.notices.c.outbox_id == outbox_id)
            .values(status=status)
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
