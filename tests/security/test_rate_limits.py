"""Abuse limits: per address, per client, on confirmation; X-Forwarded-For; Redis."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import redis
from sqlalchemy import func, select

from portal.core.config import Settings
from portal.core.errors import PortalError
from portal.person.ratelimit import RateLimiter
from portal.store import db, tables
from tests.databases import Backend
from tests.fixtures_mail import SmtpServer
from tests.security.conftest import (
    SLUG,
    Site,
    form_token,
    links_to,
    load_personas,
    lookups_answered,
    metric,
    wait_until,
)
from tests.server import Portal, running_portal

pytestmark = pytest.mark.e2e

REDIS_DB = 7  # only this database is flushed


def wait_until_quiet(site: Site, lookups: int) -> None:
    """Until `lookups` lookups have finished their background work and mail."""
    wait_until(lambda: lookups_answered(site.portal) >= lookups)
    wait_until(lambda: not site.mail_pending())


def test_it_sends_an_address_no_more_than_its_limit(site: Site) -> None:
    address = "flooded@example.net"
    before = metric(site.portal, "portal_rate_limited_total", limit="address")
    answered = lookups_answered(site.portal)

    pages = [site.visitor().lookup(address) for _ in range(5)]  # each from its own client

    assert {(p.status_code, p.headers["location"]) for p in pages} == {(303, f"/{SLUG}/sent")}
    wait_until_quiet(site, answered + 5)
    assert len(links_to(site.smtp, address)) == 3
    assert metric(site.portal, "portal_rate_limited_total", limit="address") == before + 2


def test_it_stops_a_client_over_its_limit(site: Site) -> None:
    harvester = site.visitor()
    before = metric(site.portal, "portal_rate_limited_total", limit="client")
    answered = lookups_answered(site.portal)
    addresses = [f"harvest-{n}@example.net" for n in range(6)]

    pages = [harvester.lookup(address) for address in addresses]

    assert {p.status_code for p in pages} == {303}
    wait_until_quiet(site, answered + 6)
    assert [bool(links_to(site.smtp, a)) for a in addresses] == [True] * 4 + [False] * 2
    assert metric(site.portal, "portal_rate_limited_total", limit="client") == before + 2


def test_it_shows_the_same_sent_page_over_the_limit(site: Site) -> None:
    harvester = site.visitor()
    answered = lookups_answered(site.portal)
    sent = set()
    for n in range(6):  # the client limit is 4: the last two are over it
        address = f"same-page-{n}@example.net"
        page = harvester.http.get(harvester.lookup(address).headers["location"]).text
        # The page shows back the address typed, whatever happened to it, and nothing else.
        assert f"<strong data-sent-address>{address}</strong>" in page
        sent.add(page.replace(address, "ADDRESS"))
    wait_until_quiet(site, answered + 6)  # none of it left running into the next test

    assert len(sent) == 1


def test_it_takes_the_client_from_the_last_untrusted_forwarded_hop(site: Site) -> None:
    """A proxy appends the real peer: spoofed hops to its left do not make a new client."""
    http = httpx.Client(base_url=site.portal.url)
    token = form_token(http.get(f"/{SLUG}/").text)
    answered = lookups_answered(site.portal)
    addresses = [f"spoof-{n}@example.net" for n in range(6)]
    for n, address in enumerate(addresses):
        forwarded = f"192.0.2.{n}, 198.51.100.77"
        response = http.post(
            f"/{SLUG}/lookup",
            data={"email": address, "csrf_token": token},
            headers={"X-Forwarded-For": forwarded},
        )
        assert response.status_code == 303
    http.close()

    wait_until_quiet(site, answered + 6)
    assert sum(bool(links_to(site.smtp, a)) for a in addresses) == 4


def test_it_counts_an_ipv6_client_by_its_64(site: Site) -> None:
    """Stepping through the addresses of one /64 does not make new clients."""
    http = httpx.Client(base_url=site.portal.url)
    token = form_token(http.get(f"/{SLUG}/").text)
    answered = lookups_answered(site.portal)
    addresses = [f"ipv6-{n}@example.net" for n in range(6)]
    for n, address in enumerate(addresses):
        response = http.post(
            f"/{SLUG}/lookup",
            data={"email": address, "csrf_token": token},
            headers={"X-Forwarded-For": f"2001:db8:64:64::{n + 1:x}"},
        )
        assert response.status_code == 303
    http.close()

    wait_until_quiet(site, answered + 6)
    assert sum(bool(links_to(site.smtp, a)) for a in addresses) == 4


def test_it_limits_link_confirmation_per_client(site: Site) -> None:
    guesser = site.visitor()
    token = guesser.csrf()
    before = metric(site.portal, "portal_rate_limited_total", limit="confirm")

    answers = [
        guesser.http.post(f"/v/guess-{n}", data={"csrf_token": token}).status_code for n in range(6)
    ]

    assert answers == [400] * 4 + [429] * 2
    assert metric(site.portal, "portal_rate_limited_total", limit="confirm") == before + 2


def test_it_has_a_login_limit_for_the_admin_area() -> None:
    settings = Settings.from_env({"PORTAL_SECRET_KEY": "k", "PORTAL_PEPPER": "p"})
    limiter = RateLimiter(settings)

    assert [str(item) for item in limiter.items["login"]] == ["10 per 1 hour"]


@pytest.mark.parametrize(
    "variable",
    [
        "PORTAL_LIMIT_PER_ADDRESS",
        "PORTAL_LIMIT_PER_CLIENT",
        "PORTAL_LIMIT_CONFIRM_PER_CLIENT",
        "PORTAL_LIMIT_LOGIN",
    ],
)
def test_it_refuses_a_limit_it_cannot_read(variable: str) -> None:
    with pytest.raises(PortalError, match=variable):
        Settings.from_env({"PORTAL_SECRET_KEY": "k", "PORTAL_PEPPER": "p", variable: "lots"})


# -- Redis: one limit for every worker process ---------------------------------------------


@pytest.fixture(scope="module")
def redis_portal(
    tmp_path_factory: pytest.TempPathFactory,
    smtp: SmtpServer,
    redis_db: redis.Redis,
    backend: Backend,
) -> Iterator[Portal]:
    """Two worker processes sharing limits in Redis and the database; no trusted proxy."""
    redis_db.flushdb()
    instance = tmp_path_factory.mktemp("redis-portal")
    backend.new_database(instance)
    with running_portal(
        instance,
        "--workers",
        "2",
        PORTAL_SMTP_URL=smtp.url(),
        PORTAL_REDIS_URL=f"redis://127.0.0.1:6379/{REDIS_DB}",
        PORTAL_LIMIT_PER_CLIENT="3/hour",
    ) as portal:
        load_personas(portal, instance)
        yield portal


@pytest.mark.redis
def test_it_shares_limits_between_workers_through_redis(
    redis_portal: Portal, redis_db: redis.Redis, smtp: SmtpServer
) -> None:
    addresses = [f"redis-{n}@example.net" for n in range(8)]
    for n, address in enumerate(addresses):
        # A new connection each time, so both workers answer; X-Forwarded-For is not believed.
        with httpx.Client(base_url=redis_portal.url) as http:
            token = form_token(http.get(f"/{SLUG}/").text)
            response = http.post(
                f"/{SLUG}/lookup",
                data={"email": address, "csrf_token": token},
                headers={"X-Forwarded-For": f"192.0.2.{n}"},
            )
            assert response.status_code == 303

    wait_until(lambda: lookups_answered(redis_portal) == 8)
    wait_until(lambda: sum(bool(links_to(smtp, a)) for a in addresses) >= 3)
    assert outbox_rows(redis_portal) == 3
    keys = [key.decode() for key in redis_db.keys("*")]
    assert keys, "no limit was kept in Redis"
    assert not [k for k in keys if "127.0.0.1" in k or "192.0.2" in k or "@" in k]


def outbox_rows(portal: Portal) -> int:
    engine = db.make_engine(portal.database_url)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(tables.outbox)) or 0)
    finally:
        engine.dispose()
