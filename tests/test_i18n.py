"""Page chrome in Dutch and English, and choosing a visitor's language."""

from __future__ import annotations

import re

import pytest

from portal.i18n import MESSAGES, SUPPORTED, choose_language, translate

BOTH = ["nl", "en"]


def test_it_prefers_the_query_over_everything() -> None:
    assert choose_language(BOTH, query="en", cookie="nl", accept="nl") == "en"


def test_it_prefers_the_cookie_over_the_browser() -> None:
    assert choose_language(BOTH, query=None, cookie="en", accept="nl-NL,nl;q=0.9") == "en"


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


def test_it_has_every_message_in_every_language() -> None:
    for key, texts in MESSAGES.items():
        for lang in SUPPORTED:
            assert texts.get(lang, "").strip(), f"{key} has no {lang} text"


def test_it_uses_the_same_placeholders_in_every_language() -> None:
    for key, texts in MESSAGES.items():
        found = {lang: set(re.findall(r"{(\w+)}", texts[lang])) for lang in SUPPORTED}
        assert found["nl"] == found["en"], key


def test_it_fills_placeholders() -> None:
    assert translate("exposed_at", "en", name="Theater B") == "Leaked at Theater B"
    assert translate("exposed_at", "nl", name="Theater B") == "Gelekt bij Theater B"
    text = translate("deletion_requested", "en", reference="DR-1", status="received", due="x")
    assert text == "Deletion request DR-1: received. Answer due by x."


def test_it_falls_back_to_english_for_an_unknown_language() -> None:
    assert translate("check_title", "de") == "Am I affected?"
    assert translate("check_title", "nl") == "Ben ik getroffen?"


def test_it_fails_loudly_on_an_unknown_key() -> None:
    with pytest.raises(KeyError):
        translate("no_such_message", "en")
