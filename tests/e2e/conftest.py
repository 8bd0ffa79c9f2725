"""Real processes for the e2e suite: a seeded instance, a person with a browser, their mail."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.databases import Backend
from tests.fixtures_mail import Received, SmtpServer, smtp_server, wait_for_sync
from tests.server import Portal, portal_env

__all__ = ["smtp_server"]

DATA = Path(__file__).parent / "data"
SLUG = "zomerfestival-2024"
INCIDENT_FILE = DATA / "incident.toml"
PARTNERS = ("park-a", "theater-b", "omroep-c")
CONTACTS = {slug: f"privacy@{slug}.example" for slug in PARTNERS}
# The extra arguments each partner's import needs (omroep-c has a column nobody wants).
IMPORT_ARGS: dict[str, tuple[str, ...]] = {"omroep-c": ("--map", "Lievelingskleur=-")}
# The CSV columns as the test reads them, independent of the portal's vocabulary.
COLUMN_FIELDS = {
    "e-mailadres": "email",
    "email address": "email",
    "e-mail": "email",
    "voornaam": "name",
    "achternaam": "name",
    "first name": "name",
    "last name": "name",
    "naam": "name",
    "straat": "address",
    "postcode": "postcode",
    "woonplaats": "city",
    "city": "city",
    "telefoon": "phone",
    "phone number": "phone",
    "geslacht": "gender",
    "customer number": "customer_number",
    "relatie.nummer": "customer_number",
    "iban": "iban",
    "geboortedatum": "birth_date",
    "lievelingskleur": None,  # ignored with --map
}

ALICE = "alice@example.com"
JAN_UNICODE = "jan@bücher.de"
JAN = "jan@xn--bcher-kva.de"
BOB = "bob.de.vries@example.org"
CAROL = "carol@nergens.example"


# -- the data the test wrote, read back the test's own way -------------------------------


def csv_path(partner: str) -> Path:
    return DATA / f"{partner}.csv"


def normalised(address: str) -> str:
    """Trim, lower-case, domain to IDNA: what a lookup of any spelling must match."""
    local, _, domain = address.strip().rpartition("@")
    return f"{local}@{domain.encode('idna').decode()}".lower()


def read_rows(partner: str) -> list[dict[str, str]]:
    text = csv_path(partner).read_text(encoding="utf-8-sig")
    delimiter = ";" if text.splitlines()[0].count(";") else ","
    rows = csv.DictReader(text.splitlines(keepends=True), delimiter=delimiter)
    return [{k.strip().lower(): (v or "") for k, v in row.items()} for row in rows]


def expected_fields(partner: str) -> dict[str, set[str]]:
    """Per normalised address, the fields with a value in any of its rows, plus email."""
    found: dict[str, set[str]] = {}
    for row in read_rows(partner):
        email = next(v for k, v in row.items() if COLUMN_FIELDS[k] == "email").strip()
        local, at, domain = email.partition("@")
        if not (local and at and "." in domain):
            continue
        keys = {COLUMN_FIELDS[k] for k, v in row.items() if v.strip() and COLUMN_FIELDS[k]}
        found.setdefault(normalised(email), set()).update(keys)
    return found


def csv_values(partner: str) -> set[str]:
    """Every non-trivial value in the partner's CSV (addresses included), as written."""
    return {v.strip() for row in read_rows(partner) for v in row.values() if len(v.strip()) > 5}


# -- processes ---------------------------------------------------------------------------


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m portal ARGS` with `env`, never raising on its exit status."""
    return subprocess.run(
        [sys.executable, "-m", "portal", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def load_and_import(env: dict[str, str]) -> dict[str, subprocess.CompletedProcess[str]]:
    """The operator's steps: load the incident file, import each partner's CSV."""
    done = {"incident": run_cli(env, "incident", "load", str(INCIDENT_FILE))}
    for partner in PARTNERS:
        args = ("import", SLUG, partner, str(csv_path(partner)), *IMPORT_ARGS.get(partner, ()))
        done[partner] = run_cli(env, *args)
    for name, result in done.items():
        assert result.returncode == 0, f"{name}: {result.stderr}"
    return done


@dataclass(frozen=True)
class Seed:
    """An instance folder with the incident loaded and every CSV imported, via the CLI."""

    folder: Path
    runs: dict[str, subprocess.CompletedProcess[str]]
    backend: Backend

    def copy_to(self, target: Path) -> Path:
        """A copy of the instance folder and of its database, attached to the copy."""
        self.backend.copy_database(self.folder, target)
        return target


@pytest.fixture(scope="session")
def seed(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Seed:
    folder = tmp_path_factory.mktemp("seed") / "instance"
    folder.mkdir()
    backend.new_database(folder, copyable=True)
    return Seed(folder, load_and_import(portal_env(folder)), backend)


@pytest.fixture
def instance(seed: Seed, tmp_path: Path) -> Path:
    """A fresh copy of the seeded instance folder for one test."""
    return seed.copy_to(tmp_path / "instance")


# -- a person with a browser -------------------------------------------------------------


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node] = field(default_factory=list)
    text: str = ""

    def find_all(self, attr: str) -> Iterator[Node]:
        for child in self.children:
            if attr in child.attrs:
                yield child
            yield from child.find_all(attr)

    def values(self, attr: str) -> list[str]:
        return [node.attrs[attr] for node in self.find_all(attr)]

    def one(self, attr: str, value: str | None = None) -> Node:
        found = [n for n in self.find_all(attr) if value is None or n.attrs[attr] == value]
        assert len(found) == 1, f"expected one [{attr}={value}], found {len(found)}"
        return found[0]


class _TreeBuilder(HTMLParser):
    VOID = frozenset({"area", "br", "hr", "img", "input", "link", "meta", "source", "wbr"})

    def __init__(self) -> None:
        super().__init__()
        self.root = Node("document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        for node in self.stack:
            node.text += data


def parse(html: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


def partners_on(page: Node) -> dict[str, Node]:
    """The results page's element per partner, by slug."""
    return {node.attrs["data-partner"]: node for node in page.find_all("data-partner")}


def deletion_forms(page: Node) -> list[Node]:
    return [f for f in page.find_all("action") if f.attrs["action"].endswith("/deletion")]


def csrf(html: str) -> str:
    tokens = {
        n.attrs["value"] for n in parse(html).find_all("name") if n.attrs["name"] == "csrf_token"
    }
    assert len(tokens) == 1, f"expected one csrf_token in the page, found {len(tokens)}"
    return tokens.pop()


class Browser:
    """A person's browser: keeps cookies, reads csrf_token from each page before a POST."""

    def __init__(self, portal: Portal) -> None:
        self.portal = portal
        self.client = httpx.Client(base_url=portal.url, timeout=30, follow_redirects=False)

    def close(self) -> None:
        self.client.close()

    def get(self, path: str) -> httpx.Response:
        return self.client.get(path)

    def submit(self, page: httpx.Response, action: str, **fields: str) -> httpx.Response:
        """Posts a form of `page` as the person would, with that page's csrf_token."""
        return self.client.post(action, data={**fields, "csrf_token": csrf(page.text)})

    def look_up(self, address: str) -> httpx.Response:
        page = self.get(f"/{SLUG}/")
        assert page.status_code == 200
        form = parse(page.text).one("action", f"/{SLUG}/lookup")
        assert form.attrs["method"] == "post"
        return self.submit(page, form.attrs["action"], email=address)

    def confirm(self, link: str) -> httpx.Response:
        """Opens the emailed link, then presses the page's one button."""
        path = urlsplit(link).path
        page = self.get(path)
        assert page.status_code == 200, page.text
        return self.submit(page, path)

    def results(self) -> Node:
        page = self.get(f"/{SLUG}/results")
        assert page.status_code == 200
        return parse(page.text)

    def sign_in(self, address: str, smtp: SmtpServer) -> Node:
        """Lookup, mail, link, confirm: the results page of a verified visit."""
        seen = len(mails_to(smtp, normalised(address)))
        assert self.look_up(address).status_code == 303
        message = wait_for_mail(smtp, normalised(address), count=seen + 1)
        response = self.confirm(portal_link(message, self.portal.url))
        assert response.status_code == 303
        assert response.headers["location"] == f"/{SLUG}/results"
        return self.results()


@pytest.fixture
def browsers() -> Iterator[list[Browser]]:
    """Browsers a test opens with `open_browser`; each is closed afterwards."""
    opened: list[Browser] = []
    yield opened
    for browser in opened:
        browser.close()


def open_browser(opened: list[Browser], portal: Portal) -> Browser:
    browser = Browser(portal)
    opened.append(browser)
    return browser


# -- mail --------------------------------------------------------------------------------


def mails_to(smtp: SmtpServer, address: str) -> list[EmailMessage]:
    return [r.message for r in list(smtp.received) if address in _recipients(r)]


def _recipients(received: Received) -> list[str]:
    return [to.lower() for to in received.rcpt_tos]


def wait_for_mail(
    smtp: SmtpServer, address: str, *, count: int = 1, timeout: float = 15
) -> EmailMessage:
    """The `count`-th mail to `address`, once it has arrived."""
    wait_for_sync(lambda: len(mails_to(smtp, address)) >= count, timeout=timeout)
    return mails_to(smtp, address)[count - 1]


def text_of(message: EmailMessage, subtype: str) -> str:
    part = message.get_body(preferencelist=(subtype,))
    assert isinstance(part, EmailMessage), f"no text/{subtype} part"
    assert part.get_content_type() == f"text/{subtype}"
    content: str = part.get_content()
    return content


def portal_links(text: str, base_url: str) -> set[str]:
    return set(re.findall(re.escape(base_url) + r"/v/[A-Za-z0-9_.\-]+", text))


def portal_link(message: EmailMessage, base_url: str) -> str:
    """The one link into the portal, the same in the text and the HTML part."""
    links = portal_links(text_of(message, "plain"), base_url)
    assert len(links) == 1, links
    assert portal_links(text_of(message, "html"), base_url) == links
    return links.pop()
