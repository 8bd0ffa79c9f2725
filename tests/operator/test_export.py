"""`portal export` and /admin/export: one CSV, the same bytes, and the same audit entry."""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, update
from starlette.testclient import TestClient

from portal.app import create_app
from portal.core.config import Settings
from portal.store import tables
from tests.factories import ALICE, BOB, ask_deletion, create_operators, load_personas
from tests.server import portal_cli, sign_in_operator

SLUG = "ticketing-2021"
OPERATOR_ON_THE_MACHINE = "ops-anna"


@pytest.fixture
def people(engine: Engine, settings: Settings, tmp_path: Path) -> Engine:
    """Alice asked every partner, Bob Park A; Bob's address starts like a formula."""
    load_personas(engine, settings, tmp_path)
    create_operators(engine)
    ask_deletion(engine, settings, ALICE)
    (bob,) = ask_deletion(engine, settings, BOB, "park-a")
    t = tables.deletion_requests
    with engine.begin() as conn:
        conn.execute(
            update(t).where(t.c.id == bob.id).values(email="=cmd()@example.org", status="completed")
        )
    return engine


@pytest.fixture
def dora(people: Engine, settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings, deliver_mail=False)
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        sign_in_operator(client)
        yield client


def exports(engine: Engine) -> list[tuple[str, str, str | None]]:
    a = tables.audit_log.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(a.actor, a.object, a.detail).where(a.action == "export").order_by(a.id)
        )
        return [(r.actor, r.object, r.detail) for r in rows]


def export(settings: Settings, *args: str, user: str = OPERATOR_ON_THE_MACHINE):  # type: ignore[no-untyped-def]
    return portal_cli(settings, "export", *args, LOGNAME=user)


def test_it_prints_the_bytes_of_the_admin_export_and_audits_it_alike(
    people: Engine, settings: Settings, dora: TestClient
) -> None:
    downloaded = dora.get(f"/admin/export/{SLUG}/park-a.csv")
    assert downloaded.status_code == 200

    printed = export(settings, SLUG, "park-a")

    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == downloaded.content
    assert printed.stdout.startswith(b"reference,email,received,due,status,closed,outcome\r\n")
    assert b"'=cmd()@example.org" in printed.stdout and ALICE.encode() in printed.stdout
    assert printed.stderr == ""
    assert exports(people) == [
        ("operator:dora", f"{SLUG}/park-a", "2 request(s)"),
        (f"cli:{OPERATOR_ON_THE_MACHINE}", f"{SLUG}/park-a", "2 request(s)"),
    ]
    audit_page = dora.get("/admin/audit").text
    assert f'data-action="export" data-actor="cli:{OPERATOR_ON_THE_MACHINE}"' in audit_page


def test_it_writes_the_file_for_its_owner_alone_whole(
    people: Engine, settings: Settings, dora: TestClient, tmp_path: Path
) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    target = folder / "park-a.csv"
    target.write_text("an older export\n")
    target.chmod(0o644)

    written = export(settings, SLUG, "park-a", "--out", str(target))

    assert written.returncode == 0, written.stderr
    assert target.read_bytes() == dora.get(f"/admin/export/{SLUG}/park-a.csv").content
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in folder.iterdir()] == ["park-a.csv"], "nothing left aside"
    said = written.stdout.decode()
    assert said == f"exported 2 request(s) of {SLUG}/park-a to {target} (mode 0600)\n"
    assert len(exports(people)) == 2


def test_it_names_the_known_ones_for_an_unknown_incident_or_partner(
    people: Engine, settings: Settings, tmp_path: Path
) -> None:
    target = tmp_path / "out.csv"
    for args, words in (
        (("no-such-breach", "park-a"), ("unknown incident", "no-such-breach", SLUG)),
        ((SLUG, "no-such-partner"), ("unknown partner", "no-such-partner", "theater-b")),
    ):
        refused = export(settings, *args, "--out", str(target))
        assert refused.returncode == 1, refused.stderr
        assert refused.stderr.startswith("error:") and refused.stderr.count("\n") == 1
        assert "Traceback" not in refused.stderr
        assert all(word in refused.stderr for word in words), refused.stderr
        assert refused.stdout == b""
    assert not target.exists()
    assert exports(people) == []


def test_it_audits_no_export_it_could_not_write(
    people: Engine, settings: Settings, tmp_path: Path
) -> None:
    target = tmp_path / "no-such-folder" / "out.csv"

    refused = export(settings, SLUG, "park-a", "--out", str(target))

    assert refused.returncode == 1
    assert refused.stderr.startswith("error: cannot write") and "No such file" in refused.stderr
    assert exports(people) == []


def test_it_names_no_address_as_the_machine_user(people: Engine, settings: Settings) -> None:
    printed = export(settings, SLUG, "theater-b", user="anna@example.org")

    assert printed.returncode == 0, printed.stderr
    assert exports(people) == [("cli:(unknown)", f"{SLUG}/theater-b", "1 request(s)")]
    assert not re.search(rb"anna@example\.org", printed.stdout)
