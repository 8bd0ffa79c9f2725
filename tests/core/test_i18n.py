"""Dutch and English: the catalogues are complete, and a visitor's language is chosen right."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.pofile import read_po

from portal.core.i18n import LOCALE_DIR, SUPPORTED, choose_language, format_date, gettext

ROOT = Path(__file__).resolve().parent.parent.parent
BOTH = ["nl", "en"]


def catalogue(lang: str) -> Catalog:
    with (LOCALE_DIR / lang / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        return read_po(handle, locale=lang)


def extracted(tmp_path: Path) -> Catalog:
    """Every message of the templates and the code, by the documented pybabel command."""
    pot = tmp_path / "messages.pot"
    command = ["extract", "-F", "babel.cfg", "--no-location", "-o", str(pot), "."]
    subprocess.run(
        [sys.executable, "-m", "babel.messages.frontend", *command],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    with pot.open("rb") as handle:
        return read_po(handle)


def messages(catalog: Catalog) -> list[Message]:
    return [m for m in catalog if m.id]


def placeholders(text: str) -> set[str]:
    return set(re.findall(r"%\((\w+)\)s", text))


# -- the catalogues --------------------------------------------------------------------


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    return extracted(tmp_path_factory.mktemp("pot"))


def test_it_extracts_the_pages_and_the_emails(source: Catalog) -> None:
    ids = {m.id if isinstance(m.id, str) else m.id[0] for m in messages(source)}
    assert "Am I affected?" in ids  # a page
    assert "Check your inbox" in ids
    assert len(ids) > 80


@pytest.mark.parametrize("lang", SUPPORTED)
def test_it_has_every_extracted_message_in_each_catalogue(source: Catalog, lang: str) -> None:
    have = catalogue(lang)
    missing = [m.id for m in messages(source) if m.id not in have]
    assert not missing, f"{lang}: run pybabel update (CONTRIBUTING.md); missing {missing[:5]}"


@pytest.mark.parametrize("lang", SUPPORTED)
def test_it_leaves_no_message_untranslated_or_fuzzy(source: Catalog, lang: str) -> None:
    have = catalogue(lang)
    for wanted in messages(source):
        found = have[wanted.id]
        assert found is not None
        strings = found.string if isinstance(found.string, tuple) else (found.string,)
        assert all(s.strip() for s in strings), f"{lang}: untranslated {wanted.id!r}"
        assert not found.fuzzy, f"{lang}: fuzzy {wanted.id!r}"


@pytest.mark.parametrize("lang", SUPPORTED)
def test_it_keeps_the_placeholders_of_each_message(lang: str) -> None:
    for found in messages(catalogue(lang)):
        ids = found.id if isinstance(found.id, tuple) else (found.id,)
        strings = found.string if isinstance(found.string, tuple) else (found.string,)
        wanted = set().union(*(placeholders(i) for i in ids))
        for text in strings:
            # A singular may leave out the count ("one organisation"), never anything else.
            assert placeholders(text) <= wanted, f"{lang}: {found.id!r}"
            assert placeholders(text) | {"num"} >= wanted - {"num"}, f"{lang}: {found.id!r}"


def test_it_keeps_no_message_the_templates_no_longer_use(source: Catalog) -> None:
    wanted = {m.id for m in messages(source)}
    for lang in SUPPORTED:
        stale = [m.id for m in messages(catalogue(lang)) if m.id not in wanted]
        assert not stale, f"{lang}: obsolete {stale[:5]} (pybabel update drops them)"


def test_it_translates_with_the_catalogue() -> None:
    assert gettext("nl", "Am I affected?") == "Ben ik getroffen?"
    assert gettext("en", "Am I affected?") == "Am I affected?"


def test_it_ends_a_sentence_on_a_name_that_ends_in_a_full_stop_once() -> None:
    assert gettext("en", "Published by %(org)s.", org="TicketHub Nederland B.V.") == (
        "Published by TicketHub Nederland B.V."
    )
    assert gettext("nl", "Published by %(org)s.", org="TicketDienst") == (
        "Gepubliceerd door TicketDienst."
    )


def test_it_writes_dates_as_people_do() -> None:
    assert format_date(date(2021, 2, 22), "nl") == "22 februari 2021"
    assert format_date(date(2021, 2, 22), "en") == "22 February 2021"


# -- choosing the language ---------------------------------------------------------------


def test_it_prefers_the_query_over_everything() -> None:
    assert choose_language(BOTH, query="en", cookie="nl", accept="nl") == "en"


def test_it_prefers_the_cookie_over_the_browser() -> None:
    assert choose_language(BOTH, query=None, cookie="en", accept="nl-NL,nl;q=0.9") == "en"


def test_it_prefers_the_language_a_link_carries_over_the_browser() -> None:
    assert choose_language(BOTH, query=None, cookie=None, carried="en", accept="nl") == "en"
    assert choose_language(BOTH, query=None, cookie="nl", carried="en", accept="en") == "nl"


def test_it_follows_the_browser_in_its_order() -> None:
    assert choose_language(BOTH, query=None, cookie=None, accept="en-GB,en;q=0.9,nl;q=0.8") == "en"
    assert choose_language(BOTH, query=None, cookie=None, accept="de-DE, NL;q=0.7") == "nl"


def test_it_falls_back_to_the_first_available() -> None:
    assert choose_language(BOTH, query=None, cookie=None, accept=None) == "nl"
    assert choose_language(["en", "nl"], query=None, cookie=None, accept="fr, de") == "en"
    assert choose_language(BOTH, query=None, cookie=None, accept="") == "nl"


def test_it_ignores_choices_the_incident_does_not_offer() -> None:
    assert choose_language(["nl"], query="en", cookie="en", accept="en") == "nl"
    assert choose_language(BOTH, query="xx", cookie="fr", accept="en") == "en"
    assert choose_language(BOTH, query="", cookie="EN", accept="nl") == "nl"
