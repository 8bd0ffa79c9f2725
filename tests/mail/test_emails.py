"""The emails as a person and a partner get them: both parts, a layout that survives mail
clients, the link as a button and as text, the portal and the incident in every subject."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from starlette.testclient import TestClient

from portal.app import create_app
from portal.core.config import Settings
from portal.store import tables
from tests.every_email import send_every_email
from tests.factories import ALICE, INCIDENT, load_personas
from tests.server import csrf, sign_in

SLUG = "ticketing-2021"
BASE = "http://127.0.0.1:8000"
ORGANISATION = "TicketDienst B.V."
WEBSITE = "https://www.ticketdienst.example/datalek"


@pytest.fixture
def client(engine: Engine, settings: Settings, tmp_path: Path) -> Iterator[TestClient]:
    """The personas; Theater B wants its requests in English, the incident speaks Dutch first."""
    text = f'organisation = "{ORGANISATION}"\nwebsite = "{WEBSITE}"\n' + INCIDENT.replace(
        'name = "Theater B"', 'name = "Theater B"\nlanguage = "en"'
    )
    load_personas(engine, settings, tmp_path, incident_text=text)
    app = create_app(settings, deliver_mail=False)
    with TestClient(app, base_url=BASE) as client:
        yield client


def outbox(engine: Engine, kind: str) -> list[Any]:
    o = tables.outbox.c
    with engine.connect() as conn:
        return list(conn.execute(select(tables.outbox).where(o.kind == kind).order_by(o.id)))


def ask_everyone(client: TestClient, engine: Engine) -> None:
    page = sign_in(client, engine, ALICE)
    confirm = client.get(f"/{SLUG}/deletion/all")
    response = client.post(
        f"/{SLUG}/deletion", data={"partner": "all", "csrf_token": csrf(confirm.text or page)}
    )
    assert response.status_code == 200


@pytest.fixture
def mails(client: TestClient, engine: Engine) -> dict[str, list[Any]]:
    client.cookies.set("portal_lang", "nl")
    ask_everyone(client, engine)
    kinds = ("link", "deletion_receipt", "partner_request")
    return {kind: outbox(engine, kind) for kind in kinds}


def every(mails: dict[str, list[Any]]) -> Iterator[Any]:
    for rows in mails.values():
        yield from rows


def test_it_sends_both_parts_with_a_title_and_no_remote_resources(
    mails: dict[str, list[Any]],
) -> None:
    assert len(list(every(mails))) == 4  # a link, one receipt, two partner requests
    for mail in every(mails):
        assert mail.body_text.strip() and mail.body_html.strip()
        assert f"<title>{mail.subject.replace('&', '&amp;')}</title>" in mail.body_html
        assert "<img" not in mail.body_html and "src=" not in mail.body_html
        assert "<link" not in mail.body_html and "<style" not in mail.body_html
        assert "<script" not in mail.body_html
        # Inline-styled tables: what common clients render alike.
        assert 'role="presentation"' in mail.body_html and 'style="' in mail.body_html


def test_it_names_the_portal_and_the_incident_in_every_subject(
    mails: dict[str, list[Any]],
) -> None:
    for mail in every(mails):
        assert ORGANISATION in mail.subject
        assert "TicketDienst" in mail.subject.replace(ORGANISATION, "")


def test_it_shows_the_link_as_a_button_and_as_text(mails: dict[str, list[Any]]) -> None:
    (link_mail,) = mails["link"]
    (link,) = set(re.findall(re.escape(BASE) + r"/v/[\w.-]+", link_mail.body_text))
    html = link_mail.body_html
    anchors = re.findall(r'<a href="([^"]+)"[^>]*>([^<]+)</a>', html)
    assert (link, "Bekijk welke gegevens van u zijn gelekt") in anchors  # the button
    assert (link, link) in anchors  # the address, visible as text
    assert {href for href, _ in anchors if href.startswith(BASE)} == {link}


def test_it_says_why_the_mail_came_and_how_to_check_it(mails: dict[str, list[Any]]) -> None:
    (link_mail,) = mails["link"]
    for body in (link_mail.body_text, link_mail.body_html):
        assert "U krijgt deze e-mail omdat iemand uw adres invulde op" in body
        assert "Vroeg u dit niet aan? Dan kunt u deze e-mail negeren" in body
        assert "De link erin gaat naar 127.0.0.1:8000 en nergens anders heen." in body
        assert WEBSITE in body
        assert "Wij vragen nooit om een wachtwoord, een betaling of een kopie" in body
    (receipt,) = mails["deletion_receipt"]
    assert "In deze e-mail staat geen link om op te klikken." in receipt.body_text
    assert "Deed u dat niet? Laat het ons weten via privacy@ticketing.example" in receipt.body_text


def test_it_puts_each_request_on_its_own_lines_in_the_receipt(
    mails: dict[str, list[Any]],
) -> None:
    (receipt,) = mails["deletion_receipt"]
    references = re.findall(r"DR-[0-9A-Z]{4}-[0-9A-Z]{4}", receipt.body_text)
    assert len(references) == 2
    for reference in references:
        (line,) = [x for x in receipt.body_text.splitlines() if reference in x]
        assert line.strip() == f"Referentie: {reference}"
    lines = receipt.body_text.splitlines()
    for partner in ("Theater B", "Attractiepark A"):
        at = lines.index(partner)
        assert lines[at + 1].strip().startswith("Referentie: DR-")
        assert lines[at + 2].strip().startswith("Uiterlijk antwoord: ")
        assert re.search(r"\d{1,2} [a-z]+ \d{4}$", lines[at + 2])  # "1 januari 2027"


def test_it_keeps_the_subject_of_a_receipt_for_everyone_short(
    mails: dict[str, list[Any]],
) -> None:
    (receipt,) = mails["deletion_receipt"]
    # The names and references are in the body; the subject fits a line of a mail list.
    assert receipt.subject == (
        f"{ORGANISATION}: 2 verwijderverzoeken ontvangen (Datalek bij TicketDienst)"
    )
    assert len(receipt.subject) <= 78


def test_it_writes_to_each_partner_in_its_language(mails: dict[str, list[Any]]) -> None:
    by_partner = {m.recipient: m for m in mails["partner_request"]}
    english = by_partner["privacy@theater-b.example"]
    dutch = by_partner["privacy@park-a.example"]
    assert english.body_text.startswith("To the privacy officer of Theater B,")
    assert "GDPR Art. 17 erasure request from TicketDienst B.V." in english.subject
    assert 'lang="en"' in english.body_html
    assert dutch.body_text.startswith("Aan de privacyfunctionaris van Attractiepark A,")
    assert "verzoek tot verwijdering, AVG art. 17" in dutch.subject
    assert 'lang="nl"' in dutch.body_html


# -- every kind of email ---------------------------------------------------------------

# The one link into the portal each kind carries (design §2): a path under it, or none.
PORTAL_LINK = {
    "link": "/v/",
    "partner_link": "/v/",
    "notice": "/v/",
    "notice_followup": "/v/",
    "partner_request": "/r/",
    "partner_reminder": "/r/",
    "partner_digest": "/r/partner/",
}
_URL = re.compile(r"https?://[^\s<>\"')]+", re.I)


def links_into(base: str, body: str) -> set[str]:
    """Every address of the portal with its scheme in a part: an href or a visible URL."""
    return {url for url in _URL.findall(body) if url.lower().startswith(base.lower())}


def test_it_puts_one_link_into_the_portal_in_an_email_and_names_it_nowhere_else(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    for sent in send_every_email(engine, settings, tmp_path):
        path = PORTAL_LINK.get(sent.template)
        for subtype in ("plain", "html"):
            body = sent.part(subtype)
            found = links_into(settings.base_url, body)
            if path is None:  # receipts and outcomes: nothing to click
                assert not found, f"{sent.name} {subtype}: {found}"
                continue
            assert len(found) == 1, f"{sent.name} {subtype}: {found}"
            (link,) = found
            assert link.startswith(settings.base_url + path), f"{sent.name}: {link}"
            # The portal's address appears elsewhere only without a scheme, as a place to
            # check or type ("127.0.0.1:8000/ticketing-nl/"), never as a second link.
            assert body.count(settings.base_url) == body.count(link), sent.name
