"""Several addresses in one visit: each joins the session by its own link, confirmed there.

A verified session can ask for another address's link (the lookup form on its results
page). That link remembers the session it was asked from; confirmed in the same browser
(the same session cookie) it adds the address to that session instead of starting one, up
to MAX_ADDRESSES. Confirmed anywhere else it starts a session of its own, as any link does,
so an address's results show only behind its own confirmed link. The added addresses are
sealed by the session's secret, like its first one, and go with the session.

Joining renews the session's secret (and so its cookie), as starting one would: a session
cookie planted in a browser (fixation) stops working the moment that browser's person adds
an address, so whoever planted it never sees that address's results.
"""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import Connection, select, update

from portal.core.blind_index import InvalidEmail, normalise
from portal.core.clock import utcnow
from portal.core.config import Settings
from portal.core.tokens import TokenInvalid, seal, session_tokens, token_hash, unseal
from portal.incidents import counters
from portal.mail.renderer import Renderer
from portal.person import sessions
from portal.person.sessions import LinkUsed, VerifiedSession
from portal.requests import deletions
from portal.store import db, tables

MAX_ADDRESSES = 10


class TooManyAddresses(Exception):
    """The session holds MAX_ADDRESSES already; the link stays unused."""


class UnknownAddress(LookupError):
    """Not one of the session's verified addresses."""


def confirm(
    conn: Connection, settings: Settings, token: str, cookie: str | None
) -> tuple[str, VerifiedSession]:
    """Uses a link once: into the browser's session when it was asked from that session,
    else into a new one. Returns (the session's new cookie, the session).

    Raises TooManyAddresses (nothing used) when the session is full.
    """
    secret, purpose = sessions.read_link(settings, token)
    row = sessions.link_row(conn, secret, purpose)
    session = _asking_session(conn, settings, row, cookie)
    if session is None:
        return sessions.confirm_link(conn, settings, token)
    _join(conn, session, row, secret)
    return _renew(conn, settings, session)


def _asking_session(
    conn: Connection, settings: Settings, row: object, cookie: str | None
) -> VerifiedSession | None:
    asked_from = getattr(row, "session_id", None)
    if asked_from is None:
        return None
    session = sessions.load_session(conn, settings, cookie)
    return session if session is not None and session.id == asked_from else None


def _join(conn: Connection, session: VerifiedSession, row: object, secret: bytes) -> None:
    bidx: bytes = row.bidx  # type: ignore[attr-defined]
    known = {s.bidx for s in addresses_of(conn, session)}
    if bidx not in known and len(known) >= MAX_ADDRESSES:
        raise TooManyAddresses
    now = utcnow()
    link_id = row.id  # type: ignore[attr-defined]
    used = conn.execute(
        update(tables.links)
        .where(tables.links.c.id == link_id, tables.links.c.used_at.is_(None))
        .values(used_at=now, sealed_email=None)
    )
    if used.rowcount != 1:
        raise LinkUsed
    if bidx in known:
        return
    email = unseal(secret, row.sealed_email)  # type: ignore[attr-defined]
    values = {
        "session_id": session.id,
        "bidx": bidx,
        "sealed_email": seal(session.secret, email),
        "verified_at": now,
    }
    if db.insert_ignore(conn, tables.session_addresses, values, keys=["session_id", "bidx"]):
        counters.count_visit(conn, incident_id=session.incident_id, bidx=bidx)
    if session.sealed_email is None:
        _answer_to(conn, session, email)


def _answer_to(conn: Connection, session: VerifiedSession, email: str) -> None:
    """A letter's code session that verified an address: its open requests that have no
    address get this one, for the mail that closes them (design §8)."""
    d = tables.deletion_requests.c
    conn.execute(
        update(tables.deletion_requests)
        .where(
            d.incident_id == session.incident_id,
            d.bidx == session.bidx,
            d.email.is_(None),
            d.status.in_(deletions.OPEN),
        )
        .values(email=email)
    )


def _renew(
    conn: Connection, settings: Settings, session: VerifiedSession
) -> tuple[str, VerifiedSession]:
    """A new secret for the session: its cookie changes, its addresses are sealed anew."""
    cookie, secret = session_tokens(settings).issue()
    sealed = _reseal(session.secret, secret, session.sealed_email)
    conn.execute(
        update(tables.sessions)
        .where(tables.sessions.c.id == session.id)
        .values(token_hash=token_hash(secret), sealed_email=sealed)
    )
    t = tables.session_addresses
    for row in conn.execute(select(t.c.id, t.c.sealed_email).where(t.c.session_id == session.id)):
        resealed = _reseal(session.secret, secret, row.sealed_email)
        conn.execute(update(t).where(t.c.id == row.id).values(sealed_email=resealed))
    return cookie, replace(session, secret=secret, sealed_email=sealed)


def _reseal(old: bytes, new: bytes, sealed: bytes | None) -> bytes | None:
    return None if sealed is None else seal(new, unseal(old, sealed))


def addresses_of(conn: Connection, session: VerifiedSession) -> list[VerifiedSession]:
    """The session as it stands for each of its verified addresses, its first one first."""
    t = tables.session_addresses
    rows = conn.execute(select(t).where(t.c.session_id == session.id).order_by(t.c.id)).all()
    return [session] + [
        replace(session, bidx=r.bidx, sealed_email=r.sealed_email, verified_at=r.verified_at)
        for r in rows
    ]


def for_address(
    conn: Connection, session: VerifiedSession, address: str | None
) -> tuple[int, VerifiedSession]:
    """(index, the session for it) of one verified address; no address: the first one.

    Raises UnknownAddress for any other address.
    """
    if not address:
        return 1, session
    try:
        wanted = normalise(address)
    except InvalidEmail:
        raise UnknownAddress from None
    for index, each in enumerate(addresses_of(conn, session), 1):
        if _email(each) == wanted:
            return index, each
    raise UnknownAddress


def request_deletion(
    conn: Connection,
    settings: Settings,
    session: VerifiedSession,
    *,
    partner: str,
    address: str | None,
    renderer: Renderer,
) -> int:
    """The person's request at a partner for one of the session's addresses (or at every
    partner for 'all'; 'all' without an address: for every address). Returns the address's
    index (0 for every address).

    Raises deletions.PartnerNotFound for an address not verified in this session, or a
    partner where the address does not occur.
    """
    if partner == "all" and not address:
        made = 0
        for each in addresses_of(conn, session):
            try:
                _request(conn, settings, each, partner, renderer)
                made += 1
            except deletions.PartnerNotFound:
                continue
        if not made:
            raise deletions.PartnerNotFound(partner)
        return 0
    try:
        index, each = for_address(conn, session, address)
    except UnknownAddress:
        raise deletions.PartnerNotFound(partner) from None
    _request(conn, settings, each, partner, renderer)
    return index


def _request(
    conn: Connection, settings: Settings, each: VerifiedSession, partner: str, renderer: Renderer
) -> None:
    if each.sealed_email is None:  # a letter's code: the address it verified, if any
        added = addresses_of(conn, each)[1:]
        if added:
            each = replace(each, sealed_email=added[0].sealed_email)
    deletions.request_deletion(conn, settings, each, partner=partner, renderer=renderer)


def _email(session: VerifiedSession) -> str | None:
    try:
        return session.email()
    except TokenInvalid:
        return None
