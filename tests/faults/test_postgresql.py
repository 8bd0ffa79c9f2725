"""PostgreSQL restarted, then stopped for 20 s, under a steady load on two servers.

What a person sees meanwhile: the incident and partner pages answer from the cache; a
lookup is answered 303 as ever; a page that needs the database answers 503 with
Retry-After and the error page, never a 500; /healthz says 503 "database". Within 5 s of the
database's return every page answers again, with no restart, and every lookup answered 303
gets exactly one link mail. A server stopped while the database is away says how many
lookups it could not write.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.faults.servers import SLUG, Cluster, Site, address, confirm, csrf, running_site
from tests.fixtures_mail import wait_for_sync
from tests.server import shows_in_the_guide

pytestmark = pytest.mark.e2e

OUTAGE = 20.0  # seconds PostgreSQL stays stopped
BACK_WITHIN = 5.0  # seconds after its return by which every page answers again
# What each page answers while the database is there.
NORMAL = {"incident": 200, "partner": 200, "results": 200, "link": 410, "healthz": 200}
SHUTDOWN_TIMEOUT = 3  # the second server's PORTAL_SHUTDOWN_TIMEOUT


@dataclass(frozen=True)
class Seen:
    """One page as a visitor got it."""

    page: str
    server: int
    status: int
    retry_after: str | None
    body: str


class Visitors:
    """On each server, a person with a verified session, and the link they used."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.browsers = [site.sign_in(address(4 * n), n) for n in range(len(site.servers))]
        self.used = [site.link_for(address(4 * n + 1), n) for n in range(len(site.servers))]
        for browser, path in zip(self.browsers, self.used, strict=True):
            confirm(browser, path)  # used: it answers 410 while all is well

    def look(self) -> list[Seen]:
        """Every page on every server, once."""
        seen = []
        for n, browser in enumerate(self.browsers):
            for page, path in (
                ("incident", f"/{SLUG}/"),
                ("partner", f"/{SLUG}/p/park-a/"),
                ("results", f"/{SLUG}/results"),
                ("link", self.used[n]),
                ("healthz", "/healthz"),
            ):
                answer = browser.get(path)
                seen.append(
                    Seen(
                        page, n, answer.status_code, answer.headers.get("retry-after"), answer.text
                    )
                )
        return seen

    def until_normal(self, within: float) -> tuple[float, list[Seen]]:
        """Looks until every page answers as normal; the seconds that took, and what was seen."""
        started = time.monotonic()
        seen: list[Seen] = []
        while time.monotonic() - started < within + 30:
            round_ = self.look()
            seen += round_
            if all(s.status == NORMAL[s.page] for s in round_):
                return time.monotonic() - started, seen
        last = Counter((s.page, s.status) for s in seen[-10:])
        raise AssertionError(f"pages still not normal after {within + 30} s: {last}")

    def close(self) -> None:
        for browser in self.browsers:
            browser.close()


def test_it_answers_from_the_cache_and_mails_every_lookup_while_postgresql_is_away(
    tmp_path: Path, cluster: Cluster
) -> None:
    second = {"PORTAL_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT)}
    with running_site(tmp_path, cluster, server_env=[{}, second]) as site:
        assert site.postgres is not None
        visitors = Visitors(site)
        try:
            with site.load() as load:
                load.wait_for(40)

                site.postgres.restart()
                after_restart, seen = visitors.until_normal(BACK_WITHIN)

                site.postgres.stop()
                stopped = time.monotonic()
                during: list[Seen] = []
                shows_in_the_guide("postgresql", url=site.servers[0].url)
                while time.monotonic() - stopped < OUTAGE:
                    during += visitors.look()
                answered_meanwhile = len([a for a in load.answers if a.at >= stopped])
                site.postgres.start()
                after_stop, seen_after = visitors.until_normal(BACK_WITHIN)
                load.wait_for(40, since=time.monotonic())
            seen += during + seen_after

            # Nobody saw a 500; the cached pages never failed.
            assert {s.status for s in seen} <= {200, 410, 503}
            assert {s.status for s in seen if s.page in ("incident", "partner")} == {200}
            # While the database was away: 503 with Retry-After and the error page.
            away = {(s.page, s.status) for s in during}
            assert away == {
                ("incident", 200),
                ("partner", 200),
                ("results", 503),
                ("link", 503),
                ("healthz", 503),
            }
            for s in during:
                if s.page in ("results", "link", "healthz"):
                    assert s.retry_after == "5"
                if s.page in ("results", "link"):
                    assert 'data-error-status="503"' in s.body
                if s.page == "healthz":
                    assert json.loads(s.body) == {"status": "unavailable", "reason": "database"}
            # Back within 5 s of each return, with no restart of the servers.
            assert after_restart <= BACK_WITHIN
            assert after_stop <= BACK_WITHIN

            # Every lookup was answered 303, those during the outage too, and each gets
            # exactly one link mail.
            assert answered_meanwhile >= 300
            assert {a.status for a in load.answers} == {303}
            looked_up = load.answered()
            mails = site.wait_for_mails(looked_up, timeout=90)
            assert Counter(mails[a] for a in looked_up) == {1: len(looked_up)}
            statuses = "SELECT status, count(*) FROM outbox GROUP BY status"
            everyone = [("sent", len(looked_up) + 4)]  # and the visitors' four
            wait_for_sync(lambda: site.sql(statuses) == everyone, timeout=10)

            for server in site.servers:
                log = server.log()
                assert "Traceback" not in log
                assert "@example.net" not in log
                assert '"status": 500' not in log

            # Stopped while the database is away: within its timeout, saying what it lost.
            site.postgres.stop()
            lost = [address(n) for n in range(50, 55)]
            with httpx.Client(base_url=site.servers[1].url, timeout=10) as client:
                token = csrf(client.get(f"/{SLUG}/"))
                for email in lost:
                    data = {"email": email, "csrf_token": token}
                    assert client.post(f"/{SLUG}/lookup", data=data).status_code == 303
            assert site.stop_server(1) <= SHUTDOWN_TIMEOUT + 2
            assert (
                f"{len(lost)} accepted lookups lost at shutdown: not written within the "
                "shutdown timeout" in site.servers[1].log()
            )
        finally:
            visitors.close()
