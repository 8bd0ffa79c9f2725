"""Lookups through the lookup queue: an address to a queued link, a used link to results."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
from sqlalchemy import Engine, func, select, update

from portal.core.clock import utcnow
from portal.core.config import Settings
from portal.core.errors import PortalError
from portal.core.fields import BY_KEY
from portal.core.tokens import TokenExpired, TokenInvalid
from portal.incidents.stored import get_incident, get_partners
from portal.person.ratelimit import RateLimiter
from portal.person.results import Results, read_results
from portal.person.sessions import LinkUsed, confirm_link, load_session, peek_link
from portal.store import tables
from tests.factories import (
    ALICE,
    BOB,
    CAROL,
    ask_link,
    link_mails,
    load_personas,
    sign_in_directly,
)

SLUG = "ticketing-2021"


@pytest.fixture
def personas(engine: Engine, settings: Settings, tmp_path: Path) -> Engine:
    load_personas(engine, settings, tmp_path)
    return engine


def results_of(engine: Engine, settings: Settings, address: str) -> Results:
    """Signs `address` in and reads its results as the results page does (one query)."""
    anyio.run(ask_link, engine, settings, RateLimiter(settings), address)
    _, token = link_mails(engine)[-1]
    with engine.begin() as conn:
        cookie, _ = confirm_link(conn, settings, token)
        incident = get_incident(conn, SLUG)
        assert incident is not None
        partners = get_partners(conn, incident.id)
        page = read_results(conn, settings, cookie, incident=incident, partners=partners)
    assert page is not None
    [first] = page.addresses
    return first.results


@pytest.mark.anyio
async def test_it_queues_one_link_for_a_valid_lookup(personas: Engine, settings: Settings) -> None:
    assert await ask_link(personas, settings, RateLimiter(settings), ALICE)
    mails = link_mails(personas)
    assert [recipient for recipient, _ in mails] == [ALICE]
    with personas.connect() as conn:
        link = conn.execute(select(tables.links)).one()
    assert link.sealed_email is not None
    assert ALICE.encode() not in link.sealed_email
    assert link.expires_at - link.created_at == timedelta(seconds=settings.link_ttl)


@pytest.mark.anyio
async def test_it_queues_a_link_for_an_address_not_in_the_data(
    personas: Engine, settings: Settings
) -> None:
    assert await ask_link(personas, settings, RateLimiter(settings), CAROL)
    assert [recipient for recipient, _ in link_mails(personas)] == [CAROL]


@pytest.mark.anyio
async def test_it_queues_nothing_for_an_unknown_incident(
    personas: Engine, settings: Settings
) -> None:
    limiter = RateLimiter(settings)
    assert not await ask_link(personas, settings, limiter, ALICE, incident="no-such-breach")
    assert link_mails(personas) == []


@pytest.mark.anyio
async def test_it_queues_nothing_once_the_client_limit_is_reached(
    personas: Engine, settings: Settings
) -> None:
    settings = replace(settings, limit_per_client="1/hour")
    limiter = RateLimiter(settings)
    assert await ask_link(personas, settings, limiter, ALICE)
    assert not await ask_link(personas, settings, limiter, BOB)
    assert await ask_link(personas, settings, limiter, BOB, client="198.51.100.9")
    assert [recipient for recipient, _ in link_mails(personas)] == [ALICE, BOB]


@pytest.mark.anyio
async def test_it_queues_nothing_once_the_address_limit_is_reached(
    personas: Engine, settings: Settings
) -> None:
    settings = replace(settings, limit_per_address="1/hour")
    limiter = RateLimiter(settings)
    assert await ask_link(personas, settings, limiter, ALICE)
    assert not await ask_link(personas, settings, limiter, ALICE, client="198.51.100.9")
    assert await ask_link(personas, settings, limiter, BOB)
    assert [recipient for recipient, _ in link_mails(personas)] == [ALICE, BOB]


def test_it_uses_a_link_only_once(personas: Engine, settings: Settings) -> None:
    session = sign_in_directly(personas, settings, ALICE)
    assert session.incident_slug == SLUG
    assert session.email() == ALICE
    _, token = link_mails(personas)[-1]
    with personas.begin() as conn, pytest.raises(LinkUsed):
        confirm_link(conn, settings, token)
    with personas.connect() as conn:
        assert conn.scalar(select(tables.links.c.sealed_email)) is None
        with pytest.raises(LinkUsed):
            peek_link(conn, settings, token)


def test_it_lets_a_link_be_looked_at_without_using_it(personas: Engine, settings: Settings) -> None:
    anyio.run(ask_link, personas, settings, RateLimiter(settings), BOB)
    _, token = link_mails(personas)[-1]
    with personas.connect() as conn:
        assert peek_link(conn, settings, token) == SLUG
        assert peek_link(conn, settings, token) == SLUG
    with personas.begin() as conn:
        assert confirm_link(conn, settings, token)[1].email() == BOB


def test_it_refuses_a_link_past_its_expiry(personas: Engine, settings: Settings) -> None:
    anyio.run(ask_link, personas, settings, RateLimiter(settings), BOB)
    _, token = link_mails(personas)[-1]
    with personas.begin() as conn:
        conn.execute(update(tables.links).values(expires_at=utcnow() - timedelta(seconds=1)))
    with personas.begin() as conn, pytest.raises(TokenExpired):
        confirm_link(conn, settings, token)


def test_it_refuses_a_forged_link(personas: Engine, settings: Settings) -> None:
    with personas.begin() as conn, pytest.raises(TokenInvalid):
        confirm_link(conn, settings, "forged.token.value")
    other = replace(settings, secret_key="another-key")
    anyio.run(ask_link, personas, other, RateLimiter(other), BOB)
    _, token = link_mails(personas)[-1]
    with personas.begin() as conn, pytest.raises(TokenInvalid):
        confirm_link(conn, settings, token)


def test_it_loads_a_live_session_from_its_cookie(personas: Engine, settings: Settings) -> None:
    anyio.run(ask_link, personas, settings, RateLimiter(settings), ALICE)
    _, token = link_mails(personas)[-1]
    with personas.begin() as conn:
        cookie, started = confirm_link(conn, settings, token)
    with personas.connect() as conn:
        loaded = load_session(conn, settings, cookie)
    assert loaded is not None
    assert (loaded.id, loaded.bidx, loaded.incident_slug) == (
        started.id,
        started.bidx,
        started.incident_slug,
    )
    assert loaded.email() == ALICE


def test_it_forgets_a_session_after_it_expires(personas: Engine, settings: Settings) -> None:
    anyio.run(ask_link, personas, settings, RateLimiter(settings), ALICE)
    _, token = link_mails(personas)[-1]
    with personas.begin() as conn:
        cookie, _ = confirm_link(conn, settings, token)
        conn.execute(update(tables.sessions).values(expires_at=utcnow() - timedelta(seconds=1)))
    with personas.connect() as conn:
        assert load_session(conn, settings, cookie) is None


def test_it_loads_no_session_from_a_bad_cookie(personas: Engine, settings: Settings) -> None:
    with personas.connect() as conn:
        assert load_session(conn, settings, None) is None
        assert load_session(conn, settings, "") is None
        assert load_session(conn, settings, "garbage") is None


def test_it_refuses_a_link_token_as_a_session_cookie(personas: Engine, settings: Settings) -> None:
    anyio.run(ask_link, personas, settings, RateLimiter(settings), ALICE)
    _, token = link_mails(personas)[-1]
    with personas.begin() as conn:
        confirm_link(conn, settings, token)
    with personas.connect() as conn:
        assert load_session(conn, settings, token) is None


def test_it_shows_alice_her_partners_by_name_with_serious_fields_first(
    personas: Engine, settings: Settings
) -> None:
    results = results_of(personas, settings, ALICE)
    assert [r.partner.slug for r in results.partners] == ["park-a", "theater-b"]
    park, theater = results.partners
    assert {f.key for f in park.fields} == {"email", "name", "phone", "postcode"}
    assert {f.key for f in theater.fields} == {"email", "name", "iban"}
    for result in results.partners:
        severities = [f.severity for f in result.fields]
        assert severities == sorted(severities, reverse=True)
    assert theater.fields[0].key == "iban"


def test_it_gives_the_union_of_advice_most_serious_first(
    personas: Engine, settings: Settings
) -> None:
    advice = results_of(personas, settings, ALICE).advice
    keys = [f.key for f in advice]
    assert sorted(keys) == sorted({"email", "name", "phone", "postcode", "iban"})
    assert [f.severity for f in advice] == sorted((BY_KEY[k].severity for k in keys), reverse=True)
    assert keys[0] == "iban"


def test_it_finds_nothing_for_carol(personas: Engine, settings: Settings) -> None:
    results = results_of(personas, settings, CAROL)
    assert results.partners == []
    assert results.advice == []


def test_it_starts_one_session_per_confirmed_link(personas: Engine, settings: Settings) -> None:
    sign_in_directly(personas, settings, ALICE)
    sign_in_directly(personas, settings, BOB)
    with personas.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(tables.sessions)) == 2


@pytest.mark.anyio
async def test_it_enforces_every_limit_it_accepted(personas: Engine, settings: Settings) -> None:
    settings = replace(settings, limit_per_address="10/hour;1/day")
    try:
        settings.validate()
    except PortalError:
        return  # refusing it up front keeps the promise too
    limiter = RateLimiter(settings)
    assert await ask_link(personas, settings, limiter, ALICE)
    assert not await ask_link(personas, settings, limiter, ALICE)
    assert len(link_mails(personas)) == 1
