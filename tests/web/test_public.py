"""The person's path in-process: lookup, link, confirmation, results, deletion."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import Engine, select
from starlette.testclient import TestClient

from portal.core.config import Settings
from portal.incidents.importer import import_csv
from portal.store import tables
from tests.factories import ALICE, BOB, CAROL, write_csv
from tests.server import csrf, outbox_links, sign_in

SLUG = "ticketing-2021"


def test_it_shows_the_incident_page_with_form(client: TestClient) -> None:
    page = client.get(f"/{SLUG}/?lang=en")
    assert page.status_code == 200
    assert f'<form method="post" action="/{SLUG}/lookup"' in page.text
    assert 'name="email"' in page.text
    assert "<strong>leak</strong>" in page.text
    assert "<script>" not in page.text


def test_it_serves_the_single_incident_at_root(client: TestClient) -> None:
    assert f'action="/{SLUG}/lookup"' in client.get("/").text


def test_it_refuses_an_invalid_address_with_400(client: TestClient) -> None:
    page = client.get(f"/{SLUG}/")
    response = client.post(
        f"/{SLUG}/lookup", data={"email": "not an address", "csrf_token": csrf(page.text)}
    )
    assert response.status_code == 400
    assert 'data-error="email"' in response.text
    assert "Dit is geen geldig e-mailadres." in response.text  # the incident's first language


def test_it_explains_a_refusal_in_the_chosen_language(client: TestClient) -> None:
    page = client.get(f"/{SLUG}/?lang=en")
    response = client.post(
        f"/{SLUG}/lookup", data={"email": "jan@p\u0430ypal.com", "csrf_token": csrf(page.text)}
    )
    assert response.status_code == 400
    assert "The domain mixes alphabets, as look-alike domains do." in response.text


def test_it_shows_alice_her_fields_per_partner(client: TestClient, engine: Engine) -> None:
    page = sign_in(client, engine, "  Alice@Example.ORG ")
    park = page.split('data-partner="park-a"')[1].split("</section>")[0]
    theater = page.split('data-partner="theater-b"')[1].split("</section>")[0]
    assert {"email", "name", "phone", "postcode"} == set(re.findall(r'data-field="(\w+)"', park))
    assert {"email", "name", "iban"} == set(re.findall(r'data-field="(\w+)"', theater))
    assert 'data-partner="omroep-c"' not in page


def test_it_leaves_out_fields_with_empty_values(client: TestClient, engine: Engine) -> None:
    page = sign_in(client, engine, BOB)
    assert 'data-field="phone"' not in page
    assert 'data-field="postcode"' in page


def test_it_tells_carol_she_is_not_affected(client: TestClient, engine: Engine) -> None:
    page = sign_in(client, engine, CAROL)
    assert 'data-result="not-affected"' in page
    assert "data-partner=" not in page


def test_it_uses_a_link_only_once(client: TestClient, engine: Engine) -> None:
    sign_in(client, engine, ALICE)
    link = outbox_links(engine)[-1].removeprefix("http://127.0.0.1:8000")
    page = client.get(link)
    assert page.status_code == 410


def test_it_sends_results_without_session_back(client: TestClient) -> None:
    response = client.get(f"/{SLUG}/results", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == f"/{SLUG}/"


def metric(client: TestClient, line_start: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_it_records_a_deletion_request(client: TestClient, engine: Engine) -> None:
    page = sign_in(client, engine, ALICE)
    received = 'portal_deletion_requests_total{status="received"}'
    before = metric(client, received)
    response = client.post(
        f"/{SLUG}/deletion",
        data={"partner": "park-a", "csrf_token": csrf(page)},
        follow_redirects=False,
    )
    assert response.status_code == 303
    page = client.get(f"/{SLUG}/results").text
    park = page.split('data-partner="park-a"')[1].split("</section>")[0]
    reference = re.search(r'data-deletion-ref="(DR-[0-9A-Z]{4}-[0-9A-Z]{4})"', park)
    assert reference
    assert 'data-deletion-status="received"' in park
    assert metric(client, received) == before + 1
    again = client.post(f"/{SLUG}/deletion", data={"partner": "park-a", "csrf_token": csrf(page)})
    assert reference.group(1) in again.text
    with engine.connect() as conn:
        assert conn.scalar(select(tables.deletion_requests.c.email)) == ALICE


def test_it_refuses_deletion_at_a_partner_without_the_address(
    client: TestClient, engine: Engine
) -> None:
    page = sign_in(client, engine, BOB)
    response = client.post(
        f"/{SLUG}/deletion", data={"partner": "theater-b", "csrf_token": csrf(page)}
    )
    assert response.status_code == 404


def test_it_adds_the_slash_without_trusting_the_host_header(client: TestClient) -> None:
    response = client.get(f"/{SLUG}", headers={"host": "evil.example"}, follow_redirects=False)
    assert response.status_code == 308
    assert response.headers["location"] == f"/{SLUG}/"
    assert client.get("/no-such-incident", follow_redirects=False).status_code == 404
    assert client.get(f"/{SLUG}/results/", follow_redirects=False).status_code == 404


def test_it_counts_invented_methods_under_one_label(client: TestClient) -> None:
    for method in ("XAAA1", "XAAA2"):
        assert client.request(method, "/").status_code == 405
    exported = client.get("/metrics").text
    assert "XAAA" not in exported
    assert 'portal_requests_total{method="other",route="/",status="405"}' in exported


def test_it_finds_an_address_with_a_non_ascii_local_part_however_it_is_typed(
    client: TestClient, engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    # RFC 6531: imported, looked up and mailed like any other address (design §4.1).
    rows = [["email", "iban"], ["Jo\u0308rg@Bu\u0308cher.de", "NL91ABNA0417164300"]]
    path = write_csv(tmp_path / "jorg.csv", rows)
    import_csv(engine, settings, incident=SLUG, partner="theater-b", path=path)
    page = sign_in(client, engine, "jörg@bücher.de")
    assert 'data-partner="theater-b"' in page
    assert 'data-address="jörg@xn--bcher-kva.de"' in page
    assert 'data-field="iban"' in page
