"""A link that no longer works: the organisation, its contact and a form for a new link."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from starlette.testclient import TestClient

from portal.app import create_app
from portal.core.config import Settings
from portal.incidents.importer import import_csv
from portal.incidents.stored import load_incident_file
from tests.factories import ALICE, INCIDENT, PARK_A, write_csv
from tests.server import csrf, outbox_links, sign_in

SLUG = "ticketing-2021"
ORGANISATION = 'organisation = "TicketHub Nederland B.V."\n'
BASE = "http://127.0.0.1:8000"


def serve(engine: Engine, settings: Settings, folder: Path, *texts: str) -> TestClient:
    for n, text in enumerate(texts):
        (folder / f"incident-{n}.toml").write_text(text, encoding="utf-8")
        load_incident_file(engine, folder / f"incident-{n}.toml")
    path = write_csv(folder / "park-a.csv", PARK_A)
    import_csv(engine, settings, incident=SLUG, partner="park-a", path=path)
    return TestClient(create_app(settings, deliver_mail=False), base_url=BASE)


OTHER = 'organisation = "Webwinkel D"\n' + INCIDENT.replace(SLUG, "webshop-2022")


@pytest.fixture
def client(engine: Engine, settings: Settings, tmp_path: Path) -> Iterator[TestClient]:
    """Two incidents: only the link's own record can tell which one a link was for."""
    with serve(engine, settings, tmp_path, ORGANISATION + INCIDENT, OTHER) as client:
        yield client


def offers_a_new_link(page: str) -> bool:
    return (
        "data-new-link" in page
        and f'<form method="post" action="/{SLUG}/lookup"' in page
        and 'name="csrf_token"' in page
        and 'name="email"' in page
    )


def test_it_offers_a_new_link_on_the_used_link_page(client: TestClient, engine: Engine) -> None:
    sign_in(client, engine, ALICE)
    used = client.get(outbox_links(engine)[-1].removeprefix(BASE))
    assert used.status_code == 410
    assert 'data-link-error="link_used"' in used.text
    assert offers_a_new_link(used.text)
    assert '<span class="org" data-organisation>TicketHub Nederland B.V.</span>' in used.text
    contact = used.text.split("data-contact>", 1)[1].split("</p>", 1)[0]
    assert "TicketHub Nederland B.V." in contact and "B.V.." not in contact
    assert 'href="mailto:privacy@ticketing.example"' in contact

    again = client.post(
        f"/{SLUG}/lookup",
        data={"email": ALICE, "csrf_token": csrf(used.text)},
        follow_redirects=False,
    )
    assert (again.status_code, again.headers["location"]) == (303, f"/{SLUG}/sent")


def test_it_speaks_the_language_the_link_was_asked_in(client: TestClient, engine: Engine) -> None:
    client.get(f"/{SLUG}/?lang=en")  # the switch: a cookie, carried into the link
    sign_in(client, engine, ALICE)
    client.cookies.clear()
    used = client.get(
        outbox_links(engine)[-1].removeprefix(BASE), headers={"accept-language": "nl"}
    )
    assert '<html lang="en">' in used.text
    assert "This page is run by TicketHub Nederland B.V. Questions? Email" in used.text


def test_it_offers_a_new_link_for_a_link_past_its_signature_age(
    client: TestClient, engine: Engine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = client.get(f"/{SLUG}/")
    client.post(f"/{SLUG}/lookup", data={"email": ALICE, "csrf_token": csrf(page.text)})
    client.portal.call(client.app.state.lookups.drain)  # type: ignore[attr-defined]
    link = outbox_links(engine)[-1].removeprefix(BASE)
    later = int(time.time()) + settings.link_ttl + 60
    monkeypatch.setattr("itsdangerous.timed.time.time", lambda: later)
    expired = client.get(link)
    assert expired.status_code == 410
    assert 'data-link-error="link_expired"' in expired.text
    assert offers_a_new_link(expired.text)


def test_it_offers_the_only_incident_for_a_link_not_ours(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    with serve(engine, settings, tmp_path, ORGANISATION + INCIDENT) as client:
        forged = client.get("/v/not-a-token")
    assert forged.status_code == 400
    assert 'data-link-error="link_invalid"' in forged.text
    assert offers_a_new_link(forged.text)


def test_it_sends_a_link_not_ours_to_the_list_when_there_are_several_incidents(
    client: TestClient,
) -> None:
    forged = client.get("/v/not-a-token")
    assert forged.status_code == 400
    assert '<a href="/" data-new-link>' in forged.text
    assert "/lookup" not in forged.text
