"""What operators and partners decide about a request: close it, extend it, forward it again.

Each decision is checked against the lifecycle of deletions.py and written with a guarded
UPDATE, so that of two decisions made at once exactly one is written and the other is told.
Every refusal is a `RequestRefused` with a message for the operator or the partner (409).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import Connection, select, update

from portal.core.clock import utcnow
from portal.core.config import Settings
from portal.core.i18n import N_
from portal.core.printable import quoted
from portal.mail.renderer import Renderer
from portal.requests import forwarding, receipts
from portal.requests.deletions import (
    CLOSED,
    EXTENSION_MONTHS,
    FORWARD_FAILED,
    FORWARDED,
    GROUNDS,
    NEXT,
    REJECTED,
    Actor,
    DeletionRequest,
    RequestRefused,
    add_months,
    get_request,
    record_change,
    record_event,
    request_row,
)
from portal.store import audit, tables

MAX_TEXT = 2000
# Beside the fields of a rejection that lacks them; the admin area shows them translated.
NEEDS_GROUND = N_(
    "Choose the ground of the rejection (legal_obligation, legal_claims, public_interest, other)."
)
NEEDS_REASON = N_("Write the reason the person will read.")
NEEDS_MONTHS = N_("Choose 1 or 2 months.")


def change_status(
    conn: Connection,
    *,
    reference: str,
    to: str,
    actor: Actor,
    renderer: Renderer,
    version: int | None = None,
    note: str | None = None,
    ground: str | None = None,
    reason: str | None = None,
    partner_reference: str | None = None,
    kept_fields: int = 0,
) -> DeletionRequest:
    """Moves a request to `to`; a closing tells the person the outcome.

    `version` is the one the deciding form showed: if someone else decided meanwhile the
    change is refused rather than written over theirs.
    """
    note, reason = _text(note), _text(reason)
    if to == REJECTED:
        _check_rejection(reference, ground, reason)
    values: dict[str, Any] = {"status": to}
    if to == FORWARDED:
        values["forwarded_at"] = utcnow()
    if to in CLOSED:
        values |= {
            "closed_at": utcnow(),
            "closed_by": actor.label,
            "closed_via": actor.via,
            "ground": ground if to == REJECTED else None,
            "reason": reason,
            "note": note,
            "partner_reference": _text(partner_reference, 200),
            "kept_fields": kept_fields if to == REJECTED else None,
        }
    old = _decide(
        conn, reference, actor, version, values, lambda current: _allowed(current, to), "status"
    )
    record_change(
        conn, request_id=old.id, actor=actor.label, old=old.status, new=to, note=note, via=actor.via
    )
    detail = f"via {actor.via}" + (f", ground {ground}" if to == REJECTED else "")
    audit.record(conn, actor=actor.label, action=f"request_{to}", object=reference, detail=detail)
    changed = get_request(conn, reference)
    if to in CLOSED:
        _tell_outcome(conn, changed, renderer)
    return changed


def _check_rejection(reference: str, ground: str | None, reason: str | None) -> None:
    """A rejection names one of the grounds, and the reason the person will read."""
    if ground and ground not in GROUNDS:
        raise RequestRefused(
            f"{reference}: ground {quoted(ground)} is not one of: {', '.join(GROUNDS)}",
            fields={"ground": NEEDS_GROUND},
            value=ground,
            allowed=GROUNDS,
        )
    if not ground or not reason:
        missing = ({} if ground else {"ground": NEEDS_GROUND}) | (
            {} if reason else {"reason": NEEDS_REASON}
        )
        raise RequestRefused(
            f"{reference}: a rejection needs a ground ({', '.join(GROUNDS)}) and a reason "
            f"the person will read: {next(iter(missing))} is required",
            fields=missing,
            allowed=() if ground else GROUNDS,
        )


def extend(
    conn: Connection,
    *,
    reference: str,
    months: int,
    reason: str | None,
    actor: Actor,
    renderer: Renderer,
    version: int | None = None,
    today: date | None = None,
) -> DeletionRequest:
    """Moves the due date once, by one or two months, before it has passed; tells the person."""
    today = today or utcnow().date()
    reason = _check_extension(reference, months, _text(reason))
    current = get_request(conn, reference)
    new_due = add_months(current.due_on, months)
    old = _decide(
        conn,
        reference,
        actor,
        version,
        {"extended_due_on": new_due, "extension_reason": reason},
        lambda current: _not_extendable(current, today),
    )
    plural = "s" if months > 1 else ""
    note = f"due date moved from {old.due_on} to {new_due} ({months} month{plural}): {reason}"
    record_event(
        conn,
        request_id=old.id,
        actor=actor.label,
        old=old.status,
        new=old.status,
        note=note,
        via=actor.via,
    )
    audit.record(
        conn,
        actor=actor.label,
        action="request_extended",
        object=reference,
        detail=f"via {actor.via}, {months} month{plural} to {new_due}",
    )
    changed = get_request(conn, reference)
    _tell_extension(conn, changed, reason, renderer)
    return changed


def _check_extension(reference: str, months: int, reason: str | None) -> str:
    """The reason, when the extension asked for is one the lifecycle allows."""
    if months not in EXTENSION_MONTHS:
        raise RequestRefused(
            f"{reference}: an extension is 1 or 2 months",
            fields={"months": NEEDS_MONTHS},
        )
    if not reason:
        raise RequestRefused(
            f"{reference}: an extension needs a reason the person will read",
            fields={"reason": NEEDS_REASON},
        )
    return reason


def _not_extendable(current: DeletionRequest, today: date) -> str | None:
    """Why the request cannot be extended now, or None: once, while open, before it is due."""
    reference = current.reference
    if current.is_closed:
        return f"{reference} is {current.status}: a closed request is not extended"
    if current.extended_due_on is not None:
        return (
            f"{reference} was extended once already (to {current.extended_due_on}); "
            "a request is extended only once"
        )
    if today > current.due_on:
        return (
            f"{reference}: the due date {current.due_on} has passed; "
            "an extension must be made before it"
        )
    return None


def _tell_extension(
    conn: Connection, changed: DeletionRequest, reason: str, renderer: Renderer
) -> None:
    """Mails the person the new due date and why, while the request still has their address."""
    incident, partner = forwarding.owner_of(conn, changed.partner_id)
    email = _email_of(conn, changed.id)
    if email:
        receipts.send_extension(
            conn,
            to=email,
            lang=changed.lang,
            reference=changed.reference,
            incident=incident,
            partner=partner,
            due_on=changed.due,
            reason=reason,
            renderer=renderer,
            request_id=changed.id,
        )


def retry(
    conn: Connection,
    settings: Settings,
    *,
    reference: str,
    actor: Actor,
    renderer: Renderer,
    version: int | None = None,
) -> DeletionRequest:
    """Queues a forward_failed request to its partner again; it becomes forwarded on delivery."""

    def check(current: DeletionRequest) -> str | None:
        if current.status != FORWARD_FAILED:
            return f"{reference} is {current.status}: only a forward_failed request is retried"
        return None

    old = _decide(conn, reference, actor, version, {}, check)
    record_event(
        conn, request_id=old.id, actor=actor.label, old=old.status, new=old.status,
        note="forwarding queued again", via=actor.via,
    )  # fmt: skip
    audit.record(conn, actor=actor.label, action="request_retried", object=reference)
    incident, partner = forwarding.owner_of(conn, old.partner_id)
    forwarding.forward(
        conn, settings, incident, partner, request_row(conn, reference), renderer=renderer
    )
    return get_request(conn, reference)


def _allowed(current: DeletionRequest, to: str) -> str | None:
    if to in NEXT.get(current.status, frozenset()):
        return None
    if current.is_closed:
        return f"{current.reference} is {current.status} already: a closed request is final"
    allowed = ", ".join(sorted(NEXT.get(current.status, ()))) or "none"
    return f"{current.reference}: cannot go from {current.status} to {to} (allowed: {allowed})"


def _decide(
    conn: Connection,
    reference: str,
    actor: Actor,
    version: int | None,
    values: dict[str, Any],
    check: Any,
    field: str | None = None,
) -> DeletionRequest:
    """Writes a decision with a guarded UPDATE; returns the request as it was before.

    The UPDATE matches only the status and version just read, so of two decisions made at
    once exactly one is written; the other is told. A move by the mail worker (which leaves
    the version alone) between the read and the write is read again, not refused. What
    `check` refuses is laid at `field`'s door, when the form has one to blame.
    """
    t = tables.deletion_requests
    for _attempt in range(3):
        current = get_request(conn, reference)
        if version is not None and current.version != version:
            raise RequestRefused(_changed_meanwhile(current))
        problem = check(current)
        if problem:
            raise RequestRefused(problem, fields={field: problem} if field else None)
        written = conn.execute(
            update(t)
            .where(
                t.c.id == current.id, t.c.status == current.status, t.c.version == current.version
            )
            .values(values | {"version": current.version + 1})
        )
        if written.rowcount == 1:
            return current
        if get_request(conn, reference).version != current.version:
            raise RequestRefused(_changed_meanwhile(get_request(conn, reference)))
    raise RequestRefused(f"{reference} keeps changing; try again")


def _changed_meanwhile(current: DeletionRequest) -> str:
    who = f" by {current.closed_by.replace(':', ' ')}" if current.closed_by else ""
    return (
        f"{current.reference} was changed meanwhile (it is now {current.status}{who}); "
        "reload the page and look again"
    )


def _tell_outcome(conn: Connection, request: DeletionRequest, renderer: Renderer) -> None:
    email = _email_of(conn, request.id)
    if not email:
        return
    incident, partner = forwarding.owner_of(conn, request.partner_id)
    receipts.send_outcome(
        conn,
        to=email,
        lang=request.lang,
        reference=request.reference,
        incident=incident,
        partner=partner,
        status=request.status,
        ground=request.ground,
        reason=request.reason,
        note=request.note,
        kept_fields=request.kept_fields,
        renderer=renderer,
        request_id=request.id,
    )


def _email_of(conn: Connection, request_id: int) -> str | None:
    t = tables.deletion_requests
    email: str | None = conn.scalar(select(t.c.email).where(t.c.id == request_id))
    return email


def _text(value: str | None, limit: int = MAX_TEXT) -> str | None:
    value = (value or "").strip()
    return value[:limit] or None
