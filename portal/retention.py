"""The retention rules of design §4.6: what is erased, and when."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, and_, delete, update

from portal import db, tables
from portal.clock import utcnow
from portal.config import Settings

OUTBOX_PROOF_DAYS = 30


@dataclass(frozen=True)
class PurgeReport:
    links: int
    sessions: int
    outbox: int
    deletion_addresses: int


def purge(engine: Engine, settings: Settings, *, now: datetime | None = None) -> PurgeReport:
    """Deletes expired links (after a day) and sessions, delivered mail without a request
    to prove, and the address of deletion requests closed longer ago than the retention."""
    now = now or utcnow()
    with engine.begin() as conn:
        links = conn.execute(
            delete(tables.links).where(tables.links.c.expires_at < now - timedelta(days=1))
        ).rowcount
        sessions = conn.execute(
            delete(tables.sessions).where(tables.sessions.c.expires_at < now)
        ).rowcount
        outbox = conn.execute(
            delete(tables.outbox).where(
                tables.outbox.c.status.in_(("sent", "failed")),
                tables.outbox.c.deletion_request_id.is_(None),
                tables.outbox.c.created_at < now - timedelta(days=OUTBOX_PROOF_DAYS),
            )
        ).rowcount
        requests = tables.deletion_requests
        addresses = conn.execute(
            update(requests)
            .where(
                and_(
                    requests.c.closed_at.is_not(None),
                    requests.c.closed_at < now - timedelta(days=settings.deletion_retention_days),
                    requests.c.email.is_not(None),
                )
            )
            .values(email=None)
        ).rowcount
    db.checkpoint(engine)
    return PurgeReport(links, sessions, outbox, addresses)
