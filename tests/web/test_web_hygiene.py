"""Defects the scanners found, each answered as a user or client would see it."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from starlette.testclient import TestClient

from portal.app import create_app
from portal.core.config import Settings
from portal.store import tables
from portal.workers import TEMPLATES_DIR
from tests.factories import ALICE, SLUG, load_personas
from tests.server import csrf, sign_in


@pytest.fixture
def personas(engine: Engine, settings: Settings, tmp_path: Path) -> Engine:
    load_personas(engine, settings, tmp_path)
    return engine


@pytest.fixture
def client(personas: Engine, settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, deliver_mail=False), base_url=settings.base_url) as c:
        yield c


def outbox_html(engine: Engine, kind: str) -> list[tuple[str, str]]:
    """(subject, HTML part) of each queued message of `kind`."""
    t = tables.outbox
    with engine.connect() as conn:
        rows = conn.execute(select(t.c.subject, t.c.body_html).where(t.c.kind == kind))
        return [(subject, html) for subject, html in rows]


def test_it_refuses_a_non_ascii_csrf_token_with_403(client: TestClient) -> None:
    client.get(f"/{SLUG}/")  # the CSRF cookie
    assert client.cookies.get("portal_csrf")

    response = client.post(
        f"/{SLUG}/lookup", data={"email": ALICE, "csrf_token": "t\u00f6ken-\u2603"}
    )

    assert response.status_code == 403
    assert 'data-error-status="403"' in response.text


def test_it_logs_an_invented_method_as_a_placeholder(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    method = "X" * 5000
    with caplog.at_level(logging.INFO, logger="portal.access"):
        status = client.request(method, "/").status_code

    lines = [r for r in caplog.records if r.name == "portal.access"]
    assert status == 405
    assert [r.getMessage() for r in lines] == ["other / 405"]
    assert lines[0].fields["method"] == "other"  # type: ignore[attr-defined]
    assert "XXXX" not in caplog.text


def test_it_logs_a_known_method_as_sent(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="portal.access"):
        client.request("DELETE", "/")

    assert [r.getMessage() for r in caplog.records if r.name == "portal.access"] == ["DELETE / 405"]


def test_it_says_when_to_come_back_after_a_429(
    personas: Engine, settings: Settings, tmp_path: Path
) -> None:
    limited = replace(settings, limit_confirm_per_client="1/hour")
    with TestClient(create_app(limited, deliver_mail=False), base_url=limited.base_url) as c:
        page = c.get(f"/{SLUG}/")
        path = "/v/" + "x" * 40
        first = c.post(path, data={"csrf_token": csrf(page.text)})
        second = c.post(path, data={"csrf_token": csrf(page.text)})

    assert first.status_code == 400  # a bad link, counted
    assert second.status_code == 429
    assert 3500 <= int(second.headers["Retry-After"]) <= 3600


def test_it_believes_forwarded_addresses_from_a_trusted_network(
    personas: Engine, settings: Settings
) -> None:
    behind_proxy = replace(
        settings, limit_confirm_per_client="1/hour", trusted_proxies=frozenset({"10.0.0.0/8"})
    )
    app = create_app(behind_proxy, deliver_mail=False)
    with TestClient(app, base_url=settings.base_url, client=("10.9.8.7", 4000)) as c:
        page = c.get(f"/{SLUG}/")
        path = "/v/" + "x" * 40

        def confirm(client_address: str) -> int:
            return c.post(
                path,
                data={"csrf_token": csrf(page.text)},
                headers={"X-Forwarded-For": client_address},
            ).status_code

        assert confirm("203.0.113.1") == 400
        assert confirm("203.0.113.2") == 400  # another client behind the same proxy
        assert confirm("203.0.113.1") == 429  # the first one again: its limit holds


def test_it_sends_no_obsolete_permissions_policy(client: TestClient) -> None:
    policy = client.get(f"/{SLUG}/").headers["Permissions-Policy"]

    assert "interest-cohort" not in policy
    assert "camera=()" in policy


def test_it_gives_every_email_html_part_a_title(client: TestClient, personas: Engine) -> None:
    page = sign_in(client, personas, ALICE)
    client.post(f"/{SLUG}/deletion", data={"partner": "park-a", "csrf_token": csrf(page)})

    sent = [
        *outbox_html(personas, "link"),
        *outbox_html(personas, "deletion_receipt"),
        *outbox_html(personas, "partner_request"),
    ]
    assert len(sent) == 3
    for subject, html in sent:
        title = re.search(r"<head>.*<title>(.+)</title>.*</head>", html, re.S)
        assert title, html
        assert title.group(1) == subject.replace("&", "&amp;")


def test_it_lays_out_the_partner_request_without_align(
    client: TestClient, personas: Engine
) -> None:
    page = sign_in(client, personas, ALICE)
    client.post(f"/{SLUG}/deletion", data={"partner": "park-a", "csrf_token": csrf(page)})

    [(_, html)] = outbox_html(personas, "partner_request")
    assert "align=" not in html
    assert '<th scope="row"' in html


def test_it_has_no_obsolete_markup_in_any_email_template() -> None:
    layout = (TEMPLATES_DIR / "emails" / "_layout.html").read_text(encoding="utf-8")
    assert "<title>{{ subject }}</title>" in layout
    for template in (TEMPLATES_DIR / "emails").glob("*/body.html"):
        text = template.read_text(encoding="utf-8")
        # Its own <title>, or the layout's through the templates it extends.
        while "<title>" not in text and (parent := re.search(r'{% extends "([^"]+)" %}', text)):
            text = (TEMPLATES_DIR / parent[1]).read_text(encoding="utf-8")
        assert "<title>" in text, template
    for template in (TEMPLATES_DIR / "emails").glob("**/*.html"):
        text = template.read_text(encoding="utf-8")
        obsolete = r"\s(align|bgcolor|valign|cellpadding|cellspacing|border|width)="
        assert not re.search(obsolete, text), template
