"""Pages rendered once and filled in per request (web/pages.RenderedPages): the same bytes
as a page rendered for this visitor alone, never another visitor's address, and a new
render once the incident is loaded anew."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from markupsafe import escape
from sqlalchemy import Engine
from starlette.testclient import TestClient

from portal.app import create_app
from portal.core.config import Settings
from portal.incidents.stored import load_incident_file
from tests.factories import ALICE, BOB, INCIDENT, SLUG, load_personas
from tests.fixtures_mail import wait_for_sync
from tests.server import sign_in

# Not in the data: "not affected", one layout for both; the first one's quote and ampersand
# must come out escaped as the template escapes them.
OBRIEN = "o'brien&co@example.org"
ZOE = "zoe@example.org"
# A flash cookie no partner's element answers to: the page as rendered for this visitor alone.
RENDERED_ALONE = {"portal_flash": "nothing-to-say"}


@pytest.fixture
def client(engine: Engine, settings: Settings, tmp_path: Path) -> Iterator[TestClient]:
    load_personas(engine, settings, tmp_path)
    app = create_app(settings, deliver_mail=False)
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        yield client


def results(client: TestClient, *, lang: str, alone: bool = False) -> str:
    """The results page in `lang`: from the kept render, or rendered for this visit alone."""
    cookies = {"portal_lang": lang, **(RENDERED_ALONE if alone else {})}
    for name, value in cookies.items():
        client.cookies.set(name, value)
    response = client.get(f"/{SLUG}/results")
    for name in cookies:
        client.cookies.delete(name)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    return response.text


@pytest.mark.parametrize("lang", ["nl", "en"])
@pytest.mark.parametrize("address", [ALICE, BOB, OBRIEN])
def test_it_gives_the_same_page_as_a_render_for_this_visit_alone(
    client: TestClient, engine: Engine, address: str, lang: str
) -> None:
    sign_in(client, engine, address)
    kept = [results(client, lang=lang) for _ in range(2)]  # a miss, then a hit
    alone = results(client, lang=lang, alone=True)
    # The same CSRF cookie on each request: the same token, so every byte is compared.
    assert kept[0] == kept[1] == alone
    assert f'data-address="{escape(address)}"' in alone
    assert f'lang="{lang}"' in alone


def test_it_never_shows_one_visitors_address_to_another(client: TestClient, engine: Engine) -> None:
    sign_in(client, engine, OBRIEN)
    first = results(client, lang="en")
    client.cookies.clear()  # another browser
    sign_in(client, engine, ZOE)
    second = results(client, lang="en")  # the same layout: from the kept render
    assert second == results(client, lang="en", alone=True)
    assert str(escape(OBRIEN)) in first and ZOE not in first
    assert ZOE in second and "brien" not in second
    assert without_tokens(first).replace(str(escape(OBRIEN)), ZOE) == without_tokens(second)


def without_tokens(page: str) -> str:
    return re.sub(r'name="csrf_token" value="[^"]+"', "", page)


@pytest.mark.parametrize("lang", ["nl", "en"])
def test_it_renders_anew_when_the_incident_is_loaded_again(
    client: TestClient, engine: Engine, tmp_path: Path, lang: str
) -> None:
    sign_in(client, engine, ALICE)
    before = results(client, lang=lang)
    assert "Theater B" in before and "TicketDienst" in before
    changed = tmp_path / "changed.toml"
    text = INCIDENT.replace('"Theater B"', '"Theater Bee"').replace("TicketDienst", "KaartDienst")
    changed.write_text(text, encoding="utf-8")
    load_incident_file(engine, changed)
    # The process's incident cache looks again after its TTL (1 s), beside a request.
    wait_for_sync(lambda: "Theater Bee" in results(client, lang=lang), timeout=15)
    after = results(client, lang=lang)
    assert after == results(client, lang=lang, alone=True)
    assert after == before.replace("Theater B", "Theater Bee").replace(
        "TicketDienst", "KaartDienst"
    )
