"""What the person is told about their deletion requests: the receipt, an extension, the outcome."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import Connection

from portal.core.fields import from_bits
from portal.incidents.stored import Incident, Partner
from portal.mail import outbox
from portal.mail.renderer import Renderer

# The right to complain (GDPR Art. 77) goes to the Dutch supervisory authority.
REGULATOR = {"name": "Autoriteit Persoonsgegevens", "website": "autoriteitpersoonsgegevens.nl"}


@dataclass(frozen=True)
class Receipted:
    """One request named in a receipt."""

    reference: str
    partner: str
    due_on: date


def send_receipt(
    conn: Connection,
    *,
    to: str,
    lang: str,
    incident: Incident,
    requests: list[Receipted],
    renderer: Renderer,
) -> None:
    """At once, with the reference, the partner, the due date and what happens next."""
    made = [{"reference": r.reference, "partner": r.partner, "due_on": r.due_on} for r in requests]
    _send(conn, renderer, "deletion_receipt", to, lang, incident, None, requests=made)


def send_extension(
    conn: Connection,
    *,
    to: str,
    lang: str,
    reference: str,
    incident: Incident,
    partner: Partner,
    due_on: date,
    reason: str,
    renderer: Renderer,
    request_id: int,
) -> None:
    """The new due date and why it was moved."""
    context = {"partner": partner.name, "reference": reference, "due_on": due_on, "reason": reason}
    _send(conn, renderer, "deletion_extended", to, lang, incident, request_id, **context)


def send_outcome(
    conn: Connection,
    *,
    to: str,
    lang: str,
    reference: str,
    incident: Incident,
    partner: Partner,
    status: str,
    ground: str | None,
    reason: str | None,
    note: str | None,
    kept_fields: int,
    renderer: Renderer,
    request_id: int,
) -> None:
    """Completed or rejected, with the reason; a rejection names the right to complain."""
    name = "deletion_completed" if status == "completed" else "deletion_rejected"
    _send(
        conn,
        renderer,
        name,
        to,
        lang,
        incident,
        request_id,
        partner=partner.name,
        reference=reference,
        ground=ground,
        reason=reason,
        note=note,
        kept=from_bits(kept_fields),
        regulator=REGULATOR,
    )


def _send(
    conn: Connection,
    renderer: Renderer,
    name: str,
    to: str,
    lang: str,
    incident: Incident,
    request_id: int | None,
    **context: object,
) -> None:
    """Renders emails/<name>/ for the person and queues it, on the organisation's behalf."""
    message = renderer.email(
        name,
        lang,
        incident_title=incident.text(incident.title, lang),
        contact_email=incident.contact_email,
        organisation=incident.organisation,
        website=incident.website,
        **context,
    )
    outbox.enqueue_email(
        conn,
        kind=name,
        to=to,
        message=message,
        deletion_request_id=request_id,
        sender_name=incident.organisation,
    )
