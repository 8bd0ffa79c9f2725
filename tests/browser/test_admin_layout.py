"""The operator's queue and request pages at 360 and 1280 px: no column cut off, no
reference or date broken over two lines, with many rows and a partner's long name."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.browser.conftest import DESKTOP, LONG_PARTNER, OPERATOR, PASSWORD, PHONE, SLUG, Person
from tests.e2e.conftest import csrf, portal_link, wait_for_mail
from tests.fixtures_mail import SmtpServer
from tests.server import Portal

pytestmark = pytest.mark.e2e

PEOPLE = [f"layout{i:02d}@example.net" for i in range(1, 21)]

# Everything the page shows that reaches past the viewport's edges, or a table wider than
# its container; and every reference or date that takes more than one line. What is there
# for screen readers only (clipped to a pixel, as .visually-hidden is) is not shown.
MEASURE = """() => {
    const width = document.documentElement.clientWidth;
    const name = e => e.tagName.toLowerCase() + (e.dataset.label ? `[${e.dataset.label}]` : '')
        + ': ' + e.textContent.trim().slice(0, 40);
    const unseen = e => {
        for (let a = e; a && a.tagName !== 'MAIN'; a = a.parentElement) {
            const style = getComputedStyle(a);
            if (style.position === 'absolute' && style.clip !== 'auto') return true;
        }
        return false;
    };
    const wide = [];
    for (const e of document.querySelectorAll('main *')) {
        const r = e.getBoundingClientRect();
        const out = r.right > width + 0.5 || r.left < -0.5;
        if (r.width > 0 && out && !unseen(e)) wide.push(name(e));
    }
    for (const t of document.querySelectorAll('main table')) {
        if (t.scrollWidth > t.parentElement.clientWidth) wide.push('table wider than its box');
    }
    const broken = [];
    const marks = document.querySelectorAll('main time, main [data-reference]');
    for (const e of marks) {
        const lines = e.getClientRects();
        const size = parseFloat(getComputedStyle(e).fontSize);
        if (lines.length !== 1 || lines[0].height > 2 * size) broken.push(name(e));
    }
    return {
        scrolls: document.documentElement.scrollWidth > width,
        wide: wide,
        broken: broken,
        marks: marks.length,
        rows: document.querySelectorAll('main tr[data-request]').length,
    };
}"""


@pytest.fixture(scope="module")
def long_partner_requests(portal: Portal, smtp: SmtpServer) -> list[str]:
    """The 20 people of the partner with the long name each ask it for deletion, by HTTP as
    a browser would: all look up first, then each confirms their link and asks."""
    for address in PEOPLE:
        with httpx.Client(base_url=portal.url, timeout=30) as person:
            page = person.get(f"/{SLUG}/")
            sent = person.post(
                f"/{SLUG}/lookup", data={"email": address, "csrf_token": csrf(page.text)}
            )
            assert sent.status_code == 303
    for address in PEOPLE:
        link = urlsplit(portal_link(wait_for_mail(smtp, address), portal.url)).path
        with httpx.Client(base_url=portal.url, timeout=30) as person:
            confirm = person.get(link)
            assert person.post(link, data={"csrf_token": csrf(confirm.text)}).status_code == 303
            results = person.get(f"/{SLUG}/results")
            asked = person.post(
                f"/{SLUG}/deletion",
                data={"partner": LONG_PARTNER, "csrf_token": csrf(results.text)},
            )
            assert asked.status_code == 303, asked.text
    return PEOPLE


def signed_in_operator(open_person: Any) -> Person:
    operator = open_person("layout", DESKTOP, lang="en")
    operator.go("/admin/login")
    operator.page.fill("#username", OPERATOR)
    operator.page.fill("#password", PASSWORD)
    operator.page.click("form[data-login] button[type=submit]")
    operator.page.wait_for_url(re.compile(r"/admin/$"))
    return operator


def measured(operator: Person, name: str) -> dict[str, dict[str, Any]]:
    """The page measured at both widths, with a screenshot of each."""
    found = {}
    for width, viewport in (("360", PHONE), ("1280", DESKTOP)):
        operator.page.set_viewport_size(viewport)
        found[width] = operator.page.evaluate(MEASURE)
        operator.shot(f"{name}-{width}")
    return found


def assert_fits(found: dict[str, dict[str, Any]]) -> None:
    for width, seen in found.items():
        assert not seen["scrolls"], f"{width} px: the page scrolls sideways"
        assert seen["wide"] == [], f"{width} px: past the right edge: {seen['wide']}"
        assert seen["broken"] == [], f"{width} px: over two lines: {seen['broken']}"


def test_it_fits_the_queue_at_360_and_1280_px(
    open_person: Any, long_partner_requests: list[str]
) -> None:
    operator = signed_in_operator(open_person)
    operator.go(f"/admin/requests?partner={LONG_PARTNER}")

    found = measured(operator, "admin-queue")

    assert found["1280"]["rows"] == len(long_partner_requests)
    # Each row: its reference and its two dates (received, due).
    assert found["1280"]["marks"] >= 3 * len(long_partner_requests)
    assert_fits(found)
    assert operator.page.locator("main tr[data-request]").first.is_visible()


def test_it_fits_a_request_at_360_and_1280_px(
    open_person: Any, long_partner_requests: list[str]
) -> None:
    operator = signed_in_operator(open_person)
    operator.go(f"/admin/requests?partner={LONG_PARTNER}")
    reference = operator.page.locator("tr[data-request]").first.get_attribute("data-request")
    operator.go(f"/admin/requests/{reference}")
    assert "Openluchttheatersamenwerkingsverband" in operator.page.locator("main").inner_text()

    found = measured(operator, "admin-request")

    assert found["1280"]["marks"] >= 5  # the reference, received, due, history, deliveries
    assert_fits(found)
