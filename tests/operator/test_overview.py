"""The notice-day overview on /admin/: the last 48 hours per hour, and what needs action now."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path

import anyio
import pytest
from sqlalchemy import Engine, event, func, select, update
from starlette.testclient import TestClient

from portal import workers
from portal.app import create_app
from portal.core.config import Settings
from portal.reach import notices
from portal.requests.decisions import NEEDS_GROUND
from portal.requests.deletions import GROUNDS
from portal.store import db, tables
from tests.factories import ALICE, BOB, RENDERER, create_operators, load_personas
from tests.fixtures_mail import SmtpServer, running_smtp_server, wait_for_sync
from tests.server import csrf, drain_lookups, lookup, portal_cli, post_form
from tests.server import sign_in as person_signs_in
from tests.server import sign_in_operator as sign_in

SLUG = "ticketing-2021"
BASE = "http://127.0.0.1:8000"
CHARTS = ["lookups", "link_mails", "notices_sent", "notices_bounced",
          "requests_opened", "requests_closed", "outbox_depth"]  # fmt: skip


@pytest.fixture
def people(engine: Engine, settings: Settings, tmp_path: Path) -> Engine:
    load_personas(engine, settings, tmp_path)
    create_operators(engine)
    return engine


@pytest.fixture
def portal(people: Engine, settings: Settings) -> Iterator[TestClient]:
    """The portal without its own mail worker: the tests say when mail goes out."""
    with TestClient(create_app(settings, deliver_mail=False), base_url=BASE) as client:
        yield client


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with running_smtp_server() as server:
        yield server


def deliver(settings: Settings, smtp: SmtpServer | None = None) -> int:
    """One round of the mail worker, to the SMTP server (or the instance's outbox folder)."""
    wanted = replace(settings, smtp_url=smtp.url()) if smtp else settings
    engine = db.make_engine(wanted.database_url)
    try:
        return anyio.run(workers.mail_worker(engine, wanted).deliver_due)
    finally:
        engine.dispose()


def complete(client: TestClient, reference: str) -> None:
    """The operator marks the request completed, from its page."""
    path = f"/admin/requests/{reference}"
    page = client.get(path).text
    version = re.search(r'name="version" value="(\d+)"', page).group(1)  # type: ignore[union-attr]
    done = post_form(client, path, f"{path}/status", status="completed", version=version)
    assert done.status_code == 303, done.text


def overview(client: TestClient) -> str:
    page = client.get("/admin/")
    assert page.status_code == 200
    return page.text


def charts(page: str) -> dict[str, str]:
    return dict(re.findall(r'<figure [^>]*data-chart="(\w+)"(.*?)</figure>', page, re.S))


def shown(page: str) -> dict[str, tuple[int, int]]:
    """Each chart's total and highest hour, as the page says them."""
    return {
        name: (int(total), int(peak))
        for name, total, peak in re.findall(
            r'data-chart="(\w+)" data-total="(\d+)" data-peak="(\d+)"', page
        )
    }


def per_hour(chart: str) -> list[int]:
    """The figures of a chart's table, oldest hour first."""
    rows = re.findall(r'<tr data-hour="[^"]+">.*?<td class="num">([\d.,]+)</td>', chart, re.S)
    return [int(re.sub(r"\D", "", value)) for value in rows]


def alert(page: str, name: str) -> int:
    found = re.search(rf'data-alert="{name}" data-count="(\d+)"', page)
    assert found, f"no data-alert={name}"
    return int(found.group(1))


def test_it_draws_a_notice_day_in_miniature(
    people: Engine, settings: Settings, portal: TestClient, smtp: SmtpServer, tmp_path: Path
) -> None:
    for address in (ALICE, BOB):
        lookup(portal, address)
    # A worker that starts finds the two link mails owed, samples the outbox, sends them.
    with TestClient(create_app(replace(settings, smtp_url=smtp.url())), base_url=BASE):
        wait_for_sync(lambda: len(smtp.received) == 2)
    notices.notify(
        people, settings, incident=SLUG, partner="park-a", path=tmp_path / "park-a.csv",
        renderer=RENDERER, rate=1000,
    )  # fmt: skip
    smtp.handler.refuse.add(BOB)  # Bob's notice bounces: 550 no such mailbox
    assert deliver(settings, smtp) == 1
    results = person_signs_in(portal, people, ALICE)
    asked = portal.post(
        f"/{SLUG}/deletion", data={"partner": "park-a", "csrf_token": csrf(results)}
    )
    assert asked.status_code == 200
    reference = re.search(r'data-deletion-ref="([^"]+)"', asked.text).group(1)  # type: ignore[union-attr]
    sign_in(portal)
    complete(portal, reference)

    page = overview(portal)

    assert list(charts(page)) == CHARTS
    totals = {name: total for name, (total, _peak) in shown(page).items()}
    assert totals == {
        "lookups": 3,  # alice, bob, and alice again to see her results
        "link_mails": 2,  # the third link is still in the outbox
        "notices_sent": 1,
        "notices_bounced": 1,
        "requests_opened": 1,
        "requests_closed": 1,
        "outbox_depth": 2,  # one sample: the two link mails owed when the worker started
    }
    # Each peak is one hour's figure (the test may straddle two hours).
    assert all(0 < peak <= total for total, peak in shown(page).values())
    for name, chart in charts(page).items():
        assert "<figcaption>" in chart and '<svg class="chart"' in chart and 'role="img"' in chart
        figures = per_hour(chart)
        assert len(figures) == 48 and sum(figures) == shown(page)[name][0], name
    lookups = charts(page)["lookups"]
    assert re.search(r"3 in the last 48 hours; most in one hour: [1-3], at 20\d\d-", lookups)
    assert re.search(r'aria-label="Lookups answered\. 3 in the last 48 hours', lookups)
    assert alert(page, "mail_failing") == 1  # Bob's notice, given up
    assert (alert(page, "requests_overdue"), alert(page, "lookups_shed")) == (0, 0)


def test_it_keeps_the_figures_when_the_personal_rows_are_purged(
    people: Engine, settings: Settings, portal: TestClient
) -> None:
    results = person_signs_in(portal, people, ALICE)
    portal.post(f"/{SLUG}/deletion", data={"partner": "park-a", "csrf_token": csrf(results)})
    lookup(portal, BOB)
    deliver(settings)
    sign_in(portal)
    with people.connect() as conn:
        reference = conn.scalar(select(tables.deletion_requests.c.reference))
    complete(portal, str(reference))
    deliver(settings)
    before = shown(overview(portal))

    for command in (["purge"], ["purge", "--incident", SLUG, "--all"]):
        purged = portal_cli(settings, *command)
        assert purged.returncode == 0, purged.stderr

    with people.connect() as conn:
        for table in (tables.exposures, tables.links, tables.deletion_requests):
            assert conn.scalar(select(func.count()).select_from(table)) == 0, table.name
        addressed = select(func.count()).where(tables.outbox.c.recipient.is_not(None))
        assert conn.scalar(addressed) == 0
    assert shown(overview(portal)) == before
    assert before["lookups"][0] == before["link_mails"][0] == 2
    assert before["requests_opened"][0] == before["requests_closed"][0] == 1


def test_it_counts_the_lookups_shed_by_a_full_queue(people: Engine, settings: Settings) -> None:
    app = create_app(replace(settings, hash_threads=1, lookup_queue_size=1), deliver_mail=False)
    with TestClient(app, base_url=BASE) as client:
        hashing = threading.Event()
        app.state.lookups.hash_pool.submit(hashing.wait)  # the one hashing thread is busy
        try:
            token = csrf(client.get(f"/{SLUG}/").text)
            before = metric(client, "portal_lookups_shed_total")
            for n in range(5):
                sent = client.post(
                    f"/{SLUG}/lookup", data={"email": f"p{n}@example.net", "csrf_token": token}
                )
                assert sent.status_code == 200  # the same "check your inbox", shed or not
            shed = metric(client, "portal_lookups_shed_total") - before
        finally:
            hashing.set()  # else the shutdown would wait for the thread for ever
        drain_lookups(client)
        sign_in(client)
        wait_for_sync(lambda: alert(overview(client), "lookups_shed") == shed)
    assert shed >= 3  # one hashing, one waiting, the rest shed


def test_it_shows_what_needs_action_now(
    people: Engine, settings: Settings, portal: TestClient, smtp: SmtpServer
) -> None:
    person_signs_in(portal, people, ALICE)
    results = portal.get(f"/{SLUG}/results").text
    portal.post(f"/{SLUG}/deletion", data={"partner": "all", "csrf_token": csrf(results)})
    t = tables.deletion_requests
    with people.begin() as conn:
        conn.execute(update(t).values(due_on=date(2020, 1, 1)))
    smtp.handler.fail_next(100)  # the relay answers 451: every message waits to be tried again
    assert deliver(settings, smtp) == 0
    sign_in(portal)

    page = overview(portal)

    assert alert(page, "requests_overdue") == 2  # at park-a and theater-b
    assert alert(page, "mail_failing") >= 3  # her link, her receipt, the partners' copies
    failing = re.search(r'data-alert="mail_failing".*?</li>', page, re.S).group(0)  # type: ignore[union-attr]
    assert "Action needed" in failing and "wait to be tried again" in failing
    overdue = re.search(r'data-alert="requests_overdue".*?</li>', page, re.S).group(0)  # type: ignore[union-attr]
    assert 'href="/admin/requests?overdue=1"' in overdue
    assert "All clear" in re.search(r'data-alert="lookups_shed".*?</li>', page, re.S).group(0)  # type: ignore[union-attr]


def test_it_speaks_the_operators_language_with_a_switch(people: Engine, portal: TestClient) -> None:
    sign_in(portal)

    dutch = portal.get("/admin/", headers={"Accept-Language": "nl-NL,nl;q=0.9"}).text
    assert '<html lang="nl">' in dutch
    assert "<h1>Cijfers</h1>" in dutch and "Beantwoorde opzoekingen" in dutch
    assert 'data-alert="requests_overdue"' in dutch and "Actie nodig" not in dutch
    english = portal.get("/admin/?lang=en", headers={"Accept-Language": "nl"}).text
    assert '<html lang="en">' in english and "<h1>Figures</h1>" in english
    # The switch is kept: the next page is English too, whatever the browser says.
    queue = portal.get("/admin/requests", headers={"Accept-Language": "nl"}).text
    assert "<h1>Deletion requests</h1>" in queue
    assert 'href="?lang=nl"' in queue


def metric(client: TestClient, sample: str) -> float:
    for row in client.get("/metrics").text.splitlines():
        if row.startswith(f"{sample} "):
            return float(row.rsplit(" ", 1)[1])
    return 0.0


def test_it_reads_the_gauges_from_the_database_at_each_scrape(
    people: Engine, settings: Settings, portal: TestClient
) -> None:
    lookup(portal, ALICE)
    assert metric(portal, "portal_outbox_depth") == 1  # her link mail, owed
    assert metric(portal, "portal_database_up") == 1
    person_signs_in(portal, people, BOB)
    results = portal.get(f"/{SLUG}/results").text
    portal.post(f"/{SLUG}/deletion", data={"partner": "park-a", "csrf_token": csrf(results)})
    with people.begin() as conn:
        conn.execute(update(tables.deletion_requests).values(due_on=date(2020, 1, 1)))
    assert metric(portal, "portal_requests_overdue") == 1
    deliver(settings)
    assert metric(portal, "portal_outbox_depth") == 0


def test_it_says_the_database_is_down_while_the_process_is_up(
    settings: Settings, tmp_path: Path
) -> None:
    # A database that does not answer: a folder where the SQLite file should be, or a
    # PostgreSQL port nothing listens on.
    gone = (
        f"sqlite:///{tmp_path}"
        if settings.database_url.startswith("sqlite")
        else "postgresql://postgres@127.0.0.1:9/none"
    )
    app = create_app(replace(settings, database_url=gone), deliver_mail=False)
    with TestClient(app, base_url=BASE) as client:
        scraped = client.get("/metrics")
        assert scraped.status_code == 200
        assert "portal_database_up 0.0" in scraped.text.splitlines()
        assert client.get("/healthz").status_code == 503


def test_it_writes_the_figures_in_the_transactions_that_do_the_work(
    people: Engine, settings: Settings, portal: TestClient
) -> None:
    """A lookup batch bumps `lookups` once with its count, not once per lookup."""
    token = csrf(portal.get(f"/{SLUG}/").text)
    statements: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "hourly_counters" in statement:
            statements.append(statement)

    event.listen(portal.app.state.engine, "before_cursor_execute", record)  # type: ignore[attr-defined]
    try:
        for n in range(3):
            portal.post(f"/{SLUG}/lookup", data={"email": f"q{n}@example.net", "csrf_token": token})
        drain_lookups(portal)
    finally:
        event.remove(portal.app.state.engine, "before_cursor_execute", record)  # type: ignore[attr-defined]
    with people.connect() as conn:
        c = tables.hourly_counters.c
        counted = conn.scalar(select(func.sum(c.count)).where(c.name == "lookups"))
    assert counted == 3
    assert 1 <= len(statements) <= 3  # one per batch written


def test_it_says_beside_the_fields_what_a_refused_rejection_lacks_in_dutch(
    people: Engine, settings: Settings, portal: TestClient
) -> None:
    results = person_signs_in(portal, people, ALICE)
    portal.post(f"/{SLUG}/deletion", data={"partner": "park-a", "csrf_token": csrf(results)})
    with people.connect() as conn:
        reference = conn.scalar(select(tables.deletion_requests.c.reference))
    sign_in(portal)
    path = f"/admin/requests/{reference}"
    page = portal.get(path, headers={"Accept-Language": "nl"}).text
    version = re.search(r'name="version" value="(\d+)"', page).group(1)  # type: ignore[union-attr]

    refused = portal.post(
        f"{path}/status",
        data={"status": "rejected", "version": version, "csrf_token": csrf(page)},
        headers={"Accept-Language": "nl"},
    )

    assert refused.status_code == 409
    errors = dict(re.findall(r'data-error="(\w+)"><span[^>]*>Fout:</span> ([^<]+)<', refused.text))
    assert errors == {
        "ground": "Kies de grond van de afwijzing.",
        "reason": "Schrijf de reden die de persoon te lezen krijgt.",
    }
    assert set(GROUNDS) <= set(re.findall(r"\w+", NEEDS_GROUND)), "the English names them all"
