"""The results page's data in one query: the session, its exposures and its requests.

The page is what a person opens again and again on notice day. Its incident and partners
come from the process's cache (portal.incidents.cache); everything that is the person's
comes from one SELECT in one transaction: the session row by its cookie's hash, joined to
the exposures of its blind index at the incident's partners, each joined to the deletion
request for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, and_, exists, select

from portal.core.clock import utcnow
from portal.core.config import Settings
from portal.core.fields import from_bits
from portal.core.tokens import TokenInvalid, session_tokens, token_hash
from portal.incidents.stored import Incident, Partner
from portal.person.lookups import PartnerResult, Results, VerifiedSession
from portal.requests.deletions import DeletionRequest, request_from_row
from portal.store import tables

_REQUEST_COLUMNS = [c.label(f"request_{c.name}") for c in tables.deletion_requests.c]


@dataclass(frozen=True)
class ResultsPage:
    session: VerifiedSession
    results: Results
    requests: dict[int, DeletionRequest]
    # Addresses joined the session (portal.person.addresses): the page reads each then.
    more_addresses: bool = False


def read_results(
    conn: Connection,
    settings: Settings,
    cookie: str | None,
    *,
    incident: Incident,
    partners: list[Partner],
) -> ResultsPage | None:
    """The live session of `cookie` in `incident` with its results, or None; one query."""
    if not cookie:
        return None
    try:
        secret = session_tokens(settings).read(cookie)
    except TokenInvalid:
        return None
    rows = conn.execute(_query(token_hash(secret), incident, partners)).all()
    if not rows or rows[0].expires_at <= utcnow():
        return None
    first = rows[0]
    session = VerifiedSession(
        first.id,
        incident.id,
        incident.slug,
        first.bidx,
        first.lang,
        first.verified_at,
        secret,
        first.sealed_email,
        first.partner_id_of_session,
    )
    by_id = {partner.id: partner for partner in partners}
    found = [
        PartnerResult(by_id[row.partner_id], from_bits(row.fields))
        for row in rows
        if row.partner_id is not None
    ]
    found.sort(key=lambda result: result.partner.name.lower())
    requests = {
        row.request_partner_id: request_from_row(_unprefixed(row))
        for row in rows
        if row.request_id is not None
    }
    return ResultsPage(session, Results(incident, found), requests, bool(first.more_addresses))


def _query(hashed: bytes, incident: Incident, partners: list[Partner]) -> Any:
    s, e, d = tables.sessions, tables.exposures, tables.deletion_requests
    exposed = and_(e.c.bidx == s.c.bidx, e.c.partner_id.in_([p.id for p in partners]))
    requested = and_(
        d.c.bidx == s.c.bidx, d.c.incident_id == s.c.incident_id, d.c.partner_id == e.c.partner_id
    )
    return (
        select(
            s.c.id,
            s.c.bidx,
            s.c.lang,
            s.c.verified_at,
            s.c.expires_at,
            s.c.sealed_email,
            s.c.partner_id.label("partner_id_of_session"),
            exists().where(tables.session_addresses.c.session_id == s.c.id).label("more_addresses"),
            e.c.partner_id,
            e.c.fields,
            *_REQUEST_COLUMNS,
        )
        .select_from(s.outerjoin(e, exposed).outerjoin(d, requested))
        .where(s.c.token_hash == hashed, s.c.incident_id == incident.id)
    )


def _unprefixed(row: Any) -> Any:
    mapping = row._mapping
    return SimpleNamespace(
        **{c.name: mapping[f"request_{c.name}"] for c in tables.deletion_requests.c}
    )
