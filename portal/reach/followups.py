"""Later partners (design §8): a partner notified after a person's notice went out gets that
person one follow-up notice, naming only the new partner(s), throttled like every notice.

Never twice: the partner is recorded on the notice (notice_partners, whose primary key is
the notice and the partner) in the same transaction that queues its follow-up, so a run
killed at any moment and run again finds the partner there and queues nothing; and a
notice's follow-ups are numbered under a unique constraint, so two runs can never make the
same one. A follow-up not yet sent takes in a partner notified meanwhile (rendered again,
with a new link), as an unsent notice does. A notice that failed or bounced gets none: the
address does not take mail; the partner is recorded for the letters (`portal letters`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, select, update

from portal.core.clock import utcnow
from portal.mail import outbox
from portal.mail.messages import Message
from portal.store import tables

KIND = "notice_followup"  # the outbox kind, and the template set
QUEUED, SENT, FAILED, BOUNCED = "queued", "sent", "failed", "bounced"
# What became of a later partner for one address.
NEW, MERGED, UNREACHABLE = "followup", "followup_merged", "unreachable"


@dataclass(frozen=True)
class Unsent:
    """A follow-up not yet claimed by a mail worker, with the partners it names."""

    id: int
    notice_id: int
    outbox_id: int
    link_id: int | None
    partners: dict[int, int]  # partner id -> field bits


def unsent_followup(conn: Connection, notice_id: int) -> Unsent | None:
    """The notice's newest follow-up while it is queued, with the partners it names."""
    f, np = tables.notice_followups.c, tables.notice_partners.c
    found = conn.execute(
        select(f.id, f.notice_id, f.outbox_id, f.link_id)
        .where(f.notice_id == notice_id, f.status == QUEUED, f.outbox_id.is_not(None))
        .order_by(f.number.desc())
        .limit(1)
    ).first()
    if found is None:
        return None
    partners = dict(
        conn.execute(select(np.partner_id, np.fields).where(np.followup_id == found.id)).all()
    )
    return Unsent(found.id, found.notice_id, found.outbox_id, found.link_id, partners)


def still_unsent(conn: Connection, followup: Unsent) -> bool:
    o = tables.outbox.c
    return conn.scalar(select(o.status).where(o.id == followup.outbox_id)) == outbox.QUEUED


def merge(conn: Connection, followup: Unsent, message: Message, link_id: int) -> bool:
    """Puts the re-rendered follow-up (naming one partner more) in place of the unsent one;
    False when a worker claimed it meanwhile (it goes out as it was; the new link goes)."""
    o = tables.outbox.c
    moved = conn.execute(
        update(tables.outbox)
        .where(o.id == followup.outbox_id, o.status == outbox.QUEUED)
        .values(subject=message.subject, body_text=message.text, body_html=message.html)
    )
    if moved.rowcount != 1:
        conn.execute(tables.links.delete().where(tables.links.c.id == link_id))
        return False
    if followup.link_id is not None:
        conn.execute(tables.links.delete().where(tables.links.c.id == followup.link_id))
    conn.execute(
        update(tables.notice_followups)
        .where(tables.notice_followups.c.id == followup.id)
        .values(link_id=link_id)
    )
    return True


def queue_followup(
    conn: Connection,
    notice_id: int,
    to: str,
    message: Message,
    link_id: int,
    sender_name: str | None,
    slot: datetime,
) -> int:
    """A new follow-up of the notice, due at `slot` in the notices' schedule; its id."""
    f = tables.notice_followups.c
    number = (conn.scalar(select(func.max(f.number)).where(f.notice_id == notice_id)) or 0) + 1
    outbox_id = outbox.enqueue_email(
        conn, kind=KIND, to=to, message=message, sender_name=sender_name, not_before=slot
    )
    return int(
        conn.execute(
            tables.notice_followups.insert()
            .values(
                notice_id=notice_id,
                number=number,
                status=QUEUED,
                send_after=slot,
                outbox_id=outbox_id,
                link_id=link_id,
                created_at=utcnow(),
            )
            .returning(f.id)
        ).scalar_one()
    )


def mark_sent(conn: Connection, outbox_id: int, _request_id: int | None) -> None:
    """The outbox hook on delivery: the follow-up went out."""
    f = tables.notice_followups.c
    conn.execute(
        update(tables.notice_followups)
        .where(f.outbox_id == outbox_id, f.status != BOUNCED)
        .values(status=SENT, sent_at=utcnow())
    )


def mark_failed(conn: Connection, outbox_id: int, _request_id: int | None) -> None:
    """The outbox hook on giving up: bounced when the server refused it for good (5xx)."""
    code = conn.scalar(
        select(tables.outbox.c.response_status).where(tables.outbox.c.id == outbox_id)
    )
    status = BOUNCED if code is not None and 500 <= code < 600 else FAILED
    conn.execute(
        update(tables.notice_followups)
        .where(tables.notice_followups.c.outbox_id == outbox_id)
        .values(status=status)
    )
