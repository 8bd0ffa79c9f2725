"""The lifecycle as the code enforces it: transitions, rejections, extensions, and races.

The rules and the guarded updates run on SQLite and, where a server answers, PostgreSQL.
"""

from __future__ import annotations

import calendar
import os
import secrets
import threading
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, create_engine, select, text, update
from sqlalchemy.exc import OperationalError

from portal.core.config import Settings
from portal.core.i18n import format_date
from portal.requests.decisions import change_status, extend, retry
from portal.requests.deletions import (
    COMPLETED,
    FORWARD_FAILED,
    FORWARDED,
    REJECTED,
    Actor,
    DeletionRequest,
    RequestRefused,
    add_months,
    get_request,
)
from portal.store import audit, db, tables
from tests.factories import BOB, RENDERER, ask_deletion, load_personas

DORA = Actor("operator", "dora", "admin")
EVE = Actor("operator", "eve", "admin")
PG_URL = os.environ.get("PORTAL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

# -- the date rule ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("due", "months", "extended"),
    [
        (date(2024, 1, 31), 1, date(2024, 2, 29)),  # leap year
        (date(2023, 1, 31), 1, date(2023, 2, 28)),
        (date(2024, 1, 31), 2, date(2024, 3, 31)),  # from the due date, not via February
        (date(2023, 12, 31), 2, date(2024, 2, 29)),  # over the year end, into a leap February
        (date(2022, 12, 31), 2, date(2023, 2, 28)),
        (date(2024, 2, 29), 1, date(2024, 3, 29)),
        (date(2024, 2, 29), 2, date(2024, 4, 29)),
        (date(2023, 11, 30), 2, date(2024, 1, 30)),
        (date(2023, 8, 31), 1, date(2023, 9, 30)),
        (date(2023, 12, 15), 1, date(2024, 1, 15)),
        (date(2100, 1, 29), 1, date(2100, 2, 28)),  # 2100 is no leap year
        (date(2000, 1, 29), 1, date(2000, 2, 29)),  # 2000 is one
    ],
)
def test_it_moves_a_due_date_by_calendar_months(due: date, months: int, extended: date) -> None:
    assert add_months(due, months) == extended


@given(st.dates(min_value=date(1900, 1, 1), max_value=date(9990, 12, 31)), st.integers(0, 24))
def test_it_lands_months_later_on_the_same_or_last_day(day: date, months: int) -> None:
    moved = add_months(day, months)
    index = day.year * 12 + day.month - 1 + months
    assert (moved.year, moved.month) == (index // 12, index % 12 + 1)
    assert moved.day == min(day.day, calendar.monthrange(moved.year, moved.month)[1])


# -- databases --------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def any_engine(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Engine]:
    """A migrated database: the SQLite file, or a fresh PostgreSQL database dropped after."""
    if request.param == "sqlite":
        engine = db.make_engine(settings.database_url)
        db.migrate(engine)
        yield engine
        engine.dispose()
        return
    yield from _postgres()


def _postgres() -> Iterator[Engine]:
    admin = create_engine(
        PG_URL.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    name = f"portal_test_{secrets.token_hex(4)}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
    except (OperationalError, ModuleNotFoundError) as exc:
        admin.dispose()
        pytest.skip(
            f"no PostgreSQL at {PG_URL} ({type(exc).__name__}); set PORTAL_TEST_POSTGRES_URL"
        )
    engine = db.make_engine(PG_URL.rsplit("/", 1)[0] + f"/{name}")
    try:
        db.migrate(engine)
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE {name}"))
        admin.dispose()


@pytest.fixture
def people(any_engine: Engine, settings: Settings, tmp_path: Path) -> Engine:
    load_personas(any_engine, settings, tmp_path)
    return any_engine


def bob_request(engine: Engine, settings: Settings) -> DeletionRequest:
    (made,) = ask_deletion(engine, settings, BOB, "park-a")
    return made


def current(engine: Engine, reference: str) -> DeletionRequest:
    with engine.connect() as conn:
        return get_request(conn, reference)


def decide(
    engine: Engine, reference: str, to: str, actor: Actor = DORA, **kw: object
) -> DeletionRequest:
    with engine.begin() as conn:
        return change_status(conn, reference=reference, to=to, actor=actor, renderer=RENDERER, **kw)  # type: ignore[arg-type]


def lengthen(engine: Engine, reference: str, months: int, **kw: object) -> DeletionRequest:
    with engine.begin() as conn:
        return extend(
            conn,
            reference=reference,
            months=months,
            actor=DORA,
            renderer=RENDERER,
            **kw,  # type: ignore[arg-type]
        )


def mails(engine: Engine, kind: str) -> list:
    with engine.connect() as conn:
        o = tables.outbox.c
        return conn.execute(select(tables.outbox).where(o.kind == kind).order_by(o.id)).all()


def history(engine: Engine, request_id: int) -> list[tuple]:
    e = tables.deletion_events.c
    with engine.connect() as conn:
        return [
            tuple(row)
            for row in conn.execute(
                select(e.actor, e.from_status, e.to_status, e.via)
                .where(e.request_id == request_id)
                .order_by(e.id)
            )
        ]


# -- transitions ------------------------------------------------------------------------


def test_it_completes_a_forwarded_request_and_tells_the_person(
    people: Engine, settings: Settings
) -> None:
    made = bob_request(people, settings)
    forwarded = decide(people, made.reference, FORWARDED)
    done = decide(
        people, made.reference, COMPLETED, version=forwarded.version, note="no data found any more"
    )

    assert (done.status, done.closed_by, done.closed_via, done.note) == (
        COMPLETED, "operator:dora", "admin", "no data found any more",
    )  # fmt: skip
    assert done.closed_at is not None
    assert history(people, made.id)[1:] == [
        ("operator:dora", "received", "forwarded", "admin"),
        ("operator:dora", "forwarded", "completed", "admin"),
    ]
    (mail,) = mails(people, "deletion_completed")
    assert mail.recipient == BOB and mail.deletion_request_id == made.id
    assert made.reference in mail.subject and "no data found any more" in mail.body_text
    assert "carried out" in mail.body_text  # the request's language, English here


def test_it_rejects_only_with_a_ground_and_a_reason(people: Engine, settings: Settings) -> None:
    made = bob_request(people, settings)
    needs = "a rejection needs a ground"
    refused: list[tuple[dict[str, object], str]] = [
        ({}, f"{needs} .*: ground is required"),
        ({"ground": "legal_obligation"}, f"{needs} .*: reason is required"),
        ({"ground": "legal_obligation", "reason": "   "}, f"{needs} .*: reason is required"),
        ({"reason": "tax law"}, f"{needs} .*: ground is required"),
        ({"ground": "whim", "reason": "tax law"}, "ground 'whim' is not one of: legal_obligation,"),
    ]
    for kw, message in refused:
        with pytest.raises(RequestRefused, match=message):
            decide(people, made.reference, REJECTED, **kw)
    assert current(people, made.reference).status == "received"
    assert not mails(people, "deletion_rejected")

    done = decide(
        people,
        made.reference,
        REJECTED,
        ground="legal_obligation",
        reason="We must keep invoices for 7 years.",
        kept_fields=2,
    )

    assert (done.status, done.ground) == (REJECTED, "legal_obligation")
    (mail,) = mails(people, "deletion_rejected")
    for words in (
        "Autoriteit Persoonsgegevens",
        "autoriteitpersoonsgegevens.nl",
        "We must keep invoices for 7 years.",
        "legal obligation",
    ):
        assert words in mail.body_text and words in mail.body_html
    assert "<title>" in mail.body_html


def test_it_writes_the_outcome_in_the_request_language(people: Engine, settings: Settings) -> None:
    made = bob_request(people, settings)
    with people.begin() as conn:
        conn.execute(update(tables.deletion_requests).values(lang="nl"))
    decide(people, made.reference, REJECTED, ground="legal_claims", reason="Er loopt een geschil.")
    (mail,) = mails(people, "deletion_rejected")
    assert mail.subject == (
        f"Datalekportaal: Attractiepark A heeft uw verwijderverzoek {made.reference} afgewezen "
        "(Datalek bij TicketDienst)"
    )
    assert (
        "klacht indienen bij de Autoriteit Persoonsgegevens (autoriteitpersoonsgegevens.nl)"
        in mail.body_text
    )
    assert "rechtsvordering" in mail.body_text


@pytest.mark.parametrize(
    ("first", "then", "message"),
    [
        (COMPLETED, REJECTED, "closed request is final"),
        (COMPLETED, COMPLETED, "closed request is final"),
        (COMPLETED, FORWARDED, "closed request is final"),
        (FORWARDED, FORWARDED, "cannot go from forwarded to forwarded"),
        (FORWARDED, "received", "cannot go from forwarded to received"),
        (FORWARDED, "bogus", "cannot go from forwarded to bogus"),
    ],
)
def test_it_refuses_an_invalid_transition(
    people: Engine, settings: Settings, first: str, then: str, message: str
) -> None:
    made = bob_request(people, settings)
    decide(people, made.reference, first)
    before = history(people, made.id)
    with pytest.raises(RequestRefused, match=message):
        decide(people, made.reference, then, ground="other", reason="because")
    assert history(people, made.id) == before
    assert len(mails(people, "deletion_completed")) == (first == COMPLETED)


def test_it_closes_a_request_still_received_when_the_partner_reports_first(
    people: Engine, settings: Settings
) -> None:
    """The partner's report proves it has the request, even before its mail is marked."""
    made = bob_request(people, settings)
    done = decide(people, made.reference, COMPLETED, Actor("partner", "park-a", "api"))
    assert (done.status, done.closed_by, done.closed_via) == (COMPLETED, "partner:park-a", "api")


def test_it_records_every_decision_in_the_audit_log_without_an_address(
    people: Engine, settings: Settings
) -> None:
    made = bob_request(people, settings)
    lengthen(people, made.reference, 1, reason="The partner archives to tape.")
    decide(people, made.reference, COMPLETED, Actor("partner", "park-a", "link"))
    with people.connect() as conn:
        entries = audit.entries(conn)
    assert [(e.actor, e.action, e.object) for e in entries] == [
        ("partner:park-a", "request_completed", made.reference),
        ("operator:dora", "request_extended", made.reference),
    ]
    assert not [e for e in entries if "@" in f"{e.actor}{e.object}{e.detail}"]
    with people.begin() as conn, pytest.raises(ValueError, match="no email address"):
        audit.record(conn, actor="operator:dora", action="note", object=BOB)


# -- extensions -------------------------------------------------------------------------


def set_due(engine: Engine, request_id: int, due: date) -> None:
    with engine.begin() as conn:
        t = tables.deletion_requests
        conn.execute(update(t).where(t.c.id == request_id).values(due_on=due))


@pytest.mark.parametrize(
    ("due", "months", "extended"),
    [
        (date(2024, 1, 31), 1, date(2024, 2, 29)),
        (date(2023, 12, 31), 2, date(2024, 2, 29)),
        (date(2025, 3, 31), 2, date(2025, 5, 31)),
    ],
)
def test_it_extends_once_from_the_due_date_and_tells_the_person(
    people: Engine, settings: Settings, due: date, months: int, extended: date
) -> None:
    made = bob_request(people, settings)
    set_due(people, made.id, due)

    longer = lengthen(people, made.reference, months, reason="Backups are on tape.", today=due)

    assert (longer.due_on, longer.extended_due_on, longer.due) == (due, extended, extended)
    assert longer.extension_reason == "Backups are on tape."
    assert longer.status == "received"
    (mail,) = mails(people, "deletion_extended")
    assert mail.recipient == BOB
    assert format_date(extended, "en") in mail.subject and "Backups are on tape." in mail.body_text
    assert history(people, made.id)[-1] == ("operator:dora", "received", "received", "admin")


def test_it_refuses_a_second_a_late_and_a_bad_extension(people: Engine, settings: Settings) -> None:
    made = bob_request(people, settings)
    set_due(people, made.id, date(2024, 5, 10))
    for months, reason, today, message in (
        (3, "reason", date(2024, 5, 1), "1 or 2 months"),
        (0, "reason", date(2024, 5, 1), "1 or 2 months"),
        (1, "  ", date(2024, 5, 1), "needs a reason"),
        (1, "reason", date(2024, 5, 11), "the due date 2024-05-10 has passed"),
    ):
        with pytest.raises(RequestRefused, match=message):
            lengthen(people, made.reference, months, reason=reason, today=today)
    lengthen(people, made.reference, 1, reason="first", today=date(2024, 5, 10))
    with pytest.raises(RequestRefused, match="extended once already"):
        lengthen(people, made.reference, 1, reason="second", today=date(2024, 5, 11))
    assert current(people, made.reference).extended_due_on == date(2024, 6, 10)
    assert len(mails(people, "deletion_extended")) == 1


def test_it_refuses_to_extend_a_closed_request(people: Engine, settings: Settings) -> None:
    made = bob_request(people, settings)
    decide(people, made.reference, COMPLETED)
    with pytest.raises(RequestRefused, match="closed request is not extended"):
        lengthen(people, made.reference, 1, reason="late")


# -- retry ------------------------------------------------------------------------------


def test_it_forwards_a_failed_request_again_by_hand(people: Engine, settings: Settings) -> None:
    made = bob_request(people, settings)
    refused = pytest.raises(RequestRefused, match="only a forward_failed request is retried")
    with refused, people.begin() as conn:
        retry(conn, settings, reference=made.reference, actor=DORA, renderer=RENDERER)
    with people.begin() as conn:
        conn.execute(update(tables.deletion_requests).values(status=FORWARD_FAILED))
    with people.begin() as conn:
        retried = retry(conn, settings, reference=made.reference, actor=DORA, renderer=RENDERER)
    assert retried.status == FORWARD_FAILED
    assert len(mails(people, "partner_request")) == 2


# -- two people deciding at once --------------------------------------------------------


def test_it_refuses_a_decision_made_on_a_stale_page(people: Engine, settings: Settings) -> None:
    made = bob_request(people, settings)
    shown = current(people, made.reference).version  # both operators see this page

    decide(people, made.reference, COMPLETED, DORA, version=shown)
    with pytest.raises(RequestRefused, match=r"changed meanwhile .*completed by operator dora"):
        decide(people, made.reference, REJECTED, EVE, version=shown, ground="other", reason="no")

    assert current(people, made.reference).closed_by == "operator:dora"
    assert len(mails(people, "deletion_completed")) == 1 and not mails(people, "deletion_rejected")


def test_it_lets_one_of_two_simultaneous_decisions_win(people: Engine, settings: Settings) -> None:
    made = bob_request(people, settings)
    shown = current(people, made.reference).version
    start = threading.Barrier(2, timeout=30)
    outcomes: dict[str, str] = {}

    def operator(actor: Actor, to: str) -> None:
        start.wait()
        try:
            decide(people, made.reference, to, actor, version=shown, ground="other", reason="why")
            outcomes[actor.name] = "written"
        except RequestRefused as exc:
            outcomes[actor.name] = str(exc)

    threads = [
        threading.Thread(target=operator, args=(DORA, COMPLETED)),
        threading.Thread(target=operator, args=(EVE, REJECTED)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(outcomes) == ["dora", "eve"]
    written = [name for name, outcome in outcomes.items() if outcome == "written"]
    assert len(written) == 1, outcomes
    (loser,) = set(outcomes) - set(written)
    assert "changed meanwhile" in outcomes[loser]
    final = current(people, made.reference)
    assert final.closed_by == f"operator:{written[0]}" and final.version == shown + 1
    assert len(history(people, made.id)) == 2
    assert len(mails(people, "deletion_completed")) + len(mails(people, "deletion_rejected")) == 1


def test_it_keeps_a_form_valid_when_only_the_mail_worker_moved_the_request(
    people: Engine, settings: Settings
) -> None:
    from portal.requests.deletions import mark_forwarded

    made = bob_request(people, settings)
    shown = current(people, made.reference).version
    (mail,) = mails(people, "partner_request")
    with people.begin() as conn:
        mark_forwarded(conn, mail.id, made.id)

    done = decide(people, made.reference, COMPLETED, version=shown)

    assert done.status == COMPLETED
    assert [h[1:3] for h in history(people, made.id)] == [
        (None, "received"),
        ("received", "forwarded"),
        ("forwarded", "completed"),
    ]
