"""Trust: who runs the portal, how to check it is genuine, the privacy statement,
security.txt, and mail with a display name."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from starlette.testclient import TestClient

from portal.app import create_app
from portal.core.config import Settings
from portal.core.errors import PortalError
from portal.incidents.stored import load_incident_file
from portal.mail.messages import Message
from portal.mail.outbox import enqueue_email
from portal.mail.sender import from_header
from portal.mail.worker import MailWorker
from tests.factories import INCIDENT
from tests.fixtures_mail import SmtpServer, wait_for

SLUG = "ticketing-2021"
TRUSTED = (
    'organisation = "TicketDienst B.V."\n'
    'website = "https://www.ticketdienst.example/datalek"\n' + INCIDENT
)


def write(folder: Path, text: str) -> Path:
    path = folder / "incident.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def client(engine: Engine, settings: Settings, tmp_path: Path) -> Iterator[TestClient]:
    load_incident_file(engine, write(tmp_path, TRUSTED))
    with TestClient(create_app(settings, deliver_mail=False)) as client:
        yield client


def test_it_names_the_organisation_in_the_header(client: TestClient) -> None:
    page = client.get(f"/{SLUG}/?lang=nl").text
    header = page.split("<header", 1)[1].split("</header>", 1)[0]
    assert "TicketDienst B.V." in header
    assert "Ben ik getroffen?" in header
    assert "<title>Datalek bij TicketDienst · TicketDienst B.V.</title>" in page


def test_it_tells_how_to_check_the_page_is_genuine(client: TestClient) -> None:
    page = client.get(f"/{SLUG}/?lang=en").text
    box = page.split("data-genuine", 1)[1].split("</section>", 1)[0]
    assert 'href="https://www.ticketdienst.example/datalek"' in box
    assert "never ask for a password, a payment or a copy of your identity document" in box
    assert "Every link we send starts with <strong>http://testserver/</strong>" not in box
    assert "Every link we send starts with <strong>http://127.0.0.1:8000/</strong>" in box


def test_it_says_the_same_in_dutch(client: TestClient) -> None:
    box = client.get(f"/{SLUG}/?lang=nl").text.split("data-genuine", 1)[1]
    assert "Is deze pagina echt?" in box
    assert "Elke link die wij sturen begint met" in box


def test_it_links_the_privacy_statement_from_the_footer(client: TestClient) -> None:
    page = client.get(f"/{SLUG}/?lang=en").text
    footer = page.split("<footer", 1)[1]
    assert f'href="/{SLUG}/privacy"' in footer
    statement = client.get(f"/{SLUG}/privacy")
    assert statement.status_code == 200
    assert "<h1>Privacy statement</h1>" in statement.text


def test_it_states_what_is_kept_and_for_how_long(client: TestClient) -> None:
    text = client.get(f"/{SLUG}/privacy?lang=en").text
    assert "TicketDienst B.V. runs this page" in text
    assert "expires (60 minutes)" in text  # PORTAL_LINK_TTL
    assert "<td>30 minutes</td>" in text  # PORTAL_SESSION_TTL
    assert "Until 90 days after the request has been handled" in text
    assert "never hold your email address" in text
    assert "show it to you once; that page deletes it, and it expires after 10 minutes" in text
    dutch = client.get(f"/{SLUG}/privacy?lang=nl").text
    assert "Tot 90 dagen nadat het verzoek is afgehandeld" in dutch


def test_it_answers_404_for_the_privacy_statement_of_no_incident(client: TestClient) -> None:
    assert client.get("/nothing-here/privacy").status_code == 404


def test_it_serves_security_txt_with_the_first_incidents_contact(client: TestClient) -> None:
    response = client.get("/.well-known/security.txt")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    lines = dict(line.split(": ", 1) for line in response.text.splitlines())
    assert lines["Contact"] == "mailto:privacy@ticketing.example"
    expires = datetime.strptime(lines["Expires"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    now = datetime.now(UTC)
    assert now + timedelta(days=30) < expires < now + timedelta(days=365)  # RFC 9116 §2.5.5
    assert lines["Canonical"] == "http://127.0.0.1:8000/.well-known/security.txt"


def test_it_serves_the_security_contact_that_is_set(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    load_incident_file(engine, write(tmp_path, TRUSTED))
    chosen = Settings(**{**settings.__dict__, "security_contact": "https://example.org/cvd"})
    with TestClient(create_app(chosen, deliver_mail=False)) as client:
        text = client.get("/.well-known/security.txt").text
    assert text.startswith("Contact: https://example.org/cvd\n")


def test_it_has_no_security_txt_without_anyone_to_contact(
    engine: Engine, settings: Settings
) -> None:
    with TestClient(create_app(settings, deliver_mail=False)) as client:
        assert client.get("/.well-known/security.txt").status_code == 404


def test_it_refuses_a_security_contact_that_is_no_address() -> None:
    with pytest.raises(PortalError, match="PORTAL_SECURITY_CONTACT"):
        Settings.from_env(
            {"PORTAL_SECURITY_CONTACT": "call us", "PORTAL_SECRET_KEY": "k"}
            | {"PORTAL_PEPPER": "p", "PORTAL_INSTANCE_DIR": "/tmp/nonexistent-portal-instance"}
        )


# -- the incident file ------------------------------------------------------------------


def test_it_refuses_a_website_that_is_no_url_and_an_unknown_certainty(
    engine: Engine, tmp_path: Path
) -> None:
    text = 'website = "ticketdienst"\n' + INCIDENT.replace(
        'name = "Theater B"', 'name = "Theater B"\ncertainty = "maybe"'
    )
    with pytest.raises(PortalError) as refused:
        load_incident_file(engine, write(tmp_path, text))
    message = str(refused.value)
    assert "incident.toml:1: website must be an http(s) URL" in message
    assert re.search(r"incident\.toml:\d+: partner 2: certainty must be one of", message)


def test_it_warns_when_an_article_34_element_is_missing(engine: Engine, tmp_path: Path) -> None:
    warnings = load_incident_file(engine, write(tmp_path, TRUSTED)).warnings
    assert any("no [consequences]" in w and "Art. 34" in w for w in warnings)
    assert any("no [measures]" in w for w in warnings)
    complete = TRUSTED + '[consequences]\nnl = "Phishing."\nen = "Phishing."\n'
    complete += '[measures]\nnl = "Gedicht."\nen = "Closed."\n'
    assert not [
        w for w in load_incident_file(engine, write(tmp_path, complete)).warnings if "34" in w
    ]


# -- the sender -------------------------------------------------------------------------


def test_it_names_the_sender_after_the_organisation() -> None:
    assert from_header("portal@lek.example", "TicketDienst B.V.") == (
        '"TicketDienst B.V." <portal@lek.example>'
    )
    assert from_header("Datalekteam <portal@lek.example>", "TicketDienst B.V.") == (
        "Datalekteam <portal@lek.example>"
    )
    assert from_header("portal@lek.example", None) == "portal@lek.example"


@pytest.mark.anyio
async def test_it_sends_mail_with_the_display_name(
    engine: Engine, settings: Settings, tmp_path: Path, smtp_server: SmtpServer
) -> None:
    load_incident_file(engine, write(tmp_path, TRUSTED))
    chosen = Settings(**{**settings.__dict__, "smtp_url": smtp_server.url()})
    message = Message("Onderwerp", "tekst", "<p>tekst</p>")
    with engine.begin() as conn:
        enqueue_email(
            conn, kind="link", to="alice@example.org", message=message, sender_name="Ticket B.V."
        )
    worker = MailWorker(engine, chosen)
    assert await worker.deliver_due() == 1
    await wait_for(lambda: len(smtp_server.received) == 1)
    received = smtp_server.received[0]
    assert received.message["From"] == '"Ticket B.V." <portal@localhost>'
    assert received.mail_from == "portal@localhost"


def test_it_answers_404_for_a_privacy_statement_with_a_slug_no_incident_can_have(
    client: TestClient,
) -> None:
    assert client.get("/Not%00A-Slug/privacy").status_code == 404
