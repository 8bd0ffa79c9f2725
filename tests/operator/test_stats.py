"""Per-partner figures for `portal stats`: records, and deletion requests by status."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, select, update

from portal.core.config import Settings
from portal.core.errors import PortalError
from portal.incidents.stored import load_incident_file
from portal.operator.stats import incident_figures, partner_figures
from portal.requests.deletions import FORWARDED, request_deletion
from portal.store import tables
from tests.factories import ALICE, BOB, RENDERER, load_personas, sign_in_directly

SLUG = "ticketing-2021"


@pytest.fixture
def personas(engine: Engine, settings: Settings, tmp_path: Path) -> Engine:
    load_personas(engine, settings, tmp_path)
    return engine


def ask_deletion(engine: Engine, settings: Settings, address: str, partner: str) -> None:
    session = sign_in_directly(engine, settings, address)
    with engine.begin() as conn:
        request_deletion(conn, settings, session, partner=partner, renderer=RENDERER)


def figures(engine: Engine, incident: str | None = SLUG) -> dict[str, tuple[int, dict[str, int]]]:
    with engine.connect() as conn:
        rows = partner_figures(conn, incident=incident)
    return {f"{r.incident}/{r.partner}": (r.records, r.requests) for r in rows}


def test_it_counts_records_per_partner(personas: Engine) -> None:
    assert figures(personas) == {
        f"{SLUG}/omroep-c": (0, {}),
        f"{SLUG}/park-a": (2, {}),
        f"{SLUG}/theater-b": (1, {}),
    }


def test_it_counts_requests_by_status(personas: Engine, settings: Settings) -> None:
    ask_deletion(personas, settings, ALICE, "all")
    ask_deletion(personas, settings, BOB, "park-a")
    with personas.begin() as conn:
        conn.execute(
            update(tables.deletion_requests)
            .where(tables.deletion_requests.c.email == BOB)
            .values(status=FORWARDED)
        )
    assert figures(personas) == {
        f"{SLUG}/omroep-c": (0, {}),
        f"{SLUG}/park-a": (2, {"received": 1, "forwarded": 1}),
        f"{SLUG}/theater-b": (1, {"received": 1}),
    }


def test_it_covers_every_incident_when_none_is_named(personas: Engine, tmp_path: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text(
        (tmp_path / "incident.toml")
        .read_text()
        .replace('slug = "ticketing-2021"', 'slug = "another-2022"'),
        encoding="utf-8",
    )
    load_incident_file(personas, other)
    everything = figures(personas, None)
    assert list(everything) == [
        "another-2022/omroep-c",
        "another-2022/park-a",
        "another-2022/theater-b",
        f"{SLUG}/omroep-c",
        f"{SLUG}/park-a",
        f"{SLUG}/theater-b",
    ]
    assert everything["another-2022/park-a"] == (0, {})
    assert len(figures(personas)) == 3


def test_it_refuses_an_unknown_incident(personas: Engine) -> None:
    with personas.connect() as conn, pytest.raises(PortalError, match="no-such-breach"):
        partner_figures(conn, incident="no-such-breach")


def test_it_gives_nothing_for_an_empty_database(engine: Engine) -> None:
    with engine.connect() as conn:
        assert partner_figures(conn) == []
        assert incident_figures(conn) == []


def test_it_counts_links_visits_and_mail_per_incident(personas: Engine, settings: Settings) -> None:
    ask_deletion(personas, settings, BOB, "park-a")
    with personas.connect() as conn:
        (incident,) = incident_figures(conn)
    assert incident.incident == SLUG
    assert incident.links_issued == 1
    assert incident.verified_visits == 1
    assert incident.mail == {"queued": 3}


def test_it_counts_people_visits_overdue_and_days_to_close(
    personas: Engine, settings: Settings
) -> None:
    from datetime import date, timedelta

    from portal.core.clock import utcnow

    ask_deletion(personas, settings, ALICE, "all")
    ask_deletion(personas, settings, BOB, "park-a")
    t = tables.deletion_requests
    now = utcnow()
    with personas.begin() as conn:
        bob_id, *alice_ids = conn.scalars(select(t.c.id).order_by(t.c.email != BOB, t.c.id)).all()
        conn.execute(update(t).where(t.c.id == bob_id).values(due_on=date(2020, 1, 1)))
        for request_id, days in zip(alice_ids, (4, 10), strict=True):
            conn.execute(
                update(t)
                .where(t.c.id == request_id)
                .values(status="completed", received_at=now - timedelta(days=days), closed_at=now)
            )
    with personas.connect() as conn:
        partners = {p.partner: p for p in partner_figures(conn, incident=SLUG)}
        (incident,) = incident_figures(conn, incident=SLUG)

    assert (incident.distinct_people, incident.lookups, incident.verified_visits) == (2, 2, 2)
    assert partners["park-a"].found_affected == 2 and partners["theater-b"].found_affected == 1
    assert partners["park-a"].overdue == 1 and partners["theater-b"].overdue == 0
    assert partners["park-a"].median_days_to_close == 4.0
    assert partners["theater-b"].median_days_to_close == 10.0
    assert partners["omroep-c"].median_days_to_close is None
