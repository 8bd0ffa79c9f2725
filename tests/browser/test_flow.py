"""A person's whole path in a real browser: on a phone without JavaScript, on a desktop in
English, by keyboard alone, and the printed record."""

from __future__ import annotations

import io
import re
from datetime import date
from typing import Any

import pytest
from pypdf import PdfReader

from portal.core.fields import BY_KEY
from portal.core.i18n import format_date
from tests.browser.conftest import (
    ALICE,
    BOB,
    DESKTOP,
    DIRK,
    GINA,
    PHONE,
    SLUG,
    no_sideways_scroll,
    plain_text,
    sign_in,
)

pytestmark = pytest.mark.e2e


def partners_in_order(page: Any) -> list[str]:
    found: list[str] = page.eval_on_selector_all(
        "[data-partner]", "els => els.map(e => e.dataset.partner)"
    )
    return found


def test_it_completes_the_flow_on_a_phone_without_javascript(open_person: Any) -> None:
    alice = open_person("phone", PHONE, lang="nl", js=False)
    alice.go("/")
    page = alice.page
    assert page.locator("header [data-organisation]").inner_text() == "TicketDienst B.V."
    assert page.locator("h1").inner_text() == "Datalek bij TicketDienst"
    assert no_sideways_scroll(page)
    alice.shot("1-incident")

    seen = len(alice.mails(ALICE))
    page.fill("#email", ALICE)
    page.click("form.lookup button[type=submit]")
    page.wait_for_url(re.compile(r"/sent$"))
    assert page.locator("h1").inner_text() == "Kijk in uw mailbox"
    alice.shot("2-sent")

    message = alice.mails(ALICE)[seen] if len(alice.mails(ALICE)) > seen else None
    link = alice.link_for(ALICE, seen=seen)
    message = alice.mails(ALICE)[seen]
    assert "TicketDienst B.V." in str(message["From"])
    assert "uw persoonlijke link" in str(message["Subject"])
    assert link in plain_text(message)
    page.goto(link)
    assert page.locator("form[data-confirm] button").is_visible()
    alice.shot("3-confirm")
    page.click("form[data-confirm] button[type=submit]")
    page.wait_for_url(re.compile(rf"/{SLUG}/results$"))

    assert page.locator("[data-summary-address]").inner_text() == ALICE
    assert page.locator("[data-summary-worst]").get_attribute("data-summary-worst") == "iban"
    assert partners_in_order(page) == ["theater-b", "park-a", "omroep-c"]
    omroep = page.locator('[data-partner="omroep-c"]')
    assert omroep.get_attribute("data-certainty") == "possible"
    assert "Mogelijk gelekt bij Omroepvereniging C" in omroep.locator("h2").inner_text()
    assert no_sideways_scroll(page)
    alice.shot("4-results")

    theater = page.locator('[data-partner="theater-b"]')
    theater.locator("button[type=submit]").click()
    page.wait_for_url(re.compile(rf"/{SLUG}/results#partner-theater-b$"))
    flash = theater.locator('[data-flash="theater-b"]')
    assert flash.is_visible() and "Uw verzoek is verstuurd." in flash.inner_text()
    # Good news said as a status, in green with a tick: nothing like the error summary's frame.
    assert flash.get_attribute("role") == "status" and "✓" in flash.inner_text()
    frame = flash.evaluate(
        "e => { const s = getComputedStyle(e); return [s.borderTopWidth, s.borderLeftColor] }"
    )
    assert frame == ["0px", "rgb(26, 107, 50)"]  # --ok, on the left only
    status = theater.locator("[data-deletion-ref]")
    reference = status.get_attribute("data-deletion-ref")
    assert reference and reference in flash.inner_text()
    assert status.get_attribute("data-deletion-status") in ("received", "forwarded")
    # The page scrolled to the partner: its element is in view, not the top of the page.
    assert page.evaluate("window.scrollY") > 0
    in_view = theater.evaluate("e => e.getBoundingClientRect().top < window.innerHeight")
    assert in_view
    alice.shot("5-requested")


def test_it_completes_the_flow_on_a_desktop_in_english(open_person: Any) -> None:
    dirk = open_person("desktop", DESKTOP, lang="nl")
    dirk.go(f"/{SLUG}/")
    dirk.page.click('nav.langs a[data-lang="en"]')
    assert dirk.page.locator("html").get_attribute("lang") == "en"
    assert dirk.page.locator("h1").inner_text() == "Data breach at TicketDienst"
    dirk.shot("1-incident-en")
    sign_in(dirk, DIRK)
    (message,) = dirk.mails(DIRK)
    assert "your personal link" in str(message["Subject"]), "the switch is carried into the mail"
    page = dirk.page
    assert page.locator("html").get_attribute("lang") == "en"
    today = format_date(date.today(), "en")
    assert f"Overview of {today}" in page.locator("[data-record-date]").inner_text()
    dirk.shot("2-results-en")

    page.click("a[data-ask-all]")
    page.wait_for_url(re.compile(rf"/{SLUG}/deletion/all$"))
    asked = page.eval_on_selector_all(
        "[data-partner-to-ask]", "els => els.map(e => e.dataset.partnerToAsk)"
    )
    assert asked == ["theater-b", "park-a", "omroep-c"]
    dirk.shot("3-confirm-all-en")
    page.click("form button[type=submit]")
    page.wait_for_url(re.compile(rf"/{SLUG}/results#requests$"))
    assert page.locator('[data-flash="all"]').is_visible()
    assert page.locator("[data-deletion-ref]").count() == 3
    assert page.locator("a[data-ask-all]").count() == 0
    dirk.shot("4-requested-all-en")


def test_it_completes_the_flow_by_keyboard_alone(open_person: Any) -> None:
    bob = open_person("keyboard", DESKTOP, lang="nl")
    page = bob.page
    bob.go(f"/{SLUG}/")

    def tab_to(selector: str, limit: int = 60) -> None:
        target = page.locator(selector)
        for _ in range(limit):
            page.keyboard.press("Tab")
            if target.evaluate("e => e === document.activeElement"):
                return
        raise AssertionError(f"Tab never reached {selector}")

    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"  # the first stop
    tab_to("#email")
    seen = len(bob.mails(BOB))
    page.keyboard.type(BOB)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/sent$"))
    page.goto(bob.link_for(BOB, seen=seen))
    tab_to("form[data-confirm] button")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(rf"/{SLUG}/results$"))
    # Focus is visible: the focused control has an outline.
    tab_to('[data-partner="park-a"] button[type=submit]')
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"
    bob.shot("focus-visible")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(rf"/{SLUG}/results#partner-park-a$"))
    assert page.locator('[data-partner="park-a"] [data-deletion-ref]').count() == 1


def test_it_prints_a_clean_personal_record(open_person: Any) -> None:
    gina = open_person("print", DESKTOP, lang="nl")
    sign_in(gina, GINA)
    page = gina.page
    page.locator('[data-partner="theater-b"] button[type=submit]').click()
    page.wait_for_url(re.compile(r"#partner-theater-b$"))
    reference = page.locator("[data-deletion-ref]").get_attribute("data-deletion-ref")
    page.emulate_media(media="print")
    gina.shot("record-print")
    pdf = page.pdf(format="A4", print_background=False)
    text = " ".join(page_.extract_text() for page_ in PdfReader(io.BytesIO(pdf)).pages)
    text = re.sub(r"\s+", " ", text)
    assert GINA in text
    assert f"Overzicht van {format_date(date.today(), 'nl')}" in text
    assert "Gelekt bij Theater B" in text and "Mogelijk gelekt bij Omroepvereniging C" in text
    assert "Bankrekeningnummer (IBAN)" in text
    assert reference and reference in text
    assert "Geen verwijderverzoek gedaan." in text  # Omroep C, asked nothing
    # Every piece of advice, the low-risk ones folded on screen too.
    assert "Wat u kunt doen" in text
    for key in ("iban", "name", "gender"):
        assert BY_KEY[key].advice["nl"].split(".")[0] in text, key
    for gone in (
        "Vraag verwijdering aan",
        "advies tonen",
        "Nederlands",
        "Naar de inhoud",
        "Privacyverklaring",
    ):
        assert gone not in text, gone
