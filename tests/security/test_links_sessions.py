"""Links and sessions: signature, expiry, purpose, single use, fixation, cookie flags."""

from __future__ import annotations

import base64
import secrets
from datetime import timedelta

import httpx
import pytest
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy import func, select, update

from portal.core.clock import utcnow
from portal.store import tables
from tests.fixtures_mail import SmtpServer
from tests.security.conftest import SLUG, Site, Visitor, form_token, links_to, wait_until
from tests.server import Portal

pytestmark = pytest.mark.e2e

E2E_SECRET_KEY = "e2e-secret-key"  # tests/server.py portal_env


def fresh_link(site: Site, visitor: Visitor, address: str) -> str:
    """Asks for a link for `address` and returns its path."""
    before = len(links_to(site.smtp, address))
    assert visitor.lookup(address).status_code == 303
    wait_until(lambda: len(links_to(site.smtp, address)) > before)
    return links_to(site.smtp, address)[-1].removeprefix(site.portal.url)


def assert_offers_a_new_link(response: httpx.Response, status: int, reason: str) -> None:
    assert response.status_code == status
    assert f'data-link-error="{reason}"' in response.text
    assert "data-new-link" in response.text
    assert response.headers["cache-control"] == "no-store"


def cookie_attributes(response: httpx.Response, name: str) -> set[str]:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(f"{name}="):
            return {part.strip().lower().split("=")[0] for part in header.split(";")[1:]}
    raise AssertionError(f"no {name} cookie set")


def flip(text: str) -> str:
    """Another first character: the last one of base64 may only carry padding bits."""
    return ("A" if text[0] != "A" else "B") + text[1:]


def test_it_consumes_nothing_on_get(site: Site) -> None:
    visitor = site.visitor()
    link = fresh_link(site, visitor, "scanner@example.net")

    for _ in range(3):
        page = visitor.http.get(link)
        assert page.status_code == 200
        assert "data-confirm" in page.text

    assert visitor.http.post(link, data={"csrf_token": form_token(page.text)}).status_code == 303


def test_it_uses_a_link_once(site: Site) -> None:
    visitor = site.visitor()
    link = fresh_link(site, visitor, "once@example.net")
    token = form_token(visitor.http.get(link).text)
    assert visitor.http.post(link, data={"csrf_token": token}).status_code == 303

    assert_offers_a_new_link(visitor.http.get(link), 410, "link_used")
    again = visitor.http.post(link, data={"csrf_token": visitor.csrf()})
    assert_offers_a_new_link(again, 410, "link_used")


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t[: t.rindex(".") + 1] + flip(t[t.rindex(".") + 1 :]),  # signature
        lambda t: flip(t),  # payload
        lambda t: t[: len(t) // 2],  # truncated
        lambda t: t + "x",
        lambda t: "not-a-token",
    ],
    ids=["signature", "payload", "truncated", "appended", "garbage"],
)
def test_it_refuses_a_tampered_link(site: Site, tamper: object) -> None:
    visitor = site.visitor()
    link = fresh_link(site, visitor, f"tamper-{secrets.token_hex(4)}@example.net")
    bad = "/v/" + tamper(link.removeprefix("/v/"))  # type: ignore[operator]

    assert_offers_a_new_link(visitor.http.get(bad), 400, "link_invalid")
    response = visitor.http.post(bad, data={"csrf_token": visitor.csrf()})
    assert_offers_a_new_link(response, 400, "link_invalid")
    assert visitor.http.get(link).status_code == 200, "the genuine link stays usable"


def test_it_refuses_an_expired_link(site: Site) -> None:
    visitor = site.visitor()
    link = fresh_link(site, visitor, "late@example.net")
    with site.engine.begin() as conn:
        newest = select(func.max(tables.links.c.id)).scalar_subquery()
        conn.execute(
            update(tables.links)
            .where(tables.links.c.id == newest)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )

    assert_offers_a_new_link(visitor.http.get(link), 410, "link_expired")
    response = visitor.http.post(link, data={"csrf_token": visitor.csrf()})
    assert_offers_a_new_link(response, 410, "link_expired")


def test_it_refuses_a_link_for_another_purpose(site: Site) -> None:
    visitor = site.visitor()
    visitor.sign_in(site.smtp, "purpose@example.net")
    session = visitor.http.cookies["portal_session"]
    csrf_cookie = visitor.http.cookies["portal_csrf"]

    for foreign in (session, csrf_cookie, form_token(visitor.http.get(f"/{SLUG}/").text)):
        assert_offers_a_new_link(visitor.http.get(f"/v/{foreign}"), 400, "link_invalid")


def test_it_refuses_a_well_signed_link_it_never_issued(site: Site) -> None:
    """Even with the secret key, a link needs its server-side record."""
    serializer = URLSafeTimedSerializer(E2E_SECRET_KEY, salt="portal.link")
    forged = serializer.dumps(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())

    assert_offers_a_new_link(site.visitor().http.get(f"/v/{forged}"), 400, "link_invalid")


def test_it_starts_a_new_session_on_confirmation(site: Site) -> None:
    visitor = site.visitor()
    visitor.http.cookies.set("portal_session", "planted-by-an-attacker", domain="127.0.0.1")
    visitor.csrf()
    csrf_before = visitor.http.cookies["portal_csrf"]
    link = fresh_link(site, visitor, "fixation@example.net")

    response = visitor.http.post(link, data={"csrf_token": form_token(visitor.http.get(link).text)})

    session = response.cookies["portal_session"]
    assert session != "planted-by-an-attacker"
    assert response.cookies["portal_csrf"] != csrf_before
    second = fresh_link(site, visitor, "fixation@example.net")
    again = visitor.http.post(
        second, data={"csrf_token": form_token(visitor.http.get(second).text)}
    )
    assert again.cookies["portal_session"] not in (session, "planted-by-an-attacker")


def test_it_sets_session_cookies_httponly_and_lax(site: Site) -> None:
    visitor = site.visitor()
    link = fresh_link(site, visitor, "cookies@example.net")

    response = visitor.http.post(link, data={"csrf_token": form_token(visitor.http.get(link).text)})

    for name in ("portal_session", "portal_csrf"):
        attributes = cookie_attributes(response, name)
        assert {"httponly", "samesite", "path"} <= attributes
        assert "secure" not in attributes, "plain http in tests: Secure would lose the cookie"
    assert "samesite=lax" in response.headers["set-cookie"].lower()
    assert "max-age=1800" in response.headers["set-cookie"].lower()


def test_it_enforces_session_expiry_on_the_server(site: Site) -> None:
    visitor = site.visitor()
    assert "data-result" in visitor.sign_in(site.smtp, "expiry@example.net")
    with site.engine.begin() as conn:
        newest = select(func.max(tables.sessions.c.id)).scalar_subquery()
        conn.execute(
            update(tables.sessions)
            .where(tables.sessions.c.id == newest)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )

    response = visitor.http.get(f"/{SLUG}/results")

    assert (response.status_code, response.headers["location"]) == (303, f"/{SLUG}/")


def test_it_ignores_a_tampered_session_cookie(site: Site) -> None:
    visitor = site.visitor()
    visitor.sign_in(site.smtp, "tampered-session@example.net")
    value = visitor.http.cookies["portal_session"]
    visitor.http.cookies.set("portal_session", flip(value), domain="127.0.0.1")

    response = visitor.http.get(f"/{SLUG}/results")

    assert response.status_code == 303


def test_it_keeps_a_session_to_its_own_visitor(site: Site) -> None:
    alice = site.visitor()
    alice.sign_in(site.smtp, "own-session@example.net")
    stranger = site.visitor()

    assert stranger.http.get(f"/{SLUG}/results").status_code == 303


def test_it_marks_cookies_secure_on_https(https_portal: Portal, smtp: SmtpServer) -> None:
    """TLS ends at a proxy; the test carries the Secure cookie itself over loopback http."""
    address = "https-person@example.net"
    with httpx.Client(base_url=https_portal.url) as http:
        page = http.get(f"/{SLUG}/")
        assert "secure" in cookie_attributes(page, "portal_csrf")
        jar = {"cookie": f"portal_csrf={page.cookies['portal_csrf']}"}
        form = {"email": address, "csrf_token": form_token(page.text)}
        answer = http.post(f"/{SLUG}/lookup", data=form, headers=jar)
        assert answer.status_code == 303
        assert {"secure", "httponly", "samesite"} <= cookie_attributes(answer, "portal_sent")
        wait_until(lambda: links_to(smtp, address))
        link = links_to(smtp, address)[-1]
        assert link.startswith("https://")
        path = "/v/" + link.rsplit("/v/", 1)[1]
        token = form_token(http.get(path, headers=jar).text)

        response = http.post(path, data={"csrf_token": token}, headers=jar)

    assert response.status_code == 303
    for name in ("portal_session", "portal_csrf"):
        assert {"secure", "httponly", "samesite"} <= cookie_attributes(response, name)
