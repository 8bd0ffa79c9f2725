"""Security headers on every response; no inline script or style; nothing from elsewhere."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from portal.app import create_app
from portal.core.config import Settings
from portal.store import db
from tests.security.conftest import SLUG, Site, links_to, wait_until
from tests.server import Portal

pytestmark = pytest.mark.e2e

ALWAYS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


@pytest.fixture(scope="module")
def responses(site: Site) -> dict[str, httpx.Response]:
    """One response of every kind the portal gives, from a visitor who is signed in."""
    visitor = site.visitor()
    results = visitor.sign_in(site.smtp, "headers@example.net")
    assert "data-result" in results
    address = "headers-link@example.net"
    visitor.lookup(address)
    wait_until(lambda: links_to(site.smtp, address))
    link = links_to(site.smtp, address)[-1].removeprefix(site.portal.url)
    token = visitor.csrf()
    http = visitor.http
    return {
        "home": http.get("/"),
        "incident": http.get(f"/{SLUG}/"),
        "partner page": http.get(f"/{SLUG}/p/park-a/"),
        "lookup 303": visitor.lookup("headers-sent@example.net"),
        "lookup 400": http.post(f"/{SLUG}/lookup", data={"email": "x", "csrf_token": token}),
        "sent": http.get(f"/{SLUG}/sent"),
        "confirm page": http.get(link),
        "bad link": http.get("/v/nonsense"),
        "results": http.get(f"/{SLUG}/results"),
        "csrf 403": http.post(f"/{SLUG}/lookup", data={"email": "a@example.org"}),
        "404": http.get("/no/such/page"),
        "405": http.delete(f"/{SLUG}/"),
        "413": http.post(f"/{SLUG}/lookup", data={"email": "a" * 20_000}),
        "415": http.post(f"/{SLUG}/lookup", json={"email": "a@example.org"}),
        "static": http.get("/static/portal.css"),
        "healthz": http.get("/healthz"),
        "metrics": http.get("/metrics"),
    }


def kinds() -> list[str]:
    return [
        "home", "incident", "partner page", "lookup 303", "lookup 400", "sent", "confirm page",
        "bad link", "results", "csrf 403", "404", "405", "413", "415", "static", "healthz",
        "metrics",
    ]  # fmt: skip


def csp(response: httpx.Response) -> dict[str, list[str]]:
    directives = [d.split() for d in response.headers["content-security-policy"].split(";")]
    return {d[0]: d[1:] for d in directives if d}


@pytest.mark.parametrize("kind", kinds())
def test_it_sends_the_strict_headers_on_every_response(
    responses: dict[str, httpx.Response], kind: str
) -> None:
    response = responses[kind]
    for name, value in ALWAYS.items():
        assert response.headers.get(name) == value, name
    assert "camera=()" in response.headers["permissions-policy"]
    policy = csp(response)
    assert policy["default-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["style-src"] == ["'self'"]
    assert "script-src" not in policy, "no script at all: default-src 'none' forbids it"
    assert not [v for values in policy.values() for v in values if "unsafe" in v or ":" in v]
    assert "strict-transport-security" not in response.headers, "plain http"
    assert "server" not in response.headers


@pytest.mark.parametrize("kind", [k for k in kinds() if k != "static"])
def test_it_forbids_caching_every_page(responses: dict[str, httpx.Response], kind: str) -> None:
    assert responses[kind].headers["cache-control"] == "no-store"


def test_it_shows_results_only_to_be_kept_by_nobody(responses: dict[str, httpx.Response]) -> None:
    """Pages with personal data or a token: the results and the confirmation page."""
    for kind in ("results", "confirm page", "sent"):
        assert responses[kind].headers["cache-control"] == "no-store"


@pytest.mark.parametrize("kind", [k for k in kinds() if k not in ("static", "healthz", "metrics")])
def test_it_has_no_inline_script_or_style_and_nothing_from_elsewhere(
    responses: dict[str, httpx.Response], kind: str
) -> None:
    html = responses[kind].text
    if "html" not in responses[kind].headers.get("content-type", ""):
        return
    assert not re.search(r"<script|<style|\sstyle=|\son[a-z]+=|javascript:", html, re.I)
    for url in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert url.startswith(("/", "?", "#", "mailto:")), url


def test_it_sends_hsts_on_https(https_portal: Portal) -> None:
    for path in ("/", f"/{SLUG}/", "/no/such/page", "/static/portal.css", "/healthz"):
        response = httpx.get(https_portal.url + path)
        assert response.headers["strict-transport-security"] == (
            "max-age=63072000; includeSubDomains"
        )


@pytest.fixture
def failing_app(tmp_path: Path) -> Iterator[TestClient]:
    """In process: the only way to make the real code fail is to give it a failing route."""
    settings = Settings(
        instance_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path}/portal.db",
        secret_key="k",
        pepper=b"p",
    )
    engine = db.make_engine(settings.database_url)
    db.migrate(engine)
    engine.dispose()
    app = create_app(settings, deliver_mail=False)

    async def fail(request: object) -> None:
        raise RuntimeError("a secret detail: alice@example.org")

    app.router.routes.insert(0, Route("/fail", fail))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_it_sends_the_headers_on_a_server_error_too(failing_app: TestClient) -> None:
    response = failing_app.get("/fail")

    assert response.status_code == 500
    assert 'data-error-status="500"' in response.text
    assert "alice" not in response.text
    assert "Traceback" not in response.text
    for name, value in ALWAYS.items():
        assert response.headers.get(name) == value, name
    assert response.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
