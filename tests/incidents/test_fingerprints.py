"""The pepper's fingerprint per incident: recorded by the import, refused when it differs,
adopted for an incident imported before it was kept, and watched by /healthz."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, update
from starlette.testclient import TestClient

from portal.app import create_app
from portal.core.blind_index import KdfParams, blind_index
from portal.core.config import Settings
from portal.core.errors import PortalError
from portal.incidents import fingerprints
from portal.incidents.importer import import_csv
from portal.incidents.stored import load_incident_file
from portal.store import db, tables
from tests.factories import (
    BOB,
    INCIDENT,
    PARK_A,
    PEPPER_REFUSAL,
    ask_deletion,
    load_personas,
    write_csv,
)
from tests.fixtures_mail import free_port

SLUG = "ticketing-2021"


def stored_fingerprint(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return conn.scalar(select(tables.incidents.c.pepper_fingerprint))


def records(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(tables.exposures)) or 0)


def forget_fingerprints(engine: Engine) -> None:
    """As a database imported before migration 0009 holds its incidents."""
    with engine.begin() as conn:
        conn.execute(update(tables.incidents).values(pepper_fingerprint=None))


def check(engine: Engine, pepper: bytes) -> fingerprints.PepperCheck:
    with engine.begin() as conn:
        return fingerprints.check(conn, pepper)


def load_only(engine: Engine, folder: Path) -> Path:
    incident = folder / "incident.toml"
    incident.write_text(INCIDENT, encoding="utf-8")
    load_incident_file(engine, incident)
    return write_csv(folder / "park-a.csv", PARK_A)


def test_it_records_a_fingerprint_of_the_pepper_with_the_first_import(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    csv_file = load_only(engine, tmp_path)
    assert stored_fingerprint(engine) is None
    import_csv(engine, settings, incident=SLUG, partner="park-a", path=csv_file)

    stored = stored_fingerprint(engine)
    assert stored is not None and len(stored) == 64
    assert settings.pepper.hex() not in stored and settings.pepper.decode() not in stored
    other = replace(settings, pepper=b"another pepper")
    with engine.connect() as conn:
        assert fingerprints.mismatches(conn, settings.pepper) == []
        assert fingerprints.mismatches(conn, other.pepper) == [SLUG]


def test_it_refuses_an_import_with_another_pepper_and_writes_nothing(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    load_personas(engine, settings, tmp_path)
    before, fingerprint = records(engine), stored_fingerprint(engine)
    more = write_csv(tmp_path / "more.csv", [["email"], ["someone.new@example.org"]])
    other = replace(settings, pepper=b"another pepper")

    for dry_run in (True, False):
        with pytest.raises(PortalError) as refused:
            import_csv(engine, other, incident=SLUG, partner="park-a", path=more, dry_run=dry_run)
        assert str(refused.value) == PEPPER_REFUSAL
    assert (records(engine), stored_fingerprint(engine)) == (before, fingerprint)


def test_it_lets_another_pepper_import_while_the_incident_holds_no_records(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    csv_file = load_only(engine, tmp_path)
    empty = write_csv(tmp_path / "empty.csv", [["email"], ["not an address"]])
    with pytest.raises(PortalError, match="no row has a valid email address"):
        import_csv(engine, settings, incident=SLUG, partner="park-a", path=empty)
    other = replace(settings, pepper=b"the pepper set after all")

    import_csv(engine, other, incident=SLUG, partner="park-a", path=csv_file)

    with engine.connect() as conn:
        assert fingerprints.mismatches(conn, other.pepper) == []
        assert fingerprints.mismatches(conn, settings.pepper) == [SLUG]


def test_it_adopts_the_pepper_in_force_for_records_imported_before_fingerprints(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    load_personas(engine, settings, tmp_path)
    forget_fingerprints(engine)

    assert check(engine, settings.pepper) == fingerprints.PepperCheck([], [SLUG])
    assert check(engine, settings.pepper) == fingerprints.PepperCheck([], [])
    assert check(engine, b"another pepper") == fingerprints.PepperCheck([SLUG], [])


def test_it_does_not_adopt_a_pepper_that_a_deletion_request_disproves(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    load_personas(engine, settings, tmp_path)
    ask_deletion(engine, settings, BOB, "park-a")
    forget_fingerprints(engine)

    assert check(engine, b"another pepper") == fingerprints.PepperCheck([SLUG], [])
    assert stored_fingerprint(engine) is None
    assert check(engine, settings.pepper) == fingerprints.PepperCheck([], [SLUG])


def test_it_ignores_incidents_without_records(engine: Engine, tmp_path: Path) -> None:
    load_only(engine, tmp_path)
    assert check(engine, b"any pepper") == fingerprints.PepperCheck([], [])


def test_it_costs_a_guess_at_the_pepper_what_a_blind_index_costs(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    """The fingerprint is the blind index of a fixed text that is no address: with the
    database in hand, no cheaper oracle for the pepper than one known address's index."""
    load_personas(engine, settings, tmp_path)
    with engine.connect() as conn:
        salt = db.ensure_salt(conn)
    expected = blind_index(
        "breach-portal pepper fingerprint v1", pepper=settings.pepper, salt=salt, params=KdfParams()
    )
    assert stored_fingerprint(engine) == expected.hex()


def test_it_answers_healthz_503_naming_pepper_when_another_pepper_imported_meanwhile(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    csv_file = load_only(engine, tmp_path)
    app = create_app(replace(settings, pepper_check_interval=0), deliver_mail=False)
    with TestClient(app) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        # Another process imports with its own pepper while this server runs.
        other = replace(settings, pepper=b"the import's own pepper")
        import_csv(engine, other, incident=SLUG, partner="park-a", path=csv_file)

        answer = client.get("/healthz")

    assert answer.status_code == 503
    assert answer.json() == {"status": "unavailable", "reason": "pepper", "incidents": [SLUG]}


def test_it_checks_the_pepper_for_healthz_at_most_once_per_interval(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    csv_file = load_only(engine, tmp_path)
    app = create_app(replace(settings, pepper_check_interval=3600), deliver_mail=False)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        other = replace(settings, pepper=b"the import's own pepper")
        import_csv(engine, other, incident=SLUG, partner="park-a", path=csv_file)
        assert client.get("/healthz").status_code == 200  # not read again yet


def test_it_answers_healthz_503_naming_the_database_when_it_does_not_answer(
    tmp_path: Path,
) -> None:
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/portal"
    settings = Settings(instance_dir=tmp_path, database_url=nowhere, secret_key="k", pepper=b"p")
    with TestClient(create_app(settings, deliver_mail=False)) as client:
        answer = client.get("/healthz")
    assert answer.status_code == 503
    assert answer.json() == {"status": "unavailable", "reason": "database"}
