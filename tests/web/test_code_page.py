"""/{incident}/code: a letter's code opens the results of that code, forgivingly typed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from starlette.testclient import TestClient

from portal.app import create_app
from portal.core.config import Settings
from portal.reach.letters import Options, make_letters
from portal.store import tables
from tests.factories import CAROL, load_personas, write_csv
from tests.server import csrf, lookup, outbox_links

SLUG = "ticketing-2021"
ROWS = [
    ["E-mailadres", "Naam", "Adres", "Postcode", "Telefoon"],
    ["", "Dirk de Vries", "Kerkstraat 12", "1234 AB", "0612345678"],
]


@pytest.fixture
def code(engine: Engine, settings: Settings, tmp_path: Path) -> str:
    load_personas(engine, settings, tmp_path)
    path = write_csv(tmp_path / "letters.csv", ROWS)
    summary = make_letters(
        engine, settings, incident=SLUG, partner="park-a", path=path, options=Options()
    )
    return summary.letters[0].code


@pytest.fixture
def client(settings: Settings, code: str) -> Iterator[TestClient]:
    app = create_app(replace(settings, limit_per_code_client="3/hour"), deliver_mail=False)
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        yield client


def post_code(client: TestClient, typed: str) -> object:
    page = client.get(f"/{SLUG}/code")
    return client.post(
        f"/{SLUG}/code",
        data={"code": typed, "csrf_token": csrf(page.text)},
        follow_redirects=False,
    )


def test_it_shows_the_form(client: TestClient) -> None:
    page = client.get(f"/{SLUG}/code")
    assert page.status_code == 200
    assert f'<form method="post" action="/{SLUG}/code"' in page.text
    assert 'name="code"' in page.text and 'name="csrf_token"' in page.text


def test_a_code_typed_loosely_opens_its_results(client: TestClient, code: str) -> None:
    typed = code.lower().replace("-", " ").replace("0", "o").replace("1", "l")
    answer = post_code(client, typed)
    assert answer.status_code == 303  # type: ignore[attr-defined]
    assert answer.headers["location"] == f"/{SLUG}/results"  # type: ignore[attr-defined]
    page = client.get(f"/{SLUG}/results")
    assert re.findall(r'data-partner="([^"]+)"', page.text) == ["park-a"]
    assert "data-address" not in page.text.replace("data-address-results", "")
    assert "data-code-address" in page.text  # it offers an address for the answers
    part = page.text.split('data-partner="park-a"', 1)[1]
    assert 'data-field="phone"' in part and 'data-field="email"' not in part


def test_an_unknown_code_gives_the_form_again(client: TestClient, code: str) -> None:
    wrong = ("1" if code[0] != "1" else "2") + code[1:]
    for typed in (wrong, "not a code"):
        answer = post_code(client, typed)
        assert answer.status_code == 400  # type: ignore[attr-defined]
        assert 'data-error="code"' in answer.text  # type: ignore[attr-defined]
    assert client.get(f"/{SLUG}/results", follow_redirects=False).status_code == 303


def test_it_limits_the_codes_tried_per_client(client: TestClient) -> None:
    statuses = [post_code(client, "X").status_code for _ in range(4)]  # type: ignore[attr-defined]
    assert statuses == [400, 400, 400, 429]


def test_each_use_is_audited_without_the_code(
    client: TestClient, code: str, engine: Engine
) -> None:
    post_code(client, code)
    post_code(client, "nonsense")
    with engine.connect() as conn:
        rows = conn.execute(select(tables.audit_log)).all()
    actions = [r.action for r in rows if r.action.startswith("code_")]
    assert actions == ["code_used", "code_refused"]
    flat = " ".join(f"{r.object} {r.detail}" for r in rows)
    assert code not in flat and code.replace("-", "") not in flat


def test_a_code_session_can_ask_for_deletion(client: TestClient, code: str) -> None:
    post_code(client, code)
    page = client.get(f"/{SLUG}/results")
    answer = client.post(
        f"/{SLUG}/deletion",
        data={"partner": "park-a", "csrf_token": csrf(page.text)},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    page = client.get(f"/{SLUG}/results")
    part = page.text.split('data-partner="park-a"', 1)[1].split("</section>", 1)[0]
    assert 'data-deletion-status="' in part


def test_an_address_added_to_a_code_session_gets_the_closing_mail(
    client: TestClient, code: str, engine: Engine
) -> None:
    post_code(client, code)
    page = client.get(f"/{SLUG}/results")
    client.post(
        f"/{SLUG}/deletion",
        data={"partner": "park-a", "csrf_token": csrf(page.text)},
        follow_redirects=False,
    )
    d = tables.deletion_requests.c
    with engine.connect() as conn:
        assert conn.scalars(select(d.email)).all() == [None]
    lookup(client, CAROL, on=f"/{SLUG}/results")
    link = outbox_links(engine)[-1].removeprefix("http://127.0.0.1:8000")
    confirm = client.get(link)
    answer = client.post(link, data={"csrf_token": csrf(confirm.text)}, follow_redirects=False)
    assert answer.status_code == 303
    with engine.connect() as conn:
        assert conn.scalars(select(d.email)).all() == [CAROL]
    page = client.get(f"/{SLUG}/results")
    assert 'data-partner="park-a"' in page.text and 'data-deletion-status="' in page.text


def test_the_partner_reads_that_a_code_request_has_no_address(
    client: TestClient, code: str, engine: Engine
) -> None:
    post_code(client, code)
    page = client.get(f"/{SLUG}/results")
    client.post(
        f"/{SLUG}/deletion",
        data={"partner": "park-a", "csrf_token": csrf(page.text)},
        follow_redirects=False,
    )
    with engine.connect() as conn:
        mail = conn.scalars(
            select(tables.outbox.c.body_text).where(tables.outbox.c.kind == "partner_request")
        ).all()
    assert len(mail) == 1 and "written to by post" in str(mail[0])
    link = re.search(r"http://\S+/r/\S+", str(mail[0])).group(0)  # type: ignore[union-attr]
    partner_page = client.get(link.removeprefix("http://127.0.0.1:8000"))
    assert "per brief aangeschreven" in partner_page.text  # in the partner's language
