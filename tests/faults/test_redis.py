"""Redis stopped under a steady load on two servers, then started again.

Meanwhile each server keeps the limits in its own memory: it says so once in its log and
counts each such check in /metrics; /healthz stays 200 and says "redis": "down"; nothing
answers 500 and no lookup is lost. Once Redis answers again, the limits are shared again.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.faults.servers import SLUG, Cluster, Site, address, csrf, metric, running_site
from tests.fixtures_mail import wait_for_sync
from tests.server import shows_in_the_guide

pytestmark = pytest.mark.e2e

# Three confirmations an hour per client: a bad link answers 400 until then, 429 after.
CONFIRM_LIMIT = {"PORTAL_LIMIT_CONFIRM_PER_CLIENT": "3/hour", "PORTAL_TRUSTED_PROXIES": "127.0.0.1"}


def confirm_bad_link(site: Site, server: int, client: str) -> int:
    """A client (by its X-Forwarded-For) presses the button of a link that is not valid."""
    headers = {"X-Forwarded-For": client}
    with httpx.Client(base_url=site.servers[server].url, headers=headers, timeout=10) as http:
        token = csrf(http.get(f"/{SLUG}/"))
        return http.post("/v/not-a-link", data={"csrf_token": token}).status_code


def tries(site: Site, client: str, servers: list[int]) -> list[int]:
    return [confirm_bad_link(site, server, client) for server in servers]


def health(site: Site, server: int) -> tuple[int, dict[str, str]]:
    answer = httpx.get(f"{site.servers[server].url}/healthz", timeout=10)
    return answer.status_code, json.loads(answer.text)


def test_it_keeps_the_limits_in_memory_while_redis_is_stopped(
    tmp_path: Path, cluster: Cluster
) -> None:
    with running_site(tmp_path, cluster, **CONFIRM_LIMIT) as site:
        assert site.redis is not None
        # Shared: two tries on one server and one on the other use the client's three.
        assert tries(site, "198.51.100.1", [0, 0, 1, 1]) == [400, 400, 400, 429]

        with site.load() as load:
            load.wait_for(20)
            site.redis.stop()
            # A person who asked for a link before confirms it now.
            link = site.link_for(address(0), 1)
            with httpx.Client(base_url=site.servers[1].url, timeout=10) as browser:
                token = csrf(browser.get(link))
                confirmed = browser.post(link, data={"csrf_token": token})
            # Each server on its own: three here, three there.
            alone = tries(site, "198.51.100.2", [0, 0, 0, 0, 1, 1, 1, 1])
            during = [health(site, n) for n in (0, 1)]
            shows_in_the_guide("redis", url=site.servers[1].url)
            load.wait_for(60)
            site.redis.start()
            wait_for_sync(lambda: all(health(site, n) == (200, {"status": "ok"}) for n in (0, 1)))
            again = tries(site, "198.51.100.3", [0, 0, 1, 1])
            load.wait_for(20)

        assert confirmed.status_code == 303
        assert confirmed.headers["location"] == f"/{SLUG}/results"
        assert alone == [400, 400, 400, 429] * 2
        assert during == [(200, {"status": "ok", "redis": "down"})] * 2
        assert again == [400, 400, 400, 429]

        # No lookup answered anything but 303, and each got exactly its one mail.
        assert {a.status for a in load.answers} == {303}
        looked_up = load.answered()
        mails = site.wait_for_mails(looked_up)
        assert Counter(mails[a] for a in looked_up) == {1: len(looked_up)}

        for n, server in enumerate(site.servers):
            log = server.log()
            where = f"Redis at 127.0.0.1:{site.redis.port} not answering"
            assert log.count(f"rate limits fall back to this process's memory: {where}") == 1
            assert log.count("rate limits are shared in Redis at") == 1
            assert "Traceback" not in log
            assert '"status": 500' not in log
            assert metric(server, "portal_limits_fallback_total") >= 4, n
