"""A deploy: SIGTERM to one of two servers while its lookup queue is full of work.

It stops accepting (the load passes to the other server, as a load balancer does), hashes
and writes every lookup it accepted, and exits within PORTAL_SHUTDOWN_TIMEOUT; every lookup
it answered 303 gets its mail. Should one be lost anyway (`kill -9`), the "check your
inbox" page has told the person to ask again when nothing arrives within 15 minutes.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.faults.servers import SLUG, Cluster, LookupClient, address, metric, running_site

pytestmark = pytest.mark.e2e

SHUTDOWN_TIMEOUT = 20
# One hashing thread per server and an incident that hashes slowly: a burst waits.
SLOW = {"PORTAL_HASH_THREADS": "1", "PORTAL_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT)}
BURST = 20


def test_it_writes_every_lookup_it_accepted_before_it_exits(
    tmp_path: Path, cluster: Cluster
) -> None:
    with running_site(tmp_path, cluster, template="slow", **SLOW) as site:
        with site.load(rate=5) as load:
            load.wait_for(10)
            burst = [address(next(site.next_number)) for _ in range(BURST)]
            client = LookupClient(site.servers[0])
            answers = [client.look_up(email) for email in burst]
            client.http.close()
            waiting = metric(site.servers[0], "portal_lookup_queue_depth")
            took = site.stop_server(0)
            load.wait_for(10, since=load.answers[-1].at)

        assert answers == [303] * BURST
        assert waiting >= 5  # still to hash when the signal came
        assert took <= SHUTDOWN_TIMEOUT
        log = site.servers[0].log()
        assert "lost at shutdown" not in log
        assert "Traceback" not in log
        # The other server answered all the while: each lookup got 303.
        assert {a.server for a in load.answers} == {0, 1}
        assert {a.status for a in load.answers} == {303}
        looked_up = [*burst, *load.answered()]
        mails = site.wait_for_mails(looked_up, timeout=120)
        assert Counter(mails[a] for a in looked_up) == {1: len(looked_up)}

        sent = httpx.get(f"{site.servers[1].url}/{SLUG}/sent?lang=en", timeout=10)
        assert "No email within 15 minutes?" in sent.text
