"""CSRF: every state-changing request needs the visitor's cookie and its form token."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.routing import BaseRoute, Mount, Route

from portal.app import create_app
from portal.core.config import Settings
from tests.security.conftest import KNOWN, SLUG, Site, form_token, links_to, wait_until

pytestmark = pytest.mark.e2e

UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
# Values for the path parameters of any route, present or to come (the admin area).
PARAMS = {"incident": SLUG, "token": "x" * 40, "reference": "DR-0000-0000", "partner": "park-a"}


def unsafe_routes(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(method, concrete path) of every state-changing route of the app, mounts included."""
    for route in routes:
        if isinstance(route, Mount):
            yield from unsafe_routes(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            for method in sorted((route.methods or set()) & UNSAFE):
                path = re.sub(r"{(\w+)(:\w+)?}", lambda m: PARAMS.get(m[1], "x"), route.path)
                yield method, prefix + path


def app_routes(tmp_path: Path) -> list[tuple[str, str]]:
    settings = Settings(
        instance_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path}/routes.db",
        secret_key="k",
        pepper=b"p",
    )
    return list(unsafe_routes(create_app(settings, deliver_mail=False).routes))


ROUTES = app_routes(Path("/nonexistent-never-opened"))


def test_it_knows_the_state_changing_routes() -> None:
    assert ("POST", f"/{SLUG}/lookup") in ROUTES
    assert ("POST", f"/{SLUG}/deletion") in ROUTES
    assert ("POST", f"/{SLUG}/code") in ROUTES
    assert ("POST", "/v/" + "x" * 40) in ROUTES
    for action in ("status", "extend", "retry"):
        assert ("POST", f"/admin/requests/DR-0000-0000/{action}") in ROUTES
    assert ("POST", "/admin/login") in ROUTES
    assert ("POST", "/admin/logout") in ROUTES
    assert ("POST", "/r/" + "x" * 40) in ROUTES
    assert ("POST", "/api/requests/DR-0000-0000") in ROUTES


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
@pytest.mark.parametrize("attack", ["no-token", "wrong-token", "other-visitors-token", "no-cookie"])
def test_it_refuses_every_state_change_without_a_matching_token(
    site: Site, method: str, path: str, attack: str
) -> None:
    visitor, other = site.visitor(), site.visitor()
    visitor.csrf()
    form = {
        "no-token": {},
        "wrong-token": {"csrf_token": "0" * 64},
        "other-visitors-token": {"csrf_token": other.csrf()},
        "no-cookie": {"csrf_token": visitor.csrf()},
    }[attack]
    if attack == "no-cookie":
        visitor.http.cookies.clear()
    form |= {"email": "csrf-victim@example.net", "partner": "all"}

    response = visitor.http.request(method, path, data=form)

    if path.startswith("/api/"):
        # Signed JSON, not a form: a cross-site form cannot send application/json (415),
        # and without the partner's signature nothing is done (401).
        assert response.status_code == 415, response.text
    elif path.startswith("/admin/") and response.status_code == 303:
        assert response.headers["location"] == "/admin/login"
    else:
        assert response.status_code == 403, response.text
        assert 'data-error-status="403"' in response.text


@pytest.mark.parametrize(
    "content_type", ["application/json", "text/plain", "application/xml", "application/x-unknown"]
)
def test_it_refuses_cross_site_content_types(site: Site, content_type: str) -> None:
    """A form with enctype=text/plain or a fetch() with JSON is not a form we read."""
    visitor = site.visitor()
    body = f"email=csrf-victim@example.net&csrf_token={visitor.csrf()}"

    response = visitor.http.post(
        f"/{SLUG}/lookup", content=body, headers={"content-type": content_type}
    )

    assert response.status_code == 415
    assert 'data-error-status="415"' in response.text


def test_it_queues_nothing_for_a_forged_lookup(site: Site) -> None:
    visitor = site.visitor()

    forged = visitor.http.post(f"/{SLUG}/lookup", data={"email": "forged@example.net"})
    assert forged.status_code == 403
    # A genuine lookup after it: once its mail is out, any work the forged one started is too.
    assert visitor.lookup("after-forged@example.net").status_code == 303
    wait_until(lambda: links_to(site.smtp, "after-forged@example.net"))

    assert not links_to(site.smtp, "forged@example.net")


def test_it_keeps_a_link_unused_after_a_forged_confirmation(site: Site) -> None:
    visitor = site.visitor()
    assert visitor.lookup("forged-confirm@example.net").status_code == 303
    wait_until(lambda: links_to(site.smtp, "forged-confirm@example.net"))
    link = links_to(site.smtp, "forged-confirm@example.net")[-1]
    path = link.removeprefix(site.portal.url)

    assert visitor.http.post(path, data={"confirm": "1"}).status_code == 403

    assert visitor.confirm(link).status_code == 303


def test_it_makes_no_deletion_request_on_a_forged_post(site: Site) -> None:
    visitor = site.visitor()
    visitor.sign_in(site.smtp, KNOWN[50])

    response = visitor.http.post(f"/{SLUG}/deletion", data={"partner": "all"})

    assert response.status_code == 403
    assert "data-deletion-ref" not in visitor.http.get(f"/{SLUG}/results").text


def test_it_accepts_the_genuine_form(site: Site) -> None:
    visitor = site.visitor()
    token = form_token(visitor.http.get(f"/{SLUG}/").text)

    response = visitor.http.post(
        f"/{SLUG}/lookup", data={"email": "genuine@example.net", "csrf_token": token}
    )

    assert response.status_code == 303
