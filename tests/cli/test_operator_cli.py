"""The operator's other commands through the real `portal`: version, incident list, serve,
settings checked at start, warnings on load, and help that reads whole."""

from __future__ import annotations

import email
import inspect
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from sqlalchemy import create_engine, update
from typer.testing import CliRunner

from portal.cli import app
from portal.store import tables
from tests.factories import INCIDENT, PARK_A, THEATER_B, write_csv
from tests.fixtures_mail import free_port, wait_for_sync
from tests.server import assert_operator_error, environment, portal

SLUG = "ticketing-2021"


@pytest.fixture
def loaded(tmp_path: Path) -> Path:
    """An instance with the personas' incident, park-a and theater-b imported."""
    (tmp_path / "incident.toml").write_text(INCIDENT, encoding="utf-8")
    assert portal(tmp_path, "incident", "load", "incident.toml").returncode == 0
    for partner, rows in (("park-a", PARK_A), ("theater-b", THEATER_B)):
        path = write_csv(tmp_path / f"{partner}.csv", rows)
        assert portal(tmp_path, "import", SLUG, partner, path).returncode == 0
    return tmp_path


def test_it_prints_the_version_from_the_package_metadata(tmp_path: Path) -> None:
    result = portal(tmp_path, "--version")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"breach-portal {version('breach-portal')}"
    assert not (tmp_path / "instance").exists()


# -- portal incident list -------------------------------------------------------------------


def add_requests(folder: Path, partner: str, *rows: tuple[str, date]) -> None:
    """Deletion requests as the person would have made them, with chosen status and due date."""
    engine = create_engine(f"sqlite:///{folder / 'instance' / 'portal.db'}")
    now = date.today()
    with engine.begin() as conn:
        partner_id = conn.execute(
            tables.partners.select().where(tables.partners.c.slug == partner)
        ).one()
        for n, (status, due) in enumerate(rows):
            conn.execute(
                tables.deletion_requests.insert().values(
                    reference=f"DR-TEST-{partner[:2].upper()}{n:02d}",
                    incident_id=partner_id.incident_id,
                    partner_id=partner_id.id,
                    bidx=bytes([n]) * 32,
                    fields=1,
                    lang="nl",
                    status=status,
                    verified_at=now,
                    received_at=now,
                    due_on=due,
                )
            )
    engine.dispose()


def test_it_lists_incidents_with_partners_records_and_requests(loaded: Path) -> None:
    today = date.today()
    add_requests(
        loaded,
        "park-a",
        ("received", today + timedelta(days=10)),  # open
        ("forwarded", today - timedelta(days=1)),  # open and overdue
        ("completed", today - timedelta(days=5)),  # closed: neither
        ("rejected", today + timedelta(days=5)),  # closed: neither
        ("forward_failed", today),  # open, due today: not yet overdue
    )
    add_requests(loaded, "theater-b", ("received", today - timedelta(days=40)))
    engine = create_engine(f"sqlite:///{loaded / 'instance' / 'portal.db'}")
    with engine.begin() as conn:  # an extension moves the due date past today
        conn.execute(
            update(tables.deletion_requests)
            .where(tables.deletion_requests.c.reference == "DR-TEST-TH00")
            .values(extended_due_on=today + timedelta(days=20))
        )
    engine.dispose()

    result = portal(loaded, "incident", "list")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{SLUG}: Datalek bij TicketDienst"
    table = {line.split()[0]: line.split()[1:4] for line in lines[2:]}
    assert table == {
        "park-a": ["2", "3", "1"],
        "theater-b": ["1", "1", "0"],
        "omroep-c": ["0", "0", "0"],
        "total": ["3", "4", "1"],
    }
    assert "Attractiepark A" in result.stdout


def test_it_says_what_to_do_when_there_is_no_incident(tmp_path: Path) -> None:
    result = portal(tmp_path, "incident", "list")

    assert result.returncode == 0, result.stderr
    assert "no incidents yet: load one with portal incident load FILE.toml" in result.stdout


@pytest.mark.parametrize(
    "command",
    [("stats", "nope"), ("purge", "--incident", "nope", "--all"), ("import", "nope", "x", "y.csv")],
)
def test_it_names_the_known_incidents_for_an_unknown_one(
    loaded: Path, command: tuple[str, ...]
) -> None:
    result = portal(loaded, *command)

    assert_operator_error(result, "unknown incident 'nope' (known: ticketing-2021)")


# -- serve and the settings -----------------------------------------------------------------


@pytest.fixture
def served(loaded: Path) -> Iterator[tuple[str, Path]]:
    """`portal serve --port P` without PORTAL_BASE_URL; (its URL, its outbox)."""
    port = free_port()
    env = environment(loaded / "instance", None)
    env.pop("PORTAL_BASE_URL", None)
    with (loaded / "serve.log").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "portal", "serve", "--port", str(port)],
            cwd=loaded,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for_sync(lambda: answers(url) or process.poll() is not None, 60)
            assert process.poll() is None, (loaded / "serve.log").read_text()
            yield url, loaded / "instance" / "outbox"
        finally:
            process.terminate()
            process.wait(timeout=30)


def answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_it_puts_the_served_port_in_mailed_links(served: tuple[str, Path]) -> None:
    url, outbox = served
    with httpx.Client(base_url=url) as browser:
        page = browser.get(f"/{SLUG}/").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token
        browser.post(f"/{SLUG}/lookup", data={"email": PARK_A[1][0], "csrf_token": token[1]})

    wait_for_sync(lambda: outbox.is_dir() and any(outbox.glob("*.eml")), 30)
    message = email.message_from_bytes(next(outbox.glob("*.eml")).read_bytes())
    body = next(p for p in message.walk() if p.get_content_type() == "text/plain")
    text = body.get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert re.search(rf"{re.escape(url)}/v/\S+", text), text


@pytest.mark.parametrize("command", [["serve"], ["mail-worker"]])
@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("PORTAL_SMTP_URL", "smtp:/broken", "'smtp:/broken' is not a URL; write it as smtp://"),
        ("PORTAL_SMTP_URL", "smtp://u:hunter2@", "'smtp://u:***@' has no host"),
        ("PORTAL_SMTP_URL", "smpt://mail.example", "has scheme 'smpt'"),
        ("PORTAL_SMTP_URL", "smtp://mail.example:2500000", "port"),
        ("PORTAL_LIMIT_PER_CLIENT", "lots", "limits notation"),
        ("PORTAL_LINK_TTL", "1h", "whole number of seconds"),
        ("PORTAL_TRUSTED_PROXIES", "proxy.internal", "addresses or networks"),
    ],
)
def test_it_stops_at_a_setting_that_cannot_work_before_anything_starts(
    tmp_path: Path, command: list[str], variable: str, value: str, words: str
) -> None:
    (tmp_path / ".env").write_text(f"{variable}={value}\n")

    result = portal(tmp_path, *command)

    assert_operator_error(result, variable, words)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "instance" / "portal.db").exists()
    assert "serving on" not in result.stdout
    assert "delivering mail" not in result.stdout


# -- incident load --------------------------------------------------------------------------


def test_it_warns_that_raw_html_in_a_notice_is_shown_as_text(tmp_path: Path) -> None:
    text = INCIDENT.replace(
        'answer = { nl = "Lees het advies."', 'answer = { nl = "Lees <a href=x>dit</a>."'
    )
    (tmp_path / "incident.toml").write_text(text, encoding="utf-8")

    result = portal(tmp_path, "incident", "load", "incident.toml")

    assert result.returncode == 0, result.stderr
    warnings = result.stderr.strip().splitlines()
    assert [w for w in warnings if "raw HTML" in w] == [
        "warning: incident.toml:12: notice (nl) holds raw HTML (<script>, </script>): the "
        "page shows it as text, not as HTML; write Markdown instead",
        "warning: incident.toml:13: notice (en) holds raw HTML (<script>, </script>): the "
        "page shows it as text, not as HTML; write Markdown instead",
        "warning: incident.toml:17: faq entry 1 answer (nl) holds raw HTML (<a>, </a>): the "
        "page shows it as text, not as HTML; write Markdown instead",
    ]
    assert f"incident {SLUG} created" in result.stdout


def test_it_warns_of_each_missing_article_34_element(tmp_path: Path) -> None:
    (tmp_path / "incident.toml").write_text(INCIDENT, encoding="utf-8")

    result = portal(tmp_path, "incident", "load", "incident.toml")

    assert result.returncode == 0, result.stderr
    warnings = [w for w in result.stderr.splitlines() if "Art. 34" in w]
    assert warnings == [
        "warning: incident.toml:1: no [consequences]: a breach notice must tell people the "
        "likely consequences of the breach (GDPR Art. 34); the page shows a general text until "
        "you add it",
        "warning: incident.toml:1: no [measures]: a breach notice must tell people the measures "
        "taken to address it (GDPR Art. 34); the page shows a general text until you add it",
    ]


# -- help -----------------------------------------------------------------------------------


def commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command's words, subcommands included (typer brings its own click)."""
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from commands(command, (*path, name))
        else:
            yield (*path, name)


COMMANDS = list(commands(typer.main.get_command(app)))


def test_it_has_help_for_the_commands_of_the_design() -> None:
    for command in ("import", "serve", "purge", "stats", "export", "demo", "init", "mail-worker"):
        assert (command,) in COMMANDS
    assert ("incident", "load") in COMMANDS
    assert ("incident", "list") in COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_it_prints_each_help_paragraph_whole_and_cites_no_document(
    command: tuple[str, ...],
) -> None:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "400"})
    target: Any = typer.main.get_command(app)
    for name in command:
        target = target.commands[name]
    lines = [" ".join(line.split()) for line in result.output.splitlines()]

    assert result.exit_code == 0, result.output
    for paragraph in inspect.cleandoc(target.help or "").split("\n\n"):
        whole = " ".join(paragraph.replace("`", "").split())
        assert any(whole in line for line in lines), f"{whole!r} broken in:\n{result.output}"
    assert "design" not in result.output.lower()
    assert "§" not in result.output
