"""A partner's entry page /{incident}/p/{partner}/: its name and intro over the incident's
page, a lookup that mails on the partner's behalf, and results that list that partner first."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from starlette.testclient import TestClient

from portal.app import create_app
from portal.core.config import Settings
from portal.core.errors import PortalError
from portal.incidents.file import parse_incident_file
from portal.incidents.importer import import_csv
from portal.incidents.stored import load_incident_file
from portal.store import tables
from tests.factories import ALICE, INCIDENT, PARK_A, THEATER_B, write_csv
from tests.server import csrf, drain_lookups

SLUG = "ticketing-2021"
INTRO = (
    'intro = { nl = "Beste klant van **Park A**. <script>alert(1)</script>", '
    'en = "Dear customer of **Park A**. <script>alert(1)</script>" }'
)
WITH_INTRO = INCIDENT.replace(
    'contact_email = "privacy@park-a.example"', f'contact_email = "privacy@park-a.example"\n{INTRO}'
)


@pytest.fixture
def client(engine: Engine, settings: Settings, tmp_path: Path) -> Iterator[TestClient]:
    (tmp_path / "incident.toml").write_text(WITH_INTRO, encoding="utf-8")
    load_incident_file(engine, tmp_path / "incident.toml")
    for partner, rows in (("park-a", PARK_A), ("theater-b", THEATER_B)):
        path = write_csv(tmp_path / f"{partner}.csv", rows)
        import_csv(engine, settings, incident=SLUG, partner=partner, path=path)
    with TestClient(create_app(settings, deliver_mail=False), base_url=settings.base_url) as c:
        yield c


def link_mails(engine: Engine) -> list[tuple[str, str, str]]:
    """(kind, subject, text) of each queued link email, oldest first."""
    t = tables.outbox
    with engine.connect() as conn:
        rows = conn.execute(
            select(t.c.kind, t.c.subject, t.c.body_text).where(t.c.kind == "link").order_by(t.c.id)
        ).all()
    return [(r.kind, r.subject, r.body_text) for r in rows]


def look_up(client: TestClient, page_path: str, address: str, **extra: str) -> None:
    page = client.get(page_path)
    response = client.post(
        f"/{SLUG}/lookup",
        data={"email": address, "csrf_token": csrf(page.text), **extra},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == f"/{SLUG}/sent"
    drain_lookups(client)


def confirm_last_link(client: TestClient, engine: Engine) -> str:
    text = link_mails(engine)[-1][2]
    link = re.search(r"http://\S+(/v/\S+)", text).group(1)  # type: ignore[union-attr]
    page = client.get(link)
    client.post(link, data={"csrf_token": csrf(page.text)})
    return client.get(f"/{SLUG}/results").text


def test_it_heads_the_page_with_the_partner_and_its_intro(client: TestClient) -> None:
    page = client.get(f"/{SLUG}/p/park-a/?lang=en")
    assert page.status_code == 200
    assert 'data-entry-partner="park-a"' in page.text
    assert "For the customers of Attractiepark A" in page.text
    assert "Dear customer of <strong>Park A</strong>." in page.text
    assert "<script>alert" not in page.text  # Markdown as the notice: raw HTML is text
    assert '<input type="hidden" name="partner" value="park-a">' in page.text
    assert 'action="/ticketing-2021/lookup"' in page.text
    assert "<title>Attractiepark A · Data breach at TicketDienst</title>" in page.text


def test_it_speaks_the_visitors_language_on_the_partner_page(client: TestClient) -> None:
    page = client.get(f"/{SLUG}/p/park-a/?lang=nl")
    assert "Voor de klanten van Attractiepark A" in page.text
    assert "Beste klant van <strong>Park A</strong>." in page.text


def test_it_says_a_general_text_for_a_partner_without_intro(client: TestClient) -> None:
    page = client.get(f"/{SLUG}/p/theater-b/?lang=en")
    assert page.status_code == 200
    assert "Theater B is one of the organisations" in page.text
    assert "data-intro" not in page.text


@pytest.mark.parametrize("partner", ["no-such-partner", "PARK-A", "all", "park-a%00"])
def test_it_answers_404_for_an_unknown_partner(client: TestClient, partner: str) -> None:
    assert client.get(f"/{SLUG}/p/{partner}/").status_code == 404


def test_it_redirects_the_partner_page_without_slash(client: TestClient) -> None:
    response = client.get(f"/{SLUG}/p/park-a", follow_redirects=False)
    assert response.status_code == 308
    assert response.headers["location"] == f"/{SLUG}/p/park-a/"
    assert client.get(f"/{SLUG}/p/nobody", follow_redirects=False).status_code == 404


def test_it_has_no_partner_input_on_the_incident_page(client: TestClient) -> None:
    assert 'name="partner"' not in client.get(f"/{SLUG}/").text


def test_it_mails_the_link_on_the_partners_behalf(client: TestClient, engine: Engine) -> None:
    client.cookies.set("portal_lang", "en")
    look_up(client, f"/{SLUG}/p/park-a/", ALICE, partner="park-a")
    [(kind, subject, text)] = link_mails(engine)
    assert kind == "link"
    assert "on behalf of Attractiepark A" in subject
    assert "We send you this email on behalf of Attractiepark A." in text


def test_it_mails_in_dutch_on_the_partners_behalf(client: TestClient, engine: Engine) -> None:
    client.cookies.set("portal_lang", "nl")
    look_up(client, f"/{SLUG}/p/park-a/", ALICE, partner="park-a")
    [(_, subject, text)] = link_mails(engine)
    assert "namens Attractiepark A" in subject
    assert "namens Attractiepark A" in text


@pytest.mark.parametrize("partner", ["no-such-partner", "x" * 500, "park-a\x00", ""])
def test_it_treats_an_unknown_partner_field_as_none(
    client: TestClient, engine: Engine, partner: str
) -> None:
    look_up(client, f"/{SLUG}/", ALICE, partner=partner)
    [(_, subject, text)] = link_mails(engine)
    assert "behalf" not in text and "namens" not in text
    assert "behalf" not in subject and "namens" not in subject


def test_it_lists_the_entry_partner_first(client: TestClient, engine: Engine) -> None:
    look_up(client, f"/{SLUG}/", ALICE)
    plain = re.findall(r'data-partner="([^"]+)"', confirm_last_link(client, engine))
    assert plain == ["theater-b", "park-a"]  # the IBAN at Theater B is the worst
    client.cookies.clear()  # another visit
    look_up(client, f"/{SLUG}/p/park-a/", ALICE, partner="park-a")
    results = confirm_last_link(client, engine)
    assert re.findall(r'data-partner="([^"]+)"', results) == ["park-a", "theater-b"]
    # The summary still names the most serious field where it leaked.
    assert 'data-summary-worst="iban"' in results
    assert "Theater B" in results.split("data-summary-worst", 1)[1].split("</dd>", 1)[0]


def test_it_keeps_the_partner_heading_when_the_address_is_wrong(client: TestClient) -> None:
    page = client.get(f"/{SLUG}/p/park-a/")
    response = client.post(
        f"/{SLUG}/lookup",
        data={"email": "not an address", "csrf_token": csrf(page.text), "partner": "park-a"},
    )
    assert response.status_code == 400
    assert 'data-entry-partner="park-a"' in response.text
    assert '<input type="hidden" name="partner" value="park-a">' in response.text


def test_it_reports_a_bad_intro_with_its_line(tmp_path: Path) -> None:
    text = INCIDENT.replace(
        'contact_email = "privacy@theater-b.example"',
        'contact_email = "privacy@theater-b.example"\nintro = { nl = "Hallo", fr = "Salut" }',
    )
    path = tmp_path / "incident.toml"
    path.write_text(text, encoding="utf-8")
    line = text.splitlines().index('intro = { nl = "Hallo", fr = "Salut" }') + 1
    with pytest.raises(PortalError) as caught:
        parse_incident_file(path)
    message = str(caught.value)
    assert f"{path}:{line}: partner 2: intro needs a non-empty text for 'en'" in message
    assert f"{path}:{line}: partner 2: intro has a text for unlisted language 'fr'" in message


def test_it_reports_an_intro_that_is_not_a_table(tmp_path: Path) -> None:
    text = INCIDENT.replace(
        'contact_email = "privacy@theater-b.example"',
        'contact_email = "privacy@theater-b.example"\nintro = "Hallo"',
    )
    path = tmp_path / "incident.toml"
    path.write_text(text, encoding="utf-8")
    line = text.splitlines().index('intro = "Hallo"') + 1
    with pytest.raises(
        PortalError,
        match=rf":{line}: partner 2: intro: expected a text per language.*got a text in quotes",
    ):
        parse_incident_file(path)


def test_it_warns_of_raw_html_in_an_intro(tmp_path: Path) -> None:
    path = tmp_path / "incident.toml"
    path.write_text(WITH_INTRO, encoding="utf-8")
    warnings = parse_incident_file(path)["warnings"]
    assert any("partner 1: intro (nl) holds raw HTML (<script>" in w for w in warnings)


def test_it_stores_and_updates_the_intro(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "incident.toml"
    path.write_text(WITH_INTRO, encoding="utf-8")
    load_incident_file(engine, path)
    path.write_text(WITH_INTRO.replace("Dear customer", "Hello customer"), encoding="utf-8")
    load_incident_file(engine, path)
    with engine.connect() as conn:
        stored = conn.scalar(
            select(tables.partners.c.intro).where(tables.partners.c.slug == "park-a")
        )
    assert "Hello customer" in stored
