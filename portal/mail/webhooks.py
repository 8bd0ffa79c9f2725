"""Signed webhooks to partners: the signature scheme, and one POST of a queued body."""

from __future__ import annotations

import hashlib
import hmac

from sqlalchemy import Connection, select

from portal.store import tables

WEBHOOK_TIMEOUT = 10.0


class WebhookError(Exception):
    """A webhook was not accepted: no secret to sign with, or a status other than 2xx."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def sign_webhook(secret: str, timestamp: int, body: str) -> str:
    """sha256=<hex HMAC-SHA256 over "<timestamp>.<body>">, the X-Portal-Signature value."""
    digest = hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


async def post_webhook(url: str, body: str, secret: str, *, timestamp: int) -> int:
    """POSTs the signed body; returns the 2xx status, else raises WebhookError."""
    # Imported here: httpx brings its own command line (click, rich, pygments) when they
    # are installed, and every `portal` command would pay for it.
    import httpx

    headers = {
        "Content-Type": "application/json",
        "X-Portal-Timestamp": str(timestamp),
        "X-Portal-Signature": sign_webhook(secret, timestamp, body),
    }
    async with httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT) as client:
        response = await client.post(url, content=body.encode(), headers=headers)
    if not response.is_success:
        raise WebhookError(f"answered {response.status_code}", status=response.status_code)
    return response.status_code


def partner_webhook_secret(conn: Connection, deletion_request_id: int | None) -> str | None:
    """The default secret resolver: the webhook secret of the request's partner."""
    if deletion_request_id is None:
        return None
    requests, partners = tables.deletion_requests, tables.partners
    query = (
        select(partners.c.webhook_secret)
        .select_from(requests.join(partners, requests.c.partner_id == partners.c.id))
        .where(requests.c.id == deletion_request_id)
    )
    secret: str | None = conn.scalar(query)
    return secret
