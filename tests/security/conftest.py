"""The attack suite's shared real portal: one uvicorn process, a real SMTP server, personas.

The portal believes X-Forwarded-For from 127.0.0.1, so every `Visitor` is its own client
address and tests do not share a client limit. The limits are low so that reaching them
is quick; tests that need "the first N pass" use a fresh visitor and a fresh address.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, func, select

from portal.store import db, tables
from tests.databases import Backend
from tests.factories import INCIDENT, PARK_A, THEATER_B, write_csv
from tests.fixtures_mail import Received, SmtpServer, running_smtp_server, wait_for_sync
from tests.server import Portal, lookups_done, running_portal

SLUG = "ticketing-2021"
LIMITS = {
    "PORTAL_LIMIT_PER_ADDRESS": "3/hour",
    "PORTAL_LIMIT_PER_CLIENT": "4/hour",
    "PORTAL_LIMIT_CONFIRM_PER_CLIENT": "4/hour",
}
# Addresses in the data besides the personas, one per lookup of the timing test.
KNOWN = [f"known-{n:03d}@example.org" for n in range(80)]
LONG_SECRET = "x" * 48

_clients = itertools.count(1)


def new_client_address() -> str:
    """A client address no other test uses (10.0.0.0/8, believed via X-Forwarded-For)."""
    n = next(_clients)
    return f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"


@dataclass
class Visitor:
    """One person's browser: its own cookies and its own client address."""

    portal: Portal
    client_address: str = field(default_factory=new_client_address)

    def __post_init__(self) -> None:
        self.http = httpx.Client(
            base_url=self.portal.url,
            headers={"X-Forwarded-For": self.client_address},
            timeout=30,
        )

    def csrf(self, path: str = f"/{SLUG}/") -> str:
        return form_token(self.http.get(path).text)

    def lookup(self, address: str, *, token: str | None = None) -> httpx.Response:
        return self.http.post(
            f"/{SLUG}/lookup", data={"email": address, "csrf_token": token or self.csrf()}
        )

    def confirm(self, link: str) -> httpx.Response:
        path = link.removeprefix(self.portal.url)
        page = self.http.get(path)
        assert page.status_code == 200, page.text
        return self.http.post(path, data={"csrf_token": form_token(page.text)})

    def sign_in(self, smtp: SmtpServer, address: str) -> str:
        """Asks for a link, follows it and confirms; returns the results page."""
        before = len(links_to(smtp, address))
        assert self.lookup(address).status_code == 303
        wait_for_sync(lambda: len(links_to(smtp, address)) > before)
        response = self.confirm(links_to(smtp, address)[-1])
        assert response.status_code == 303
        assert response.headers["location"] == f"/{SLUG}/results"
        return self.http.get(f"/{SLUG}/results").text


def form_token(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "no csrf_token in the page"
    return match.group(1)


def links_to(smtp: SmtpServer, address: str) -> list[str]:
    """The portal links mailed to `address`, oldest first."""
    return [link_in(m) for m in smtp.received if address in m.rcpt_tos and link_in(m)]


def link_in(received: Received) -> str:
    body = received.message.get_body(("plain",))
    found = re.search(r"https?://\S+/v/[\w.-]+", body.get_content() if body else "")
    return found.group(0) if found else ""


def metric(portal: Portal, name: str, **labels: str) -> float:
    """A counter's value from /metrics, as the operator's Prometheus sees it."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    line = f"{name}{{{wanted}}} " if labels else f"{name} "
    for row in httpx.get(f"{portal.url}/metrics").text.splitlines():
        if row.startswith(line):
            return float(row.rsplit(" ", 1)[1])
    return 0.0


def lookups_answered(portal: Portal) -> int:
    """Lookups whose background work is done (or that were shed), as /metrics counts them."""
    return lookups_done(portal)


def wait_until(condition: Callable[[], object], timeout: float = 20.0) -> None:
    wait_for_sync(condition, timeout=timeout)


@dataclass
class Site:
    """The shared portal with its SMTP server and a handle on its database."""

    portal: Portal
    smtp: SmtpServer
    engine: Engine

    visitors: list[Visitor] = field(default_factory=list)

    def visitor(self) -> Visitor:
        """A new visitor, closed when the session ends."""
        self.visitors.append(Visitor(self.portal))
        return self.visitors[-1]

    def mail_pending(self) -> int:
        """Outbox messages not yet handed to the SMTP server."""
        with self.engine.connect() as conn:
            query = select(func.count()).where(tables.outbox.c.status.in_(("queued", "sending")))
            return int(conn.scalar(query) or 0)

    def outbox_count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(tables.outbox)) or 0)


def load_personas(portal: Portal, folder: Path) -> None:
    """The standard incident (alice, bob) plus the KNOWN addresses, through the CLI."""
    incident = folder / "incident.toml"
    incident.write_text(INCIDENT, encoding="utf-8")
    portal.cli("incident", "load", str(incident))
    park = PARK_A + [[address, "Known", "", ""] for address in KNOWN]
    portal.cli("import", SLUG, "park-a", str(write_csv(folder / "park-a.csv", park)))
    portal.cli("import", SLUG, "theater-b", str(write_csv(folder / "theater-b.csv", THEATER_B)))


@pytest.fixture(scope="session")
def smtp(backend: Backend) -> Iterator[SmtpServer]:
    """One SMTP server per backend: each backend's portals start with an empty inbox."""
    with running_smtp_server() as server:
        yield server


@pytest.fixture(scope="session")
def site(
    tmp_path_factory: pytest.TempPathFactory, smtp: SmtpServer, backend: Backend
) -> Iterator[Site]:
    instance = tmp_path_factory.mktemp("security-portal")
    backend.new_database(instance)
    with running_portal(
        instance,
        PORTAL_SMTP_URL=smtp.url(),
        PORTAL_TRUSTED_PROXIES="127.0.0.1",
        **LIMITS,
    ) as portal:
        load_personas(portal, instance)
        site = Site(portal, smtp, db.make_engine(portal.database_url))
        try:
            yield site
        finally:
            for visitor in site.visitors:
                visitor.http.close()
            site.engine.dispose()


@pytest.fixture(scope="session")
def https_portal(
    tmp_path_factory: pytest.TempPathFactory, smtp: SmtpServer, backend: Backend
) -> Iterator[Portal]:
    """A portal whose base URL is https (TLS ends at a proxy in front of it)."""
    instance = tmp_path_factory.mktemp("https-portal")
    backend.new_database(instance)
    with running_portal(
        instance,
        scheme="https",
        PORTAL_SECRET_KEY=LONG_SECRET,
        PORTAL_PEPPER=LONG_SECRET,
        PORTAL_SMTP_URL=smtp.url(),
    ) as portal:
        load_personas(portal, instance)
        yield portal
