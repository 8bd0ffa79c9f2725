"""/metrics: per route template, the lookup as the person sees it, nothing personal."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import Engine
from starlette.testclient import TestClient

from portal.app import create_app
from portal.core.config import Settings
from tests.factories import ALICE, load_personas
from tests.server import csrf, drain_lookups, outbox_links, sign_in

SLUG = "ticketing-2021"


@pytest.fixture
def client(engine: Engine, settings: Settings, tmp_path: Path) -> Iterator[TestClient]:
    load_personas(engine, settings, tmp_path)
    app = create_app(replace(settings, limit_per_client="3/hour"), deliver_mail=False)
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        yield client


def value(client: TestClient, sample: str) -> float:
    """A sample's value (name and labels as /metrics writes them); 0 when absent."""
    for row in client.get("/metrics").text.splitlines():
        if row.startswith(f"{sample} "):
            return float(row.rsplit(" ", 1)[1])
    return 0.0


def requests(route: str, status: int = 200, method: str = "GET") -> str:
    return f'portal_requests_total{{method="{method}",route="{route}",status="{status}"}}'


def test_it_counts_requests_by_route_template_never_the_path(
    client: TestClient, engine: Engine
) -> None:
    before = value(client, requests("/{incident}/"))
    link_before = value(client, requests("/v/{token}"))

    client.get(f"/{SLUG}/")
    sign_in(client, engine, ALICE)
    text = client.get("/metrics").text

    assert value(client, requests("/{incident}/")) == before + 2
    assert value(client, requests("/v/{token}")) == link_before + 1
    assert 'portal_request_seconds_bucket{le="0.001",route="/{incident}/results"}' in text
    token = outbox_links(engine)[-1].rsplit("/", 1)[1]
    for personal in (SLUG, token, ALICE, "alice"):
        assert personal not in text


def test_it_times_the_lookup_as_the_person_sees_it_and_counts_its_work(
    client: TestClient,
) -> None:
    names = (
        "portal_lookup_response_seconds_count",
        "portal_lookups_total",
        "portal_hashes_total",
        'portal_lookups_processed_total{outcome="queued"}',
        'portal_lookups_processed_total{outcome="client_limited"}',
        'portal_rate_limited_total{limit="client"}',
    )
    before = {name: value(client, name) for name in names}
    token = csrf(client.get(f"/{SLUG}/").text)

    for n in range(4):  # the client limit is 3 an hour
        client.post(f"/{SLUG}/lookup", data={"email": f"m{n}@example.net", "csrf_token": token})
    drain_lookups(client)

    grown = {name: value(client, name) - before[name] for name in names}
    assert grown == {
        "portal_lookup_response_seconds_count": 4,
        "portal_lookups_total": 4,
        "portal_hashes_total": 3,
        'portal_lookups_processed_total{outcome="queued"}': 3,
        'portal_lookups_processed_total{outcome="client_limited"}': 1,
        'portal_rate_limited_total{limit="client"}': 1,
    }
    text = client.get("/metrics").text
    assert "portal_lookup_queue_depth 0.0" in text
    assert "portal_lookups_shed_total" in text
    assert not re.search(r"m\d@example", text)


def test_it_counts_deletion_requests_by_status(client: TestClient, engine: Engine) -> None:
    received = 'portal_deletion_requests_total{status="received"}'
    before = value(client, received)
    page = sign_in(client, engine, ALICE)

    client.post(
        f"/{SLUG}/deletion",
        data={"partner": "park-a", "csrf_token": csrf(page)},
        follow_redirects=False,
    )

    assert value(client, received) == before + 1
