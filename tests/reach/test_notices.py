"""portal notify, in process: one notice per address, merged partners, the schedule, the link."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, update
from starlette.testclient import TestClient

from portal.app import create_app
from portal.core.clock import utcnow
from portal.core.config import Settings
from portal.core.errors import PortalError
from portal.incidents.importer import import_csv
from portal.incidents.stored import load_incident_file
from portal.mail.outbox import ERASED
from portal.mail.worker import MailWorker
from portal.operator.stats import incident_figures
from portal.reach import notices
from portal.store import tables
from tests.factories import (
    ALICE,
    BOB,
    INCIDENT,
    PARK_A,
    RENDERER,
    THEATER_B,
    load_personas,
    write_csv,
)
from tests.fixtures_mail import SmtpServer, running_smtp_server
from tests.server import csrf

SLUG = "ticketing-2021"
BASE = "http://127.0.0.1:8000"


@pytest.fixture
def personas(engine: Engine, settings: Settings, tmp_path: Path) -> Path:
    """The incident with park-a (alice, bob) and theater-b (alice) imported."""
    load_personas(engine, settings, tmp_path)
    return tmp_path


def run(
    engine: Engine, settings: Settings, folder: Path, partner: str, **options: Any
) -> notices.NotifySummary:
    return notices.notify(
        engine,
        settings,
        incident=SLUG,
        partner=partner,
        path=folder / f"{partner}.csv",
        renderer=RENDERER,
        **options,
    )


def outbox(engine: Engine) -> list[Any]:
    o = tables.outbox.c
    with engine.connect() as conn:
        return list(conn.execute(select(tables.outbox).where(o.kind == "notice").order_by(o.id)))


def table_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t.name: int(conn.scalar(select(func.count()).select_from(t)) or 0)
            for t in tables.metadata.sorted_tables
        }


def link_of(row: Any) -> str:
    found = re.search(r"http://\S+/v/\S+", row.body_text)
    assert found, row.body_text
    return str(found.group(0)).removeprefix(BASE)


@pytest.fixture
def client(engine: Engine, settings: Settings, personas: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings, deliver_mail=False), base_url=BASE) as client:
        yield client


def test_it_queues_one_notice_per_distinct_address(
    engine: Engine, settings: Settings, personas: Path
) -> None:
    summary = run(engine, settings, personas, "park-a")

    assert (summary.new, summary.merged, summary.already, summary.not_imported) == (2, 0, 0, 0)
    assert summary.read.rows == 2 and not summary.read.skipped
    rows = outbox(engine)
    assert sorted(r.recipient for r in rows) == [ALICE, BOB]
    with engine.connect() as conn:
        stored = conn.execute(select(tables.notices)).all()
    assert len(stored) == 2 and {n.status for n in stored} == {"queued"}
    assert all(ALICE not in repr(tuple(n)) and BOB not in repr(tuple(n)) for n in stored)


def test_it_says_what_leaked_where_and_what_to_do(
    engine: Engine, settings: Settings, personas: Path
) -> None:
    run(engine, settings, personas, "park-a")
    alice = next(r for r in outbox(engine) if r.recipient == ALICE)

    assert alice.subject == "Datalek: uw gegevens (Datalek bij TicketDienst)"
    text = alice.body_text
    lines = text.splitlines()
    at = lines.index("Gelekt bij Attractiepark A:")
    assert lines[at + 1 : at + 5] == [  # most serious first, marked as on the results page
        "- E-mailadres: ● Let op",
        "- Telefoonnummer: ● Let op",
        "- Naam: ○ Weinig risico",
        "- Postcode: ○ Weinig risico",
    ]
    assert "Wij ontdekten een lek." in text  # what happened: the incident's notice
    assert "Autoriteit Persoonsgegevens" in text  # the regulator was told
    assert "privacy@ticketing.example" in text  # who to ask
    assert "nooit om een wachtwoord, een betaling of een kopie" in text
    assert "30 dagen geldig" in text
    assert len(re.findall(r"http://127\.0\.0\.1:8000/v/", text)) == 1  # one link into the portal
    assert "<script>" not in alice.body_html and "<strong>lek</strong>" in alice.body_html


NOTICE_MARKDOWN = """\
## Wat er gebeurde

Op 22 februari ontdekten wij dat een **onbekende partij** toegang had
tot *een database* van ons kaartsysteem.

- Wij sloten de toegang af.
- Wij deden aangifte.

Lees [ons persbericht](https://www.ticketdienst.example/pers) of
[de vragen](http://127.0.0.1:8000/ticketing-2021/) op http://127.0.0.1:8000/ticketing-2021/.
"""


def load_incident(engine: Engine, settings: Settings, folder: Path, text: str) -> None:
    """The personas' incident as `text` says, with park-a (alice, bob) and theater-b (alice)."""
    (folder / "incident.toml").write_text(text, encoding="utf-8")
    load_incident_file(engine, folder / "incident.toml")
    for partner, rows in (("park-a", PARK_A), ("theater-b", THEATER_B)):
        path = write_csv(folder / f"{partner}.csv", rows)
        import_csv(engine, settings, incident=SLUG, partner=partner, path=path)


def test_it_writes_the_incidents_markdown_as_plain_text_and_as_html(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    notice = 'nl = """' + NOTICE_MARKDOWN + '"""'
    text = INCIDENT.replace('nl = "Wij ontdekten een **lek**. <script>alert(1)</script>"', notice)
    load_incident(engine, settings, tmp_path, text)
    run(engine, settings, tmp_path, "park-a")
    alice = next(r for r in outbox(engine) if r.recipient == ALICE)

    lines = alice.body_text.splitlines()
    # Re-flowed: a paragraph of the incident file is one line, without Markdown's marks.
    assert (
        "Op 22 februari ontdekten wij dat een onbekende partij toegang had tot een database "
        "van ons kaartsysteem."
    ) in lines
    assert "*" not in alice.body_text and "##" not in alice.body_text
    at = lines.index("- Wij sloten de toegang af.")
    assert lines[at - 1 : at + 2] == ["", "- Wij sloten de toegang af.", "- Wij deden aangifte."]
    # A link to elsewhere shows its address; the portal is named, not linked a second time.
    assert (
        "Lees ons persbericht (https://www.ticketdienst.example/pers) of de vragen op "
        "127.0.0.1:8000/ticketing-2021/."
    ) in lines
    html = alice.body_html
    assert "<h1 " in html and ">Datalek bij TicketDienst</h1>" in html  # the email's heading
    assert "<h3>Wat er gebeurde</h3>" in html  # the incident's headings go below the email's
    assert "<strong>onbekende partij</strong>" in html
    assert '<a href="https://www.ticketdienst.example/pers"' in html
    assert "de vragen op 127.0.0.1:8000/ticketing-2021/." in html


def test_it_says_of_a_possible_partner_that_the_data_may_have_leaked(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    text = INCIDENT.replace('name = "Theater B"\n', 'name = "Theater B"\ncertainty = "possible"\n')
    load_incident(engine, settings, tmp_path, text)
    run(engine, settings, tmp_path, "theater-b")
    (only_possible,) = outbox(engine)
    run(engine, settings, tmp_path, "park-a")
    both = next(r for r in outbox(engine) if r.recipient == ALICE)

    uncertain = (
        "In het bestand van Theater B staan ook mensen van wie de gegevens niet zijn gelekt. "
        "Uw gegevens zijn mogelijk gelekt; ga er voor de zekerheid van uit dat het zo is."
    )
    for body in (only_possible.body_text, only_possible.body_html):
        assert "en uw gegevens waren daar mogelijk bij betrokken." in body
        assert "Mogelijk gelekt bij Theater B" in body and uncertain in body
        assert "omdat uw e-mailadres in een bestand staat dat mogelijk is gelekt" in body
        assert "waren daarbij" not in body and "Gelekt bij" not in body
    for body in (both.body_text, both.body_html):  # sure of one partner, not of the other
        assert "en uw gegevens waren daarbij betrokken." in body
        assert "Gelekt bij Attractiepark A" in body and "Mogelijk gelekt bij Theater B" in body
        assert body.count(uncertain) == 1


def test_it_queues_nothing_again_when_run_again(
    engine: Engine, settings: Settings, personas: Path
) -> None:
    run(engine, settings, personas, "park-a")
    before = table_counts(engine)
    again = run(engine, settings, personas, "park-a")

    assert (again.new, again.merged, again.already) == (0, 0, 2)
    assert table_counts(engine) == before


def test_it_merges_a_second_partner_into_the_unsent_notice(
    engine: Engine, settings: Settings, personas: Path
) -> None:
    run(engine, settings, personas, "park-a")
    old_link = link_of(next(r for r in outbox(engine) if r.recipient == ALICE))
    summary = run(engine, settings, personas, "theater-b")

    assert (summary.new, summary.merged) == (0, 1)
    rows = outbox(engine)
    assert len(rows) == 2
    alice = next(r for r in rows if r.recipient == ALICE)
    assert "Attractiepark A" in alice.body_text and "Theater B" in alice.body_text
    assert "IBAN" in alice.body_text
    assert link_of(alice) != old_link
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(tables.notices)) == 2
        purposes = conn.scalars(select(tables.links.c.purpose)).all()
    assert purposes == ["notice", "notice"]  # the replaced link is gone


def test_it_records_a_partner_after_the_notice_went_out_and_follows_up_once(
    engine: Engine, settings: Settings, personas: Path
) -> None:
    run(engine, settings, personas, "park-a")
    with engine.begin() as conn:
        conn.execute(update(tables.outbox).values(status="sent", **ERASED))
        conn.execute(update(tables.notices).values(status="sent"))
    summary = run(engine, settings, personas, "theater-b")

    assert (summary.new, summary.merged, summary.followups) == (0, 0, 1)
    assert len(outbox(engine)) == 2  # no second notice: a follow-up (tests/reach/test_followups)
    with engine.connect() as conn:
        figures = incident_figures(conn, incident=SLUG)[0].notices
    assert figures["sent"] == 2 and figures["partners added after sending"] == 1


def test_it_spaces_the_notices_at_the_rate_after_the_last_one_scheduled(
    engine: Engine, settings: Settings, personas: Path
) -> None:
    rows = [["email"]] + [[f"p{n}@example.org"] for n in range(20)]
    write_csv(personas / "park-a.csv", [*PARK_A, *rows[1:]])
    write_csv(personas / "theater-b.csv", [*THEATER_B, ["late@example.org", "Laat", ""]])
    for partner in ("park-a", "theater-b"):
        import_csv(
            engine, settings, incident=SLUG, partner=partner, path=personas / f"{partner}.csv"
        )
    run(engine, settings, personas, "park-a", rate=4)
    run(engine, settings, personas, "theater-b", rate=4)

    due = sorted(r.next_attempt_at for r in outbox(engine))
    assert len(due) == 23
    gaps = {round((b - a).total_seconds(), 3) for a, b in pairwise(due)}
    assert gaps == {0.25}  # the second run continues the first one's schedule


def test_it_writes_nothing_in_a_dry_run(engine: Engine, settings: Settings, personas: Path) -> None:
    run(engine, settings, personas, "park-a")
    before = table_counts(engine)
    dry = run(engine, settings, personas, "theater-b", dry_run=True)
    fresh = run(engine, settings, personas, "park-a", dry_run=True)

    assert (dry.new, dry.merged, dry.dry_run) == (0, 1, True)
    assert (fresh.new, fresh.already) == (0, 2)
    assert table_counts(engine) == before


def test_it_refuses_a_partner_whose_file_was_not_imported(
    engine: Engine, settings: Settings, personas: Path
) -> None:
    write_csv(personas / "omroep-c.csv", [["email"], [ALICE]])
    with pytest.raises(PortalError, match="no records imported yet: run portal import"):
        run(engine, settings, personas, "omroep-c")
    (personas / "nobody.csv").write_text("email\nx@example.org\n", encoding="utf-8")
    with pytest.raises(PortalError, match=r"unknown partner 'nobody'.*known: park-a"):
        run(engine, settings, personas, "nobody")
    assert table_counts(engine)["notices"] == 0


def test_it_counts_an_address_the_partner_did_not_import(
    engine: Engine, settings: Settings, personas: Path
) -> None:
    write_csv(personas / "park-a.csv", [*PARK_A, ["new@example.org", "Nieuw", "", ""]])
    summary = run(engine, settings, personas, "park-a")
    assert (summary.new, summary.not_imported) == (2, 1)


def test_it_leads_from_the_notice_link_to_the_results_once(
    client: TestClient, engine: Engine, settings: Settings, personas: Path
) -> None:
    run(engine, settings, personas, "park-a")
    run(engine, settings, personas, "theater-b")
    link = link_of(next(r for r in outbox(engine) if r.recipient == ALICE))

    page = client.get(link)
    assert page.status_code == 200 and "data-confirm" in page.text
    assert client.get(link).status_code == 200  # a mail scanner's GET uses nothing
    response = client.post(link, data={"csrf_token": csrf(page.text)}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == f"/{SLUG}/results"
    results = client.get(f"/{SLUG}/results").text
    assert set(re.findall(r'data-partner="([\w-]+)"', results)) == {"park-a", "theater-b"}

    assert client.get(link).status_code == 410
    again = client.post(link, data={"csrf_token": csrf(results)}, follow_redirects=False)
    assert again.status_code == 410
    assert 'data-link-error="notice_used"' in again.text


def test_it_says_an_expired_notice_link_has_expired(
    client: TestClient, engine: Engine, settings: Settings, personas: Path
) -> None:
    run(engine, settings, personas, "park-a")
    link = link_of(outbox(engine)[0])
    with engine.begin() as conn:
        conn.execute(update(tables.links).values(expires_at=utcnow() - timedelta(seconds=1)))
    page = client.get(link)
    assert page.status_code == 410
    assert 'data-link-error="notice_expired"' in page.text
    assert "nieuwe link" in page.text


def test_it_does_not_take_a_lookup_link_for_a_notice_link(settings: Settings) -> None:
    from portal.core.tokens import TokenInvalid, link_tokens, notice_tokens

    notice, _ = notice_tokens(settings).issue()
    lookup, _ = link_tokens(settings).issue()
    with pytest.raises(TokenInvalid):
        link_tokens(settings).read(notice)
    with pytest.raises(TokenInvalid):
        notice_tokens(settings).read(lookup)


@pytest.mark.anyio
async def test_it_counts_a_permanent_refusal_as_a_bounce(
    engine: Engine, settings: Settings, personas: Path
) -> None:
    run(engine, settings, personas, "park-a", rate=1000)
    with running_smtp_server() as smtp:
        smtp.handler.refuse.add(BOB)
        worker = _worker(engine, settings, smtp)
        assert await worker.deliver_due() == 1

    with engine.connect() as conn:
        figures = incident_figures(conn, incident=SLUG)[0].notices
        rows = conn.execute(select(tables.outbox.c.recipient, tables.outbox.c.status)).all()
    assert (figures["sent"], figures["bounced"], figures["queued"]) == (1, 1, 0)
    assert [r.recipient for r in rows] == [None, None]  # erased on delivery and on bounce
    assert [m.rcpt_tos for m in smtp.received] == [[ALICE]]


def _worker(engine: Engine, settings: Settings, smtp: SmtpServer) -> MailWorker:
    from dataclasses import replace

    from portal.workers import mail_worker

    return mail_worker(engine, replace(settings, smtp_url=smtp.url()))


def test_it_erases_an_incidents_notices_with_it_once_they_are_out(
    engine: Engine, settings: Settings, personas: Path
) -> None:
    from portal.operator.retention import purge_incident

    run(engine, settings, personas, "park-a")
    with pytest.raises(PortalError, match="2 notice\\(s\\) still queued"):
        purge_incident(engine, SLUG)
    with engine.begin() as conn:
        conn.execute(update(tables.outbox).values(status="sent", **ERASED))
        conn.execute(update(tables.notices).values(status="sent"))
    purge_incident(engine, SLUG)

    counts = table_counts(engine)
    assert (counts["notices"], counts["notice_partners"], counts["outbox"]) == (0, 0, 0)
