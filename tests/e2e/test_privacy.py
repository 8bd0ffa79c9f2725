"""After real use, no imported address, field value or token is left in the instance or log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.databases import Backend, stored_bytes
from tests.e2e.conftest import (
    ALICE,
    BOB,
    CAROL,
    CONTACTS,
    JAN,
    PARTNERS,
    SLUG,
    Browser,
    csv_values,
    load_and_import,
    mails_to,
    normalised,
    open_browser,
    portal_links,
    text_of,
    wait_for_mail,
)
from tests.fixtures_mail import SmtpServer, wait_for_sync
from tests.server import Portal, portal_env, running_portal

pytestmark = pytest.mark.e2e

DIRK = "dirk.pelgrimsma@voorbeeld.nl"  # asks for a link and never opens it
# Values that a search could not find by accident; the test checks they are in the CSVs.
DISTINCTIVE = (
    "Zwanenburgerlaan",
    "NL91ABNA0417164300",
    "NL20INGB0001234567",
    "Wubbolts",
    "Hoogkarspel",
    "0687651234",
    "+31 6 5550 1234",
    "KLANT-884211",
    "REL-5521907",
    "1983-04-29",
    "Turkooisblauw",
    "Geenmailtje",
)
# The instance keeps secrets generated on first use, as a default deployment does.
GENERATED_SECRETS = {"PORTAL_SECRET_KEY": "", "PORTAL_PEPPER": ""}


def spellings(value: str) -> set[str]:
    """A value as it could be written down: as is, and escaped for JSON."""
    forms = {value, json.dumps(value)[1:-1]}
    if "@" in value:
        local, _, domain = value.strip().rpartition("@")
        forms |= {normalised(value), f"{local}@{domain}".lower()}
        forms |= {f"{local}@{domain.encode('idna').decode()}", json.dumps(value.strip())[1:-1]}
        if len(local) >= 8:
            forms.add(local)
    return {f.strip().lower() for f in forms}


def leaked_in(blob: bytes, needles: set[str]) -> set[str]:
    haystack = blob.lower()
    return {n for n in needles if n.lower().encode() in haystack}


def use_the_portal(
    portal: Portal, smtp: SmtpServer, browsers: list[Browser]
) -> tuple[set[str], set[str]]:
    """Several people look up, alice asks for deletion everywhere; returns the tokens seen:
    the links mailed and the session cookies set."""
    alice = open_browser(browsers, portal)
    alice.sign_in("  Alice@EXAMPLE.com ", smtp)
    page = alice.get(f"/{SLUG}/results")
    assert alice.submit(page, f"/{SLUG}/deletion", partner="all").status_code == 303
    for address in ("JAN@Bücher.DE", BOB.upper(), CAROL):
        open_browser(browsers, portal).sign_in(address, smtp)
    assert open_browser(browsers, portal).look_up(f" {DIRK.title()} ").status_code == 303
    wait_for_mail(smtp, DIRK)
    for contact in CONTACTS.values():
        wait_for_mail(smtp, contact)
    wait_for_mail(smtp, ALICE, count=2)

    def all_forwarded() -> bool:
        page = alice.results()
        return [n.attrs["data-deletion-status"] for n in page.find_all("data-deletion-status")] == [
            "forwarded"
        ] * len(PARTNERS)

    wait_for_sync(all_forwarded)
    links = {
        link.rpartition("/v/")[2]
        for received in smtp.received
        for link in portal_links(text_of(received.message, "plain"), portal.url)
    }
    sessions = {b.client.cookies.get("portal_session") for b in browsers}
    return links, {s for s in sessions if s}


def test_it_keeps_no_plaintext_in_the_instance_folder_or_log(
    tmp_path: Path, smtp_server: SmtpServer, browsers: list[Browser], backend: Backend
) -> None:
    instance = tmp_path / "instance"
    instance.mkdir()
    url = backend.new_database(instance)
    runs = load_and_import(portal_env(instance, **GENERATED_SECRETS))
    env = {"PORTAL_SMTP_URL": smtp_server.url(), **GENERATED_SECRETS}
    with running_portal(instance, **env) as portal:
        links, sessions = use_the_portal(portal, smtp_server, browsers)
    assert len(links) == 5 and len(sessions) == 4  # dirk never opened his link
    tokens = links | sessions
    # The portal has stopped: SQLite has checkpointed, every file is as it stays. (On
    # PostgreSQL the database's rows are searched, not its files: see tests/databases.py.)

    values = set().union(*(csv_values(p) for p in PARTNERS)) | {CAROL, DIRK}
    assert all(any(d in v for v in values) for d in DISTINCTIVE)
    needles = {s for v in values for s in spellings(v)} | {d.lower() for d in DISTINCTIVE}
    needles = needles - spellings(ALICE) | spellings(JAN) | {"bücher.de"}

    files = sorted(p for p in instance.rglob("*") if p.is_file())
    names = {p.name for p in files}
    assert {"secret_key", "pepper", "server.log"} <= names, names
    assert backend.name != "sqlite" or "portal.db" in names, names
    database = stored_bytes(url)
    kept = {p.name: p.read_bytes() for p in files} | {"the database": database}
    for name, blob in kept.items():
        assert not leaked_in(blob, needles), f"{name} holds {leaked_in(blob, needles)}"
        assert not leaked_in(blob, tokens), f"{name} holds a link or session token"
    for name, run in runs.items():
        output = (run.stdout + run.stderr).encode()
        assert not leaked_in(output, needles), f"portal import {name} printed personal data"

    assert b"park-a" in database and b"omroep-c" in database  # the search can find things
    assert leaked_in(database, {ALICE}) == {ALICE}  # the partners need her address
    # Positive controls: the same search finds the tokens and addresses in the mail sent.
    mail = "".join(
        f"{r.message['To']}\n{text_of(r.message, 'plain')}" for r in smtp_server.received
    ).encode()
    assert leaked_in(mail, tokens) == links
    assert leaked_in(mail, needles) >= spellings(CAROL) & spellings(DIRK.upper()) | {JAN}
    assert mails_to(smtp_server, CAROL)
