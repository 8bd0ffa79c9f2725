"""Partners report back without an account: the /r/ link's page and the signed API (in-process)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, update
from starlette.testclient import TestClient

from portal.app import create_app
from portal.core.clock import utcnow
from portal.core.config import Settings
from portal.core.fields import BY_KEY
from portal.incidents.importer import import_csv
from portal.incidents.stored import load_incident_file
from portal.requests.deletions import DeletionRequest
from portal.store import tables
from tests.factories import ALICE, BOB, INCIDENT, PARK_A, THEATER_B, ask_deletion, write_csv
from tests.server import csrf

SLUG = "ticketing-2021"
BASE = "http://127.0.0.1:8000"
SECRETS = {"park-a": "park-a-hook-secret", "theater-b": "theater-b-hook-secret"}


@pytest.fixture
def people(engine: Engine, settings: Settings, tmp_path: Path) -> Engine:
    """The personas' incident; park-a and theater-b take webhooks, park-a in English."""
    text = INCIDENT
    for slug, secret in SECRETS.items():
        line = f'contact_email = "privacy@{slug}.example"\n'
        extra = f'webhook_url = "http://127.0.0.1:9/{slug}"\nwebhook_secret = "{secret}"\n'
        text = text.replace(line, line + extra + ('language = "en"\n' if slug == "park-a" else ""))
    (tmp_path / "incident.toml").write_text(text, encoding="utf-8")
    load_incident_file(engine, tmp_path / "incident.toml")
    for partner, rows in (("park-a", PARK_A), ("theater-b", THEATER_B)):
        import_csv(
            engine,
            settings,
            incident=SLUG,
            partner=partner,
            path=write_csv(tmp_path / f"{partner}.csv", rows),
        )
    return engine


@pytest.fixture
def partner_browser(people: Engine, settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, deliver_mail=False), base_url=BASE) as client:
        yield client


def request_mail(engine: Engine, made: DeletionRequest):  # type: ignore[no-untyped-def]
    o = tables.outbox.c
    with engine.connect() as conn:
        return conn.execute(
            select(tables.outbox).where(
                o.deletion_request_id == made.id, o.kind == "partner_request"
            )
        ).one()


def portal_links(text: str) -> list[str]:
    return re.findall(re.escape(BASE) + r"/[^\s\"<>]+", text)


def link_path(engine: Engine, made: DeletionRequest) -> str:
    """The one portal link of the partner's request email, as a path."""
    mail = request_mail(engine, made)
    (link,) = portal_links(mail.body_text)
    assert set(portal_links(mail.body_html)) == {link}  # the button and the visible address
    assert re.fullmatch(re.escape(BASE) + r"/r/[\w.-]+", link)
    return link.removeprefix(BASE)


def bob(engine: Engine, settings: Settings) -> DeletionRequest:
    (made,) = ask_deletion(engine, settings, BOB, "park-a")
    return made


def kinds(engine: Engine, made: DeletionRequest) -> list[str]:
    o = tables.outbox.c
    with engine.connect() as conn:
        return list(
            conn.scalars(select(o.kind).where(o.deletion_request_id == made.id).order_by(o.id))
        )


# -- the request email and the link's page ----------------------------------------------


def test_it_mails_the_partner_in_its_language_with_one_link(
    people: Engine, settings: Settings
) -> None:
    alice = {r.partner_id: r for r in ask_deletion(people, settings, ALICE)}
    mails = [request_mail(people, r) for r in alice.values()]
    by_recipient = {m.recipient: m for m in mails}
    english, dutch = (
        by_recipient["privacy@park-a.example"],
        by_recipient["privacy@theater-b.example"],
    )
    assert english.body_text.startswith("To the privacy officer of Attractiepark A")
    assert dutch.body_text.startswith("Aan de privacyfunctionaris van Theater B")
    assert "GDPR Art. 17" in english.subject and "AVG art. 17" in dutch.subject
    for made in alice.values():
        assert link_path(people, made).startswith("/r/")


def test_it_shows_the_partner_what_to_act_on(
    people: Engine, settings: Settings, partner_browser: TestClient
) -> None:
    made = bob(people, settings)
    page = partner_browser.get(link_path(people, made))
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    html = page.text
    assert 'data-request-status="received"' in html
    assert made.reference in html and BOB in html and made.due_on.isoformat() in html
    assert {"email", "name", "postcode"} <= set(re.findall(r'data-field="(\w+)"', html))
    for name in ("outcome", "ground", "reason", "partner_reference", "csrf_token"):
        assert f'name="{name}"' in html
    assert 'value="completed"' in html and 'value="rejected"' in html
    assert '<html lang="en">' in html  # park-a's language


def report(client: TestClient, path: str, **fields: str):  # type: ignore[no-untyped-def]
    token = csrf(client.get(path).text)
    return client.post(path, data={**fields, "csrf_token": token}, follow_redirects=False)


def test_it_closes_a_request_by_the_partners_link(
    people: Engine, settings: Settings, partner_browser: TestClient
) -> None:
    made = bob(people, settings)
    path = link_path(people, made)

    done = report(partner_browser, path, outcome="completed", partner_reference="PA-2024-117")

    assert (done.status_code, done.headers["location"]) == (303, path)
    page = partner_browser.get(path).text
    assert 'data-request-status="completed"' in page
    assert "<form" not in page.split("</header>")[1], "read-only once closed"
    assert "PA-2024-117" in page
    with people.connect() as conn:
        row = conn.execute(select(tables.deletion_requests)).one()
        events = conn.execute(
            select(tables.deletion_events.c.actor, tables.deletion_events.c.via)
        ).all()
    assert (row.status, row.closed_by, row.closed_via, row.partner_reference) == (
        "completed", "partner:park-a", "link", "PA-2024-117",
    )  # fmt: skip
    assert tuple(events[-1]) == ("partner:park-a", "link")
    assert kinds(people, made).count("deletion_completed") == 1

    token = csrf(partner_browser.get("/ticketing-2021/").text)
    second = partner_browser.post(
        path, data={"outcome": "rejected", "ground": "other", "reason": "x", "csrf_token": token}
    )
    assert second.status_code == 409
    assert "closed request is final" in second.text


def test_it_refuses_a_rejection_by_link_without_ground_and_reason(
    people: Engine, settings: Settings, partner_browser: TestClient
) -> None:
    made = bob(people, settings)
    path = link_path(people, made)
    for fields in (
        {"outcome": "rejected"},
        {"outcome": "rejected", "ground": "legal_obligation"},
        {"outcome": "maybe"},
    ):
        assert report(partner_browser, path, **fields).status_code == 409
    assert 'data-request-status="received"' in partner_browser.get(path).text

    done = report(
        partner_browser,
        path,
        outcome="rejected",
        ground="legal_obligation",
        reason="Invoices: 7 years.",
        kept="name",
    )
    assert done.status_code == 303
    assert kinds(people, made).count("deletion_rejected") == 1


def test_it_refuses_a_tampered_or_foreign_link(
    people: Engine, settings: Settings, partner_browser: TestClient
) -> None:
    from portal.core.tokens import link_tokens

    made = bob(people, settings)
    path = link_path(people, made)
    token = path.removeprefix("/r/")
    for bad in (
        token[:-2] + ("AA" if not token.endswith("AA") else "BB"),
        "nonsense",
        link_tokens(settings).issue()[0],
    ):
        page = partner_browser.get(f"/r/{bad}")
        assert page.status_code == 400, bad
        assert 'data-link-error="link_invalid"' in page.text


def test_it_keeps_the_link_working_until_30_days_after_closing(
    people: Engine, settings: Settings, partner_browser: TestClient
) -> None:
    made = bob(people, settings)
    path = link_path(people, made)
    assert report(partner_browser, path, outcome="completed").status_code == 303
    t = tables.deletion_requests
    with people.begin() as conn:
        conn.execute(update(t).values(closed_at=utcnow() - timedelta(days=29)))
    assert partner_browser.get(path).status_code == 200
    with people.begin() as conn:
        conn.execute(update(t).values(closed_at=utcnow() - timedelta(days=31)))
    gone = partner_browser.get(path)
    assert gone.status_code == 410 and 'data-link-error="partner_link_closed"' in gone.text


# -- the API -----------------------------------------------------------------------------


def signed(
    body: dict[str, object] | str, secret: str, *, skew: int = 0
) -> tuple[bytes, dict[str, str]]:
    text = body if isinstance(body, str) else json.dumps(body)
    timestamp = str(int(time.time()) + skew)
    digest = hmac.new(secret.encode(), f"{timestamp}.{text}".encode(), hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-Portal-Timestamp": timestamp,
        "X-Portal-Signature": f"sha256={digest}",
    }
    return text.encode(), headers


def call(client: TestClient, reference: str, body: dict[str, object] | str, secret: str, **kw: int):  # type: ignore[no-untyped-def]
    content, headers = signed(body, secret, **kw)
    return client.post(f"/api/requests/{reference}", content=content, headers=headers)


def test_it_closes_a_request_by_a_signed_api_call(
    people: Engine, settings: Settings, partner_browser: TestClient
) -> None:
    made = bob(people, settings)
    body = {
        "outcome": "rejected",
        "ground": "legal_claims",
        "reason": "A dispute is pending.",
        "partner_reference": "PA-9",
    }

    response = call(partner_browser, made.reference, body, SECRETS["park-a"])

    assert response.status_code == 200, response.text
    assert response.json() == {"reference": made.reference, "status": "rejected"}
    with people.connect() as conn:
        row = conn.execute(select(tables.deletion_requests)).one()
    assert (row.closed_by, row.closed_via, row.partner_reference, row.ground) == (
        "partner:park-a",
        "api",
        "PA-9",
        "legal_claims",
    )
    assert kinds(people, made).count("deletion_rejected") == 1

    again = call(partner_browser, made.reference, {"outcome": "completed"}, SECRETS["park-a"])
    assert again.status_code == 409 and "final" in again.json()["error"]


def test_it_refuses_api_calls_it_cannot_trust(
    people: Engine, settings: Settings, partner_browser: TestClient
) -> None:
    made = bob(people, settings)
    ok = {"outcome": "completed"}
    secret = SECRETS["park-a"]
    assert call(partner_browser, made.reference, ok, secret, skew=-301).status_code == 401
    assert call(partner_browser, made.reference, ok, secret, skew=301).status_code == 401
    assert call(partner_browser, made.reference, ok, "not-the-secret").status_code == 401
    content, headers = signed(ok, secret)
    tampered = content.replace(b"completed", b"rejected")
    assert (
        partner_browser.post(
            f"/api/requests/{made.reference}", content=tampered, headers=headers
        ).status_code
        == 401
    )
    unsigned = {"Content-Type": "application/json"}
    assert (
        partner_browser.post(
            f"/api/requests/{made.reference}", content=content, headers=unsigned
        ).status_code
        == 401
    )
    assert call(partner_browser, "DR-0000-0000", ok, "not-the-secret").status_code == 401

    assert call(partner_browser, made.reference, ok, SECRETS["theater-b"]).status_code == 404
    assert call(partner_browser, "DR-0000-0000", ok, secret).status_code == 404
    form = partner_browser.post(f"/api/requests/{made.reference}", data={"outcome": "completed"})
    assert form.status_code == 415

    assert call(partner_browser, made.reference, "[1, 2]", secret).status_code == 400
    assert call(partner_browser, made.reference, "not json", secret).status_code == 400
    assert call(partner_browser, made.reference, {"outcome": "rejected"}, secret).status_code == 409
    assert call(partner_browser, made.reference, {"outcome": "perhaps"}, secret).status_code == 409
    with people.connect() as conn:
        assert conn.scalar(select(tables.deletion_requests.c.status)) == "received"


@pytest.mark.parametrize(
    ("body", "status", "said", "details"),
    [
        (
            {"outcome": "rejected", "ground": "other", "reason": "r", "kept": ["name", "nonsense"]},
            400,
            "kept: 'nonsense' is not a field key; the field keys are: email, name,",
            {"field": "kept", "value": "nonsense", "allowed": list(BY_KEY)},
        ),
        (
            {"outcome": "completed", "kept": "name"},
            400,
            "kept: expected a list of field keys, got a JSON string",
            {"field": "kept"},
        ),
        (
            {"outcome": "completed", "kept": [7]},
            400,
            "kept: a JSON number is not a field key",
            {"field": "kept"},
        ),
        (
            {"outcome": True},
            400,
            "outcome: expected a string, got a JSON boolean",
            {"field": "outcome"},
        ),
        ("[1, 2]", 400, "the body is a JSON array; expected an object", {}),
        ("not json", 400, "the body is not JSON (Expecting value: line 1 column 1", {}),
        (
            {"outcome": "perhaps"},
            409,
            "outcome 'perhaps' is not one of: completed, rejected",
            {"field": "outcome", "value": "perhaps", "allowed": ["completed", "rejected"]},
        ),
        (
            {"outcome": "rejected", "ground": "tax", "reason": "We must keep it."},
            409,
            "ground 'tax' is not one of: legal_obligation, legal_claims, public_interest, other",
            {"field": "ground", "value": "tax"},
        ),
        (
            {"outcome": "rejected", "ground": "legal_claims"},
            409,
            "a rejection needs a ground",
            {"field": "reason"},
        ),
    ],
    ids=[
        "unknown-kept",
        "kept-not-a-list",
        "kept-not-strings",
        "outcome-not-a-string",
        "not-an-object",
        "not-json",
        "unknown-outcome",
        "unknown-ground",
        "no-reason",
    ],
)
def test_it_names_the_field_and_value_at_fault_and_the_allowed_ones(
    people: Engine,
    settings: Settings,
    partner_browser: TestClient,
    body: dict[str, object] | str,
    status: int,
    said: str,
    details: dict[str, object],
) -> None:
    made = bob(people, settings)

    response = call(partner_browser, made.reference, body, SECRETS["park-a"])

    assert response.status_code == status, response.text
    answer = response.json()
    assert said in answer["error"]
    assert answer.items() >= details.items()
    with people.connect() as conn:
        assert conn.scalar(select(tables.deletion_requests.c.status)) == "received"
