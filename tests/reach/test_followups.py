"""Later partners (design §8): one follow-up notice naming only the new partner(s),
throttled like every notice, never twice, counted; delivered through a real SMTP server."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import IntegrityError

from portal.core.clock import utcnow
from portal.core.config import Settings
from portal.mail.outbox import ERASED
from portal.operator.stats import partner_figures
from portal.reach import bounces, notices
from portal.store import tables
from portal.workers import mail_worker
from tests.factories import ALICE, BOB, RENDERER, load_personas, write_csv
from tests.fixtures_mail import running_smtp_server

SLUG = "ticketing-2021"
TABLES = (tables.notice_followups, tables.notices, tables.outbox)
OMROEP_C = [["email", "relatienummer"], [ALICE, "R-1001"]]


@pytest.fixture
def notified(engine: Engine, settings: Settings, tmp_path: Path) -> Path:
    """Park A's notices to Alice and Bob went out; Theater B and Omroep C are imported."""
    load_personas(engine, settings, tmp_path)
    from portal.incidents.importer import import_csv

    omroep = write_csv(tmp_path / "omroep-c.csv", OMROEP_C)
    import_csv(engine, settings, incident=SLUG, partner="omroep-c", path=omroep)
    run(engine, settings, tmp_path, "park-a")
    with engine.begin() as conn:
        conn.execute(update(tables.outbox).values(status="sent", **ERASED))
        conn.execute(update(tables.notices).values(status="sent"))
    return tmp_path


def run(
    engine: Engine, settings: Settings, folder: Path, partner: str, **options: Any
) -> notices.NotifySummary:
    return notices.notify(
        engine, settings, incident=SLUG, partner=partner, path=folder / f"{partner}.csv",
        renderer=RENDERER, rate=options.pop("rate", 1000), **options,
    )  # fmt: skip


def followups(engine: Engine) -> list[Any]:
    o, f = tables.outbox.c, tables.notice_followups.c
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(f.id, f.number, f.status, f.send_after, o.recipient, o.subject,
                       o.body_text, o.next_attempt_at, o.kind)
                .join(tables.outbox, o.id == f.outbox_id)
                .order_by(f.id)
            )
        )  # fmt: skip


def test_it_follows_up_naming_only_the_later_partner(
    engine: Engine, settings: Settings, notified: Path
) -> None:
    summary = run(engine, settings, notified, "theater-b")

    assert (summary.new, summary.followups, summary.followups_merged) == (0, 1, 0)
    (followup,) = followups(engine)
    assert (followup.recipient, followup.kind, followup.number) == (ALICE, "notice_followup", 1)
    assert followup.subject == "Datalek: aanvulling over uw gegevens (Datalek bij TicketDienst)"
    text = followup.body_text
    assert "Gelekt bij Theater B:" in text and "Attractiepark A" not in text
    assert "- Bankrekeningnummer (IBAN): ▲ Ernstig" in text and "/v/" in text
    assert followup.next_attempt_at == followup.send_after  # in the notices' schedule


def test_it_never_follows_up_twice_for_a_partner(
    engine: Engine, settings: Settings, notified: Path
) -> None:
    run(engine, settings, notified, "theater-b")
    again = run(engine, settings, notified, "theater-b")  # a rerun, as after a crash

    assert (again.followups, again.already) == (0, 1)
    assert len(followups(engine)) == 1
    with engine.connect() as conn, conn.begin():
        notice_id = conn.scalar(select(tables.notice_followups.c.notice_id))
        row = {"notice_id": notice_id, "number": 1, "status": "queued", "send_after": utcnow()}
        with pytest.raises(IntegrityError):  # two runs can never make the same follow-up
            conn.execute(tables.notice_followups.insert().values(**row, created_at=utcnow()))


def test_it_merges_a_third_partner_into_the_unsent_follow_up(
    engine: Engine, settings: Settings, notified: Path
) -> None:
    run(engine, settings, notified, "theater-b")
    summary = run(engine, settings, notified, "omroep-c")

    assert (summary.followups, summary.followups_merged) == (0, 1)
    (followup,) = followups(engine)
    assert "Theater B" in followup.body_text and "Omroep C" in followup.body_text
    assert "Attractiepark A" not in followup.body_text
    with engine.connect() as conn:
        purposes = conn.scalars(select(tables.links.c.purpose)).all()
    assert len(purposes) == 3  # two notices' links and the follow-up's newest: the old one went


def test_it_sends_a_second_follow_up_once_the_first_went_out(
    engine: Engine, settings: Settings, notified: Path
) -> None:
    run(engine, settings, notified, "theater-b")
    with engine.begin() as conn:
        conn.execute(update(tables.outbox).values(status="sent", **ERASED))
        conn.execute(update(tables.notice_followups).values(status="sent"))
    summary = run(engine, settings, notified, "omroep-c")

    assert summary.followups == 1
    second = followups(engine)[1]
    assert second.number == 2 and "Omroep C" in second.body_text
    assert "Theater B" not in second.body_text


def test_it_does_not_follow_up_a_notice_that_bounced(
    engine: Engine, settings: Settings, notified: Path
) -> None:
    with engine.begin() as conn:
        conn.execute(update(tables.notices).values(status="bounced"))
    summary = run(engine, settings, notified, "theater-b")

    assert (summary.followups, summary.unreachable) == (0, 1)
    assert followups(engine) == []


def test_it_counts_follow_ups_in_a_dry_run_and_writes_nothing(
    engine: Engine, settings: Settings, notified: Path
) -> None:
    summary = run(engine, settings, notified, "theater-b", dry_run=True)

    assert summary.followups == 1
    assert followups(engine) == []


def test_it_delivers_a_follow_up_and_counts_it_for_its_partner(
    engine: Engine, settings: Settings, notified: Path
) -> None:
    bouncing = replace(settings, bounce_address="bounces@example.org")
    run(engine, settings, notified, "theater-b")
    with running_smtp_server() as smtp:
        asyncio.run(mail_worker(engine, replace(bouncing, smtp_url=smtp.url())).deliver_due())
    (received,) = smtp.received
    assert received.rcpt_tos == [ALICE] and received.mail_from.startswith("bounces+")
    assert str(received.message["X-Portal-Kind"]) == "notice_followup"
    assert [(f.recipient, f.status) for f in followups(engine)] == [(None, "sent")]
    with engine.connect() as conn:
        figures = {p.partner: p.notices for p in partner_figures(conn, incident=SLUG)}
    assert figures["theater-b"]["sent"] == 1 and figures["park-a"]["sent"] == 2

    tag = received.mail_from.partition("+")[2].partition("@")[0]
    with engine.begin() as conn:
        from portal.core.tokens import bounce_tags

        assert bounces.mark_bounced(conn, bounce_tags(bouncing).read(tag)) == bounces.MARKED
        figures = {p.partner: p.notices for p in partner_figures(conn, incident=SLUG)}
    assert figures["theater-b"]["bounced"] == 1 and figures["theater-b"]["sent"] == 0
    assert BOB not in received.content.decode()


def test_it_erases_follow_ups_with_their_incident_once_they_are_out(
    engine: Engine, settings: Settings, notified: Path
) -> None:
    from portal.core.errors import PortalError
    from portal.operator.retention import purge_incident

    run(engine, settings, notified, "theater-b")
    with pytest.raises(PortalError, match="1 notice\\(s\\) still queued"):
        purge_incident(engine, SLUG)
    with engine.begin() as conn:
        conn.execute(update(tables.outbox).values(status="sent", **ERASED))
        conn.execute(update(tables.notice_followups).values(status="sent"))
    purge_incident(engine, SLUG)

    with engine.connect() as conn:
        left = [conn.scalar(select(func.count()).select_from(t)) for t in TABLES]
    assert left == [0, 0, 0]
