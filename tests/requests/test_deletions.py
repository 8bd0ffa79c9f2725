"""Deletion requests: the one-month deadline, references, creation, forwarding, history."""

from __future__ import annotations

import calendar
import json
import re
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select
from starlette.testclient import TestClient

from portal.app import create_app
from portal.core.config import Settings
from portal.core.fields import BY_KEY
from portal.core.i18n import format_date
from portal.incidents.importer import import_csv
from portal.incidents.stored import load_incident_file
from portal.person.sessions import VerifiedSession
from portal.requests.deletions import (
    COMPLETED,
    FORWARD_FAILED,
    FORWARDED,
    RECEIVED,
    DeletionRequest,
    PartnerNotFound,
    add_one_month,
    mark_forward_failed,
    mark_forwarded,
    new_reference,
    request_deletion,
)
from portal.store import tables
from tests.factories import (
    ALICE,
    BOB,
    INCIDENT,
    PARK_A,
    RENDERER,
    THEATER_B,
    load_personas,
    sign_in_directly,
    write_csv,
)
from tests.server import drain_lookups

SLUG = "ticketing-2021"
REFERENCE = re.compile(r"^DR-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}$")
WEBHOOK_URL = "https://park-a.example/hooks/erasure"

# -- the deadline ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("received", "due"),
    [
        (date(2023, 1, 31), date(2023, 2, 28)),
        (date(2024, 1, 31), date(2024, 2, 29)),
        (date(2023, 1, 30), date(2023, 2, 28)),
        (date(2023, 3, 31), date(2023, 4, 30)),
        (date(2023, 12, 31), date(2024, 1, 31)),
        (date(2023, 6, 15), date(2023, 7, 15)),
        (date(2024, 2, 29), date(2024, 3, 29)),
        (date(2023, 8, 31), date(2023, 9, 30)),
        (date(2023, 12, 1), date(2024, 1, 1)),
    ],
)
def test_it_adds_one_calendar_month(received: date, due: date) -> None:
    assert add_one_month(received) == due


@given(st.dates(min_value=date(1900, 1, 1), max_value=date(9998, 12, 31)))
def test_it_lands_in_the_next_month_on_the_same_or_last_day(day: date) -> None:
    due = add_one_month(day)
    next_year, next_month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
    assert (due.year, due.month) == (next_year, next_month)
    assert due.day == min(day.day, calendar.monthrange(next_year, next_month)[1])


def test_it_makes_readable_unique_references() -> None:
    references = [new_reference() for _ in range(1000)]
    assert all(REFERENCE.match(r) for r in references)
    assert len(set(references)) == 1000


def request(status: str = RECEIVED, due: date = date(2024, 3, 15), **kw: object) -> DeletionRequest:
    values: dict[str, object] = {
        "id": 1,
        "reference": "DR-0000-0000",
        "partner_id": 1,
        "status": status,
        "received_at": datetime(2024, 2, 15, 10, 0),
        "due_on": due,
        "extended_due_on": None,
        "closed_at": None,
        "reason": None,
    }
    values.update(kw)
    return DeletionRequest(**values)  # type: ignore[arg-type]


def test_it_is_overdue_only_after_the_due_day_while_open() -> None:
    assert not request().overdue(date(2024, 3, 14))
    assert not request().overdue(date(2024, 3, 15))
    assert request().overdue(date(2024, 3, 16))
    assert request(FORWARDED).overdue(date(2024, 3, 16))
    assert request(FORWARD_FAILED).overdue(date(2024, 3, 16))
    assert not request(COMPLETED, closed_at=datetime(2024, 3, 1)).overdue(date(2024, 4, 1))
    assert not request("rejected", closed_at=datetime(2024, 3, 1)).overdue(date(2024, 4, 1))


def test_it_counts_from_the_extended_due_day() -> None:
    extended = request(extended_due_on=date(2024, 5, 15))
    assert extended.due == date(2024, 5, 15)
    assert not extended.overdue(date(2024, 4, 1))
    assert extended.overdue(date(2024, 5, 16))


# -- creating requests -----------------------------------------------------------------


@pytest.fixture
def personas(engine: Engine, settings: Settings, tmp_path: Path) -> Engine:
    load_personas(engine, settings, tmp_path)
    return engine


def ask(engine: Engine, settings: Settings, session: VerifiedSession, partner: str) -> list:
    with engine.begin() as conn:
        return request_deletion(conn, settings, session, partner=partner, renderer=RENDERER)


def outbox(engine: Engine, kind: str) -> list:
    with engine.connect() as conn:
        return conn.execute(
            select(tables.outbox).where(tables.outbox.c.kind == kind).order_by(tables.outbox.c.id)
        ).all()


def slugs(engine: Engine) -> dict[int, str]:
    with engine.connect() as conn:
        return dict(conn.execute(select(tables.partners.c.id, tables.partners.c.slug)).all())


def test_it_makes_one_request_per_partner_for_all(personas: Engine, settings: Settings) -> None:
    session = sign_in_directly(personas, settings, ALICE)
    made = ask(personas, settings, session, "all")
    names = slugs(personas)
    assert sorted(names[r.partner_id] for r in made) == ["park-a", "theater-b"]
    assert all(r.status == RECEIVED for r in made)
    assert all(REFERENCE.match(r.reference) for r in made)
    with personas.connect() as conn:
        rows = conn.execute(select(tables.deletion_requests)).all()
    assert len(rows) == 2
    assert {r.email for r in rows} == {ALICE}


def test_it_returns_the_same_requests_when_asked_again(
    personas: Engine, settings: Settings
) -> None:
    session = sign_in_directly(personas, settings, ALICE)
    first = ask(personas, settings, session, "all")
    again = ask(personas, settings, session, "all")
    park = ask(personas, settings, session, "park-a")
    assert [r.reference for r in again] == [r.reference for r in first]
    by_partner = {slugs(personas)[r.partner_id]: r.reference for r in first}
    assert [r.reference for r in park] == [by_partner["park-a"]]
    with personas.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(tables.deletion_requests)) == 2
        assert conn.scalar(select(func.count()).select_from(tables.deletion_events)) == 2
    assert len(outbox(personas, "partner_request")) == 2
    assert len(outbox(personas, "deletion_receipt")) == 1


def test_it_adds_the_other_partner_after_a_single_request(
    personas: Engine, settings: Settings
) -> None:
    session = sign_in_directly(personas, settings, ALICE)
    (park,) = ask(personas, settings, session, "park-a")
    both = ask(personas, settings, session, "all")
    assert park.reference in [r.reference for r in both]
    assert len(both) == 2
    assert len(outbox(personas, "deletion_receipt")) == 2


def test_it_records_the_request_as_received_by_the_person(
    personas: Engine, settings: Settings
) -> None:
    session = sign_in_directly(personas, settings, BOB)
    (made,) = ask(personas, settings, session, "park-a")
    with personas.connect() as conn:
        events = conn.execute(select(tables.deletion_events)).all()
    assert len(events) == 1
    event = events[0]
    assert (event.request_id, event.from_status, event.to_status, event.actor) == (
        made.id,
        None,
        RECEIVED,
        "person",
    )


def test_it_sets_the_due_day_one_month_after_receipt(personas: Engine, settings: Settings) -> None:
    session = sign_in_directly(personas, settings, ALICE)
    for made in ask(personas, settings, session, "all"):
        assert made.due_on == add_one_month(made.received_at.date())
        assert made.due == made.due_on


def test_it_sends_each_partner_the_request_it_can_act_on(
    personas: Engine, settings: Settings
) -> None:
    session = sign_in_directly(personas, settings, ALICE)
    made = {slugs(personas)[r.partner_id]: r for r in ask(personas, settings, session, "all")}
    mails = {m.recipient: m for m in outbox(personas, "partner_request")}
    assert set(mails) == {"privacy@park-a.example", "privacy@theater-b.example"}
    for slug, keys in (
        ("park-a", ("email", "name", "phone", "postcode")),
        ("theater-b", ("email", "name", "iban")),
    ):
        mail = mails[f"privacy@{slug}.example"]
        assert mail.deletion_request_id == made[slug].id
        assert made[slug].reference in mail.subject
        for text in (made[slug].reference, ALICE, format_date(made[slug].due_on, "nl")):
            assert text in mail.body_text
        # No partner language in the file: the incident's first, Dutch.
        assert mail.body_text.startswith("Aan de privacyfunctionaris")
        for key in keys:
            assert BY_KEY[key].label["nl"] in mail.body_text
    assert BY_KEY["iban"].label["nl"] not in mails["privacy@park-a.example"].body_text


def test_it_sends_the_person_one_receipt(personas: Engine, settings: Settings) -> None:
    session = sign_in_directly(personas, settings, ALICE)
    made = ask(personas, settings, session, "all")
    (receipt,) = outbox(personas, "deletion_receipt")
    assert receipt.recipient == ALICE
    assert receipt.deletion_request_id is None
    for r in made:
        assert r.reference in receipt.body_text
        assert format_date(r.due_on, session.lang) in receipt.body_text
    assert "Attractiepark A" in receipt.body_text
    assert "Theater B" in receipt.body_text


def test_it_refuses_a_partner_without_the_address(personas: Engine, settings: Settings) -> None:
    session = sign_in_directly(personas, settings, BOB)
    for partner in ("theater-b", "omroep-c", "no-such-partner"):
        with pytest.raises(PartnerNotFound):
            ask(personas, settings, session, partner)
    with personas.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(tables.deletion_requests)) == 0
    assert outbox(personas, "deletion_receipt") == []


def test_it_refuses_all_for_someone_found_nowhere(personas: Engine, settings: Settings) -> None:
    session = sign_in_directly(personas, settings, "carol@example.org")
    with pytest.raises(PartnerNotFound):
        ask(personas, settings, session, "all")


# -- forwarding ------------------------------------------------------------------------


def status_and_history(engine: Engine, request_id: int) -> tuple[str, list[tuple]]:
    with engine.connect() as conn:
        status = conn.scalar(
            select(tables.deletion_requests.c.status).where(
                tables.deletion_requests.c.id == request_id
            )
        )
        events = conn.execute(
            select(
                tables.deletion_events.c.actor,
                tables.deletion_events.c.from_status,
                tables.deletion_events.c.to_status,
            )
            .where(tables.deletion_events.c.request_id == request_id)
            .order_by(tables.deletion_events.c.id)
        ).all()
    return status, [tuple(e) for e in events]


def test_it_marks_a_request_forwarded_when_its_mail_is_delivered(
    personas: Engine, settings: Settings
) -> None:
    session = sign_in_directly(personas, settings, BOB)
    (made,) = ask(personas, settings, session, "park-a")
    (mail,) = outbox(personas, "partner_request")
    with personas.begin() as conn:
        mark_forwarded(conn, mail.id, made.id)
    status, history = status_and_history(personas, made.id)
    assert status == FORWARDED
    assert history == [("person", None, RECEIVED), ("mail", RECEIVED, FORWARDED)]
    with personas.begin() as conn:
        mark_forwarded(conn, mail.id, made.id)
    assert len(status_and_history(personas, made.id)[1]) == 2


def test_it_ignores_delivery_of_other_messages(personas: Engine, settings: Settings) -> None:
    session = sign_in_directly(personas, settings, BOB)
    (made,) = ask(personas, settings, session, "park-a")
    (receipt,) = outbox(personas, "deletion_receipt")
    (link,) = outbox(personas, "link")
    (mail,) = outbox(personas, "partner_request")
    with personas.begin() as conn:
        mark_forwarded(conn, receipt.id, made.id)
        mark_forwarded(conn, link.id, made.id)
        mark_forward_failed(conn, receipt.id, made.id)
        mark_forwarded(conn, mail.id, None)
    assert status_and_history(personas, made.id) == (RECEIVED, [("person", None, RECEIVED)])


def test_it_marks_a_request_whose_mail_failed(personas: Engine, settings: Settings) -> None:
    session = sign_in_directly(personas, settings, BOB)
    (made,) = ask(personas, settings, session, "park-a")
    (mail,) = outbox(personas, "partner_request")
    with personas.begin() as conn:
        mark_forward_failed(conn, mail.id, made.id)
    assert status_and_history(personas, made.id) == (
        FORWARD_FAILED,
        [("person", None, RECEIVED), ("mail", RECEIVED, FORWARD_FAILED)],
    )
    with personas.begin() as conn:
        mark_forwarded(conn, mail.id, made.id)
    status, history = status_and_history(personas, made.id)
    assert status == FORWARDED
    assert history[-1] == ("mail", FORWARD_FAILED, FORWARDED)


def test_it_does_not_fail_a_request_already_forwarded(personas: Engine, settings: Settings) -> None:
    session = sign_in_directly(personas, settings, BOB)
    (made,) = ask(personas, settings, session, "park-a")
    (mail,) = outbox(personas, "partner_request")
    with personas.begin() as conn:
        mark_forwarded(conn, mail.id, made.id)
        mark_forward_failed(conn, mail.id, made.id)
    assert status_and_history(personas, made.id)[0] == FORWARDED


# -- webhooks --------------------------------------------------------------------------


@pytest.fixture
def webhook_personas(engine: Engine, settings: Settings, tmp_path: Path) -> Engine:
    """The personas' incident, with park-a also taking requests by signed webhook."""
    incident = tmp_path / "incident.toml"
    incident.write_text(
        INCIDENT.replace(
            'contact_email = "privacy@park-a.example"\n',
            'contact_email = "privacy@park-a.example"\n'
            f'webhook_url = "{WEBHOOK_URL}"\n'
            'webhook_secret = "park-a-hook-secret"\n',
        ),
        encoding="utf-8",
    )
    load_incident_file(engine, incident)
    for partner, rows in (("park-a", PARK_A), ("theater-b", THEATER_B)):
        path = write_csv(tmp_path / f"{partner}.csv", rows)
        import_csv(engine, settings, incident=SLUG, partner=partner, path=path)
    return engine


def test_it_also_queues_a_webhook_for_a_partner_that_has_one(
    webhook_personas: Engine, settings: Settings
) -> None:
    session = sign_in_directly(webhook_personas, settings, ALICE)
    made = {
        slugs(webhook_personas)[r.partner_id]: r
        for r in ask(webhook_personas, settings, session, "all")
    }
    (hook,) = outbox(webhook_personas, "partner_webhook")
    assert hook.channel == "webhook"
    assert hook.recipient == WEBHOOK_URL
    assert hook.deletion_request_id == made["park-a"].id
    assert "park-a-hook-secret" not in hook.body_text
    payload = json.loads(hook.body_text)
    assert payload["reference"] == made["park-a"].reference
    assert payload["email"] == ALICE
    assert set(payload["fields"]) == {"email", "name", "phone", "postcode"}
    assert payload["due"] == made["park-a"].due_on.isoformat()
    assert payload["partner"] == "park-a"
    assert payload["incident"] == SLUG
    assert len(outbox(webhook_personas, "partner_request")) == 2


def test_it_marks_a_request_forwarded_when_its_webhook_is_delivered_first(
    webhook_personas: Engine, settings: Settings
) -> None:
    """A webhook partner may report back before its email arrives: it has the request."""
    session = sign_in_directly(webhook_personas, settings, BOB)
    (made,) = ask(webhook_personas, settings, session, "park-a")
    (hook,) = outbox(webhook_personas, "partner_webhook")
    (mail,) = outbox(webhook_personas, "partner_request")
    with webhook_personas.begin() as conn:
        mark_forwarded(conn, hook.id, made.id)
        mark_forwarded(conn, mail.id, made.id)
    status, history = status_and_history(webhook_personas, made.id)
    assert status == FORWARDED
    assert history == [("person", None, RECEIVED), ("mail", RECEIVED, FORWARDED)]


# -- over HTTP -------------------------------------------------------------------------


@pytest.fixture
def client(personas: Engine, settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings, deliver_mail=False)
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        yield client


def csrf(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "no csrf_token in the page"
    return match.group(1)


def test_it_takes_a_request_for_all_partners_over_http(
    client: TestClient, personas: Engine
) -> None:
    page = client.get(f"/{SLUG}/")
    client.post(
        f"/{SLUG}/lookup",
        data={"email": ALICE, "csrf_token": csrf(page.text)},
        follow_redirects=False,
    )
    drain_lookups(client)
    (link,) = [m.body_text for m in outbox(personas, "link")]
    path = re.search(r"http://127\.0\.0\.1:8000(/v/\S+)", link).group(1)
    confirm = client.get(path)
    client.post(path, data={"csrf_token": csrf(confirm.text)}, follow_redirects=False)
    results = client.get(f"/{SLUG}/results").text
    response = client.post(
        f"/{SLUG}/deletion",
        data={"partner": "all", "csrf_token": csrf(results)},
        follow_redirects=False,
    )
    assert response.status_code == 303
    page = client.get(f"/{SLUG}/results").text
    with personas.connect() as conn:
        references = conn.scalars(select(tables.deletion_requests.c.reference)).all()
    assert len(references) == 2
    for slug in ("park-a", "theater-b"):
        section = page.split(f'data-partner="{slug}"')[1].split("</section>")[0]
        assert 'data-deletion-status="received"' in section
        ref = re.search(r'data-deletion-ref="([^"]+)"', section).group(1)
        assert ref in references
