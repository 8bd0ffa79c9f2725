"""The incident page answers what every breach notice is asked, from the incident file."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from starlette.testclient import TestClient

from portal.app import create_app
from portal.core.config import Settings
from portal.incidents.demo import INCIDENT_TOML
from portal.incidents.stored import load_incident_file
from tests.factories import INCIDENT

SLUG = "ticketing-2021"
QUESTIONS = ("what_happened", "which_data", "consequences", "measures", "advice", "regulator")
SECTIONS = """
[which_data]
nl = "Namen en **telefoonnummers**."
en = "Names and **phone numbers**."

[consequences]
nl = "Verwacht nepsms'jes."
en = "Expect fake texts."

[measures]
nl = "Wij hebben de server afgesloten."
en = "We shut the server down."

[advice]
nl = "Wees alert op phishing."
en = "Be wary of phishing."
"""


def client_for(engine: Engine, settings: Settings, folder: Path, text: str) -> TestClient:
    (folder / "incident.toml").write_text(text, encoding="utf-8")
    load_incident_file(engine, folder / "incident.toml")
    return TestClient(create_app(settings, deliver_mail=False))


@pytest.fixture
def complete(engine: Engine, settings: Settings, tmp_path: Path) -> Iterator[TestClient]:
    # The sections go before the first [table] of the file, as TOML wants top-level tables.
    head, _, rest = INCIDENT.partition("[title]")
    with client_for(engine, settings, tmp_path, head + SECTIONS + "[title]" + rest) as client:
        yield client


def section(page: str, name: str) -> str:
    start = page.index(f'data-section="{name}"')
    return page[start : page.index("</section>", start)]


def test_it_answers_each_question_under_its_own_heading(complete: TestClient) -> None:
    page = complete.get(f"/{SLUG}/?lang=en").text
    assert re.findall(r'data-section="(\w+)"', page) == [*QUESTIONS, "contact"]
    assert "We found a <strong>leak</strong>" in section(page, "what_happened")
    assert "Names and <strong>phone numbers</strong>." in section(page, "which_data")
    assert "Expect fake texts." in section(page, "consequences")
    assert "We shut the server down." in section(page, "measures")
    advice = section(page, "advice")
    assert "Be wary of phishing." in advice
    assert "Phishing:" in advice and "Passwords:" in advice and "Bank:" in advice
    assert "Yes. The breach has been reported" in section(page, "regulator")
    assert 'href="mailto:privacy@ticketing.example"' in section(page, "contact")


def test_it_answers_in_dutch_with_a_dutch_date(complete: TestClient) -> None:
    page = complete.get(f"/{SLUG}/?lang=nl").text
    assert "Ontdekt op 22 februari 2021." in page
    assert '<h2 id="consequences">Wat betekent dit voor mij?</h2>' in page
    assert "Verwacht nepsms" in section(page, "consequences")
    assert "2021-02-22" not in page


def test_it_always_shows_the_article_34_elements(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    with client_for(engine, settings, tmp_path, INCIDENT) as client:
        page = client.get(f"/{SLUG}/?lang=en").text
    assert "send you messages that look genuine" in section(page, "consequences")
    assert "not described here yet" in section(page, "measures")
    assert "privacy@ticketing.example" in section(page, "measures")


def test_it_says_when_the_regulator_was_not_told(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    text = INCIDENT.replace("regulator_notified = true", "regulator_notified = false")
    with client_for(engine, settings, tmp_path, text) as client:
        page = client.get(f"/{SLUG}/?lang=en").text
    assert 'data-regulator="not-notified"' in page
    assert "Not yet." in section(page, "regulator")


def test_it_loads_the_demo_incident_complete(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "demo.toml").write_text(INCIDENT_TOML, encoding="utf-8")
    result = load_incident_file(engine, tmp_path / "demo.toml")
    assert result.warnings == []
    assert result.incident.organisation == "TicketDienst B.V. (demo)"
    assert set(result.incident.sections) == {"which_data", "consequences", "measures", "advice"}


def test_it_ends_a_sentence_on_an_organisation_with_one_full_stop(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    text = 'organisation = "TicketHub Nederland B.V."\n' + INCIDENT
    with client_for(engine, settings, tmp_path, text) as client:
        for lang, published in (("nl", "Gepubliceerd door"), ("en", "Published by")):
            page = client.get(f"/{SLUG}/?lang={lang}").text
            assert f"{published} TicketHub Nederland B.V.</" in re.sub(r"\s+<", "<", page)
            assert "B.V.." not in page
