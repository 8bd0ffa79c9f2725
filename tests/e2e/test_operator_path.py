"""The operator's and the partners' side against a real portal, SMTP server and webhook receiver.

A person asks for deletion through the public flow; the operator works the requests to each
end state, a partner closes one by its emailed link and another by the signed API, and the
person gets an email at each step. Nothing of it leaves an address in the log or the audit.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import httpx
import pytest

from portal.core.i18n import format_date
from portal.requests.deletions import add_months
from tests.e2e.conftest import (
    ALICE,
    BOB,
    CONTACTS,
    INCIDENT_FILE,
    JAN,
    SLUG,
    Browser,
    Node,
    mails_to,
    open_browser,
    parse,
    partners_on,
    text_of,
    wait_for_mail,
)
from tests.fixtures_mail import SmtpServer, WebhookReceiver, running_webhook_receiver, wait_for_sync
from tests.server import Portal, running_portal

pytestmark = pytest.mark.e2e

HOOK_SECRET = "omroep-c-webhook-secret"
OPERATOR, PASSWORD = "dora", "a long passphrase she keeps"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with running_webhook_receiver(secret=HOOK_SECRET) as running:
        yield running


@pytest.fixture
def portal(instance: Path, smtp_server: SmtpServer, receiver: WebhookReceiver) -> Iterator[Portal]:
    """The seeded portal; omroep-c also takes requests by webhook, in English."""
    with running_portal(instance, PORTAL_SMTP_URL=smtp_server.url()) as portal:
        line = 'contact_email = "privacy@omroep-c.example"\n'
        text = INCIDENT_FILE.read_text(encoding="utf-8").replace(
            line,
            line + f'webhook_url = "{receiver.url}"\nwebhook_secret = "{HOOK_SECRET}"\n'
            'language = "en"\n',
        )
        (instance / "incident.toml").write_text(text, encoding="utf-8")
        portal.cli("incident", "load", str(instance / "incident.toml"))
        created = subprocess.run(
            [sys.executable, "-m", "portal", "admin", "create", OPERATOR, "--password-stdin"],
            env=portal.env, input=PASSWORD + "\n", capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        yield portal


@pytest.fixture
def people(portal: Portal) -> Iterator[list[Browser]]:
    opened: list[Browser] = []
    yield opened
    for browser in opened:
        browser.close()


def operator(portal: Portal, opened: list[Browser]) -> Browser:
    """The operator, signed in through the login form."""
    dora = open_browser(opened, portal)
    page = dora.get("/admin/login")
    response = dora.submit(page, "/admin/login", username=OPERATOR, password=PASSWORD)
    assert (response.status_code, response.headers["location"]) == (303, "/admin/")
    return dora


def queue(dora: Browser, query: str = "") -> dict[str, Node]:
    page = dora.get(f"/admin/requests{query}")
    assert page.status_code == 200
    return {n.attrs["data-request"]: n for n in parse(page.text).find_all("data-request")}


def references(person: Browser) -> dict[str, tuple[str, str]]:
    """Per partner, the (reference, status) the person's results page shows."""
    found = {}
    for partner, section in partners_on(person.results()).items():
        shown = list(section.find_all("data-deletion-ref"))
        if shown:
            found[partner] = (
                shown[0].attrs["data-deletion-ref"],
                shown[0].attrs["data-deletion-status"],
            )
    return found


def decide(dora: Browser, reference: str, action: str, **fields: str) -> int:
    page = dora.get(f"/admin/requests/{reference}")
    assert page.status_code == 200
    return dora.submit(page, f"/admin/requests/{reference}/{action}", **fields).status_code


def history(dora: Browser, reference: str) -> list[tuple[str, str, str]]:
    page = parse(dora.get(f"/admin/requests/{reference}").text)
    return [
        (n.attrs["data-from"], n.attrs["data-to"], n.attrs["data-actor"])
        for n in page.find_all("data-history")
    ]


def signed_call(portal: Portal, reference: str, body: dict[str, str], secret: str, skew: int = 0):  # type: ignore[no-untyped-def]
    text = json.dumps(body)
    timestamp = str(int(time.time()) + skew)
    signature = hmac.new(
        secret.encode(), f"{timestamp}.{text}".encode(), hashlib.sha256
    ).hexdigest()
    return httpx.post(
        f"{portal.url}/api/requests/{reference}",
        content=text.encode(),
        headers={
            "Content-Type": "application/json",
            "X-Portal-Timestamp": timestamp,
            "X-Portal-Signature": f"sha256={signature}",
        },
        timeout=30,
    )


def test_it_works_requests_to_each_end_and_tells_the_person_each_time(
    portal: Portal, smtp_server: SmtpServer, receiver: WebhookReceiver, people: list[Browser]
) -> None:
    receiver.fail_next(1)  # the partner's server is down at first
    alice = open_browser(people, portal)
    alice.sign_in(ALICE, smtp_server)
    page = alice.get(f"/{SLUG}/results")
    assert alice.submit(page, f"/{SLUG}/deletion", partner="all").status_code == 303
    made = references(alice)
    assert set(made) == {"park-a", "theater-b", "omroep-c"}
    ref = {partner: reference for partner, (reference, _) in made.items()}

    # Forwarding: both emails, and the webhook once the receiver is up again (5 s backoff).
    for partner in ("park-a", "theater-b", "omroep-c"):
        request = text_of(wait_for_mail(smtp_server, CONTACTS[partner]), "plain")
        assert ref[partner] in request and ALICE in request
        assert len(re.findall(re.escape(portal.url) + r"/\S+", request)) == 1
    assert text_of(mails_to(smtp_server, CONTACTS["omroep-c"])[0], "plain").startswith(
        "To the privacy officer"
    )
    assert text_of(mails_to(smtp_server, CONTACTS["park-a"])[0], "plain").startswith(
        "Aan de privacyfunctionaris"
    )
    wait_for_sync(lambda: receiver.accepted, timeout=30)
    assert [hook.answered for hook in receiver.requests] == [503, 202]
    assert json.loads(receiver.accepted[0].body)["reference"] == ref["omroep-c"]

    dora = operator(portal, people)
    wait_for_sync(lambda: {n.attrs["data-status"] for n in queue(dora).values()} == {"forwarded"})
    rows = queue(dora)
    assert set(ref.values()) <= set(rows)
    dues = [n.attrs["data-due"] for n in rows.values()]
    assert dues == sorted(dues)

    # park-a: completed by the operator.
    assert (
        decide(dora, ref["park-a"], "status", status="completed", note="Removed from our CRM.")
        == 303
    )
    done = wait_for_mail(smtp_server, ALICE, count=3)  # link, receipt, this
    assert ref["park-a"] in done["Subject"] and "verwijderd" in done["Subject"]
    assert "Removed from our CRM." in text_of(done, "plain")

    # theater-b: extended by two months, then rejected with a ground.
    due = rows[ref["theater-b"]].attrs["data-due"]
    assert (
        decide(dora, ref["theater-b"], "extend", months="2", reason="Our archive is on tape.")
        == 303
    )
    extended = wait_for_mail(smtp_server, ALICE, count=4)
    new_due = add_months(date.fromisoformat(due), 2).isoformat()
    shown_due = format_date(date.fromisoformat(new_due), "nl")
    assert shown_due in extended["Subject"] and "Our archive is on tape." in text_of(
        extended, "plain"
    )
    assert decide(dora, ref["theater-b"], "extend", months="1", reason="Again.") == 409
    assert decide(dora, ref["theater-b"], "status", status="rejected", reason="") == 409
    assert (
        decide(dora, ref["theater-b"], "status", status="rejected", ground="legal_obligation",
               reason="Invoices must be kept for seven years.")
        == 303
    )  # fmt: skip
    rejected = wait_for_mail(smtp_server, ALICE, count=5)
    body = text_of(rejected, "plain")
    assert "afgewezen" in rejected["Subject"]
    assert "Autoriteit Persoonsgegevens" in body and "autoriteitpersoonsgegevens.nl" in body
    assert "Invoices must be kept for seven years." in body

    # omroep-c: the partner reports back by the signed API.
    assert (
        signed_call(
            portal, ref["omroep-c"], {"outcome": "completed"}, HOOK_SECRET, skew=-400
        ).status_code
        == 401
    )
    assert (
        signed_call(portal, ref["omroep-c"], {"outcome": "completed"}, "wrong").status_code == 401
    )
    assert (
        signed_call(portal, ref["park-a"], {"outcome": "completed"}, HOOK_SECRET).status_code == 404
    )
    answer = signed_call(
        portal, ref["omroep-c"], {"outcome": "completed", "partner_reference": "OC-77"}, HOOK_SECRET
    )
    assert answer.status_code == 200 and answer.json() == {
        "reference": ref["omroep-c"],
        "status": "completed",
    }
    assert (
        signed_call(
            portal,
            ref["omroep-c"],
            {"outcome": "rejected", "ground": "other", "reason": "x"},
            HOOK_SECRET,
        ).status_code
        == 409
    )
    wait_for_mail(smtp_server, ALICE, count=6)

    # The person's page shows each outcome; the operator's, who closed what and how.
    shown = references(alice)
    assert {p: status for p, (_, status) in shown.items()} == {
        "park-a": "completed", "theater-b": "rejected", "omroep-c": "completed",
    }  # fmt: skip
    theater = partners_on(alice.results())["theater-b"].one("data-deletion-ref")
    assert theater.attrs["data-deletion-due"] == new_due
    assert "Invoices must be kept for seven years." in theater.text
    assert history(dora, ref["omroep-c"])[-1] == ("forwarded", "completed", "partner")
    assert history(dora, ref["park-a"])[-1] == ("forwarded", "completed", "operator")
    assert ("received", "forwarded", "system") in history(dora, ref["park-a"])
    page = dora.get(f"/admin/requests/{ref['omroep-c']}").text
    assert 'data-closed-by="partner:omroep-c"' in page and 'data-closed-via="api"' in page
    assert "OC-77" in page and hashlib.sha256(receiver.accepted[0].body).hexdigest() in page

    # Export, audit, figures.
    exported = dora.get(f"/admin/export/{SLUG}/theater-b.csv").text.splitlines()
    assert exported[0] == "reference,email,received,due,status,closed,outcome"
    assert any(
        ref["theater-b"] in line and ALICE in line and "rejected: legal_obligation" in line
        for line in exported
    )
    audit = dora.get("/admin/audit").text
    for action in ("export", "request_rejected", "request_extended", "request_completed", "login"):
        assert f'data-action="{action}"' in audit
    assert 'data-actor="partner:omroep-c"' in audit
    stats = parse(dora.get("/admin/").text)
    row = next(n for n in stats.find_all("data-partner") if n.attrs["data-partner"] == "theater-b")
    figures = {n.attrs["data-stat"]: n.text.strip() for n in row.find_all("data-stat")}
    assert figures["requests_rejected"] == "1" and figures["overdue"] == "0"

    # Privacy: no address of anyone in the audit log or the server log.
    addresses = {ALICE, *CONTACTS.values(), BOB, JAN}
    log = portal.log()
    for address in addresses:
        assert address not in audit
        assert address.lower() not in log.lower()


def test_it_lets_a_partner_close_a_request_by_its_link(
    portal: Portal, smtp_server: SmtpServer, people: list[Browser]
) -> None:
    bob = open_browser(people, portal)
    bob.sign_in(BOB, smtp_server)
    page = bob.get(f"/{SLUG}/results")
    assert bob.submit(page, f"/{SLUG}/deletion", partner="theater-b").status_code == 303
    ((reference, _),) = references(bob).values()

    request = text_of(wait_for_mail(smtp_server, CONTACTS["theater-b"]), "plain")
    (link,) = re.findall(re.escape(portal.url) + r"/r/[\w.-]+", request)
    partner = open_browser(people, portal)
    form_page = partner.get(link.removeprefix(portal.url))
    assert form_page.status_code == 200
    shown = parse(form_page.text)
    assert shown.one("data-request-status").attrs["data-request-status"] in (
        "received",
        "forwarded",
    )
    assert BOB in form_page.text and reference in form_page.text

    response = partner.submit(
        form_page, link.removeprefix(portal.url), outcome="completed", partner_reference="TB-5"
    )
    assert response.status_code == 303
    closed = partner.get(link.removeprefix(portal.url))
    assert parse(closed.text).one("data-request-status").attrs["data-request-status"] == "completed"
    assert 'name="outcome"' not in closed.text
    again = partner.submit(form_page, link.removeprefix(portal.url), outcome="completed")
    assert again.status_code == 409

    told = wait_for_mail(smtp_server, BOB, count=3)
    assert reference in told["Subject"]
    dora = operator(portal, people)
    page_text = dora.get(f"/admin/requests/{reference}").text
    assert (
        'data-closed-by="partner:theater-b"' in page_text and 'data-closed-via="link"' in page_text
    )
    assert history(dora, reference)[-1][1:] == ("completed", "partner")


def test_it_keeps_a_person_session_out_of_the_admin_area(
    portal: Portal, smtp_server: SmtpServer, people: list[Browser]
) -> None:
    jan = open_browser(people, portal)
    jan.sign_in(JAN, smtp_server)
    person_cookie = jan.client.cookies.get("portal_session")
    assert person_cookie
    for path in ("/admin/", "/admin/requests", "/admin/audit"):
        response = jan.get(path)
        assert (response.status_code, response.headers["location"]) == (303, "/admin/login")
    jan.client.cookies.set("portal_admin", person_cookie, path="/admin")
    assert jan.get("/admin/").status_code == 303
    wrong = jan.submit(
        jan.get("/admin/login"),
        "/admin/login",
        username=OPERATOR,
        password="not her password at all",
    )
    unknown = jan.submit(
        jan.get("/admin/login"),
        "/admin/login",
        username="mallory",
        password="not her password at all",
    )
    assert wrong.status_code == unknown.status_code == 400
