"""The "check your inbox" page: the address typed shown back once, never in a URL."""

from __future__ import annotations

import base64

import httpx
from starlette.testclient import TestClient

from tests.factories import ALICE
from tests.server import csrf, drain_lookups

SLUG = "ticketing-2021"
SENT = f"/{SLUG}/sent"


def look_up(client: TestClient, typed: str, *, lang: str = "nl") -> httpx.Response:
    page = client.get(f"/{SLUG}/?lang={lang}")
    response = client.post(
        f"/{SLUG}/lookup",
        data={"email": typed, "csrf_token": csrf(page.text)},
        follow_redirects=False,
    )
    drain_lookups(client)
    assert (response.status_code, response.headers["location"]) == (303, SENT)
    return response


def sent_cookie(response: httpx.Response) -> tuple[str, set[str]]:
    """The cookie's value and its attributes, lower-cased."""
    for header in response.headers.get_list("set-cookie"):
        if header.startswith("portal_sent="):
            value, *attributes = header.split(";")
            return value.split("=", 1)[1], {a.strip().lower() for a in attributes}
    raise AssertionError("no portal_sent cookie")


def test_it_shows_the_address_as_typed(client: TestClient) -> None:
    look_up(client, "  Alice@Example.ORG ")
    page = client.get(SENT).text
    assert '<h1 data-page="sent">Kijk in uw mailbox</h1>' in page
    assert (
        "We sturen een e-mail met een persoonlijke link naar "
        "<strong data-sent-address>Alice@Example.ORG</strong>."
    ) in page
    assert "Staat er een tikfout in het adres?" in page
    assert "Na 15 minuten nog geen e-mail?" in page and "spam" in page


def test_it_shows_the_address_once(client: TestClient) -> None:
    look_up(client, ALICE, lang="en")
    first = client.get(SENT)
    assert f"<strong data-sent-address>{ALICE}</strong>" in first.text
    assert 'portal_sent=""' in first.headers["set-cookie"], "the page deletes the cookie"
    again = client.get(SENT).text
    assert ALICE not in again
    assert "We are emailing a personal link to the address you entered." in again


def test_it_keeps_the_address_out_of_the_url_and_the_cache(client: TestClient) -> None:
    response = look_up(client, ALICE)
    assert ALICE not in response.headers["location"]
    page = client.get(SENT)
    assert page.headers["cache-control"] == "no-store"
    assert str(page.url).endswith(SENT)


def test_it_seals_the_address_in_a_short_lived_cookie_of_one_length(client: TestClient) -> None:
    short, short_attributes = sent_cookie(look_up(client, "a@b.nl"))
    long, _ = sent_cookie(look_up(client, "someone.with.a.long.address@subdomain.example.org"))
    assert len(short) == len(long)
    assert {"httponly", "samesite=lax", f"path={SENT}", "max-age=600"} <= short_attributes
    assert "secure" not in short_attributes  # plain http here; https in tests/security
    raw = base64.urlsafe_b64decode(short)
    assert b"a@b.nl" not in raw, "encrypted, not just signed"


def test_it_escapes_the_address_it_shows(client: TestClient) -> None:
    look_up(client, "o'brien&co@example.org", lang="en")
    page = client.get(SENT).text
    assert "<strong data-sent-address>o&#39;brien&amp;co@example.org</strong>" in page


def test_it_ignores_a_cookie_it_did_not_seal(client: TestClient) -> None:
    client.cookies.set("portal_sent", "A" * 720, path=SENT)
    page = client.get(f"{SENT}?lang=en")
    assert page.status_code == 200
    assert "the address you entered" in page.text
