"""A forward="daily" partner's queue page: open requests, requests.csv, uploads of outcomes."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, select
from starlette.testclient import TestClient

from portal.app import create_app
from portal.core.config import Settings
from portal.incidents.importer import import_csv
from portal.requests.deletions import DeletionRequest
from portal.requests.digests import queue_link
from portal.store import tables
from tests.factories import (
    ALICE,
    BOB,
    THEATER_B,
    ask_deletion,
    load_daily_partner,
    write_csv,
)
from tests.server import csrf

BASE = "http://127.0.0.1:8000"
HEADER = "reference,outcome,ground,reason,partner_reference\n"


@pytest.fixture
def requests_made(engine: Engine, settings: Settings, tmp_path: Path) -> list[DeletionRequest]:
    load_daily_partner(engine, settings, tmp_path)
    return [ask_deletion(engine, settings, who, "park-a")[0] for who in (ALICE, BOB)]


@pytest.fixture
def partner(requests_made: list[DeletionRequest], settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, deliver_mail=False), base_url=BASE) as client:
        yield client


def queue_path(engine: Engine, settings: Settings) -> str:
    p = tables.partners.c
    with engine.connect() as conn:
        partner_id = conn.scalar(select(p.id).where(p.slug == "park-a"))
    assert partner_id is not None
    return queue_link(settings, partner_id).removeprefix(BASE)


def upload(client: TestClient, path: str, data: bytes) -> object:
    token = csrf(client.get(path).text)
    return client.post(
        f"{path}/outcomes",
        data={"csrf_token": token},
        files={"file": ("outcomes.csv", data, "text/csv")},
        follow_redirects=False,
    )


def statuses(engine: Engine) -> dict[str, str]:
    t = tables.deletion_requests.c
    with engine.connect() as conn:
        return {r: s for r, s in conn.execute(select(t.reference, t.status))}


def audit_details(engine: Engine) -> list[tuple[str, str, str | None]]:
    a = tables.audit_log.c
    with engine.connect() as conn:
        return [
            (x, y, z)
            for x, y, z in conn.execute(select(a.action, a.object, a.detail).order_by(a.id))
        ]


def test_it_lists_the_open_requests_with_their_due_dates(
    engine: Engine, settings: Settings, partner: TestClient, requests_made: list[DeletionRequest]
) -> None:
    path = queue_path(engine, settings)
    page = partner.get(path)

    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    for made in requests_made:
        row = re.search(rf'data-request="{made.reference}" data-due="([\d-]+)"', page.text)
        assert row is not None and row.group(1) == made.due_on.isoformat()
    assert ALICE in page.text and BOB in page.text
    assert f'href="{path}/requests.csv"' in page.text
    assert re.search(
        rf'<form method="post" enctype="multipart/form-data" action="{re.escape(path)}/outcomes"',
        page.text,
    )
    assert 'type="file"' in page.text and 'name="file"' in page.text
    assert ("partner_queue_viewed", "ticketing-2021/park-a", "2 open request(s)") in (
        audit_details(engine)
    )


def test_it_refuses_a_forged_or_another_purposes_link(
    engine: Engine, settings: Settings, partner: TestClient
) -> None:
    path = queue_path(engine, settings)
    assert partner.get(path + "x").status_code == 400
    assert partner.get(path.replace("/r/partner/", "/r/partner/x")).status_code == 400


def test_it_downloads_the_requests_as_csv_with_formulas_neutralised(
    engine: Engine, settings: Settings, partner: TestClient, requests_made: list[DeletionRequest]
) -> None:
    with engine.begin() as conn:  # an address that a spreadsheet would run as a formula
        t = tables.deletion_requests
        conn.execute(
            t.update().where(t.c.id == requests_made[1].id).values(email="=cmd@example.org")
        )
    response = partner.get(queue_path(engine, settings) + "/requests.csv")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == ["reference", "email", "fields", "received", "due", "status"]
    by_reference = {row[0]: row for row in rows[1:]}
    alice = by_reference[requests_made[0].reference]
    assert alice[1] == ALICE and set(alice[2].split()) == {"email", "name", "phone", "postcode"}
    assert alice[4] == requests_made[0].due_on.isoformat() and alice[5] == "received"
    assert by_reference[requests_made[1].reference][1] == "'=cmd@example.org"
    (download,) = [a for a in audit_details(engine) if a[0] == "partner_queue_downloaded"]
    assert download[2] == "2 request(s)"


def test_it_applies_each_row_as_a_single_report_and_shows_the_refused_ones(
    engine: Engine, settings: Settings, partner: TestClient, requests_made: list[DeletionRequest]
) -> None:
    alice, bob = (r.reference for r in requests_made)
    path = queue_path(engine, settings)
    body = (
        HEADER
        + f"{alice},completed,,,PA-1\n"
        + f"{bob},rejected,,,\n"  # a rejection without ground and reason
        + "DR-0000-0000,completed,,,\n"  # unknown
    )

    response = upload(partner, path, body.encode())

    assert response.status_code == 303  # type: ignore[attr-defined]
    page = partner.get(response.headers["location"])  # type: ignore[attr-defined]
    assert 'data-applied="1"' in page.text and 'data-refused="2"' in page.text
    assert re.search(r'data-refused-line="3">[^<]*a rejection needs a ground', page.text)
    assert re.search(r'data-refused-line="4">[^<]*no such request of yours', page.text)
    assert statuses(engine) == {alice: "completed", bob: "received"}
    assert f'data-request="{alice}"' not in page.text, "closed: no longer open"
    with engine.connect() as conn:
        kinds = list(conn.scalars(select(tables.outbox.c.kind)))
    assert "deletion_completed" in kinds, "the person is told, as on any closing"
    (entry,) = [a for a in audit_details(engine) if a[0] == "partner_outcomes_uploaded"]
    assert entry[2] == "1 applied, 2 refused"
    e = tables.deletion_events.c
    with engine.connect() as conn:
        closing = conn.execute(
            select(e.actor, e.via).where(
                e.request_id == requests_made[0].id, e.to_status == "completed"
            )
        ).one()
    assert tuple(closing) == ("partner:park-a", "upload"), "the operator sees who closed it"


def test_it_refuses_another_partners_reference_as_an_unknown_one(
    engine: Engine, settings: Settings, partner: TestClient, tmp_path: Path
) -> None:
    theater = write_csv(tmp_path / "theater-b.csv", THEATER_B)
    import_csv(engine, settings, incident="ticketing-2021", partner="theater-b", path=theater)
    (theirs,) = ask_deletion(engine, settings, ALICE, "theater-b")
    path = queue_path(engine, settings)

    response = upload(partner, path, f"{HEADER}{theirs.reference},completed,,,\n".encode())

    page = partner.get(response.headers["location"])  # type: ignore[attr-defined]
    assert 'data-refused="1"' in page.text and "no such request of yours" in page.text
    assert statuses(engine)[theirs.reference] == "received"


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"ref,result\nGOOD", "the header must be"),
        (HEADER.encode() + b'GOOD"DR-1,completed,,,\n', "line 3"),
        (HEADER.encode() + b"GOODDR-1,completed,,\xff\xfe,\n", "not UTF-8"),
        (HEADER.encode() + b"GOODDR-1,completed,,,,extra\n", "line 3: 6 cells"),
        (b"", "the header must be"),
    ],
    ids=["bad-header", "unclosed-quote", "not-utf8", "extra-cell", "empty"],
)
def test_it_refuses_a_malformed_file_whole(
    engine: Engine,
    settings: Settings,
    partner: TestClient,
    requests_made: list[DeletionRequest],
    data: bytes,
    why: str,
) -> None:
    alice = requests_made[0].reference
    path = queue_path(engine, settings)
    good_row = f"{alice},completed,,,\n".encode()
    body = data.replace(b"GOOD", good_row)  # a good row before the fault: not applied

    response = upload(partner, path, body)

    assert response.status_code == 400  # type: ignore[attr-defined]
    assert why in response.text  # type: ignore[attr-defined]
    assert statuses(engine)[alice] == "received", "nothing applied"
    assert any(a[0] == "partner_outcomes_refused" for a in audit_details(engine))


@pytest.mark.anyio
async def test_it_stops_an_upload_over_5_mb_while_it_streams(
    engine: Engine, settings: Settings, requests_made: list[DeletionRequest]
) -> None:
    path = queue_path(engine, settings)
    app = create_app(settings, deliver_mail=False)
    transport = httpx.ASGITransport(app=app)
    sent = 0
    alice = requests_made[0].reference

    async def body(token: str) -> AsyncIterator[bytes]:
        nonlocal sent
        boundary = b"--b0undary\r\n"
        yield boundary + b'Content-Disposition: form-data; name="csrf_token"\r\n\r\n'
        yield token.encode() + b"\r\n" + boundary
        yield b'Content-Disposition: form-data; name="file"; filename="o.csv"\r\n'
        yield b"Content-Type: text/csv\r\n\r\n" + HEADER.encode()
        yield f"{alice},completed,,,\n".encode()
        for _ in range(100):  # 100 MB, if it were all read
            sent += 1
            yield b"x" * (1024 * 1024)

    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        token = csrf((await client.get(path)).text)
        response = await client.post(
            f"{path}/outcomes",
            content=body(token),
            headers={"content-type": "multipart/form-data; boundary=b0undary"},
        )
    app.state.engine.dispose()

    assert response.status_code == 400 and "over 5 MB" in response.text
    assert sent <= 6, "the rest of the body was not read"
    assert statuses(engine)[alice] == "received"


def test_it_refuses_an_upload_without_the_csrf_token(
    engine: Engine, settings: Settings, partner: TestClient, requests_made: list[DeletionRequest]
) -> None:
    path = queue_path(engine, settings)
    partner.get(path)
    row = f"{HEADER}{requests_made[0].reference},completed,,,\n".encode()
    response = partner.post(
        f"{path}/outcomes", files={"file": ("o.csv", row, "text/csv")}, follow_redirects=False
    )
    assert response.status_code == 403
    assert statuses(engine)[requests_made[0].reference] == "received"


def test_it_keeps_no_address_typed_into_a_refused_row(
    engine: Engine, settings: Settings, partner: TestClient
) -> None:
    path = queue_path(engine, settings)
    upload(partner, path, f"{HEADER}{ALICE},completed,,,\n".encode())
    with engine.connect() as conn:
        kept = list(conn.scalars(select(tables.partner_uploads.c.refusals)))
        audit = list(conn.scalars(select(tables.audit_log.c.detail)))
    assert kept and not any(ALICE in text for text in kept + [a or "" for a in audit])
