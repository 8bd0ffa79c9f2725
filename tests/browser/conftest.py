"""The browser suite: Debian's Chromium driven by Playwright against a real `portal serve`
with a real SMTP inbox. One browser and one portal for the whole package: Playwright's sync
API holds an event loop in this thread while it runs, so it must end before the tests that
run their own (anyio) do."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from playwright import sync_api as playwright

from tests.e2e.conftest import mails_to, portal_link, text_of, wait_for_mail
from tests.fixtures_mail import SmtpServer, running_smtp_server
from tests.server import Portal, portal_env, running_portal

DATA = Path(__file__).parent / "data"
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
SLUG = "ticketing-2021"
# A partner with a long name and 20 people (layout01..20@example.net) who ask it for deletion.
LONG_PARTNER = "openluchttheatersamenwerkingsverband-noord-holland-zuid"
PARTNERS = ("park-a", "theater-b", "omroep-c", LONG_PARTNER)
# Each test has people of its own: deletion requests are made once per partner.
ALICE = "alice@example.com"  # all three partners, an IBAN at Theater B: the phone flow
BOB = "bob@example.org"  # Park A only: the keyboard
CAROL = "carol@nowhere.example"  # nowhere: "not affected"
DIRK = "dirk@example.org"  # all three: the desktop flow, asking everyone
ERIN = "erin@example.org"  # Park A and Omroep C: the pages axe audits
GINA = "gina@example.org"  # Theater B and Omroep C: the printed record
FRANK = "frank@example.org"  # all three, 7 or 8 fields at each: the results page's length
# Many sign-ins from one client in one session: the limits are not what is tested here.
LIMITS = {
    "PORTAL_LIMIT_PER_ADDRESS": "100/hour",
    "PORTAL_LIMIT_PER_CLIENT": "1000/hour",
    "PORTAL_LIMIT_CONFIRM_PER_CLIENT": "1000/hour",
}
OPERATOR, PASSWORD = "dora", "a long passphrase for the browser suite"
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {"width": 360, "height": 740}
DESKTOP = {"width": 1280, "height": 900}
NARROW = {"width": 320, "height": 640}


def axe_source() -> str:
    """axe-core as axe-playwright-python bundles it (no network)."""
    import axe_playwright_python

    return (Path(axe_playwright_python.__file__).parent / "axe.min.js").read_text()


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        # As for PostgreSQL and Redis: skipped with the reason on a laptop, a failure in CI.
        missing = f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    with playwright.sync_playwright() as driver:
        # launch() gives the browser a fresh, temporary profile (user-data dir) of its own.
        chromium = driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="package")
def smtp() -> Iterator[SmtpServer]:
    with running_smtp_server() as server:
        yield server


@pytest.fixture(scope="package")
def portal(tmp_path_factory: pytest.TempPathFactory, smtp: SmtpServer) -> Iterator[Portal]:
    """The incident loaded and each partner imported through the CLI, then served."""
    instance = tmp_path_factory.mktemp("browser") / "instance"
    env = portal_env(instance)
    instance.mkdir()
    run(env, "incident", "load", str(DATA / "incident.toml"))
    for partner in PARTNERS:
        run(env, "import", SLUG, partner, str(DATA / f"{partner}.csv"))
    run(env, "admin", "create", OPERATOR, "--password-stdin", stdin=PASSWORD + "\n")
    with running_portal(instance, PORTAL_SMTP_URL=smtp.url(), **LIMITS) as served:
        yield served


def run(env: dict[str, str], *args: str, stdin: str | None = None) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "portal", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="package", autouse=True)
def artifacts() -> Path:
    """Screenshots for review; the folder is ignored by git and emptied per run."""
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


@dataclass
class Person:
    """One person's browser context: their cookies, their viewport, their language."""

    page: Any
    portal: Portal
    smtp: SmtpServer
    name: str

    def go(self, path: str) -> Any:
        return self.page.goto(self.portal.url + path)

    def shot(self, what: str) -> Path:
        path = ARTIFACTS / f"{self.name}-{what}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def link_for(self, address: str, *, seen: int) -> str:
        """The link of the `seen + 1`-th mail to `address`, as the inbox got it."""
        message = wait_for_mail(self.smtp, address, count=seen + 1)
        return portal_link(message, self.portal.url)

    def mails(self, address: str) -> list[EmailMessage]:
        return mails_to(self.smtp, address)


@pytest.fixture
def open_person(browser: Any, portal: Portal, smtp: SmtpServer) -> Iterator[Any]:
    contexts: list[Any] = []

    def open_(name: str, viewport: dict[str, int], *, lang: str = "nl", js: bool = True) -> Person:
        context = browser.new_context(
            viewport=viewport,
            locale={"nl": "nl-NL", "en": "en-GB"}[lang],
            java_script_enabled=js,
            service_workers="block",
        )
        context.set_default_timeout(10_000)
        contexts.append(context)
        return Person(context.new_page(), portal, smtp, name)

    yield open_
    for context in contexts:
        context.close()


def audit(page: Any) -> list[dict[str, Any]]:
    """axe-core's WCAG 2.0/2.1 A and AA violations on the page as it is now."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(axe_source())
    result = page.evaluate(
        """async () => {
            const r = await axe.run(document, {runOnly: {type: 'tag',
                values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}});
            return JSON.stringify(r.violations.map(v => ({id: v.id, impact: v.impact,
                help: v.help, nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)})));
        }"""
    )
    violations: list[dict[str, Any]] = json.loads(result)
    return violations


def plain_text(message: EmailMessage) -> str:
    return text_of(message, "plain")


def partner_link(message: EmailMessage, base_url: str) -> str:
    links = set(re.findall(re.escape(base_url) + r"/r/[\w.-]+", plain_text(message)))
    assert len(links) == 1, links
    return links.pop()


def sign_in(person: Person, address: str) -> None:
    """Lookup, the link from the inbox, the confirm button: the person's results page."""
    seen = len(person.mails(address))
    person.go(f"/{SLUG}/")
    person.page.fill("#email", address)
    person.page.click("form.lookup button[type=submit]")
    person.page.wait_for_url(re.compile(r"/sent$"))
    link = person.link_for(address, seen=seen)
    person.page.goto(link)
    person.page.click("form[data-confirm] button[type=submit]")
    person.page.wait_for_url(re.compile(rf"/{SLUG}/results"))


def no_sideways_scroll(page: Any) -> bool:
    width: int = page.evaluate("document.documentElement.scrollWidth")
    viewport: int = page.evaluate("window.innerWidth")
    return width <= viewport
