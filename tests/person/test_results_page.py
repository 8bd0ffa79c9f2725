"""The results page a person can act on: summary, worst first, advice once, certainty,
deletion with a message where the person is, a confirmation before asking everyone."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from markupsafe import escape
from sqlalchemy import Engine
from starlette.testclient import TestClient

from portal.app import create_app
from portal.core.config import Settings
from portal.core.fields import BY_KEY
from portal.core.i18n import format_date
from tests.factories import ALICE, CAROL, INCIDENT, load_personas
from tests.server import csrf, sign_in

SLUG = "ticketing-2021"


@pytest.fixture
def client(engine: Engine, settings: Settings, tmp_path: Path) -> Iterator[TestClient]:
    """The personas, with Theater B's data set marked as holding people not exposed."""
    text = INCIDENT.replace('name = "Theater B"', 'name = "Theater B"\ncertainty = "possible"')
    load_personas(engine, settings, tmp_path, incident_text=text)
    app = create_app(settings, deliver_mail=False)
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        yield client


def section(page: str, partner: str) -> str:
    start = page.index(f'data-partner="{partner}"')
    return page[start : page.index("</section>", start)]


def test_it_opens_with_the_address_the_count_and_the_worst_field(
    client: TestClient, engine: Engine
) -> None:
    client.cookies.set("portal_lang", "en")
    page = sign_in(client, engine, ALICE)
    summary = page.split("data-summary", 1)[1].split("</section>", 1)[0]
    assert f"<strong data-summary-address>{ALICE}</strong>" in summary
    assert 'data-summary-count="2">2 organisations' in summary
    assert 'data-summary-worst="iban"' in summary
    assert "Bank account number (IBAN)" in summary and "Serious" in summary
    assert "at Theater B" in summary


def test_it_lists_the_partner_with_the_worst_field_first(
    client: TestClient, engine: Engine
) -> None:
    page = sign_in(client, engine, ALICE)
    order = re.findall(r'data-partner="([^"]+)"', page)
    assert order == ["theater-b", "park-a"]  # an IBAN outranks a phone number; not A-Z
    for partner in order:
        assert f'data-address="{ALICE}"' in section(page, partner)


def advice_section(page: str) -> str:
    start = page.index("data-advice-list")
    return page[start : page.index("</section>", start)]


def group_of(partner_section: str, key: str) -> str:
    """The severity row of a partner's element that holds the field `key`."""
    groups = partner_section.split('<div class="field-group">')[1:]
    (group,) = [g for g in groups if f'data-field="{key}"' in g]
    return group


def test_it_shows_each_piece_of_advice_once_worst_first(client: TestClient, engine: Engine) -> None:
    page = sign_in(client, engine, ALICE)
    for key in ("email", "name", "iban", "phone", "postcode"):
        assert page.count(str(escape(BY_KEY[key].advice["nl"]))) == 1, key
        assert BY_KEY[key].advice["nl"] not in section(page, "park-a")
    order = re.findall(r'data-advice="(\w+)"', advice_section(page))
    assert order == ["iban", "email", "phone", "name", "postcode"]  # Theater B's first
    assert "zie hierboven" not in page


def test_it_leads_from_each_field_to_its_advice(client: TestClient, engine: Engine) -> None:
    page = sign_in(client, engine, ALICE)
    for partner in ("theater-b", "park-a"):
        fields = re.findall(
            r'<li data-field="(\w+)"[^>]*><a href="#advice-(\w+)">([^<]+)</a></li>',
            section(page, partner),
        )
        assert fields and all(key == target for key, target, _ in fields)
        for key, _, label in fields:
            assert label == BY_KEY[key].label["nl"]
            assert page.count(f'id="advice-{key}"') == 1
            assert f'id="advice-{key}" data-advice="{key}"' in advice_section(page)


def test_it_marks_severity_in_words_not_colour_alone(client: TestClient, engine: Engine) -> None:
    client.cookies.set("portal_lang", "en")
    page = sign_in(client, engine, ALICE)
    theater, park = section(page, "theater-b"), section(page, "park-a")
    assert "Serious" in group_of(theater, "iban").split("</dt>", 1)[0]
    assert "Be alert" in group_of(park, "phone").split("</dt>", 1)[0]
    assert "Low risk" in group_of(park, "postcode").split("</dt>", 1)[0]
    assert "Be alert" not in group_of(park, "postcode")
    levels = re.findall(r'<h3 class="advice-level">(.*?)</h3>', advice_section(page))
    assert [re.sub(r"<[^>]+>|[▲●○]", "", level).strip() for level in levels] == [
        "Serious",
        "Be alert",
        "Low risk",
    ]


def test_it_says_may_have_leaked_for_a_possible_data_set(
    client: TestClient, engine: Engine
) -> None:
    client.cookies.set("portal_lang", "en")
    page = sign_in(client, engine, ALICE)
    theater, park = section(page, "theater-b"), section(page, "park-a")
    assert 'data-certainty="possible"' in theater and "May have leaked at Theater B" in theater
    assert 'data-certainty="confirmed"' in park and "Leaked at Attractiepark A" in park
    assert "May have" not in park


def test_it_explains_the_deletion_buttons_once(client: TestClient, engine: Engine) -> None:
    client.cookies.set("portal_lang", "en")
    page = sign_in(client, engine, ALICE)
    hint = '<p class="hint noprint" id="deletion-hint">An organisation must answer a deletion'
    assert page.count(hint) == 1
    assert "a deletion request within a month (GDPR Article 17). We email you at each step" in page
    for partner, name in (("park-a", "Attractiepark A"), ("theater-b", "Theater B")):
        button = section(page, partner).split("<button", 1)[1].split("</button>", 1)[0]
        assert 'aria-describedby="deletion-hint"' in button
        # The card's heading names the partner; the button's accessible name does too.
        assert f'Ask to delete my data<span class="visually-hidden"> at {name}</span>' in button


def test_it_shows_a_message_at_the_partner_after_a_request(
    client: TestClient, engine: Engine
) -> None:
    client.cookies.set("portal_lang", "en")
    page = sign_in(client, engine, ALICE)
    response = client.post(
        f"/{SLUG}/deletion",
        data={"partner": "park-a", "csrf_token": csrf(page)},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == f"/{SLUG}/results#partner-park-a"
    after = client.get(f"/{SLUG}/results").text
    park = section(after, "park-a")
    reference = re.search(r'data-deletion-ref="(DR-[0-9A-Z-]+)"', park)
    assert reference, "the request stays visible inside the partner's element"
    assert 'data-flash="park-a"' in park and "Your request has been sent." in park
    # Good news, said as a status: not an alert, not the error summary's frame.
    assert '<div class="flash" role="status" data-flash="park-a">' in park
    assert 'role="alert"' not in after and "error" not in park
    assert reference.group(1) in park.split('data-flash="park-a"', 1)[1]
    assert "data-deletion-status" in park and "Answer due" in park
    assert "data-flash" not in section(after, "theater-b")
    # The message is said once; the request itself stays.
    again = client.get(f"/{SLUG}/results").text
    assert "data-flash" not in again and reference.group(1) in section(again, "park-a")


def test_it_asks_for_confirmation_before_asking_every_organisation(
    client: TestClient, engine: Engine
) -> None:
    client.cookies.set("portal_lang", "en")
    page = sign_in(client, engine, ALICE)
    assert 'value="all"' not in page, "the results page itself never sends to everyone"
    assert f'href="/{SLUG}/deletion/all"' in page
    confirm = client.get(f"/{SLUG}/deletion/all")
    assert confirm.status_code == 200
    assert re.findall(r'data-partner-to-ask="([^"]+)"', confirm.text) == ["theater-b", "park-a"]
    assert ALICE in confirm.text
    response = client.post(
        f"/{SLUG}/deletion",
        data={"partner": "all", "csrf_token": csrf(confirm.text)},
        follow_redirects=False,
    )
    assert response.headers["location"] == f"/{SLUG}/results#requests"
    after = client.get(f"/{SLUG}/results").text
    assert 'data-flash="all"' in after
    assert len(re.findall(r"data-deletion-ref=", after)) == 2
    # Nothing left to ask: the confirmation page sends the person back.
    again = client.get(f"/{SLUG}/deletion/all", follow_redirects=False)
    assert again.status_code == 303


def test_it_needs_the_session_for_the_confirmation(client: TestClient) -> None:
    response = client.get(f"/{SLUG}/deletion/all", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == f"/{SLUG}/"


def test_it_dates_the_record_in_the_persons_language(client: TestClient, engine: Engine) -> None:
    client.cookies.set("portal_lang", "nl")
    page = sign_in(client, engine, ALICE)
    today = format_date(date.today(), "nl")
    assert f"Overzicht van {today}" in page
    shown = re.sub(r'="[^"]*"', "", page.split("<main", 1)[1])  # text, not attributes
    assert re.search(r"\d{4}-\d{2}-\d{2}", shown) is None


def test_it_names_the_address_that_is_not_affected(client: TestClient, engine: Engine) -> None:
    page = sign_in(client, engine, CAROL)
    assert f'data-result="not-affected" data-address="{CAROL}"' in page
    assert "data-partner=" not in page


def test_it_keeps_what_the_person_typed_after_an_error(client: TestClient) -> None:
    page = client.get(f"/{SLUG}/?lang=en")
    response = client.post(
        f"/{SLUG}/lookup", data={"email": "alice@@example.org", "csrf_token": csrf(page.text)}
    )
    assert response.status_code == 400
    field = re.search(r"<input[^>]*id=\"email\"[^>]*>", response.text)
    assert field
    assert 'value="alice@@example.org"' in field.group(0)
    assert 'aria-invalid="true"' in field.group(0)
    assert 'aria-describedby="email-error email-hint"' in field.group(0)
    assert 'id="email-error"' in response.text
