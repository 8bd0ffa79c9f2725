"""The admin area over HTTP (in-process): login, the queue, a request, decisions, export, audit."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, update
from starlette.testclient import TestClient

from portal.app import create_app
from portal.core.clock import utcnow
from portal.core.config import Settings
from portal.reach import notices
from portal.requests.deletions import DeletionRequest
from portal.store import tables
from tests.factories import (
    ALICE,
    BOB,
    DORA,
    DORA_PASSWORD,
    EVE,
    EVE_PASSWORD,
    RENDERER,
    ask_deletion,
    create_operators,
    load_personas,
)
from tests.server import csrf, portal_cli, post_form, sign_in_operator

SLUG = "ticketing-2021"
GET_PAGES = ["/admin/", "/admin/requests", "/admin/requests/DR-0000-0000", "/admin/audit",
             f"/admin/export/{SLUG}/park-a.csv", "/admin/anything/else"]  # fmt: skip
POSTS = ["/admin/logout", "/admin/requests/DR-0000-0000/status",
         "/admin/requests/DR-0000-0000/extend", "/admin/requests/DR-0000-0000/retry"]  # fmt: skip


@pytest.fixture
def people(engine: Engine, settings: Settings, tmp_path: Path) -> Engine:
    load_personas(engine, settings, tmp_path)
    create_operators(engine)
    return engine


def client_for(settings: Settings) -> TestClient:
    return TestClient(create_app(settings, deliver_mail=False), base_url="http://127.0.0.1:8000")


@pytest.fixture
def browser(people: Engine, settings: Settings) -> Iterator[TestClient]:
    with client_for(settings) as client:
        yield client


@pytest.fixture
def dora(browser: TestClient) -> TestClient:
    sign_in_operator(browser)
    return browser


def by_partner(requests: list[DeletionRequest], engine: Engine) -> dict[str, DeletionRequest]:
    with engine.connect() as conn:
        slugs = dict(conn.execute(select(tables.partners.c.id, tables.partners.c.slug)).all())
    return {slugs[r.partner_id]: r for r in requests}


def set_request(engine: Engine, reference: str, **values: object) -> None:
    t = tables.deletion_requests
    with engine.begin() as conn:
        conn.execute(update(t).where(t.c.reference == reference).values(**values))


def rows(page: str) -> list[dict[str, str]]:
    return [
        dict(re.findall(r'(data-[\w-]+)="([^"]*)"', tag))
        for tag in re.findall(r"<tr data-request=[^>]*>", page)
    ]


# -- login -------------------------------------------------------------------------------


def test_it_sends_every_admin_page_to_the_login_without_a_session(browser: TestClient) -> None:
    for path in GET_PAGES:
        response = browser.get(path, follow_redirects=False)
        assert (response.status_code, response.headers["location"]) == (303, "/admin/login"), path
    token = csrf(browser.get("/admin/login").text)
    for path in POSTS:
        response = browser.post(path, data={"csrf_token": token}, follow_redirects=False)
        assert (response.status_code, response.headers["location"]) == (303, "/admin/login"), path
    assert browser.get("/admin", follow_redirects=False).headers["location"] == "/admin/"


def test_it_signs_in_with_a_cookie_of_its_own_and_signs_out(browser: TestClient) -> None:
    page = browser.get("/admin/login")
    assert page.status_code == 200
    assert 'name="username"' in page.text and 'name="password"' in page.text
    response = browser.post(
        "/admin/login",
        data={"username": DORA, "password": DORA_PASSWORD, "csrf_token": csrf(page.text)},
        follow_redirects=False,
    )
    assert (response.status_code, response.headers["location"]) == (303, "/admin/")
    cookie = next(
        h for h in response.headers.get_list("set-cookie") if h.startswith("portal_admin=")
    )
    assert "HttpOnly" in cookie and "Path=/admin" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie  # plain http; https is tested in tests/security
    assert browser.get("/admin/").status_code == 200
    stolen = browser.cookies.get("portal_admin")

    home = browser.get("/admin/")
    out = browser.post(
        "/admin/logout", data={"csrf_token": csrf(home.text)}, follow_redirects=False
    )

    assert (out.status_code, out.headers["location"]) == (303, "/admin/login")
    assert browser.get("/admin/", follow_redirects=False).status_code == 303
    browser.cookies.set("portal_admin", stolen, path="/admin")
    assert browser.get("/admin/", follow_redirects=False).status_code == 303, "ended server-side"


def test_it_starts_a_new_session_id_at_each_login(browser: TestClient) -> None:
    sign_in_operator(browser)
    first = browser.cookies.get("portal_admin")
    sign_in_operator(browser)
    assert browser.cookies.get("portal_admin") != first


def login(client: TestClient, username: str, password: str):  # type: ignore[no-untyped-def]
    token = csrf(client.get("/admin/login").text)
    return client.post(
        "/admin/login", data={"username": username, "password": password, "csrf_token": token}
    )


def test_it_refuses_a_wrong_password_and_an_unknown_name_alike(browser: TestClient) -> None:
    wrong = login(browser, DORA, "not the password at all")
    unknown = login(browser, "nobody", "not the password at all")
    assert wrong.status_code == unknown.status_code == 400
    assert "Unknown username or wrong password." in wrong.text
    assert wrong.text.replace('value="dora"', "") == unknown.text.replace('value="nobody"', "")
    assert "portal_admin" not in wrong.cookies and "portal_admin" not in unknown.cookies


def test_it_refuses_a_disabled_operator(people: Engine, browser: TestClient) -> None:
    from portal.operator.accounts import disable_operator

    sign_in_operator(browser, EVE, EVE_PASSWORD)
    with people.begin() as conn:
        disable_operator(conn, EVE)
    assert browser.get("/admin/", follow_redirects=False).status_code == 303
    assert login(browser, EVE, EVE_PASSWORD).status_code == 400


def test_it_throttles_failed_logins_per_account(people: Engine, settings: Settings) -> None:
    tight = replace(settings, limit_login_per_account="3/hour")
    with client_for(tight) as client:
        assert [login(client, DORA, f"wrong guess {n}").status_code for n in range(3)] == [400] * 3
        throttled = login(client, DORA, DORA_PASSWORD)
        assert throttled.status_code == 429
        assert "Too many failed logins" in throttled.text
        assert login(client, EVE, EVE_PASSWORD).status_code == 200  # followed the 303


def test_it_throttles_failed_logins_per_client(people: Engine, settings: Settings) -> None:
    tight = replace(settings, limit_login="2/hour")
    with client_for(tight) as client:
        assert login(client, "mallory", "guess one guess").status_code == 400
        assert login(client, "trudy", "guess two guesses").status_code == 400
        assert login(client, EVE, EVE_PASSWORD).status_code == 429


def test_it_refuses_a_login_without_the_csrf_token(browser: TestClient) -> None:
    browser.get("/admin/login")
    response = browser.post("/admin/login", data={"username": DORA, "password": DORA_PASSWORD})
    assert response.status_code == 403


def test_it_refuses_every_admin_form_without_the_csrf_token(
    people: Engine, settings: Settings, dora: TestClient
) -> None:
    made = ask_deletion(people, settings, BOB, "park-a")[0]
    for action in ("status", "extend", "retry"):
        response = dora.post(
            f"/admin/requests/{made.reference}/{action}",
            data={"status": "completed", "months": "1", "reason": "x"},
        )
        assert response.status_code == 403, action
    assert dora.post("/admin/logout", data={"csrf_token": "0" * 64}).status_code == 403
    assert dora.get("/admin/").status_code == 200, "still signed in"


# -- the queue ---------------------------------------------------------------------------


def test_it_lists_the_queue_by_due_date_with_overdue_and_soon_marked(
    people: Engine, settings: Settings, dora: TestClient
) -> None:
    alice = by_partner(ask_deletion(people, settings, ALICE), people)
    (bob,) = ask_deletion(people, settings, BOB, "park-a")
    today = utcnow().date()
    set_request(people, alice["park-a"].reference, due_on=today - timedelta(days=2))
    set_request(people, alice["theater-b"].reference, due_on=today + timedelta(days=5))
    set_request(people, bob.reference, due_on=today + timedelta(days=20))

    page = dora.get("/admin/requests")

    assert page.status_code == 200
    listed = rows(page.text)
    assert [r["data-request"] for r in listed] == [
        alice["park-a"].reference, alice["theater-b"].reference, bob.reference,
    ]  # fmt: skip
    assert [r["data-due"] for r in listed] == [
        (today + timedelta(days=d)).isoformat() for d in (-2, 5, 20)
    ]
    assert [r["data-overdue"] for r in listed] == ["true", "false", "false"]
    assert [r["data-due-soon"] for r in listed] == ["false", "true", "false"]
    assert {r["data-status"] for r in listed} == {"received"}
    assert "overdue by 2 day(s)" in page.text and "due within 7 days" in page.text
    assert 'data-days-left="5"' in page.text and 'data-days-left="20"' in page.text


def test_it_filters_the_queue(people: Engine, settings: Settings, dora: TestClient) -> None:
    alice = by_partner(ask_deletion(people, settings, ALICE), people)
    (bob,) = ask_deletion(people, settings, BOB, "park-a")
    set_request(people, bob.reference, due_on=date(2020, 1, 1))
    set_request(people, alice["theater-b"].reference, status="completed", closed_at=utcnow())

    def listed(query: str) -> set[str]:
        return {r["data-request"] for r in rows(dora.get(f"/admin/requests?{query}").text)}

    everything = {bob.reference, *(r.reference for r in alice.values())}
    assert listed("") == everything
    assert listed(f"incident={SLUG}") == everything
    assert listed("incident=no-such-incident") == set()
    assert listed("partner=theater-b") == {alice["theater-b"].reference}
    assert listed("status=completed") == {alice["theater-b"].reference}
    assert listed("status=open") == {bob.reference, alice["park-a"].reference}
    assert listed("status=closed") == {alice["theater-b"].reference}
    assert listed("overdue=1") == {bob.reference}
    assert listed("partner=park-a&status=received&overdue=1") == {bob.reference}


# -- one request, worked -----------------------------------------------------------------


def history(page: str) -> list[tuple[str, str, str]]:
    tags = re.findall(r"<li data-history[^>]*>", page)
    return [
        tuple(
            re.search(rf'{name}="([^"]*)"', tag).group(1)
            for name in ("data-from", "data-to", "data-actor")
        )  # type: ignore[union-attr]
        for tag in tags
    ]


def test_it_works_a_request_to_completed_and_shows_who_did_what(
    people: Engine, settings: Settings, dora: TestClient
) -> None:
    (made,) = ask_deletion(people, settings, BOB, "park-a")
    path = f"/admin/requests/{made.reference}"
    page = dora.get(path)
    assert page.status_code == 200
    assert BOB in page.text and 'data-status="received"' in page.text
    assert history(page.text) == [("", "received", "system")]

    assert post_form(dora, path, f"{path}/status", status="forwarded").status_code == 303
    done = post_form(dora, path, f"{path}/status", status="completed", note="Deleted from CRM.")
    assert (done.status_code, done.headers["location"]) == (303, path)

    page = dora.get(path).text
    assert history(page) == [
        ("", "received", "system"),
        ("received", "forwarded", "operator"),
        ("forwarded", "completed", "operator"),
    ]
    assert 'data-closed-by="operator:dora"' in page and 'data-closed-via="admin"' in page
    assert "Deleted from CRM." in page
    assert 'action="/admin/requests/' + made.reference + '/status"' not in page, "closed: no form"


def test_it_answers_409_with_the_message_for_what_the_lifecycle_refuses(
    people: Engine, settings: Settings, dora: TestClient
) -> None:
    (made,) = ask_deletion(people, settings, BOB, "park-a")
    path = f"/admin/requests/{made.reference}"

    bare = post_form(dora, path, f"{path}/status", status="rejected", reason="")
    assert bare.status_code == 409
    assert "a rejection needs a ground" in bare.text and 'data-error-status="409"' in bare.text
    assert post_form(dora, path, f"{path}/status", status="received").status_code == 409
    assert post_form(dora, path, f"{path}/retry").status_code == 409

    rejected = post_form(
        dora, path, f"{path}/status", status="rejected", ground="legal_obligation",
        reason="Invoices are kept for 7 years.", kept="name",
    )  # fmt: skip
    assert rejected.status_code == 303
    again = post_form(dora, path, f"{path}/status", status="completed")
    assert again.status_code == 409 and "closed request is final" in again.text
    page = dora.get(path).text
    assert "Invoices are kept for 7 years." in page and "legal obligation" in page


def field_tag(page: str, tag: str, field_id: str) -> str:
    """The opening tag of the form control with this id."""
    match = re.search(rf'<{tag}[^>]*\bid="{field_id}"[^>]*>', page)
    assert match, f"no <{tag} id={field_id}>"
    return match.group(0)


def marks_invalid(page: str, tag: str, field_id: str) -> bool:
    """The control says it is invalid and points at its error, which is on the page."""
    opening = field_tag(page, tag, field_id)
    described = re.search(r'aria-describedby="([^"]+)"', opening)
    return (
        'aria-invalid="true"' in opening
        and described is not None
        and f'id="{described.group(1)}"' in page
    )


def error_text(page: str, field_id: str) -> str:
    match = re.search(rf'<p class="error" id="{field_id}-error"[^>]*>(.*?)</p>', page, re.S)
    assert match, f"no error beside {field_id}"
    return re.sub(r"<[^>]+>", "", match.group(1)).strip()


def test_it_shows_a_refused_rejection_in_its_form_as_typed_with_the_error_beside_the_field(
    people: Engine, settings: Settings, dora: TestClient
) -> None:
    alice = by_partner(ask_deletion(people, settings, ALICE), people)
    path = f"/admin/requests/{alice['park-a'].reference}"

    refused = post_form(
        dora, path, f"{path}/status", status="rejected", ground="", reason="  ",
        note="Asked the partner by phone.", kept="phone", partner_reference="PA-77",
    )  # fmt: skip

    assert refused.status_code == 409
    page = refused.text
    assert 'data-error-status="409"' in page and "a rejection needs a ground" in page
    assert re.search(r'<input type="radio" id="status-rejected"[^>]*\bchecked', page)
    assert not re.search(
        r'<input type="radio" id="status-(forwarded|completed)"[^>]*\bchecked', page
    )
    assert ">Asked the partner by phone.</textarea>" in page
    assert re.search(r'<input type="checkbox" name="kept" value="phone" checked>', page)
    assert not re.search(r'<input type="checkbox" name="kept" value="name" checked>', page)
    assert 'value="PA-77"' in field_tag(page, "input", "partner_reference")
    assert marks_invalid(page, "select", "ground") and marks_invalid(page, "textarea", "reason")
    assert "ground" in error_text(page, "ground") and "reason" in error_text(page, "reason")
    assert not marks_invalid(page, "textarea", "note")
    assert history(page) == [("", "received", "system")], "nothing was written"

    # Ground given, reason still missing: only the reason is at fault; the ground stays chosen.
    with_ground = dora.post(
        f"{path}/status",
        data={"status": "rejected", "ground": "legal_claims", "csrf_token": csrf(page)},
    )
    assert with_ground.status_code == 409
    assert re.search(r'<option value="legal_claims" selected>', with_ground.text)
    assert not marks_invalid(with_ground.text, "select", "ground")
    assert marks_invalid(with_ground.text, "textarea", "reason")

    # The refused page's own form goes through: its CSRF token is still good.
    done = dora.post(
        f"{path}/status",
        data={
            "status": "rejected", "ground": "legal_claims", "reason": "A claim is pending.",
            "version": re.search(r'name="version" value="(\d+)"', page).group(1),  # type: ignore[union-attr]
            "csrf_token": csrf(with_ground.text),
        },
        follow_redirects=False,
    )  # fmt: skip
    assert (done.status_code, done.headers["location"]) == (303, path)
    assert 'data-status="rejected"' in dora.get(path).text


def test_it_lays_an_invalid_transition_at_the_status_field(
    people: Engine, settings: Settings, dora: TestClient
) -> None:
    (made,) = ask_deletion(people, settings, BOB, "park-a")
    path = f"/admin/requests/{made.reference}"

    refused = post_form(dora, path, f"{path}/status", status="received", note="typed")

    assert refused.status_code == 409
    assert marks_invalid(refused.text, "input", "status-forwarded")
    assert "cannot go from received to received" in error_text(refused.text, "status")
    assert ">typed</textarea>" in refused.text


def test_it_preselects_no_status_and_asks_for_one(
    people: Engine, settings: Settings, dora: TestClient
) -> None:
    (made,) = ask_deletion(people, settings, BOB, "park-a")
    path = f"/admin/requests/{made.reference}"
    page = dora.get(path).text

    radios = re.findall(r'<input type="radio"[^>]*name="status"[^>]*>', page)
    assert len(radios) == 3 and not any("checked" in radio for radio in radios)
    assert '<select id="status"' not in page, "a select would always have one chosen"

    unchosen = post_form(dora, path, f"{path}/status", note="Deleted from the CRM.")

    assert unchosen.status_code == 400
    assert error_text(unchosen.text, "status") == "Error: Choose the new status."
    assert marks_invalid(unchosen.text, "input", "status-completed")
    assert ">Deleted from the CRM.</textarea>" in unchosen.text
    assert 'data-status="received"' in unchosen.text and history(unchosen.text) == [
        ("", "received", "system")
    ]


def test_it_shows_a_refused_extension_in_its_form_as_typed(
    people: Engine, settings: Settings, dora: TestClient
) -> None:
    (made,) = ask_deletion(people, settings, BOB, "park-a")
    path = f"/admin/requests/{made.reference}"

    refused = post_form(dora, path, f"{path}/extend", months="2", reason=" ")

    assert refused.status_code == 409
    assert re.search(r'<option value="2" selected>', refused.text)
    assert marks_invalid(refused.text, "textarea", "ext-reason")
    assert not marks_invalid(refused.text, "textarea", "reason"), "the other form's reason"
    assert "reason the person will read" in error_text(refused.text, "ext-reason")
    assert 'data-form="extend"' in refused.text


def test_it_extends_once_and_refuses_late_or_twice(
    people: Engine, settings: Settings, dora: TestClient
) -> None:
    alice = by_partner(ask_deletion(people, settings, ALICE), people)
    park, theater = alice["park-a"], alice["theater-b"]
    path = f"/admin/requests/{park.reference}"

    first = post_form(dora, path, f"{path}/extend", months="2", reason="Archived on tape.")
    assert first.status_code == 303
    page = dora.get(path).text
    due = park.due_on
    assert "Archived on tape." in page and 'data-form="extend"' not in page
    second = post_form(dora, path, f"{path}/status", status="forwarded")
    assert second.status_code == 303
    token = csrf(page)
    twice = dora.post(f"{path}/extend", data={"months": "1", "reason": "more", "csrf_token": token})
    assert twice.status_code == 409 and "extended only once" in twice.text

    set_request(people, theater.reference, due_on=utcnow().date() - timedelta(days=1))
    late_path = f"/admin/requests/{theater.reference}"
    late = dora.post(
        f"{late_path}/extend", data={"months": "1", "reason": "x", "csrf_token": token}
    )
    assert late.status_code == 409 and "has passed" in late.text
    assert due.isoformat() in page


def test_it_tells_the_second_of_two_operators_that_the_request_changed(
    people: Engine, settings: Settings
) -> None:
    (made,) = ask_deletion(people, settings, BOB, "park-a")
    path = f"/admin/requests/{made.reference}"
    with client_for(settings) as dora, client_for(settings) as eve:
        sign_in_operator(dora)
        sign_in_operator(eve, EVE, EVE_PASSWORD)
        dora_page, eve_page = dora.get(path).text, eve.get(path).text
        version = re.search(r'name="version" value="(\d+)"', dora_page).group(1)  # type: ignore[union-attr]

        won = dora.post(
            f"{path}/status",
            data={"status": "completed", "version": version, "csrf_token": csrf(dora_page)},
            follow_redirects=False,
        )
        lost = eve.post(
            f"{path}/status",
            data={
                "status": "rejected",
                "ground": "other",
                "reason": "no",
                "version": version,
                "csrf_token": csrf(eve_page),
            },
        )

    assert won.status_code == 303
    assert lost.status_code == 409
    assert "changed meanwhile" in lost.text and "completed by operator dora" in lost.text


def test_it_retries_a_request_whose_forwarding_failed(
    people: Engine, settings: Settings, dora: TestClient
) -> None:
    (made,) = ask_deletion(people, settings, BOB, "park-a")
    set_request(people, made.reference, status="forward_failed")
    path = f"/admin/requests/{made.reference}"
    assert 'data-form="retry"' in dora.get(path).text

    assert post_form(dora, path, f"{path}/retry").status_code == 303

    with people.connect() as conn:
        o = tables.outbox.c
        kinds = conn.scalars(select(o.kind).where(o.deletion_request_id == made.id)).all()
    assert kinds.count("partner_request") == 2
    assert "forwarding queued again" in dora.get(path).text


def test_it_shows_the_proof_of_each_delivery(
    people: Engine, settings: Settings, dora: TestClient
) -> None:
    (made,) = ask_deletion(people, settings, BOB, "park-a")
    with people.begin() as conn:
        o = tables.outbox.c
        conn.execute(
            update(tables.outbox)
            .where(o.deletion_request_id == made.id)
            .values(
                status="sent", sent_at=utcnow(), message_id="<m1@portal>", payload_sha256="ab" * 32
            )
        )
    page = dora.get(f"/admin/requests/{made.reference}").text
    assert 'data-delivery="partner_request"' in page and 'data-delivery-status="sent"' in page
    assert "&lt;m1@portal&gt;" in page and "ab" * 32 in page


def test_it_answers_404_for_an_unknown_reference(dora: TestClient) -> None:
    assert dora.get("/admin/requests/DR-0000-0000").status_code == 404
    token = csrf(dora.get("/admin/").text)
    for action in ("status", "extend", "retry"):
        response = dora.post(
            f"/admin/requests/DR-0000-0000/{action}",
            data={"status": "completed", "months": "1", "reason": "x", "csrf_token": token},
        )
        assert response.status_code == 404, action


# -- export, audit, figures --------------------------------------------------------------


def test_it_exports_a_partners_requests_with_formulas_neutralised(
    people: Engine, settings: Settings, dora: TestClient
) -> None:
    alice = by_partner(ask_deletion(people, settings, ALICE), people)
    (bob,) = ask_deletion(people, settings, BOB, "park-a")
    set_request(people, bob.reference, email='=HYPERLINK("http://evil.example")@example.org')
    set_request(
        people,
        alice["park-a"].reference,
        status="rejected",
        ground="legal_claims",
        closed_at=utcnow(),
    )

    response = dora.get(f"/admin/export/{SLUG}/park-a.csv")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    table = list(csv.reader(io.StringIO(response.text)))
    assert table[0] == ["reference", "email", "received", "due", "status", "closed", "outcome"]
    by_reference = {row[0]: row for row in table[1:]}
    assert set(by_reference) == {alice["park-a"].reference, bob.reference}
    assert by_reference[bob.reference][1].startswith("'=HYPERLINK")
    assert by_reference[alice["park-a"].reference][1:2] == [ALICE]
    assert by_reference[alice["park-a"].reference][4:] == [
        "rejected",
        utcnow().date().isoformat(),
        "rejected: legal_claims",
    ]
    assert dora.get(f"/admin/export/{SLUG}/no-such-partner.csv").status_code == 404

    audit = dora.get("/admin/audit").text
    first = re.search(r"<tr data-audit[^>]*>(.*?)</tr>", audit, re.S).group(1)  # type: ignore[union-attr]
    assert "export" in first and f"{SLUG}/park-a" in first and "2 request(s)" in first
    assert ALICE not in audit and BOB not in audit


@pytest.mark.parametrize("cell", ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"])
def test_it_neutralises_every_formula_start(cell: str) -> None:
    from portal.operator.export import neutralise

    assert neutralise(cell) == "'" + cell
    assert neutralise("DR-0000") == "DR-0000" and neutralise("bob@example.org") == "bob@example.org"


def test_it_keeps_the_audit_log_newest_first(
    people: Engine, settings: Settings, dora: TestClient
) -> None:
    (made,) = ask_deletion(people, settings, BOB, "park-a")
    path = f"/admin/requests/{made.reference}"
    post_form(dora, path, f"{path}/status", status="completed")
    page = dora.get("/admin/audit").text
    actions = re.findall(r'<tr data-audit="\d+" data-action="([^"]+)"', page)
    assert actions[:3] == ["request_completed", "request_viewed", "login"]
    assert BOB not in page


def viewed_entries(engine: Engine, reference: str) -> list[tuple[str, str]]:
    a = tables.audit_log.c
    with engine.connect() as conn:
        found = conn.execute(
            select(a.actor, a.object).where(a.action == "request_viewed").order_by(a.id)
        )
        return [(actor, object_) for actor, object_ in found if object_ == reference]


def test_it_audits_a_view_of_a_request_once_a_day_per_operator(
    people: Engine, settings: Settings, dora: TestClient
) -> None:
    (made,) = ask_deletion(people, settings, BOB, "park-a")
    path = f"/admin/requests/{made.reference}"
    for _ in range(3):
        assert dora.get(path).status_code == 200
    assert post_form(dora, path, f"{path}/status", status="forwarded").status_code == 303
    assert dora.get(path).status_code == 200
    with client_for(settings) as eve:
        sign_in_operator(eve, EVE, EVE_PASSWORD)
        eve.get(path)
        eve.get(path)

    assert viewed_entries(people, made.reference) == [
        ("operator:dora", made.reference),
        ("operator:eve", made.reference),
    ]
    page = dora.get("/admin/audit").text
    actions = re.findall(r'<tr data-audit="\d+" data-action="([^"]+)" data-actor="([^"]+)"', page)
    assert actions.count(("request_viewed", "operator:dora")) == 1
    assert actions.count(("request_forwarded", "operator:dora")) == 1
    assert BOB not in page

    # The next day (UTC), her first view is written again.
    a = tables.audit_log.c
    with people.begin() as conn:
        conn.execute(
            update(tables.audit_log)
            .where(a.action == "request_viewed")
            .values(at=utcnow() - timedelta(days=1))
        )
    dora.get(path)
    assert viewed_entries(people, made.reference).count(("operator:dora", made.reference)) == 2


def test_it_shows_figures_per_partner(people: Engine, settings: Settings, dora: TestClient) -> None:
    ask_deletion(people, settings, ALICE)
    (bob,) = ask_deletion(people, settings, BOB, "park-a")
    set_request(people, bob.reference, due_on=date(2020, 1, 1))
    page = dora.get("/admin/").text

    def stat(partner: str, name: str) -> str:
        row = re.search(rf'<tr data-partner="{partner}">(.*?)</tr>', page, re.S).group(1)  # type: ignore[union-attr]
        return re.search(rf'data-stat="{name}">\s*(?:<a[^>]*>)?([^<]*)', row).group(1).strip()  # type: ignore[union-attr]

    assert (
        stat("park-a", "records"),
        stat("theater-b", "records"),
        stat("omroep-c", "records"),
    ) == ("2", "1", "0")
    assert (
        stat("park-a", "requests_received") == "2" and stat("theater-b", "requests_received") == "1"
    )
    assert stat("park-a", "overdue") == "1" and stat("theater-b", "overdue") == "0"
    assert stat("park-a", "found_affected") == "2"  # alice's and bob's verified visits
    assert re.search(r'data-stat="distinct_people">2<', page)
    assert re.search(r'data-stat="verified_visits">2<', page)
    assert re.search(r'data-stat="lookups">2<', page)


def test_it_shows_the_notice_figures_that_portal_stats_shows(
    people: Engine, settings: Settings, dora: TestClient, tmp_path: Path
) -> None:
    def notify(partner: str) -> None:
        notices.notify(
            people, settings, incident=SLUG, partner=partner, path=tmp_path / f"{partner}.csv",
            renderer=RENDERER,
        )  # fmt: skip

    def set_notice(address: str, status: str) -> None:
        n, o = tables.notices.c, tables.outbox.c
        with people.begin() as conn:
            outbox_id = conn.scalar(select(o.id).where(o.kind == "notice", o.recipient == address))
            conn.execute(
                update(tables.notices).where(n.outbox_id == outbox_id).values(status=status)
            )

    notify("park-a")  # alice and bob
    set_notice(ALICE, "sent")
    set_notice(BOB, "failed")
    notify("theater-b")  # alice: her notice went out, theater-b is recorded after sending

    page = dora.get("/admin/").text
    stats = portal_cli(settings, "stats", SLUG)
    assert stats.returncode == 0, stats.stderr
    printed_text = stats.stdout.decode("utf-8")

    def shown(partner: str) -> dict[str, int]:
        row = re.search(rf'<tr data-partner="{partner}">(.*?)</tr>', page, re.S).group(1)  # type: ignore[union-attr]
        return {
            name: int(value) for name, value in re.findall(r'data-stat="notices_(\w+)">(\d+)<', row)
        }

    per_partner = printed_text.split("direct notices naming it")[1]
    statuses = ("queued", "sent", "failed", "bounced")
    printed = {
        partner: dict(zip(statuses, map(int, numbers), strict=True))
        for partner, *numbers in re.findall(
            rf"{SLUG}\W+([\w-]+)\W+(\d+)\W+(\d+)\W+(\d+)\W+(\d+)", per_partner
        )
    }
    assert printed == {p: shown(p) for p in ("omroep-c", "park-a", "theater-b")}
    assert printed["park-a"] == {"queued": 0, "sent": 1, "failed": 1, "bounced": 0}
    # Theater B, notified after Alice's notice went out: her follow-up names it, queued.
    assert printed["theater-b"] == {"queued": 1, "sent": 0, "failed": 0, "bounced": 0}

    line = re.search(rf"^{SLUG}: notices: (.*)$", printed_text, re.M).group(1)  # type: ignore[union-attr]
    by_incident = {name: int(count) for name, count in re.findall(r"([a-z ]+) (\d+)", line)}
    facts = re.search(r'<section data-incident="[^"]+"(.*?)</dl>', page, re.S).group(1)  # type: ignore[union-attr]
    on_page = {
        name.replace("_", " "): int(count)
        for name, count in re.findall(r'data-stat="notices_(\w+)">(\d+)<', facts)
    }
    assert {k.strip(", "): v for k, v in by_incident.items()} == on_page
    assert on_page == {
        "queued": 0, "sent": 1, "failed": 1, "bounced": 0, "partners added after sending": 1
    }  # fmt: skip


def test_it_counts_no_person_in_the_counters(people: Engine, settings: Settings) -> None:
    ask_deletion(people, settings, ALICE)
    with people.connect() as conn:
        columns = set(tables.counters.c.keys())
        assert columns == {"incident_id", "partner_id", "day", "name", "count"}
        assert conn.execute(select(tables.counters)).all()
