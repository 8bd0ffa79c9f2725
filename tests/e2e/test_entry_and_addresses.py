"""A partner's entry page and several addresses in one visit, over HTTP against a real
portal process and a real SMTP server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    ALICE,
    BOB,
    CONTACTS,
    SLUG,
    Browser,
    mails_to,
    open_browser,
    parse,
    portal_link,
    text_of,
    wait_for_mail,
)
from tests.fixtures_mail import SmtpServer
from tests.server import Portal, running_portal

pytestmark = pytest.mark.e2e


@pytest.fixture
def portal(instance: Path, smtp_server: SmtpServer) -> Iterator[Portal]:
    with running_portal(instance, PORTAL_SMTP_URL=smtp_server.url()) as portal:
        yield portal


def fields_of(page_html: str, action: str) -> dict[str, str]:
    """The hidden inputs of the page's form posting to `action`."""
    form = parse(page_html).one("action", action)
    return {
        n.attrs["name"]: n.attrs.get("value", "")
        for n in form.find_all("name")
        if n.attrs.get("type") == "hidden"
    }


def add_address(person: Browser, address: str, smtp: SmtpServer) -> str:
    """Looks `address` up with the results page's own form; returns its emailed link."""
    seen = len(mails_to(smtp, address))
    page = person.get(f"/{SLUG}/results")
    assert "data-add-address" in page.text
    response = person.submit(page, f"/{SLUG}/lookup", email=address)
    assert response.status_code == 303
    assert response.headers["location"] == f"/{SLUG}/sent"
    return portal_link(wait_for_mail(smtp, address, count=seen + 1), person.portal.url)


def by_address(person: Browser) -> dict[str, set[str]]:
    """Per address on the results page, the partners shown for it."""
    found: dict[str, set[str]] = {}
    for node in person.results().find_all("data-partner"):
        found.setdefault(node.attrs["data-address"], set()).add(node.attrs["data-partner"])
    return found


def test_it_mails_a_partner_pages_lookup_on_its_behalf(
    portal: Portal, smtp_server: SmtpServer, browsers: list[Browser]
) -> None:
    person = open_browser(browsers, portal)
    person.client.cookies.set("portal_lang", "en")
    page = person.get(f"/{SLUG}/p/omroep-c/")
    assert page.status_code == 200
    assert parse(page.text).one("data-entry-partner").attrs["data-entry-partner"] == "omroep-c"
    hidden = fields_of(page.text, f"/{SLUG}/lookup")
    assert hidden["partner"] == "omroep-c"

    response = person.submit(page, f"/{SLUG}/lookup", email=ALICE, partner=hidden["partner"])
    assert response.status_code == 303
    assert response.headers["location"] == f"/{SLUG}/sent"
    message = wait_for_mail(smtp_server, ALICE)
    assert "on behalf of Omroep C" in message["Subject"]
    assert "on behalf of Omroep C" in text_of(message, "plain")

    assert person.confirm(portal_link(message, portal.url)).status_code == 303
    order = [n.attrs["data-partner"] for n in person.results().find_all("data-partner")]
    assert order[0] == "omroep-c" and set(order) == {"park-a", "theater-b", "omroep-c"}


def test_it_answers_404_for_an_unknown_partners_page(
    portal: Portal, browsers: list[Browser]
) -> None:
    person = open_browser(browsers, portal)
    assert person.get(f"/{SLUG}/p/no-such-partner/").status_code == 404


def test_it_merges_two_addresses_and_names_the_second_in_its_request(
    portal: Portal, smtp_server: SmtpServer, browsers: list[Browser]
) -> None:
    person = open_browser(browsers, portal)
    person.sign_in(BOB, smtp_server)
    link = add_address(person, ALICE, smtp_server)
    assert ALICE not in person.get(f"/{SLUG}/results").text  # not before its link is used
    assert person.confirm(link).status_code == 303
    assert by_address(person) == {BOB: {"theater-b"}, ALICE: {"park-a", "theater-b", "omroep-c"}}

    page = person.get(f"/{SLUG}/results")
    response = person.submit(page, f"/{SLUG}/deletion", partner="theater-b", address=ALICE)
    assert response.status_code == 303
    request = wait_for_mail(smtp_server, CONTACTS["theater-b"])
    body = text_of(request, "plain")
    assert ALICE in body and BOB not in body
    asked = [
        (n.attrs["data-address"], n.one("data-deletion-ref").attrs["data-deletion-ref"])
        for n in person.results().find_all("data-partner")
        if n.attrs["data-partner"] == "theater-b" and list(n.find_all("data-deletion-ref"))
    ]
    assert [address for address, _ in asked] == [ALICE]
    reference = asked[0][1]
    assert reference in request["Subject"]
    # The receipt goes to the address the request is for: Alice's second mail, not Bob's.
    assert reference in wait_for_mail(smtp_server, ALICE, count=2)["Subject"]
    assert len(mails_to(smtp_server, BOB)) == 1


def test_it_starts_its_own_session_for_a_link_confirmed_in_another_browser(
    portal: Portal, smtp_server: SmtpServer, browsers: list[Browser]
) -> None:
    first = open_browser(browsers, portal)
    first.sign_in(BOB, smtp_server)
    link = add_address(first, ALICE, smtp_server)
    other = open_browser(browsers, portal)
    assert other.confirm(link).status_code == 303
    assert set(by_address(other)) == {ALICE}
    assert set(by_address(first)) == {BOB}
