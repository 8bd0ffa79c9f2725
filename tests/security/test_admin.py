"""The admin area under attack: headers, the operator cookie on https, login timing and limits."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.security.conftest import Site, form_token, new_client_address
from tests.server import Portal

pytestmark = pytest.mark.e2e

OPERATOR, PASSWORD = "dora", "a long passphrase she keeps"


def create_operator(portal: Portal) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "portal", "admin", "create", OPERATOR, "--password-stdin"],
        env=portal.env,
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 or "exists already" in done.stderr, done.stderr


def operator_client(portal: Portal) -> httpx.Client:
    return httpx.Client(
        base_url=portal.url, headers={"X-Forwarded-For": new_client_address()}, timeout=30
    )


def log_in(
    http: httpx.Client, username: str = OPERATOR, password: str = PASSWORD
) -> httpx.Response:
    token = form_token(http.get("/admin/login").text)
    return http.post(
        "/admin/login", data={"username": username, "password": password, "csrf_token": token}
    )


@pytest.fixture(scope="module")
def signed_in(site: Site) -> Iterator[httpx.Client]:
    create_operator(site.portal)
    with operator_client(site.portal) as http:
        assert log_in(http).status_code == 303
        yield http


@pytest.mark.parametrize(
    "path",
    ["/admin/login", "/admin/", "/admin/requests", "/admin/audit", "/admin/requests/DR-0000-0000"],
)
def test_it_sends_the_strict_headers_on_admin_pages(signed_in: httpx.Client, path: str) -> None:
    response = signed_in.get(path)
    assert response.status_code in (200, 404)
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert "<script" not in response.text and "style=" not in response.text
    assert "http://" not in response.text.replace(signed_in.base_url.__str__(), "")


def test_it_sets_the_operator_cookie_httponly_lax_and_only_for_admin(site: Site) -> None:
    create_operator(site.portal)
    with operator_client(site.portal) as http:
        response = log_in(http)
    cookie = next(
        c for c in response.headers.get_list("set-cookie") if c.startswith("portal_admin=")
    )
    lowered = cookie.lower()
    assert "httponly" in lowered and "samesite=lax" in lowered and "path=/admin" in lowered
    assert "secure" not in lowered


def test_it_marks_the_operator_cookie_secure_on_https(https_portal: Portal) -> None:
    """TLS ends at a proxy; the test carries the Secure cookies itself over loopback http."""
    create_operator(https_portal)
    with httpx.Client(base_url=https_portal.url) as http:
        page = http.get("/admin/login")
        jar = {"cookie": f"portal_csrf={page.cookies['portal_csrf']}"}
        form = {"username": OPERATOR, "password": PASSWORD, "csrf_token": form_token(page.text)}
        response = http.post("/admin/login", data=form, headers=jar)
        assert response.status_code == 303
        cookies = response.headers.get_list("set-cookie")
        admin = next(c for c in cookies if c.startswith("portal_admin="))
        assert "secure" in admin.lower() and "httponly" in admin.lower()
        assert all("secure" in c.lower() for c in cookies)
        session = f"portal_admin={response.cookies['portal_admin']}"
        home = http.get("/admin/", headers={"cookie": session})
    assert home.status_code == 200
    assert "strict-transport-security" in home.headers


def test_it_answers_an_unknown_name_in_the_time_of_a_wrong_password(site: Site) -> None:
    """Both cost one argon2id: the answer does not tell which names exist."""
    create_operator(site.portal)
    timings: dict[str, list[float]] = {"wrong": [], "unknown": []}
    bodies = set()
    for n in range(8):
        for kind, name in (("wrong", OPERATOR), ("unknown", f"nobody{n}")):
            with operator_client(site.portal) as http:
                token = form_token(http.get("/admin/login").text)
                started = time.perf_counter()
                response = http.post(
                    "/admin/login",
                    data={"username": name, "password": f"wrong guess {n}!!", "csrf_token": token},
                )
                timings[kind].append(time.perf_counter() - started)
            assert response.status_code == 400
            bodies.add(response.text.replace(f'value="{name}"', ""))
    assert len({b.replace(form_token(b), "") for b in bodies}) == 1
    wrong, unknown = statistics.median(timings["wrong"]), statistics.median(timings["unknown"])
    assert abs(wrong - unknown) < 0.5 * max(wrong, unknown), timings


def test_it_throttles_failed_logins_from_one_client(site: Site) -> None:
    create_operator(site.portal)
    with operator_client(site.portal) as http:
        answers = [log_in(http, f"guess{n}", "not the password!!").status_code for n in range(10)]
        assert answers == [400] * 10
        throttled = log_in(http)
    assert throttled.status_code == 429
    assert "Too many failed logins" in throttled.text
    with operator_client(site.portal) as other:
        assert log_in(other).status_code == 303, "another client is not throttled"
