"""The person's whole path over HTTP against a real portal process and a real SMTP server."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import httpx
import pytest
from itsdangerous import URLSafeTimedSerializer

from portal.core.clock import utcnow
from portal.core.i18n import format_date
from portal.requests.deletions import add_one_month
from tests.e2e.conftest import (
    ALICE,
    BOB,
    CAROL,
    CONTACTS,
    JAN,
    JAN_UNICODE,
    PARTNERS,
    SLUG,
    Browser,
    Node,
    Seed,
    deletion_forms,
    expected_fields,
    mails_to,
    normalised,
    open_browser,
    parse,
    partners_on,
    portal_link,
    text_of,
    wait_for_mail,
)
from tests.fixtures_mail import SmtpServer, wait_for_sync
from tests.server import Portal, running_portal

pytestmark = pytest.mark.e2e

REFERENCE = re.compile(r"DR-[0-9A-Z]{4}-[0-9A-Z]{4}")


@pytest.fixture
def portal(instance: Path, smtp_server: SmtpServer) -> Iterator[Portal]:
    with running_portal(instance, PORTAL_SMTP_URL=smtp_server.url()) as portal:
        yield portal


def deletion_of(section: Node) -> tuple[str, str]:
    """The (reference, status) shown inside a partner's element."""
    shown = section.one("data-deletion-ref")
    assert REFERENCE.fullmatch(shown.attrs["data-deletion-ref"])
    return shown.attrs["data-deletion-ref"], shown.attrs["data-deletion-status"]


def ask_deletion(person: Browser, partner: str) -> None:
    page = person.get(f"/{SLUG}/results")
    if partner == "all":  # asked again first, on a page of its own
        page = person.get(f"/{SLUG}/deletion/all")
        assert page.status_code == 200
    forms = deletion_forms(parse(page.text))
    assert partner in {v for f in forms for v in f.values("value")}, f"no form for {partner}"
    response = person.submit(page, f"/{SLUG}/deletion", partner=partner)
    assert response.status_code == 303
    # Back to the results, at that partner's element, where the message is.
    anchor = "requests" if partner == "all" else f"partner-{partner}"
    assert response.headers["location"] == f"/{SLUG}/results#{anchor}"


def due_dates() -> set[date]:
    """The due date of a request made now; taken before and after, for a midnight between."""
    return {add_one_month(utcnow().date())}


def test_it_reports_skipped_lines_and_succeeds(seed: Seed) -> None:
    skipped = {
        "park-a": ["line 5: no email address", "line 6: not a valid address"],
        "theater-b": ["line 5: no email address", "line 9: not a valid address"],
    }
    for partner, reasons in skipped.items():
        run = seed.runs[partner]
        assert run.returncode == 0
        assert "skipped rows (2), by line:" in run.stdout
        for reason in reasons:
            assert f"  {reason}" in run.stdout
    assert "skipped rows" not in seed.runs["omroep-c"].stdout


def test_it_walks_the_whole_path(
    portal: Portal, smtp_server: SmtpServer, browsers: list[Browser]
) -> None:
    alice = open_browser(browsers, portal)
    response = alice.look_up("  Alice@Example.COM ")
    assert response.status_code == 303
    assert response.headers["location"] == f"/{SLUG}/sent"
    assert alice.get(response.headers["location"]).status_code == 200

    message = wait_for_mail(smtp_server, ALICE)
    assert message.get_content_type() == "multipart/alternative"
    assert message["To"] == ALICE
    link = portal_link(message, portal.url)
    path = link.removeprefix(portal.url)
    assert re.fullmatch(r"/v/[A-Za-z0-9_.\-]+", path)

    for _ in range(2):  # mail scanners open links: a GET must not use it up
        page = alice.get(path)
        assert page.status_code == 200
        form = parse(page.text).one("data-confirm")
        assert form.attrs["method"] == "post"
        assert form.attrs.get("action", path) == path
        assert page.headers["cache-control"] == "no-store"
        assert page.headers["referrer-policy"] == "no-referrer"
    response = alice.submit(page, path)
    assert response.status_code == 303
    assert response.headers["location"] == f"/{SLUG}/results"
    cookie = response.headers["set-cookie"].lower()
    assert "portal_session=" in cookie and "httponly" in cookie and "samesite=lax" in cookie

    assert alice.get(f"/{SLUG}/results").headers["cache-control"] == "no-store"
    sections = partners_on(alice.results())
    assert set(sections) == set(PARTNERS)
    for partner, section in sections.items():
        assert set(section.values("data-field")) == expected_fields(partner)[ALICE], partner
        assert not list(section.find_all("data-deletion-ref"))

    before = due_dates()
    ask_deletion(alice, "park-a")
    due = before | due_dates()
    reference, status = deletion_of(partners_on(alice.results())["park-a"])
    assert status in ("received", "forwarded")
    for other in ("theater-b", "omroep-c"):
        assert not list(partners_on(alice.results())[other].find_all("data-deletion-ref"))

    request = text_of(wait_for_mail(smtp_server, CONTACTS["park-a"]), "plain")
    assert reference in request
    assert "Art. 17" in request
    assert ALICE in request
    assert any(format_date(d, "nl") in request for d in due)  # the partner's language
    for key in expected_fields("park-a")[ALICE]:
        assert f"[{key}]" in request, key  # each field with its key
    assert "[iban]" not in request  # exposed at omroep-c, not at park-a

    receipt = wait_for_mail(smtp_server, ALICE, count=2)
    assert reference in receipt["Subject"]
    assert reference in text_of(receipt, "plain") and reference in text_of(receipt, "html")

    wait_for_sync(lambda: deletion_of(partners_on(alice.results())["park-a"])[1] == "forwarded")

    stale = alice.get(f"/{SLUG}/results")  # a second tab, still showing the forms
    ask_deletion(alice, "all")
    sections = partners_on(alice.results())
    references = {partner: deletion_of(section)[0] for partner, section in sections.items()}
    assert references["park-a"] == reference
    assert len(set(references.values())) == 3
    for partner in ("theater-b", "omroep-c"):
        request = text_of(wait_for_mail(smtp_server, CONTACTS[partner]), "plain")
        assert references[partner] in request and ALICE in request
    receipt = text_of(wait_for_mail(smtp_server, ALICE, count=3), "plain")
    assert references["theater-b"] in receipt and references["omroep-c"] in receipt
    assert reference not in receipt

    response = alice.submit(stale, f"/{SLUG}/deletion", partner="park-a")
    assert response.status_code == 303
    assert deletion_of(partners_on(alice.results())["park-a"])[0] == reference

    # Bob's link is queued after anything the repeat could have queued: once it has
    # arrived, a duplicate request or receipt would have arrived too.
    bob = open_browser(browsers, portal)
    assert bob.look_up(BOB).status_code == 303
    wait_for_mail(smtp_server, BOB)
    assert len(mails_to(smtp_server, CONTACTS["park-a"])) == 1
    assert len(mails_to(smtp_server, ALICE)) == 3
    for partner in PARTNERS:
        wait_for_sync(
            lambda p=partner: deletion_of(partners_on(alice.results())[p])[1] == "forwarded"
        )


def test_it_matches_every_spelling_of_an_imported_address(
    portal: Portal, smtp_server: SmtpServer, browsers: list[Browser]
) -> None:
    assert normalised(JAN_UNICODE) == JAN
    jan = open_browser(browsers, portal)
    sections = partners_on(jan.sign_in("JAN@xn--bcher-kva.de", smtp_server))
    assert set(sections) == {"park-a"}
    assert set(sections["park-a"].values("data-field")) == expected_fields("park-a")[JAN]
    page = jan.get(f"/{SLUG}/results")
    assert jan.submit(page, f"/{SLUG}/deletion", partner="omroep-c").status_code == 404

    bob = open_browser(browsers, portal)
    sections = partners_on(bob.sign_in(" BOB.de.VRIES@example.org", smtp_server))
    assert set(sections) == {"theater-b"}
    assert set(sections["theater-b"].values("data-field")) == expected_fields("theater-b")[BOB]

    unicode_jan = open_browser(browsers, portal)
    sections = partners_on(unicode_jan.sign_in("Jan@Bücher.de", smtp_server))
    assert set(sections) == {"park-a"}


def test_it_answers_unknown_addresses_alike(
    portal: Portal, smtp_server: SmtpServer, browsers: list[Browser]
) -> None:
    known, unknown = open_browser(browsers, portal), open_browser(browsers, portal)
    answers = [known.look_up(ALICE), unknown.look_up(CAROL)]
    assert [a.status_code for a in answers] == [303, 303]
    assert answers[0].headers["location"] == answers[1].headers["location"] == f"/{SLUG}/sent"
    assert answers[0].content == answers[1].content
    # Each page shows back the address typed, and is otherwise the same.
    pages = {ALICE: known.get(f"/{SLUG}/sent").text, CAROL: unknown.get(f"/{SLUG}/sent").text}
    assert all(f"<strong data-sent-address>{a}</strong>" in p for a, p in pages.items())
    assert len({p.replace(a, "ADDRESS") for a, p in pages.items()}) == 1

    message = wait_for_mail(smtp_server, CAROL)
    assert message["Subject"] == wait_for_mail(smtp_server, ALICE)["Subject"]
    response = unknown.confirm(portal_link(message, portal.url))
    assert response.status_code == 303
    page = unknown.results()
    page.one("data-result", "not-affected")
    assert not list(page.find_all("data-partner"))
    assert not deletion_forms(page)


def test_it_refuses_a_used_or_forged_link(
    portal: Portal, smtp_server: SmtpServer, browsers: list[Browser]
) -> None:
    alice = open_browser(browsers, portal)
    alice.sign_in(ALICE, smtp_server)
    path = portal_link(mails_to(smtp_server, ALICE)[0], portal.url).removeprefix(portal.url)

    used = alice.get(path)
    assert used.status_code == 410
    parse(used.text).one("data-link-error", "link_used")
    parse(used.text).one("data-new-link")
    # The used link's page asks for a new one itself, for the incident the link was for.
    asked = alice.submit(used, f"/{SLUG}/lookup", email=ALICE)
    assert (asked.status_code, asked.headers["location"]) == (303, f"/{SLUG}/sent")
    form_page = alice.get(f"/{SLUG}/")
    assert alice.submit(form_page, path).status_code == 410

    token = path.removeprefix("/v/")
    flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    signed_elsewhere = URLSafeTimedSerializer("not-the-key", salt="portal.link").dumps("x" * 43)
    for forged in (flipped, token[::-1], signed_elsewhere, "not-a-token"):
        page = alice.get(f"/v/{forged}")
        assert page.status_code == 400, forged
        parse(page.text).one("data-link-error", "link_invalid")
        assert alice.submit(form_page, f"/v/{forged}").status_code == 400
    assert "portal_session" in alice.client.cookies  # the first, genuine visit only


def test_it_refuses_an_expired_link(
    seed: Seed, tmp_path: Path, smtp_server: SmtpServer, browsers: list[Browser]
) -> None:
    folder = seed.copy_to(tmp_path / "short-links")
    with running_portal(folder, PORTAL_SMTP_URL=smtp_server.url(), PORTAL_LINK_TTL="1") as portal:
        alice = open_browser(browsers, portal)
        asked = time.monotonic()
        assert alice.look_up(ALICE).status_code == 303
        path = portal_link(wait_for_mail(smtp_server, ALICE), portal.url).removeprefix(portal.url)

        def expired() -> bool:
            return alice.get(path).status_code != 200

        wait_for_sync(expired, timeout=10)
        assert time.monotonic() - asked >= 1
        page = alice.get(path)
        assert page.status_code == 410
        parse(page.text).one("data-link-error", "link_expired")
        parse(page.text).one("data-new-link")
        assert alice.submit(alice.get(f"/{SLUG}/"), path).status_code == 410
        assert "portal_session" not in alice.client.cookies


def test_it_answers_healthz(portal: Portal) -> None:
    response = httpx.get(f"{portal.url}/healthz", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"status": "ok"}
