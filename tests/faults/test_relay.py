"""The SMTP relay answering 421 under a steady load on two servers, then taking mail again.

Meanwhile the lookups are answered as ever and /healthz says "mail": "failing"; the
messages wait in the outbox and are tried again on the schedule of §4.7 (5 s, doubling).
Once the relay takes mail again, every message is delivered, none twice. (The relay
refuses each message twice here, some 15 s: minutes of it take the same path, later.)
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.faults.servers import Cluster, Site, running_site
from tests.fixtures_mail import wait_for_sync
from tests.server import shows_in_the_guide

pytestmark = pytest.mark.e2e


def attempted_at_least(site: Site, times: int, messages: int) -> bool:
    """Whether each of the messages is in the outbox, tried `times` times (and waiting)."""
    found = site.sql(f"SELECT count(*) FROM outbox WHERE attempts >= {times} AND status = 'queued'")
    return bool(found[0][0] == messages)


def test_it_delivers_every_message_once_after_the_relay_refused_them(
    tmp_path: Path, cluster: Cluster
) -> None:
    with running_site(tmp_path, cluster) as site:
        site.handler.refusing = True
        with site.load() as load:
            load.wait_for(100)
        health = [httpx.get(f"{server.url}/healthz", timeout=10) for server in site.servers]
        shows_in_the_guide("relay", url=site.servers[0].url)
        # Each message refused at its first attempt and again 5 s later.
        wait_for_sync(lambda: attempted_at_least(site, 2, len(load.answers)), timeout=60)
        site.handler.refusing = False

        assert not site.relay.received
        assert site.handler.refused >= len(load.answers)
        assert [json.loads(h.text) for h in health] == [{"status": "ok", "mail": "failing"}] * 2
        assert {a.status for a in load.answers} == {303}
        looked_up = load.answered()
        mails = site.wait_for_mails(looked_up, timeout=90)
        assert Counter(mails[a] for a in looked_up) == {1: len(looked_up)}
        # Nothing is left to be sent again: each message is on record as delivered once
        # (recorded a moment after the relay took it: the worker's record window).
        statuses = "SELECT status, count(*) FROM outbox GROUP BY status"
        wait_for_sync(lambda: site.sql(statuses) == [("sent", len(looked_up))], timeout=10)
        assert len(site.relay.received) == len(looked_up)
