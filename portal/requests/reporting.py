"""Partners reporting back without an account: by their request's /r/ link, or a signed API call."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import Connection, select

from portal.core.clock import utcnow
from portal.core.config import Settings
from portal.core.fields import Field, from_bits
from portal.core.printable import quoted
from portal.core.tokens import TokenExpired, partner_signer
from portal.incidents.stored import Incident, Partner
from portal.mail.renderer import Renderer
from portal.mail.webhooks import sign_webhook
from portal.requests import decisions, forwarding
from portal.requests.deletions import (
    COMPLETED,
    REJECTED,
    Actor,
    DeletionRequest,
    RequestNotFound,
    RequestRefused,
    get_request,
)
from portal.store import tables

OUTCOMES = (COMPLETED, REJECTED)
MAX_SKEW = timedelta(minutes=5)


class LinkClosed(TokenExpired):
    """The partner's link is genuine, but its request closed more than 30 days ago."""


class Unauthenticated(Exception):
    """An API call without a fresh timestamp or a signature of any partner (HTTP 401)."""


@dataclass(frozen=True)
class PartnerView:
    """A request as its partner must act on it."""

    request: DeletionRequest
    incident: Incident
    partner: Partner
    email: str | None
    fields: list[Field]
    kept: list[Field]
    verified_at: datetime
    lang: str

    @property
    def due(self) -> date:
        return self.request.due


def request_for_link(conn: Connection, settings: Settings, token: str) -> PartnerView:
    """The request behind a partner's link; raises TokenInvalid, or LinkClosed."""
    reference = partner_signer(settings).read(token)
    try:
        request = get_request(conn, reference)
    except RequestNotFound:
        raise LinkClosed from None  # purged with its incident
    closed = request.closed_at
    if closed is not None and utcnow() > closed + timedelta(days=forwarding.LINK_DAYS_AFTER_CLOSE):
        raise LinkClosed
    incident, partner = forwarding.owner_of(conn, request.partner_id)
    r = tables.deletion_requests.c
    row = conn.execute(select(r.email, r.fields, r.verified_at).where(r.id == request.id)).one()
    return PartnerView(
        request=request,
        incident=incident,
        partner=partner,
        email=row.email,
        fields=from_bits(row.fields),
        kept=from_bits(request.kept_fields),
        verified_at=row.verified_at,
        lang=forwarding.partner_language(incident, partner),
    )


def report_by_link(
    conn: Connection,
    settings: Settings,
    token: str,
    *,
    outcome: str,
    renderer: Renderer,
    **decision: object,
) -> DeletionRequest:
    """Closes the request as its partner reports on the link's page."""
    view = request_for_link(conn, settings, token)
    return _close(conn, view.request.reference, view.partner, "link", outcome, renderer, decision)


def authenticate_call(
    conn: Connection,
    *,
    reference: str,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: datetime | None = None,
) -> Partner:
    """The partner that signed this call for its own request.

    Raises Unauthenticated for a stale or missing timestamp and for a signature of no
    partner, and RequestNotFound for an unknown reference or another partner's.
    """
    now = now or utcnow()
    if not timestamp or not timestamp.isdigit() or not signature:
        raise Unauthenticated("X-Portal-Timestamp and X-Portal-Signature are required")
    if abs(_epoch(now) - int(timestamp)) > MAX_SKEW.total_seconds():
        raise Unauthenticated("the timestamp is more than 5 minutes off")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Unauthenticated("the signature does not match") from None
    try:
        request: DeletionRequest | None = get_request(conn, reference)
    except RequestNotFound:
        request = None
    if request is not None:
        own = forwarding.owner_of(conn, request.partner_id)[1]
        if own.webhook_secret and _signed_by(own.webhook_secret, timestamp, signature, text):
            return own
    if _signer(conn, timestamp, signature, text) is not None:
        raise RequestNotFound(reference)  # a partner, asking about what is not its own
    raise Unauthenticated("the signature does not match")


def _epoch(moment: datetime) -> int:
    return int((moment - datetime(1970, 1, 1)).total_seconds())


def _signer(conn: Connection, timestamp: str, signature: str, body: str) -> Partner | None:
    """The partner whose webhook secret made this signature, if any."""
    p = tables.partners.c
    rows = conn.execute(select(p.id, p.webhook_secret).where(p.webhook_secret.is_not(None)))
    for partner_id, secret in rows:
        if _signed_by(secret, timestamp, signature, body):
            return forwarding.owner_of(conn, partner_id)[1]
    return None


def _signed_by(secret: str, timestamp: str, signature: str, body: str) -> bool:
    expected = sign_webhook(secret, int(timestamp), body)
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))


def report_by_api(
    conn: Connection,
    *,
    reference: str,
    partner: Partner,
    outcome: str,
    renderer: Renderer,
    **decision: object,
) -> DeletionRequest:
    """Closes the request as its (authenticated) partner reports by API."""
    return _close(conn, reference, partner, "api", outcome, renderer, decision)


def report_by_upload(
    conn: Connection,
    *,
    reference: str,
    partner: Partner,
    outcome: str,
    renderer: Renderer,
    **decision: object,
) -> DeletionRequest:
    """Closes one request as a row of its partner's uploaded outcomes reports it: checked
    as any single report is. Another partner's reference is refused as an unknown one."""
    try:
        request: DeletionRequest | None = get_request(conn, reference)
    except RequestNotFound:
        request = None
    if request is None or request.partner_id != partner.id:
        raise RequestRefused(f"{quoted(reference)}: no such request of yours")
    return _close(conn, reference, partner, "upload", outcome, renderer, decision)


def _close(
    conn: Connection,
    reference: str,
    partner: Partner,
    via: str,
    outcome: str,
    renderer: Renderer,
    decision: dict[str, object],
) -> DeletionRequest:
    if outcome not in OUTCOMES:
        raise RequestRefused(
            f"{reference}: outcome {quoted(outcome)} is not one of: {', '.join(OUTCOMES)}",
            fields={"outcome": f"Choose one of: {', '.join(OUTCOMES)}."},
            value=outcome,
            allowed=OUTCOMES,
        )
    return decisions.change_status(
        conn,
        reference=reference,
        to=outcome,
        actor=Actor("partner", partner.slug, via),
        renderer=renderer,
        **decision,  # type: ignore[arg-type]
    )
