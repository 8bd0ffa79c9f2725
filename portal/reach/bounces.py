"""Bounces (design §8): a delivery status notification read, its VERP tag verified, and the
notice it names marked `bounced` (a permanent failure) or counted (a temporary one).

Only the signed tag in the address the bounce came back to (`bounces+TAG@domain`: the LMTP
recipient, or the Delivered-To / X-Original-To / Envelope-To / To header of a stored copy)
says which message bounced. A DSN quotes the original message too, but anyone can write a
DSN quoting anything: the tag is what the portal signed. The status comes from the DSN's
per-recipient fields (RFC 3464 `Status:` and `Action:`), and where a server wrote none (an
Exim text bounce), from flufl.bounce's detectors. Nothing read is kept: no address, no text.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from email.utils import getaddresses

from flufl.bounce import all_failures
from sqlalchemy import Connection, Engine, select, update

from portal.core.config import Settings
from portal.core.tokens import BounceTags, TokenInvalid, bounce_tags
from portal.reach.notices import BOUNCED
from portal.store import hourly, tables

log = logging.getLogger("portal.bounces")

PERMANENT, TEMPORARY = "permanent", "temporary"
# What became of one bounce read, in the order the summary lists them.
MARKED = "notice marked bounced"
ALREADY = "notice bounced already"
OTHER = "other message bounced (no notice)"
DELAYED = "temporary failure (counted)"
GONE = "message no longer kept"
FORGED = "ignored: tag does not verify (forged)"
UNTAGGED = "ignored: no tag of this portal"
UNPARSEABLE = "ignored: no failure status found"
OUTCOMES = (MARKED, ALREADY, OTHER, DELAYED, GONE, FORGED, UNTAGGED, UNPARSEABLE)
IGNORED = (FORGED, UNTAGGED, UNPARSEABLE)
# Where a stored copy of a bounce says which address it was delivered to.
RECIPIENT_HEADERS = ("delivered-to", "x-original-to", "envelope-to", "to")
NOTICE_KINDS = ("notice", "notice_followup")


@dataclass
class BounceSummary:
    """Every message read lands in one outcome."""

    counts: Counter[str] = field(default_factory=Counter)

    @property
    def read(self) -> int:
        return sum(self.counts.values())

    @property
    def ignored(self) -> int:
        return sum(self.counts[outcome] for outcome in IGNORED)

    def rows(self) -> list[tuple[str, int]]:
        return [("messages read", self.read), *((o, self.counts[o]) for o in OUTCOMES)]


class BounceReader:
    """Reads bounces for the portal's own messages and records what they say."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.tags: BounceTags = bounce_tags(settings)
        local, _, domain = (settings.bounce_address or "").rpartition("@")
        self.local, self.domain = local.lower(), domain.lower()
        self.summary = BounceSummary()

    def is_ours(self, address: str) -> bool:
        """Whether an address is PORTAL_BOUNCE_ADDRESS with a tag: where bounces come back."""
        return self._tag_of(address) is not None

    def read(self, data: bytes, recipients: Sequence[str] = ()) -> str:
        """Reads one bounce (its bytes, and the envelope recipients when a server handed it
        over) and records it; returns its outcome, which the summary counts."""
        outcome = self._outcome(data, recipients)
        self.summary.counts[outcome] += 1
        return outcome

    def _outcome(self, data: bytes, recipients: Sequence[str]) -> str:
        msg = BytesParser(policy=compat32).parsebytes(data)
        tags = [t for t in map(self._tag_of, recipients or _header_addresses(msg)) if t]
        if not tags:
            return self._ignored(UNTAGGED)
        message_id = self._verified(tags)
        if message_id is None:
            return self._ignored(FORGED)
        status = failure_of(msg)
        if status is None:
            return self._ignored(UNPARSEABLE)
        with self.engine.begin() as conn:
            if status == TEMPORARY:
                hourly.bump(conn, hourly.BOUNCES_TEMPORARY)
                return DELAYED
            return mark_bounced(conn, message_id)

    def _ignored(self, outcome: str) -> str:
        with self.engine.begin() as conn:
            hourly.bump(conn, hourly.BOUNCES_IGNORED)
        return outcome

    def _tag_of(self, address: str) -> str | None:
        local, at, domain = address.strip().strip("<>").rpartition("@")
        base, plus, tag = local.partition("+")
        ours = at and plus and base.lower() == self.local and domain.lower() == self.domain
        return tag if ours and tag else None

    def _verified(self, tags: Iterable[str]) -> int | None:
        for tag in tags:
            try:
                return self.tags.read(tag)
            except TokenInvalid:
                continue
        return None


def _header_addresses(msg: Message) -> list[str]:
    values = [str(v) for name in RECIPIENT_HEADERS for v in msg.get_all(name, [])]
    return [address for _, address in getaddresses(values) if address]


def failure_of(msg: Message) -> str | None:
    """PERMANENT or TEMPORARY as the DSN says (the worst of its recipients), else as
    flufl.bounce's detectors find it; None when it reports no failure."""
    found = set()
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status" or not part.is_multipart():
            continue
        for block in part.get_payload():
            if isinstance(block, Message):
                found.add(_block_failure(block))
    found.discard(None)
    if found:
        return PERMANENT if PERMANENT in found else TEMPORARY
    temporary, permanent = all_failures(msg)
    if permanent:
        return PERMANENT
    return TEMPORARY if temporary else None


def _block_failure(block: Message) -> str | None:
    """One per-recipient block of a DSN: its Status class (5: permanent, 4: temporary), or
    its Action when the status is missing."""
    status = str(block.get("status", "")).strip()
    action = str(block.get("action", "")).strip().lower()
    if status[:2] == "5.":
        return PERMANENT
    if status[:2] == "4.":
        return TEMPORARY
    if status[:2] == "2.":
        return None
    if action.startswith("fail"):
        return PERMANENT
    return TEMPORARY if action.startswith("delayed") else None


def mark_bounced(conn: Connection, message_id: int) -> str:
    """A permanent failure of outbox message `message_id`: its notice (or follow-up notice)
    is marked bounced, once, and counted in the overview's `notices_bounced`."""
    kind = conn.scalar(select(tables.outbox.c.kind).where(tables.outbox.c.id == message_id))
    for table in (tables.notices, tables.notice_followups):
        found = conn.execute(
            select(table.c.id, table.c.status).where(table.c.outbox_id == message_id)
        ).first()
        if found is None:
            continue
        if found.status == BOUNCED:
            return ALREADY
        conn.execute(update(table).where(table.c.id == found.id).values(status=BOUNCED))
        hourly.bump(conn, hourly.NOTICES_BOUNCED)
        return MARKED
    return GONE if kind is None or kind in NOTICE_KINDS else OTHER
