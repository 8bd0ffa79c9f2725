"""A session's results, read in one place: one query for every address the session verified,
then put in the order a person should read them (worst first, advice once).

The page is what a person opens again and again on notice day. Its incident and partners
come from the process's cache (portal.incidents.cache); everything that is the person's
comes from one SELECT in one transaction: the session row by its cookie's hash, joined to
each of its verified addresses (its first one, then those that joined it:
portal.person.addresses), each joined to its exposures at the incident's partners and to
the deletion request for each.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, replace
from functools import cache
from itertools import groupby
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, and_, bindparam, literal, select, union_all

from portal.core.clock import utcnow
from portal.core.config import Settings
from portal.core.fields import Field, from_bits
from portal.core.tokens import TokenInvalid, session_tokens, token_hash
from portal.incidents.stored import Incident, Partner
from portal.person.sessions import VerifiedSession
from portal.requests.deletions import DeletionRequest, request_from_row
from portal.store import tables

_REQUEST_COLUMNS = [c.label(f"request_{c.name}") for c in tables.deletion_requests.c]


@dataclass(frozen=True)
class PartnerResult:
    partner: Partner
    fields: list[Field]


@dataclass(frozen=True)
class Results:
    """Per partner where one address occurs (by name), the fields exposed there."""

    incident: Incident
    partners: list[PartnerResult]

    @property
    def advice(self) -> list[Field]:
        """The union of advice over every exposed field, most serious first."""
        seen: dict[str, Field] = {}
        for result in self.partners:
            for field in result.fields:
                seen[field.key] = field
        return sorted(seen.values(), key=lambda f: -f.severity)


@dataclass(frozen=True)
class AddressResults:
    """One verified address of a session and what the results page shows for it."""

    index: int  # 1 for the session's first address
    results: Results
    view: ResultsView


@dataclass(frozen=True)
class ResultsPage:
    session: VerifiedSession
    addresses: list[AddressResults]  # the session's first address first

    def layout(self) -> Hashable | None:
        """What the page shows but its addresses: per address, the partners in order and
        their fields; None once a deletion request shows (its reference and dates are the
        person's alone). No address, no blind index: a key that many people share."""
        if any(shown.request for each in self.addresses for shown in each.view.partners):
            return None
        return tuple(
            (
                each.view.address is None,
                tuple((s.partner.id, tuple(f.key for f in s.fields)) for s in each.view.partners),
            )
            for each in self.addresses
        )

    def with_addresses(self, shown: list[str | None]) -> list[AddressResults]:
        """The addresses' results, each showing `shown[i]` as its address (a stand-in)."""
        return [
            replace(each, view=replace(each.view, address=address))
            for each, address in zip(self.addresses, shown, strict=True)
        ]


def read_results(
    conn: Connection,
    settings: Settings,
    cookie: str | None,
    *,
    incident: Incident,
    partners: list[Partner],
) -> ResultsPage | None:
    """The live session of `cookie` in `incident` with the results of every address it
    verified, or None; one query."""
    if not cookie:
        return None
    try:
        secret = session_tokens(settings).read(cookie)
    except TokenInvalid:
        return None
    rows = conn.execute(
        _query(),
        {
            "token_hash": token_hash(secret),
            "incident_id": incident.id,
            "partner_ids": [p.id for p in partners],
        },
    ).all()
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
    shown = [
        _address_results(index, session, list(group), incident, by_id)
        for index, (_, group) in enumerate(groupby(rows, key=lambda row: row.position), 1)
    ]
    return ResultsPage(session, shown)


def _address_results(
    index: int,
    session: VerifiedSession,
    rows: list[Any],
    incident: Incident,
    by_id: dict[int, Partner],
) -> AddressResults:
    row = rows[0]
    each = replace(
        session,
        bidx=row.address_bidx,
        sealed_email=row.address_sealed_email,
        verified_at=row.address_verified_at,
    )
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
    results = Results(incident, found)
    view = results_view(results, requests, address=_email(each), first=session.partner_id)
    return AddressResults(index, results, view)


@cache
def _query() -> Any:
    """The one statement, built once: SQLAlchemy compiles it once too (its compiled cache
    is keyed on the statement's structure), and a page passes only its parameters."""
    s, a, e, d = (
        tables.sessions,
        tables.session_addresses,
        tables.exposures,
        tables.deletion_requests,
    )
    this = and_(
        s.c.token_hash == bindparam("token_hash"), s.c.incident_id == bindparam("incident_id")
    )
    addresses = union_all(
        select(
            s.c.id.label("session_id"),
            literal(0).label("position"),
            s.c.bidx,
            s.c.sealed_email,
            s.c.verified_at,
        ).where(this),
        select(a.c.session_id, a.c.id, a.c.bidx, a.c.sealed_email, a.c.verified_at)
        .join(s, a.c.session_id == s.c.id)
        .where(this),
    ).subquery("addresses")
    exposed = and_(
        e.c.bidx == addresses.c.bidx,
        e.c.partner_id.in_(bindparam("partner_ids", expanding=True)),
    )
    requested = and_(
        d.c.bidx == addresses.c.bidx,
        d.c.incident_id == s.c.incident_id,
        d.c.partner_id == e.c.partner_id,
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
            addresses.c.position,
            addresses.c.bidx.label("address_bidx"),
            addresses.c.sealed_email.label("address_sealed_email"),
            addresses.c.verified_at.label("address_verified_at"),
            e.c.partner_id,
            e.c.fields,
            *_REQUEST_COLUMNS,
        )
        .select_from(
            s.join(addresses, addresses.c.session_id == s.c.id)
            .outerjoin(e, exposed)
            .outerjoin(d, requested)
        )
        .where(this)
        .order_by(addresses.c.position)
    )


def _unprefixed(row: Any) -> Any:
    mapping = row._mapping
    return SimpleNamespace(
        **{c.name: mapping[f"request_{c.name}"] for c in tables.deletion_requests.c}
    )


def _email(session: VerifiedSession) -> str | None:
    try:
        return session.email()
    except TokenInvalid:
        return None


# -- in reading order ------------------------------------------------------------------


@dataclass(frozen=True)
class PartnerShown:
    partner: Partner
    fields: list[Field]  # most serious first
    request: DeletionRequest | None

    @property
    def severity(self) -> int:
        return max(f.severity for f in self.fields)

    @property
    def possible(self) -> bool:
        return self.partner.certainty == "possible"

    @property
    def by_severity(self) -> list[tuple[int, list[Field]]]:
        """What leaked here at a glance: the fields per severity, the most serious first."""
        return by_severity(self.fields)


@dataclass(frozen=True)
class ResultsView:
    address: str | None
    partners: list[PartnerShown]

    @property
    def worst(self) -> tuple[Field, PartnerShown] | None:
        """The most serious exposed field, and the first partner listed where it leaked."""
        if not self.partners:
            return None
        worst = max(self.partners, key=lambda p: p.severity)
        return worst.fields[0], worst

    @property
    def without_request(self) -> list[PartnerShown]:
        return [p for p in self.partners if p.request is None]


def results_view(
    results: Results,
    requests: dict[int, DeletionRequest],
    *,
    address: str | None,
    first: int | None = None,
) -> ResultsView:
    """Partners by their most serious field (then by how much leaked, then by name), the
    partner `first` (an entry page's, by id) before them all."""
    ordered = sorted(results.partners, key=lambda r: (r.partner.id != first, *_seriousness(r)))
    shown = [
        PartnerShown(
            r.partner, sorted(r.fields, key=lambda f: -f.severity), requests.get(r.partner.id)
        )
        for r in ordered
    ]
    return ResultsView(address, shown)


def advice_once(views: Iterable[ResultsView]) -> list[tuple[int, list[Field]]]:
    """Each field exposed anywhere on the page once, per severity, the most serious first;
    within one severity in the order the page first shows them."""
    seen: dict[str, Field] = {}
    for view in views:
        for shown in view.partners:
            for field in shown.fields:
                seen.setdefault(field.key, field)
    return by_severity(list(seen.values()))


def by_severity(fields: list[Field]) -> list[tuple[int, list[Field]]]:
    ordered = sorted(fields, key=lambda f: -f.severity)  # stable: keeps the order within one
    return [(level, list(group)) for level, group in groupby(ordered, key=lambda f: f.severity)]


def _seriousness(result: PartnerResult) -> tuple[int, int, int, str]:
    worst = max((f.severity for f in result.fields), default=0)
    at_worst = sum(f.severity == worst for f in result.fields)
    return (-worst, -at_worst, -len(result.fields), result.partner.name.lower())
