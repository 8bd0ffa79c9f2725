"""Direct notice (design §7): one personal notice per address and incident, throttled, once.

`portal notify` reads a partner's file as `portal import` does, with the addresses in hand,
and queues one notice per distinct valid address, each with its own direct link into the
results. The notices table keeps no address: the blind index, the partners that named it
(with the fields each one's file holds), the status and the times. The address is in the
notice's outbox row only, which delivery erases, and sealed in its link row with the
link's own secret, which only the mail carries.

Exactly once: a notice is unique per (incident, blind index), and each chunk of addresses
(CHUNK) is queued in one transaction, so a run killed at any moment leaves whole chunks
behind and the next run queues only what is missing. A second partner's file merges into
a notice that has not gone out (it is rendered again, naming both, with a new link); once
a notice has gone out, a later partner is recorded on it and named in one follow-up notice
(portal.reach.followups), which names only the partners new to that person.

The rate: every notice gets a time before which no worker may send it, one 1/rate apart,
continuing after the last notice scheduled by any run. The schedule lives in the outbox
rows themselves (`next_attempt_at`), so it holds however many mail workers run, on however
many hosts, and across restarts, with no counter for workers to share.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

from sqlalchemy import Connection, Engine, select, update

from portal.core.clock import utcnow
from portal.core.config import MAX_NOTICE_RATE, Settings
from portal.core.errors import PortalError
from portal.core.printable import shown
from portal.core.tokens import NOTICE_PURPOSE, notice_tokens, seal, token_hash
from portal.incidents.columns import plan_columns
from portal.incidents.importer import Hasher, refuse_empty, require_partner
from portal.incidents.parts import WHOLE, Part
from portal.incidents.reading import Addresses, ImportSummary, Progress, chunks, read_file
from portal.incidents.spill import spill_folder
from portal.incidents.stored import Incident, Partner, get_partners
from portal.mail import outbox
from portal.mail.messages import Message
from portal.mail.renderer import Renderer
from portal.reach import followups, schedule
from portal.reach.notice_email import render_notice
from portal.store import db, tables

log = logging.getLogger("portal.notices")

KIND = "notice"  # the outbox kind
KIND_FOLLOWUP = followups.KIND
QUEUED, SENT, FAILED, BOUNCED = "queued", "sent", "failed", "bounced"
# Addresses queued per transaction: on SQLite each one holds the write lock (that lookups
# need too) while it renders its notices, so it stays short: about 0.2 s of work.
CHUNK = 200
# Where a rendered notice gets its link's token (URL-safe: escaping leaves it alone).
TOKEN_SLOT = "portal-notice-token-slot"  # noqa: S105 - a placeholder, not a secret
RENDERED_KEPT = 1024


@dataclass
class NotifySummary:
    """What a notify run read and queued; every distinct address lands in one count.

    rows read = rows with a valid address + rows skipped; rows with a valid address =
    distinct addresses + repeated rows; distinct addresses = new + merged + already +
    followups + followups_merged + unreachable + not_imported.
    """

    read: ImportSummary
    rate: float
    new: int = 0  # notices queued
    merged: int = 0  # unsent notices that now name this partner too
    already: int = 0  # notices that name this partner already (a re-run)
    followups: int = 0  # the address's notice had gone out: a follow-up names the partner
    followups_merged: int = 0  # unsent follow-ups that now name this partner too
    unreachable: int = 0  # the address's notice failed or bounced: the partner recorded only
    not_imported: int = 0  # not in this partner's imported records: no notice
    first_at: datetime | None = None  # the first and last new notice's place in the schedule
    last_at: datetime | None = None
    dry_run: bool = False

    @property
    def repeated_rows(self) -> int:
        return self.read.imported - self.read.addresses


_Item = tuple[str, bytes, int]  # an address of the file, its blind index, its field bits


@dataclass(frozen=True)
class _Notice:
    id: int
    status: str
    outbox_id: int | None
    link_id: int | None
    partners: dict[int, int] = field(default_factory=dict)  # partner id -> field bits


def notify(
    engine: Engine,
    settings: Settings,
    *,
    incident: str,
    partner: str,
    path: Path,
    renderer: Renderer,
    mapping: dict[str, str] | None = None,
    email_column: str | None = None,
    rate: float | None = None,
    workers: int | None = None,
    dry_run: bool = False,
    part: Part = WHOLE,
    progress: Progress | None = None,
) -> NotifySummary:
    """Queues one notice per distinct valid address of a partner's file; `dry_run` writes
    nothing. Safe to run again: what was queued stays queued once."""
    if settings.base_url_is_default and not dry_run:
        # A notice is mailed once, to everyone: a link to this machine would reach no one.
        raise PortalError(
            "PORTAL_BASE_URL is not set: the notices would link to http://127.0.0.1:8000, "
            "which works on this machine only; set it to the portal's public address"
        )
    rate = settings.notice_rate if rate is None else rate
    if not 0 < rate <= MAX_NOTICE_RATE:
        raise PortalError(f"--rate must be more than 0 and at most {MAX_NOTICE_RATE:,.0f}")
    with engine.begin() as conn:
        found_incident, target = require_partner(conn, incident, partner)
        _require_imported(conn, found_incident, target)
        partners = {p.id: p for p in get_partners(conn, found_incident.id)}
        salt = db.ensure_salt(conn)
    with spill_folder(settings.instance_dir) as folder:
        read = read_file(
            path,
            lambda header: plan_columns(header, mapping=mapping or {}, email_column=email_column),
            progress,
            pepper=settings.pepper,
            folder=folder,
            part=part,
        )
        refuse_empty(path, read.summary)
        summary = NotifySummary(read.summary, rate, dry_run=dry_run)
        queue = _Queue(engine, settings, found_incident, target, partners, renderer, summary)
        hasher = Hasher(settings.pepper, salt, found_incident.kdf)
        _queue_all(queue, hasher, Addresses(read, pepper=settings.pepper), workers, progress)
    log.info(
        "notify %s/%s: %d new, %d merged, %d already, %d follow-ups, %d not imported%s",
        incident,
        partner,
        summary.new,
        summary.merged,
        summary.already,
        summary.followups + summary.followups_merged,
        summary.not_imported,
        " (dry run)" if dry_run else "",
    )
    return summary


def _queue_all(
    queue: _Queue,
    hasher: Hasher,
    addresses: Addresses,
    workers: int | None,
    progress: Progress | None,
) -> None:
    done, total = 0, queue.summary.read.addresses
    if progress:
        progress("queueing", 0, total)
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        for chunk in _hashed(pool, hasher, addresses):
            queue.chunk(chunk)
            done += len(chunk)
            if progress:
                progress("queueing", done, total)


def _hashed(
    pool: ThreadPoolExecutor, hasher: Hasher, addresses: Iterable[tuple[str, bytes, int]]
) -> Iterator[list[tuple[str, bytes, int]]]:
    """Chunks of (address, blind index, field bits); the next chunk hashes (argon2id
    releases the GIL) while the caller queues this one."""
    pending = None
    for chunk in chunks(addresses, CHUNK):
        hashing = pool.map(hasher.stretch, [keyed for _, keyed, _ in chunk])  # at once
        if pending is not None:
            yield pending
        pending = [(a, bidx, bits) for (a, _, bits), bidx in zip(chunk, hashing, strict=True)]
    if pending is not None:
        yield pending


def _require_imported(conn: Connection, incident: Incident, partner: Partner) -> None:
    """A notice links to the results, which show what was imported: import comes first."""
    e = tables.exposures.c
    if conn.scalar(select(e.bidx).where(e.partner_id == partner.id).limit(1)) is None:
        raise PortalError(
            f"partner {shown(partner.slug)} has no records imported yet: run portal import "
            f"{shown(incident.slug)} {shown(partner.slug)} FILE.csv first (the notice links to "
            "the results, which show what was imported), then notify with the same file"
        )


class _Queue:
    """Queues a chunk of (address, blind index, field bits) in one transaction."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        incident: Incident,
        partner: Partner,
        partners: dict[int, Partner],
        renderer: Renderer,
        summary: NotifySummary,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.incident = incident
        self.partner = partner
        self.partners = partners
        self.renderer = renderer
        self.summary = summary
        self.lang = incident.languages[0]
        self.step = timedelta(seconds=1 / summary.rate)
        self._rendered: dict[tuple[str, tuple[tuple[int, int], ...]], Message] = {}

    def chunk(self, items: list[tuple[str, bytes, int]]) -> None:
        with self.engine.begin() as conn:
            if not self.summary.dry_run:
                schedule.lock(conn)
            imported = self._imported(conn, [bidx for _, bidx, _ in items])
            existing = self._notices(conn, [bidx for _, bidx, _ in items])
            slot = schedule.next_slot(conn, self.step)
            for address, bidx, bits in items:
                if bidx not in imported:
                    self.summary.not_imported += 1
                elif (notice := existing.get(bidx)) is None:
                    self._new(conn, address, bidx, bits, slot)
                    slot += self.step
                elif self.partner.id in notice.partners:
                    self.summary.already += 1
                elif notice.status == QUEUED and self._merge(conn, notice, address, bidx, bits):
                    self.summary.merged += 1
                elif self._later(conn, notice, (address, bidx, bits), slot):
                    slot += self.step

    def _imported(self, conn: Connection, bidxs: list[bytes]) -> set[bytes]:
        e = tables.exposures.c
        query = select(e.bidx).where(e.partner_id == self.partner.id, e.bidx.in_(bidxs))
        return set(conn.scalars(query))

    def _notices(self, conn: Connection, bidxs: list[bytes]) -> dict[bytes, _Notice]:
        n, np = tables.notices.c, tables.notice_partners.c
        rows = conn.execute(
            select(n.id, n.bidx, n.status, n.outbox_id, n.link_id).where(
                n.incident_id == self.incident.id, n.bidx.in_(bidxs)
            )
        ).all()
        found = {r.bidx: _Notice(r.id, r.status, r.outbox_id, r.link_id) for r in rows}
        by_id = {notice.id: notice for notice in found.values()}
        for notice_id, partner_id, bits in conn.execute(
            select(np.notice_id, np.partner_id, np.fields).where(np.notice_id.in_(by_id))
        ):
            by_id[notice_id].partners[partner_id] = bits
        return found

    def _new(self, conn: Connection, address: str, bidx: bytes, bits: int, slot: datetime) -> None:
        self.summary.new += 1
        self.summary.first_at = self.summary.first_at or slot
        self.summary.last_at = slot
        if self.summary.dry_run:
            return
        now = utcnow()
        link_id, message = self._link_and_message(conn, address, bidx, {self.partner.id: bits})
        outbox_id = outbox.enqueue_email(
            conn,
            kind=KIND,
            to=address,
            message=message,
            sender_name=self.incident.organisation,
            not_before=slot,
        )
        notice_id = conn.execute(
            tables.notices.insert()
            .values(
                incident_id=self.incident.id,
                bidx=bidx,
                status=QUEUED,
                lang=self.lang,
                send_after=slot,
                outbox_id=outbox_id,
                link_id=link_id,
                created_at=now,
            )
            .returning(tables.notices.c.id)
        ).scalar_one()
        self._name_partner(conn, notice_id, bits, named=True)

    def _merge(
        self, conn: Connection, notice: _Notice, address: str, bidx: bytes, bits: int
    ) -> bool:
        """Renders an unsent notice again, naming this partner too, with a new link.

        The guarded UPDATE matches only while no worker has claimed the message: once one
        has, the notice went out as it was (and this partner is recorded after it).
        """
        o = tables.outbox.c
        if self.summary.dry_run:
            status = conn.scalar(select(o.status).where(o.id == notice.outbox_id))
            return bool(status == outbox.QUEUED)
        partners = {**notice.partners, self.partner.id: bits}
        link_id, message = self._link_and_message(conn, address, bidx, partners)
        moved = conn.execute(
            update(tables.outbox)
            .where(o.id == notice.outbox_id, o.status == outbox.QUEUED)
            .values(subject=message.subject, body_text=message.text, body_html=message.html)
        )
        if moved.rowcount != 1:
            conn.execute(tables.links.delete().where(tables.links.c.id == link_id))
            return False
        if notice.link_id is not None:
            conn.execute(tables.links.delete().where(tables.links.c.id == notice.link_id))
        conn.execute(
            update(tables.notices).where(tables.notices.c.id == notice.id).values(link_id=link_id)
        )
        self._name_partner(conn, notice.id, bits, named=True)
        return True

    def _later(self, conn: Connection, notice: _Notice, item: _Item, slot: datetime) -> bool:
        """This partner, after the notice went out (or was claimed to go): one follow-up,
        or a place in the unsent one. True when a new follow-up took the schedule's slot."""
        (address, bidx, bits), dry = item, self.summary.dry_run
        if notice.status in (FAILED, BOUNCED):  # the address takes no mail: recorded only
            self.summary.unreachable += 1
            if not dry:
                self._name_partner(conn, notice.id, bits, named=False)
            return False
        unsent = followups.unsent_followup(conn, notice.id)
        merge = followups.still_unsent if dry else partial(self._merged, item=item)
        if unsent is not None and merge(conn, unsent):
            self.summary.followups_merged += 1
            return False
        self.summary.followups += 1
        if not dry:
            partners = {self.partner.id: bits}
            link_id, message = self._link_and_message(conn, address, bidx, partners, KIND_FOLLOWUP)
            followup_id = followups.queue_followup(
                conn, notice.id, address, message, link_id, self.incident.organisation, slot
            )
            self._name_partner(conn, notice.id, bits, named=False, followup_id=followup_id)
        return True

    def _merged(self, conn: Connection, unsent: followups.Unsent, item: _Item) -> bool:
        address, bidx, bits = item
        partners = {**unsent.partners, self.partner.id: bits}
        link_id, message = self._link_and_message(conn, address, bidx, partners, KIND_FOLLOWUP)
        if not followups.merge(conn, unsent, message, link_id):
            return False
        self._name_partner(conn, unsent.notice_id, bits, named=False, followup_id=unsent.id)
        return True

    def _name_partner(
        self,
        conn: Connection,
        notice_id: int,
        bits: int,
        *,
        named: bool,
        followup_id: int | None = None,
    ) -> None:
        conn.execute(
            tables.notice_partners.insert().values(
                notice_id=notice_id,
                partner_id=self.partner.id,
                fields=bits,
                named=named,
                added_at=utcnow(),
                followup_id=followup_id,
            )
        )

    def _link_and_message(
        self,
        conn: Connection,
        address: str,
        bidx: bytes,
        partners: dict[int, int],
        template: str = KIND,
    ) -> tuple[int, Message]:
        """A new direct link (the address sealed with its secret) and the notice carrying it."""
        token, secret = notice_tokens(self.settings).issue()
        now = utcnow()
        link_id = conn.execute(
            tables.links.insert()
            .values(
                token_hash=token_hash(secret),
                purpose=NOTICE_PURPOSE,
                incident_id=self.incident.id,
                bidx=bidx,
                sealed_email=seal(secret, address),
                lang=self.lang,
                created_at=now,
                expires_at=now + timedelta(seconds=self.settings.notice_link_ttl),
            )
            .returning(tables.links.c.id)
        ).scalar_one()
        message = self._message(template, tuple(sorted(partners.items())))
        return int(link_id), Message(
            subject=message.subject,
            text=message.text.replace(TOKEN_SLOT, token),
            html=message.html.replace(TOKEN_SLOT, token),
        )

    def _message(self, template: str, partners: tuple[tuple[int, int], ...]) -> Message:
        """The notice (or follow-up) for a set of partners and field bits, with a slot for
        the token. Rendered once per distinct set: a file of a million rows holds a few dozen.
        """
        key = (template, partners)
        if key not in self._rendered:
            if len(self._rendered) >= RENDERED_KEPT:
                self._rendered.clear()
            link = f"{self.settings.base_url}/v/{TOKEN_SLOT}"
            self._rendered[key] = render_notice(
                self.renderer,
                self.settings,
                self.incident,
                self.lang,
                self._named(dict(partners)),
                link,
                template=template,
            )
        return self._rendered[key]

    def _named(self, partners: dict[int, int]) -> list[tuple[Partner, int]]:
        named = [(self.partners[pid], bits) for pid, bits in partners.items()]
        return sorted(named, key=lambda item: item[0].name.lower())
