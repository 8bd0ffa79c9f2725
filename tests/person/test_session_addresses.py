"""Several addresses in one visit: each joins by its own link confirmed in the same browser,
at most ten, each shown per partner with its address, each deletion naming its address."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from starlette.testclient import TestClient

from portal.app import create_app
from portal.core.clock import utcnow
from portal.core.config import Settings
from portal.operator.retention import purge
from portal.person.addresses import MAX_ADDRESSES
from portal.store import db, tables
from tests.databases import stored_bytes
from tests.factories import ALICE, BOB, CAROL, SLUG, load_personas
from tests.server import csrf, drain_lookups, lookup, outbox_links, sign_in


@pytest.fixture
def app_settings(settings: Settings) -> Settings:
    # Many lookups from one test client: the limits are not what is tested here.
    return replace(settings, limit_per_client="1000/hour", limit_confirm_per_client="1000/hour")


@pytest.fixture
def client(engine: Engine, app_settings: Settings, tmp_path: Path) -> Iterator[TestClient]:
    load_personas(engine, app_settings, tmp_path)
    with TestClient(create_app(app_settings, deliver_mail=False), base_url=BASE) as c:
        yield c


BASE = "http://127.0.0.1:8000"


def add_address(client: TestClient, address: str) -> str:
    """Looks `address` up with the form on the results page; returns its link's path."""
    page = lookup(client, address, on=f"/{SLUG}/results")
    form = page.split("data-add-address", 1)[1]
    assert f'action="/{SLUG}/lookup"' in form
    return outbox_links(client.app.state.engine)[-1].removeprefix(BASE)  # type: ignore[attr-defined]


def confirm(client: TestClient, link: str) -> tuple[int, str]:
    page = client.get(link)
    response = client.post(link, data={"csrf_token": csrf(page.text)}, follow_redirects=False)
    return response.status_code, response.text


def results(client: TestClient) -> str:
    page = client.get(f"/{SLUG}/results")
    assert page.status_code == 200
    return page.text


def shown(page: str) -> set[tuple[str, str]]:
    """(address, partner) of every partner element, ("address", "") for 'not affected'."""
    found = set(re.findall(r'data-partner="([^"]+)" data-address="([^"]+)"', page))
    pairs = {(address, partner) for partner, address in found}
    for address in re.findall(r'data-result="not-affected" data-address="([^"]+)"', page):
        pairs.add((address, ""))
    return pairs


def section(page: str, partner: str, address: str) -> str:
    start = page.index(f'data-partner="{partner}" data-address="{address}"')
    return page[start : page.index("</section>", start)]


def test_it_offers_another_lookup_on_the_results_page(client: TestClient, engine: Engine) -> None:
    page = sign_in(client, engine, ALICE)
    add = page.split("data-add-address", 1)[1]
    assert 'name="email"' in add and 'name="csrf_token"' in add


def test_it_merges_a_second_address_confirmed_in_the_same_browser(
    client: TestClient, engine: Engine
) -> None:
    sign_in(client, engine, ALICE)
    status, _ = confirm(client, add_address(client, BOB))
    assert status == 303
    page = results(client)
    assert shown(page) == {(ALICE, "park-a"), (ALICE, "theater-b"), (BOB, "park-a")}
    assert 'data-addresses="2"' in page
    # The session did not change: the cookie the browser had still opens it.
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(tables.sessions)) == 1


def test_it_shows_a_not_affected_address_with_its_address(
    client: TestClient, engine: Engine
) -> None:
    sign_in(client, engine, BOB)
    confirm(client, add_address(client, CAROL))
    assert shown(results(client)) == {(BOB, "park-a"), (CAROL, "")}


def test_it_never_shows_an_address_before_its_link_is_confirmed(
    client: TestClient, engine: Engine
) -> None:
    sign_in(client, engine, BOB)
    link = add_address(client, ALICE)
    page = results(client)
    assert ALICE not in page
    assert shown(page) == {(BOB, "park-a")}
    confirm(client, link)
    assert (ALICE, "theater-b") in shown(results(client))


def test_it_starts_a_session_of_its_own_for_a_link_confirmed_elsewhere(
    client: TestClient, engine: Engine, app_settings: Settings
) -> None:
    sign_in(client, engine, BOB)
    link = add_address(client, ALICE)
    with TestClient(create_app(app_settings, deliver_mail=False), base_url=BASE) as other:
        status, _ = confirm(other, link)
        assert status == 303
        assert shown(results(other)) == {(ALICE, "park-a"), (ALICE, "theater-b")}
    assert shown(results(client)) == {(BOB, "park-a")}


def test_it_does_not_join_a_lookup_made_before_signing_in(
    client: TestClient, engine: Engine
) -> None:
    """A link asked without a session starts its own, even in a browser that has one now."""
    page = client.get(f"/{SLUG}/")
    client.post(f"/{SLUG}/lookup", data={"email": ALICE, "csrf_token": csrf(page.text)})
    drain_lookups(client)
    alice_link = outbox_links(engine)[-1].removeprefix(BASE)
    sign_in(client, engine, BOB)
    confirm(client, alice_link)
    assert shown(results(client)) == {(ALICE, "park-a"), (ALICE, "theater-b")}


def test_it_refuses_the_eleventh_address_and_keeps_its_link(
    client: TestClient, engine: Engine, app_settings: Settings
) -> None:
    sign_in(client, engine, ALICE)
    others = [f"person{n}@example.net" for n in range(1, MAX_ADDRESSES)]
    for address in others:
        assert confirm(client, add_address(client, address))[0] == 303
    page = results(client)
    assert len({a for a, _ in shown(page)}) == MAX_ADDRESSES
    assert "data-address-limit" in page  # no form any more, a message instead
    assert 'name="email"' not in page.split("data-add-address", 1)[1]

    # The eleventh, asked from the information page in the same browser.
    index = client.get(f"/{SLUG}/")
    client.post(f"/{SLUG}/lookup", data={"email": BOB, "csrf_token": csrf(index.text)})
    drain_lookups(client)
    link = outbox_links(engine)[-1].removeprefix(BASE)
    status, text = confirm(client, link)
    assert status == 409
    assert "data-address-limit" in text and "10" in text
    assert BOB not in results(client)
    # Its link was not used: another browser can still open it.
    with TestClient(create_app(app_settings, deliver_mail=False), base_url=BASE) as other:
        assert confirm(other, link)[0] == 303
        assert shown(results(other)) == {(BOB, "park-a")}


def test_it_names_the_second_address_in_its_deletion_request(
    client: TestClient, engine: Engine
) -> None:
    sign_in(client, engine, ALICE)
    confirm(client, add_address(client, BOB))
    page = results(client)
    form = section(page, "park-a", BOB)
    assert f'<input type="hidden" name="address" value="{BOB}">' in form
    response = client.post(
        f"/{SLUG}/deletion",
        data={"partner": "park-a", "address": BOB, "csrf_token": csrf(page)},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == f"/{SLUG}/results#partner-park-a-2"
    t = tables.deletion_requests
    with engine.connect() as conn:
        [request] = conn.execute(select(t.c.email, t.c.reference)).all()
        partner_mail = conn.execute(
            select(tables.outbox.c.body_text).where(tables.outbox.c.kind == "partner_request")
        ).scalar_one()
        receipt_to = conn.scalar(
            select(tables.outbox.c.recipient).where(tables.outbox.c.kind == "deletion_receipt")
        )
    assert request.email == BOB
    assert BOB in partner_mail and ALICE not in partner_mail
    assert receipt_to == BOB
    after = results(client)
    assert "data-deletion-ref" in section(after, "park-a", BOB)
    assert "data-deletion-ref" not in section(after, "park-a", ALICE)
    assert 'data-flash="park-a"' in section(after, "park-a", BOB)


@pytest.mark.parametrize(
    ("partner", "address"),
    [
        ("park-a", CAROL),  # never confirmed in this session
        ("theater-b", BOB),  # Bob does not occur at Theater B
        ("park-a", "not an address"),
    ],
)
def test_it_answers_404_for_an_address_or_partner_not_in_the_session(
    client: TestClient, engine: Engine, partner: str, address: str
) -> None:
    sign_in(client, engine, ALICE)
    confirm(client, add_address(client, BOB))
    page = results(client)
    response = client.post(
        f"/{SLUG}/deletion",
        data={"partner": partner, "address": address, "csrf_token": csrf(page)},
        follow_redirects=False,
    )
    assert response.status_code == 404
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(tables.deletion_requests)) == 0


def test_it_asks_every_organisation_for_every_address(client: TestClient, engine: Engine) -> None:
    sign_in(client, engine, ALICE)
    confirm(client, add_address(client, BOB))
    page = client.get(f"/{SLUG}/deletion/all")
    assert page.status_code == 200
    assert f'data-address="{BOB}"' in page.text and f'data-address="{ALICE}"' in page.text
    response = client.post(
        f"/{SLUG}/deletion", data={"partner": "all", "csrf_token": csrf(page.text)}
    )
    assert response.status_code == 200
    t = tables.deletion_requests
    with engine.connect() as conn:
        made = conn.execute(select(t.c.email, t.c.partner_id)).all()
    assert sorted(e for e, _ in made) == [ALICE, ALICE, BOB]


def test_it_keeps_the_added_addresses_sealed_and_only_with_the_session(
    client: TestClient, engine: Engine, app_settings: Settings
) -> None:
    sign_in(client, engine, ALICE)
    confirm(client, add_address(client, CAROL))
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(tables.session_addresses)) == 1
    # Sealed: nowhere in the database (the outbox still holds the undelivered link mail).
    with engine.begin() as conn:
        conn.execute(tables.outbox.delete())
    db.checkpoint(engine)  # the WAL still holds the pages from before (SQLite)
    assert CAROL.encode() not in stored_bytes(app_settings.database_url)

    report = purge(engine, app_settings, now=utcnow() + timedelta(seconds=app_settings.session_ttl))
    assert report.sessions == 1
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(tables.session_addresses)) == 0
    assert client.get(f"/{SLUG}/results", follow_redirects=False).status_code == 303


def test_it_answers_the_same_for_a_lookup_from_the_results_page_over_the_limit(
    client: TestClient, engine: Engine, app_settings: Settings
) -> None:
    strict = replace(app_settings, limit_per_address="1/hour")
    with TestClient(create_app(strict, deliver_mail=False), base_url=BASE) as person:
        sign_in(person, engine, ALICE)
        before = len(outbox_links(engine))
        add_address(person, BOB)
        add_address(person, BOB)  # over the limit: the same 303, nothing sent
        assert len(outbox_links(engine)) == before + 1


def test_it_renews_the_session_cookie_when_an_address_joins(
    client: TestClient, engine: Engine, app_settings: Settings
) -> None:
    """A planted (fixed) session cookie stops working once its browser adds an address."""
    sign_in(client, engine, BOB)
    before = client.cookies["portal_session"]
    confirm(client, add_address(client, ALICE))
    assert client.cookies["portal_session"] != before
    assert (ALICE, "theater-b") in shown(results(client))
    with TestClient(create_app(app_settings, deliver_mail=False), base_url=BASE) as planter:
        planter.cookies.set("portal_session", before)
        assert planter.get(f"/{SLUG}/results", follow_redirects=False).status_code == 303
