"""The lookup queue in a real `portal serve`: shedding, a responsive server, the cache.

The incident here hashes slowly on purpose (argon2id with 32 MiB and 8 passes, a quarter
of a second per address on a quiet core), so that the queue stays busy while a test looks.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.databases import Backend
from tests.factories import ALICE, INCIDENT, PARK_A, write_csv
from tests.fixtures_mail import SmtpServer, running_smtp_server, wait_for_sync
from tests.server import Portal, lookups_done, running_portal

pytestmark = pytest.mark.e2e

SLUG = "ticketing-2021"
SLOW_INCIDENT = INCIDENT.replace(
    "[title]", "[blind_index]\nmemory_kib = 32768\ntime_cost = 8\n\n[title]", 1
)
LIMITS = {"PORTAL_LIMIT_PER_CLIENT": "1000/hour", "PORTAL_LIMIT_PER_ADDRESS": "1000/hour"}


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with running_smtp_server() as server:
        yield server


def start(tmp_path: Path, backend: Backend, smtp: SmtpServer, **env: str):  # type: ignore[no-untyped-def]
    instance = tmp_path / "instance"
    backend.new_database(instance)
    return running_portal(instance, PORTAL_SMTP_URL=smtp.url(), **LIMITS, **env)


def load(portal: Portal, text: str = SLOW_INCIDENT) -> None:
    path = portal.instance / "incident.toml"
    path.write_text(text, encoding="utf-8")
    portal.cli("incident", "load", str(path))


def metric(portal: Portal, name: str) -> float:
    for row in httpx.get(f"{portal.url}/metrics").text.splitlines():
        if row.startswith(f"{name} "):
            return float(row.rsplit(" ", 1)[1])
    return 0.0


def post_lookups(portal: Portal, addresses: list[str]) -> list[httpx.Response]:
    with httpx.Client(base_url=portal.url, timeout=30) as http:
        token = re.search(r'name="csrf_token" value="([^"]+)"', http.get(f"/{SLUG}/").text)
        assert token
        return [
            http.post(f"/{SLUG}/lookup", data={"email": a, "csrf_token": token[1]})
            for a in addresses
        ]


def mailed_to(smtp: SmtpServer) -> list[str]:
    return [to for message in smtp.received for to in message.rcpt_tos]


def test_it_sheds_lookups_when_the_queue_is_full_with_the_same_answer(
    tmp_path: Path, backend: Backend, smtp: SmtpServer
) -> None:
    env = {"PORTAL_LOOKUP_QUEUE_SIZE": "1", "PORTAL_HASH_THREADS": "1"}
    with start(tmp_path, backend, smtp, **env) as portal:
        load(portal)
        addresses = [f"shed-{n}@example.net" for n in range(5)]

        answers = post_lookups(portal, addresses)

        assert {(r.status_code, r.headers["location"]) for r in answers} == {(303, f"/{SLUG}/sent")}
        # One lookup hashing and one waiting at most: the others were shed while the
        # first one's hash ran.
        shed = metric(portal, "portal_lookups_shed_total")
        assert shed >= 3
        wait_for_sync(lambda: lookups_done(portal) == 5, timeout=240)
        wait_for_sync(lambda: len(smtp.received) == 5 - shed, timeout=240)
        assert set(mailed_to(smtp)) < set(addresses)
        assert metric(portal, "portal_lookups_total") == 5


def test_it_answers_healthz_and_pages_while_the_queue_is_busy(
    tmp_path: Path, backend: Backend, smtp: SmtpServer
) -> None:
    with start(tmp_path, backend, smtp, PORTAL_HASH_THREADS="1") as portal:
        load(portal)
        post_lookups(portal, [f"busy-{n}@example.net" for n in range(6)])
        assert metric(portal, "portal_lookup_queue_depth") > 0

        health = [httpx.get(f"{portal.url}/healthz", timeout=30) for _ in range(5)]
        pages = [httpx.get(f"{portal.url}/{SLUG}/", timeout=30) for _ in range(5)]

        assert [r.status_code for r in health + pages] == [200] * 10
        # They were answered while lookups still waited for their hash.
        assert metric(portal, "portal_lookup_queue_depth") > 0
        wait_for_sync(lambda: len(smtp.received) == 6, timeout=240)


def test_it_shows_a_loaded_change_of_the_incident(
    tmp_path: Path, backend: Backend, smtp: SmtpServer
) -> None:
    with start(tmp_path, backend, smtp) as portal:
        load(portal, INCIDENT)
        before = httpx.get(f"{portal.url}/{SLUG}/?lang=en").text
        assert "Data breach at TicketDienst" in before

        load(portal, INCIDENT.replace("Data breach at TicketDienst", "Breach at TicketDienst"))

        wait_for_sync(
            lambda: "Breach at TicketDienst<" in httpx.get(f"{portal.url}/{SLUG}/?lang=en").text,
            timeout=10,
        )


def test_it_writes_every_link_of_a_burst_and_mails_it(
    tmp_path: Path, backend: Backend, smtp: SmtpServer
) -> None:
    with start(tmp_path, backend, smtp) as portal:
        load(portal, INCIDENT)
        portal.cli("import", SLUG, "park-a", str(write_csv(tmp_path / "park-a.csv", PARK_A)))
        addresses = [ALICE] + [f"burst-{n}@example.net" for n in range(29)]

        post_lookups(portal, addresses)

        wait_for_sync(lambda: len(smtp.received) == 30, timeout=240)
        assert sorted(mailed_to(smtp)) == sorted(addresses)
        assert metric(portal, "portal_links_written_total") == 30
        assert metric(portal, "portal_hashes_total") == 30
