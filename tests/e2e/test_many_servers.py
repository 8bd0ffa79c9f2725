"""Many servers on one PostgreSQL and one Redis: real processes, as on several hosts.

Two `portal serve --no-mail-worker` processes and separate `portal mail-worker` processes
share one PostgreSQL database; the servers share their limits in Redis. Links work once
whichever server issued them; limits hold across the servers; and with a mail worker
killed (`kill -9`) while the SMTP server holds the message it was sending, every message is
delivered, and only that one twice, with the same Message-ID both times (design §4.7: at
least once, and at most once as far as the portal can tell; a client killed after the
server took the message and before it could record that cannot know).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import Engine, func, select

from portal.store import db, tables
from tests.databases import Backend, attach
from tests.e2e.conftest import (
    ALICE,
    SLUG,
    Browser,
    csrf,
    load_and_import,
    open_browser,
    partners_on,
    portal_link,
    text_of,
    wait_for_mail,
)
from tests.fixtures_mail import SmtpServer, running_smtp_server, wait_for_sync
from tests.server import Portal, lookups_done, portal_env, running_mail_worker, running_portal

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.redis,
    pytest.mark.backends("postgresql", reason="hosts share PostgreSQL; SQLite serves one"),
]

REDIS_DB = 5  # only this database is flushed
LIMITS = {"PORTAL_LIMIT_PER_ADDRESS": "3/hour", "PORTAL_LIMIT_PER_CLIENT": "4/hour"}
LEASE_AND_MORE = 90  # seconds: a killed worker's message is sent again after the lease (60)


@dataclass
class Cluster:
    """Two servers on one database and one Redis, their SMTP server, and a mail worker's env."""

    servers: tuple[Portal, Portal]
    smtp: SmtpServer
    engine: Engine
    worker_env: dict[str, str]
    folder: Path

    def lookup(self, server: int, address: str, client: str) -> None:
        """Asks for a link on one server, from client address `client`."""
        portal = self.servers[server]
        with httpx.Client(base_url=portal.url, headers={"X-Forwarded-For": client}) as http:
            token = csrf(http.get(f"/{SLUG}/").text)
            response = http.post(f"/{SLUG}/lookup", data={"email": address, "csrf_token": token})
        assert response.status_code == 303

    def lookups_done(self) -> int:
        """Lookups whose background work is done, as each server's /metrics counts them."""
        return sum(lookups_done(server) for server in self.servers)

    def outbox_rows(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(tables.outbox)) or 0)


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, backend: Backend, redis_db: redis.Redis
) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp("many-servers")
    url = backend.new_database(folder / "operator")
    load_and_import(portal_env(folder / "operator"))
    env = {
        "PORTAL_REDIS_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
        "PORTAL_TRUSTED_PROXIES": "127.0.0.1",
        **LIMITS,
    }
    engine = db.make_engine(url)
    with running_smtp_server() as smtp:
        for name in ("one", "two", "mail"):
            attach(folder / name, url)  # every host has its own folder, all one database
        with (
            running_portal(folder / "one", "--no-mail-worker", **env) as one,
            running_portal(folder / "two", "--no-mail-worker", **env) as two,
        ):
            worker_env = portal_env(folder / "mail", PORTAL_SMTP_URL=smtp.url())
            yield Cluster((one, two), smtp, engine, worker_env, folder)
    engine.dispose()


def test_it_uses_a_link_once_whichever_server_issued_it(
    cluster: Cluster, browsers: list[Browser]
) -> None:
    one, two = cluster.servers
    with running_mail_worker(cluster.worker_env, cluster.folder / "worker-link.log"):
        alice = open_browser(browsers, one)
        assert alice.look_up(ALICE).status_code == 303
        link = portal_link(wait_for_mail(cluster.smtp, ALICE), one.url)

        elsewhere = open_browser(browsers, two)
        assert elsewhere.confirm(link).status_code == 303  # issued by one, used on two
        assert partners_on(elsewhere.results())
        again = open_browser(browsers, one)
        path = link.removeprefix(one.url)
        assert again.get(path).status_code == 410
        page = again.get(f"/{SLUG}/")
        assert again.client.post(path, data={"csrf_token": csrf(page.text)}).status_code == 410

        # The deletion request made on two reaches the partner (PostgreSQL once lost it).
        results = elsewhere.get(f"/{SLUG}/results")
        assert elsewhere.submit(results, f"/{SLUG}/deletion", partner="park-a").status_code == 303
        request = wait_for_mail(cluster.smtp, "privacy@park-a.example")
        assert ALICE in text_of(request, "plain")  # the partner needs the verified address

        def forwarded() -> bool:
            element = partners_on(elsewhere.results())["park-a"]
            return element.one("data-deletion-status").attrs["data-deletion-status"] == (
                "forwarded"
            )

        wait_for_sync(forwarded, timeout=20)


def test_it_shares_limits_between_the_servers_through_redis(cluster: Cluster) -> None:
    before_rows, before_lookups = cluster.outbox_rows(), cluster.lookups_done()
    # One address, five lookups alternating servers and clients: the address limit is 3.
    for n in range(5):
        cluster.lookup(n % 2, "limited@example.net", client=f"192.0.2.{n + 1}")
    # One client, six addresses alternating servers: the client limit is 4.
    for n in range(6):
        cluster.lookup(n % 2, f"client-{n}@example.net", client="198.51.100.7")
    wait_for_sync(lambda: cluster.lookups_done() == before_lookups + 11, timeout=30)
    assert cluster.outbox_rows() - before_rows == 3 + 4


def test_it_delivers_every_mail_when_a_worker_is_killed_mid_send(cluster: Cluster) -> None:
    smtp, folder = cluster.smtp, cluster.folder
    with running_mail_worker(cluster.worker_env, folder / "worker-drain.log"):
        wait_for_sync(lambda: not pending(cluster.engine), timeout=30)  # earlier tests' mail
    with cluster.engine.connect() as conn:
        first_row = int(conn.scalar(select(func.max(tables.outbox.c.id))) or 0) + 1
    addresses = [f"many-{n:02d}@example.net" for n in range(40)]
    clients = iter(f"203.0.113.{n}" for n in range(1, 200))
    smtp.handler.hold_next()
    with running_mail_worker(cluster.worker_env, folder / "worker-a.log") as worker_a:
        for n, address in enumerate(addresses[:20]):  # spread over both servers
            cluster.lookup(n % 2, address, client=next(clients))
        wait_for_sync(lambda: smtp.handler.holding, timeout=20)
        # The only worker so far is inside DATA on one connection: the server has the
        # message, it has no 250. Its other connections finish the rest of its batch, and
        # it claims no more until that message is done.
        wait_for_sync(lambda: len(sending(cluster.engine)) == 1, timeout=20)
        in_flight = sending(cluster.engine)
        assert smtp.handler.holding and len(in_flight) == 1, in_flight
        with running_mail_worker(cluster.worker_env, folder / "worker-b.log"):
            wait_for_sync(lambda: delivered(smtp, addresses) >= 5, timeout=30)
            assert smtp.handler.holding
            worker_a.kill()  # midway: b is delivering, a holds a message it cannot record
            smtp.handler.release()
            with running_mail_worker(cluster.worker_env, folder / "worker-a2.log"):
                for n, address in enumerate(addresses[20:]):
                    cluster.lookup(n % 2, address, client=next(clients))
                wait_for_sync(lambda: all_sent(cluster.engine, first_row), LEASE_AND_MORE)

    ours = [r for r in smtp.received if set(r.rcpt_tos) & set(addresses)]
    assert {to for r in ours for to in r.rcpt_tos} == set(addresses)  # every one delivered
    copies = Counter(r.message["Message-ID"] for r in ours)
    (held_id,) = in_flight.values()
    # The one in flight at the kill came twice, as the same message; nothing else did.
    assert {mid for mid, count in copies.items() if count > 1} == {held_id}
    assert copies[held_id] == 2
    with cluster.engine.connect() as conn:
        rows = conn.execute(
            select(tables.outbox.c.id, tables.outbox.c.message_id, tables.outbox.c.attempts).where(
                tables.outbox.c.id >= first_row
            )
        ).all()
    assert len(rows) == len(addresses)
    assert {r.message_id for r in rows} == set(copies)  # the proof kept is what was sent
    assert {r.id: r.attempts for r in rows if r.attempts > 1} == {next(iter(in_flight)): 2}


def sending(engine: Engine) -> dict[int, str]:
    """The outbox rows a worker holds now, with the Message-ID each was claimed with."""
    c = tables.outbox.c
    with engine.connect() as conn:
        rows = conn.execute(select(c.id, c.message_id).where(c.status == "sending")).all()
    return {row.id: row.message_id for row in rows}


def pending(engine: Engine) -> int:
    c = tables.outbox.c
    with engine.connect() as conn:
        query = select(func.count()).where(c.status.in_(("queued", "sending")))
        return int(conn.scalar(query) or 0)


def delivered(smtp: SmtpServer, addresses: list[str]) -> int:
    return len({to for r in list(smtp.received) for to in r.rcpt_tos if to in addresses})


def all_sent(engine: Engine, first_row: int) -> bool:
    c = tables.outbox.c
    with engine.connect() as conn:
        statuses = conn.scalars(select(c.status).where(c.id >= first_row)).all()
    return len(statuses) == 40 and set(statuses) == {"sent"}
