"""The docs show what the portal does, exactly: docs/operator.md's transcripts are what the
commands print, and docs/partners.md's webhook body is what a partner receives.

Each ```console block is a shell session: `$ cat FILE` with its content writes the file,
`$ [NAME=value ...] portal ARGS` runs the real command and must print the lines that follow
(stderr, then stdout). All blocks run in order in one fresh instance folder that holds
docs/incident.example.toml as incident.toml.

A ```console fault=NAME block shows what the commands print while a failure lasts
("When something breaks on notice day"): the test of tests/faults/ that brings that failure
about runs it then, against its own servers (`curl -s` of the guide's 127.0.0.1:8000 asks
the test's portal).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path
from types import SimpleNamespace

from portal.core.config import Settings
from portal.core.fields import to_bits
from portal.mail.outbox import webhook_body
from portal.requests.digests import batch_payload
from portal.requests.forwarding import webhook_payload
from tests.server import (
    DOCS,
    FAULTS,
    GUIDE,
    GUIDE_URL,
    environment,
    fault_transcripts,
    transcript,
)

STEPS = transcript(GUIDE)


def test_it_finds_the_transcripts() -> None:
    commands = [step.command for step in STEPS]
    assert "portal incident load incident.toml" in commands
    assert any("--dry-run" in command for command in commands)
    assert sum(command.startswith("cat ") for command in commands) >= 4


def run(folder: Path, command: str) -> str:
    words = shlex.split(command)
    extra = {}
    while "=" in words[0]:
        name, _, value = words.pop(0).partition("=")
        extra[name] = value
    assert words[0] == "portal", command
    result = subprocess.run(
        [sys.executable, "-m", "portal", *words[1:]],
        cwd=folder,
        env=environment(folder / "instance", None) | extra,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result.stderr + result.stdout


def test_it_prints_what_the_operator_guide_shows(tmp_path: Path) -> None:
    shutil.copy(DOCS / "incident.example.toml", tmp_path / "incident.toml")
    for step in STEPS:
        if step.command.startswith("cat "):
            (tmp_path / step.command.removeprefix("cat ")).write_text(step.output, encoding="utf-8")
            continue
        printed = run(tmp_path, step.command)
        assert printed == step.output, f"$ {step.command}\n{printed}"


# -- docs/partners.md: the webhook body ---------------------------------------------------

WEBHOOK_BODY = re.compile(r"^POST /hooks/erasure HTTP/1.1\n.*?\n\n(\{.*?)^```$", re.S | re.M)


def documented_webhook_body() -> list[tuple[str, object]]:
    found = WEBHOOK_BODY.search((DOCS / "partners.md").read_text(encoding="utf-8"))
    assert found, "docs/partners.md shows the webhook's request"
    return json.loads(found.group(1), object_pairs_hook=list)  # type: ignore[no-any-return]


def test_it_shows_the_webhook_body_exactly_as_the_portal_sends_it() -> None:
    shown = documented_webhook_body()
    keys = dict(shown)["fields"]
    assert isinstance(keys, list)
    settings = Settings(
        instance_dir=DOCS,
        database_url="sqlite://",
        secret_key="docs",
        pepper=b"docs",
        base_url="https://lek.example.org",
    )
    request = SimpleNamespace(
        reference="DR-7K3Q-9XPM",
        email="alice@example.org",
        verified_at=datetime(2024, 3, 1, 10, 1, 57, 482913),
        received_at=datetime(2024, 3, 1, 10, 2, 11, 123456),
        due_on=date(2024, 4, 1),
        extended_due_on=None,
        fields=to_bits(keys),
    )
    incident = SimpleNamespace(slug="ticketing-2021", contact_email="privacy@ticketdienst.example")
    payload = webhook_payload(settings, incident, SimpleNamespace(slug="park-a"), request)  # type: ignore[arg-type]
    body = re.sub(r"/r/[\w.-]+", "/r/<token>", webhook_body(payload))
    # Keys, their order and every value: `fields` in the order sent (most serious first).
    assert json.loads(body, object_pairs_hook=list) == shown


# -- docs/operator.md: what a failure on notice day looks like -------------------------------


def test_it_has_a_transcript_for_each_failure_a_fault_test_brings_about() -> None:
    transcripts = fault_transcripts()
    assert set(transcripts) == set(FAULTS)
    faults = Path(__file__).parent / "faults"
    for name, test in FAULTS.items():
        assert f'shows_in_the_guide("{name}"' in (faults / test).read_text(encoding="utf-8")
        for step in transcripts[name]:
            assert step.command.startswith(("portal ", f"curl -s {GUIDE_URL}/")), step.command


BATCH_BODY = re.compile(
    r"^POST /hooks/erasure HTTP/1.1\n.*?\n\n(\{\"incident\".*?)^```$", re.S | re.M
)


def test_it_shows_the_batch_webhook_body_exactly_as_the_portal_sends_it() -> None:
    found = BATCH_BODY.search((DOCS / "partners.md").read_text(encoding="utf-8"))
    assert found, "docs/partners.md shows the daily batch call"
    shown = json.loads(found.group(1), object_pairs_hook=list)
    settings = Settings(
        instance_dir=DOCS,
        database_url="sqlite://",
        secret_key="docs",
        pepper=b"docs",
        base_url="https://lek.example.org",
    )
    request = SimpleNamespace(
        reference="DR-7K3Q-9XPM",
        email="alice@example.org",
        verified_at=datetime(2024, 3, 1, 10, 1, 57, 482913),
        received_at=datetime(2024, 3, 1, 10, 2, 11, 123456),
        due_on=date(2024, 4, 1),
        extended_due_on=None,
        fields=to_bits(["email", "name"]),
    )
    incident = SimpleNamespace(slug="ticketing-2021", contact_email="privacy@ticketdienst.example")
    partner = SimpleNamespace(slug="omroep-c", id=3)
    payload = batch_payload(settings, incident, partner, [request])  # type: ignore[arg-type]
    body = re.sub(r"/r/partner/[\w.-]+", "/r/partner/<token>", webhook_body(payload))
    body = re.sub(r"/r/(?!partner/)[\w.-]+", "/r/<token>", body)
    assert json.loads(body, object_pairs_hook=list) == shown
