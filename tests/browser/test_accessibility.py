"""axe-core finds no WCAG 2.1 A/AA violation on any page, in Dutch and English, and every
page reflows to 320 px (WCAG 1.4.10, which is also what a 200 % zoom of 640 px asks)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import (
    ARTIFACTS,
    CAROL,
    DESKTOP,
    ERIN,
    NARROW,
    OPERATOR,
    PASSWORD,
    SLUG,
    Person,
    audit,
    no_sideways_scroll,
    partner_link,
    plain_text,
    sign_in,
)
from tests.e2e.conftest import wait_for_mail

pytestmark = pytest.mark.e2e


class Auditor:
    """Audits the page a step leads to: axe, reflow at 320 px, a screenshot."""

    def __init__(self, person: Person, lang: str) -> None:
        self.person, self.lang = person, lang
        self.found: dict[str, list[dict[str, Any]]] = {}
        self.wide: list[str] = []
        self.seen: list[str] = []

    def check(self, name: str, status: int | None = None) -> None:
        page = self.person.page
        assert page.locator("html").get_attribute("lang") in ("nl", "en")
        self.seen.append(name)
        # The markup as served, for the Nu HTML checker (CONTRIBUTING.md).
        (ARTIFACTS / f"{self.lang}-{name}.html").write_text(page.content(), encoding="utf-8")
        violations = audit(page)
        if violations:
            self.found[name] = violations
        page.set_viewport_size(NARROW)
        if not no_sideways_scroll(page):
            self.wide.append(name)
        self.person.shot(f"{self.lang}-{name}-320")
        page.set_viewport_size(DESKTOP)
        self.person.shot(f"{self.lang}-{name}")

    def visit(self, name: str, path: str, status: int = 200) -> None:
        response = self.person.go(path)
        assert response.status == status, f"{name}: {response.status}"
        self.check(name)


def person_pages(auditor: Auditor) -> None:
    person, page = auditor.person, auditor.person.page
    auditor.visit("incident", f"/{SLUG}/?lang={auditor.lang}")
    auditor.visit("entry-page", f"/{SLUG}/p/park-a/?lang={auditor.lang}")
    assert page.locator("[data-entry-partner=park-a] [data-intro]").is_visible()
    auditor.visit("entry-page-general", f"/{SLUG}/p/theater-b/")
    page.fill("#email", "not an address")
    page.click("form.lookup button[type=submit]")
    assert page.locator("[data-error-summary]").is_visible()
    assert page.locator("#email").input_value() == "not an address"
    auditor.check("incident-error")
    seen = len(person.mails(ERIN))
    page.fill("#email", ERIN)
    page.click("form.lookup button[type=submit]")
    page.wait_for_url(re.compile(r"/sent$"))
    auditor.check("sent")
    link = person.link_for(ERIN, seen=seen)
    page.goto(link)
    auditor.check("confirm")
    page.click("form[data-confirm] button[type=submit]")
    page.wait_for_url(re.compile(r"/results$"))
    auditor.check("results")
    auditor.visit("confirm-all", f"/{SLUG}/deletion/all")
    auditor.visit("results-again", f"/{SLUG}/results")
    park = page.locator('[data-partner="park-a"] button[type=submit]')
    if park.count():
        park.click()
        page.wait_for_url(re.compile(r"#partner-park-a$"))
        auditor.check("results-requested")
    auditor.visit("link-used", link.removeprefix(person.portal.url), status=410)
    auditor.visit("link-invalid", "/v/not-a-token", status=400)
    auditor.visit("not-found", "/no-such-incident/", status=404)
    auditor.visit("privacy", f"/{SLUG}/privacy")
    sign_in(person, CAROL)
    # Carol's link was asked with Erin's visit open in this browser: it joined that visit.
    assert page.locator("[data-addresses]").get_attribute("data-addresses") == "2"
    assert page.locator(f'[data-result="not-affected"][data-address="{CAROL}"]').count() == 1
    auditor.check("results-not-affected")


def code_pages(auditor: Auditor) -> None:
    """The letter page, and its answer to a code that is not one."""
    page = auditor.person.page
    auditor.visit("code", f"/{SLUG}/code?lang={auditor.lang}")
    page.fill("#code", "ABCDE-FGHJK-MNPQR-STVWX-Y")
    page.click("form.lookup button[type=submit]")
    assert page.locator("[data-error-summary]").is_visible()
    assert page.locator('[data-error="code"]').is_visible()
    auditor.check("code-error")


def partner_page(auditor: Auditor) -> None:
    person = auditor.person
    mails = [
        m
        for m in person.smtp.received
        if "privacy@park-a.example" in m.rcpt_tos and ERIN.encode() in m.content
    ]
    assert mails, "Erin's request reached Park A"
    link = partner_link(mails[0].message, person.portal.url)
    auditor.visit("partner-request", link.removeprefix(person.portal.url))


OMROEP = "ledenadministratie@omroep-c.example"


def partner_queue(auditor: Auditor) -> None:
    """Omroep C takes its requests daily: Erin asks it, the digest goes out, and its queue
    page is audited with the result of an upload and with a file refused whole."""
    person, page = auditor.person, auditor.person.page
    sign_in(person, ERIN)
    omroep = page.locator('[data-partner="omroep-c"] button[type=submit]')
    if omroep.count():
        omroep.click()
        page.wait_for_url(re.compile(r"#partner-omroep-c$"))
    person.portal.cli("partners", "digest")  # due once a session: a second run finds none
    digest = wait_for_mail(person.smtp, OMROEP)
    links = set(
        re.findall(re.escape(person.portal.url) + r"/r/partner/[\w.-]+", plain_text(digest))
    )
    assert len(links) == 1, links
    path = links.pop().removeprefix(person.portal.url)
    auditor.visit("partner-queue", path)
    assert page.locator("[data-request][data-due]").count() >= 1
    unknown = b"reference,outcome,ground,reason,partner_reference\nDR-0000-0000,completed,,,\n"
    page.set_input_files("#file", files=[_csv(unknown)])
    page.click("form[data-form=outcomes] button[type=submit]")
    page.wait_for_selector("[data-upload][data-refused='1']")
    auditor.check("partner-queue-upload")
    auditor.visit("partner-queue-again", path)
    page.set_input_files("#file", files=[_csv(b"not,a,header\n")])
    page.click("form[data-form=outcomes] button[type=submit]")
    page.wait_for_selector("[data-upload-refused]")
    auditor.check("partner-upload-refused")


def _csv(data: bytes) -> dict[str, Any]:
    return {"name": "outcomes.csv", "mimeType": "text/csv", "buffer": data}


def ensure_a_request(auditor: Auditor) -> None:
    """Erin asks Park A (once per session), so the queue has a request to open."""
    person = auditor.person
    sign_in(person, ERIN)
    park = person.page.locator('[data-partner="park-a"] button[type=submit]')
    if park.count():
        park.click()
        person.page.wait_for_url(re.compile(r"#partner-park-a$"))


def admin_pages(auditor: Auditor) -> None:
    page = auditor.person.page
    ensure_a_request(auditor)
    auditor.visit("admin-login", "/admin/login")
    page.fill("#username", OPERATOR)
    page.fill("#password", "wrong password")
    page.click("form[data-login] button[type=submit]")
    auditor.check("admin-login-error")
    page.fill("#username", OPERATOR)
    page.fill("#password", PASSWORD)
    page.click("form[data-login] button[type=submit]")
    page.wait_for_url(re.compile(r"/admin/$"))
    auditor.check("admin-home")
    # The notice-day overview: seven charts, each with its figures in a table to unfold.
    assert page.locator("figure[data-chart] svg[role=img]").count() == 7
    assert page.locator("[data-alert]").count() == 3
    page.locator("figure[data-chart=lookups] summary").click()
    assert page.locator("figure[data-chart=lookups] table tbody tr").count() == 48
    auditor.check("admin-home-figures")
    auditor.visit("admin-requests", "/admin/requests")
    reference = page.locator("[data-request]").first.get_attribute("data-request")
    auditor.visit("admin-request", f"/admin/requests/{reference}")
    # A rejection without ground or reason: the form again, the errors beside the fields.
    page.check("#status-rejected")
    page.click("form[data-form=status] button[type=submit]")
    page.wait_for_selector("[data-refusal]")
    assert page.locator("#ground").get_attribute("aria-invalid") == "true"
    auditor.check("admin-request-refused")
    auditor.visit("admin-audit", "/admin/audit")


def run(open_person: Callable[..., Person], lang: str, *steps: Callable[[Auditor], None]) -> None:
    auditor = Auditor(open_person(f"axe-{lang}", DESKTOP, lang=lang), lang)
    for step in steps:
        step(auditor)
    report = "\n".join(
        f"{name}: {v['id']} ({v['impact']}) {v['help']} at {v['nodes']}"
        for name, violations in auditor.found.items()
        for v in violations
    )
    assert not auditor.found, f"axe found violations ({lang}):\n{report}"
    assert not auditor.wide, f"wider than 320 px ({lang}): {auditor.wide}"


def test_axe_finds_nothing_on_the_pages_in_dutch(open_person: Any) -> None:
    run(open_person, "nl", person_pages, partner_page, partner_queue, code_pages)


def test_axe_finds_nothing_on_the_pages_in_english(open_person: Any) -> None:
    run(open_person, "en", person_pages, code_pages)


def test_axe_finds_nothing_in_the_admin_area_in_english(open_person: Any) -> None:
    run(open_person, "en", admin_pages)


def test_axe_finds_nothing_in_the_admin_area_in_dutch(open_person: Any) -> None:
    run(open_person, "nl", admin_pages)


def test_axe_sees_a_violation_when_there_is_one(open_person: Any) -> None:
    """The audit can fail: an image without text and an unlabelled field are reported."""
    person = open_person("axe-control", DESKTOP)
    person.page.set_content(
        '<!doctype html><html lang="en"><title>x</title><main><h1>x</h1>'
        '<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw="><input></main></html>'
    )
    found = {v["id"] for v in audit(person.page)}
    assert {"image-alt", "label"} <= found


def test_the_nu_checker_finds_no_error_in_the_audited_pages() -> None:
    """The pages the audits above saved, through vnu.jar when it is at hand (npm vnu-jar)."""
    jar = os.environ.get("VNU_JAR") or next(iter(Path("node_modules").glob("**/vnu.jar")), None)
    if not jar or not shutil.which("java"):
        pytest.skip("set VNU_JAR to vnu.jar (npm install vnu-jar) and have java")
    pages = sorted(ARTIFACTS.glob("*.html"))
    assert pages, "run with the audits above, which save each page"
    done = subprocess.run(
        ["java", "-jar", str(jar), "--errors-only", "--format", "text", *map(str, pages)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout
