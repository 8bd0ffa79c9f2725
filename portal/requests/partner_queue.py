"""A partner's queue (design §8): its open requests as a page and a CSV, and outcomes uploaded
as a CSV, each row checked as a single report is (reporting.report_by_upload)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

from sqlalchemy import Connection, Engine, insert, select

from portal.core.clock import utcnow
from portal.core.config import Settings
from portal.core.errors import PortalError
from portal.core.fields import Field, from_bits
from portal.core.files import neutralise
from portal.core.tokens import TokenInvalid, partner_queue_signer
from portal.incidents.stored import Incident, Partner
from portal.mail.renderer import Renderer
from portal.requests import forwarding, reporting
from portal.requests.deletions import OPEN, RequestRefused
from portal.store import audit, tables

UPLOAD_MAX_BYTES = 5 * 1024 * 1024  # the largest file of outcomes taken
HEADER = ("reference", "outcome", "ground", "reason", "partner_reference")
CSV_COLUMNS = ("reference", "email", "fields", "received", "due", "status")
# A refusal repeats what a row said: an address typed in the wrong column is not kept.
_ADDRESS = re.compile(r"[^\s@'\"]+@[^\s@'\"]+")


class BadUpload(PortalError):
    """A file that is not a CSV of outcomes: nothing of it is applied (HTTP 400)."""


@dataclass(frozen=True)
class Owner:
    """The partner a queue link is for."""

    incident: Incident
    partner: Partner
    lang: str

    @property
    def label(self) -> str:
        return f"{self.incident.slug}/{self.partner.slug}"


@dataclass(frozen=True)
class Queued:
    """One open request as the partner must act on it."""

    reference: str
    email: str | None
    fields: list[Field]
    received: date
    due: date
    status: str


@dataclass(frozen=True)
class Upload:
    """What an upload of outcomes came to: each refused row with its line and reason."""

    applied: int
    refused: int
    refusals: list[tuple[int, str]]


@dataclass(frozen=True)
class OutcomeRow:
    """One row of an uploaded file, with its line number."""

    line: int
    reference: str
    outcome: str
    ground: str | None
    reason: str | None
    partner_reference: str | None


def owner_of_link(conn: Connection, settings: Settings, token: str) -> Owner:
    """The partner behind a queue link; raises TokenExpired after 30 days, TokenInvalid."""
    value = partner_queue_signer(settings).read(token)
    p = tables.partners.c
    if not value.isdigit() or conn.scalar(select(p.id).where(p.id == int(value))) is None:
        raise TokenInvalid  # the partner is gone with its incident
    incident, partner = forwarding.owner_of(conn, int(value))
    return Owner(incident, partner, forwarding.partner_language(incident, partner))


def open_requests(conn: Connection, owner: Owner) -> list[Queued]:
    """The partner's open requests, soonest due first."""
    r = tables.deletion_requests.c
    rows = conn.execute(
        select(tables.deletion_requests)
        .where(r.partner_id == owner.partner.id, r.status.in_(OPEN))
        .order_by(r.due_on, r.reference)
    ).all()
    return [
        Queued(
            row.reference,
            row.email,
            from_bits(row.fields),
            row.received_at.date(),
            row.extended_due_on or row.due_on,
            row.status,
        )
        for row in rows
    ]


def view_queue(
    conn: Connection, settings: Settings, token: str, *, upload_id: int | None = None
) -> tuple[Owner, list[Queued], Upload | None]:
    """The queue page's content, the view audited (without an address)."""
    owner = owner_of_link(conn, settings, token)
    queued = open_requests(conn, owner)
    audit.record(
        conn,
        actor=f"partner:{owner.partner.slug}",
        action="partner_queue_viewed",
        object=owner.label,
        detail=f"{len(queued)} open request(s)",
    )
    return owner, queued, _upload(conn, owner, upload_id)


def _upload(conn: Connection, owner: Owner, upload_id: int | None) -> Upload | None:
    if upload_id is None:
        return None
    u = tables.partner_uploads.c
    row = conn.execute(
        select(u.applied, u.refused, u.refusals).where(
            u.id == upload_id, u.partner_id == owner.partner.id
        )
    ).first()
    if row is None:
        return None  # another partner's upload, or a made-up number: nothing to show
    return Upload(row.applied, row.refused, [(n, why) for n, why in json.loads(row.refusals)])


def queue_csv(conn: Connection, settings: Settings, token: str) -> tuple[Owner, bytes]:
    """The open requests as CSV (cells formula-neutralised), the download audited."""
    owner = owner_of_link(conn, settings, token)
    queued = open_requests(conn, owner)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for q in queued:
        cells = [
            q.reference,
            q.email or "",
            " ".join(f.key for f in q.fields),
            q.received.isoformat(),
            q.due.isoformat(),
            q.status,
        ]
        writer.writerow([neutralise(cell) for cell in cells])
    audit.record(
        conn,
        actor=f"partner:{owner.partner.slug}",
        action="partner_queue_downloaded",
        object=owner.label,
        detail=f"{len(queued)} request(s)",
    )
    return owner, out.getvalue().encode("utf-8")


# -- uploads ---------------------------------------------------------------------------


def read_outcomes(data: bytes) -> list[OutcomeRow]:
    """Every row of an uploaded file; raises BadUpload, naming the line, for a file that
    is not a whole CSV of outcomes (so that nothing of it is applied)."""
    if len(data) > UPLOAD_MAX_BYTES:
        raise BadUpload("the file is over 5 MB: split it in parts")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        where = f"byte {exc.start + 1}"
        raise BadUpload(f"the file is not UTF-8 ({where}): save it as UTF-8 CSV") from None
    return list(_rows(text))


def _rows(text: str) -> Iterator[OutcomeRow]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [cell.strip().lower() for cell in next(reader, [])]
        if tuple(header) != HEADER:
            raise BadUpload(f"line 1: the header must be {','.join(HEADER)}")
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) > len(HEADER):
                raise BadUpload(
                    f"line {reader.line_num}: {len(cells)} cells, the header has {len(HEADER)}"
                )
            yield _row(reader.line_num, [*cells, *[""] * (len(HEADER) - len(cells))])
    except csv.Error as exc:
        raise BadUpload(f"line {reader.line_num}: {exc} (is a quote left open?)") from None


def _row(line: int, cells: list[str]) -> OutcomeRow:
    reference, outcome, ground, reason, own = (cell.strip() for cell in cells)
    return OutcomeRow(line, reference, outcome, ground or None, reason or None, own or None)


def apply_outcomes(
    engine: Engine,
    settings: Settings,
    token: str,
    rows: list[OutcomeRow],
    *,
    renderer: Renderer,
) -> int:
    """Applies each row as a single report, each in its own transaction; records and audits
    what the upload came to, and returns its id for the page to show."""
    with engine.connect() as conn:
        owner = owner_of_link(conn, settings, token)
    refusals: list[tuple[int, str]] = []
    for row in rows:
        try:
            with engine.begin() as conn:
                reporting.report_by_upload(
                    conn,
                    reference=row.reference,
                    partner=owner.partner,
                    outcome=row.outcome,
                    renderer=renderer,
                    ground=row.ground,
                    reason=row.reason,
                    partner_reference=row.partner_reference,
                )
        except RequestRefused as exc:
            refusals.append((row.line, _ADDRESS.sub("(an address)", str(exc))))
    with engine.begin() as conn:
        return _record_upload(conn, owner, applied=len(rows) - len(refusals), refusals=refusals)


def _record_upload(
    conn: Connection, owner: Owner, *, applied: int, refusals: list[tuple[int, str]]
) -> int:
    upload_id: int = conn.execute(
        insert(tables.partner_uploads)
        .values(
            partner_id=owner.partner.id,
            at=utcnow(),
            applied=applied,
            refused=len(refusals),
            refusals=json.dumps(refusals, ensure_ascii=False),
        )
        .returning(tables.partner_uploads.c.id)
    ).scalar_one()
    audit.record(
        conn,
        actor=f"partner:{owner.partner.slug}",
        action="partner_outcomes_uploaded",
        object=owner.label,
        detail=f"{applied} applied, {len(refusals)} refused",
    )
    return upload_id


def refused_upload(conn: Connection, settings: Settings, token: str, why: str) -> Owner:
    """Audits a file refused whole (the reason names a line, never a cell's text)."""
    owner = owner_of_link(conn, settings, token)
    audit.record(
        conn,
        actor=f"partner:{owner.partner.slug}",
        action="partner_outcomes_refused",
        object=owner.label,
        detail=why[:200],
    )
    return owner
