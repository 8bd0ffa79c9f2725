"""Property tests: normalisation, the CSV reader and the incident loader never crash or
write on bad input; the lookup form never fails or echoes what it is given."""

from __future__ import annotations

import html
import re
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select
from starlette.testclient import TestClient

from portal import db, tables
from portal.app import create_app
from portal.blind_index import MAX_ADDRESS_OCTETS, InvalidEmail, normalise
from portal.config import Settings
from portal.errors import PortalError
from portal.i18n import SUPPORTED, translations
from portal.importer import import_csv
from portal.incidents import load_incident_file
from tests.databases import Backend
from tests.factories import INCIDENT

SLUG = "ticketing-2021"
# Every message a refusal can carry, in English and as the pages translate it: a fixed set,
# so none of them can echo the input.
MESSAGES = set(InvalidEmail.MESSAGES.values()) | {
    translations(lang).gettext(text)
    for text in InvalidEmail.MESSAGES.values()
    for lang in SUPPORTED
}
SOME = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ascii_addresses = st.emails()
anything = st.text(max_size=300)
near_addresses = st.builds(
    lambda local, domain, noise: f"{local}@{domain}{noise}",
    st.text(min_size=0, max_size=70),
    st.text(alphabet=string.ascii_letters + ".-аορеí\u200b\x00\r\n", max_size=70),
    st.sampled_from(["", ".org", ".com", "\n", " ", ".рф"]),
)


# -- normalise --------------------------------------------------------------------------------


@SOME
@given(st.one_of(anything, near_addresses, ascii_addresses))
def test_normalise_refuses_or_returns_a_clean_address(address: str) -> None:
    try:
        result = normalise(address)
    except InvalidEmail as refused:
        assert str(refused) in MESSAGES, "the message never carries the input"
        return
    assert len(result.encode()) <= MAX_ADDRESS_OCTETS
    assert result == result.strip() == result.lower()
    assert not re.search(r"[\x00-\x1f\x7f\s<>]", result)
    local, domain = result.rsplit("@", 1)
    assert domain.isascii() and local
    assert normalise(result) == result, "normalising twice changes nothing"


@SOME
@given(ascii_addresses, st.sampled_from(["", " ", "\t", "  \n"]))
def test_normalise_ignores_case_and_surrounding_space(address: str, space: str) -> None:
    try:
        expected = normalise(address)
    except InvalidEmail:
        assume(False)
        raise
    assert normalise(space + address.upper() + space) == expected


# -- the CSV reader ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(
    tmp_path_factory: pytest.TempPathFactory, backend: Backend
) -> Iterator[tuple[Engine, Settings, Path]]:
    folder = tmp_path_factory.mktemp("properties")
    config = Settings(
        instance_dir=folder,
        database_url=backend.new_database(folder),
        secret_key="k",
        pepper=b"p",
    )
    engine = db.make_engine(config.database_url)
    db.migrate(engine)
    (folder / "incident.toml").write_text(INCIDENT, encoding="utf-8")
    load_incident_file(engine, folder / "incident.toml")
    yield engine, config, folder
    engine.dispose()


def snapshot(engine: Engine) -> dict[str, list[Any]]:
    with engine.connect() as conn:
        return {
            name: sorted(map(tuple, conn.execute(select(table)).all()), key=repr)
            for name, table in tables.metadata.tables.items()
        }


cells = st.one_of(
    st.sampled_from(["alice@example.org", "BOB@example.org", "", " ", "x", "0612345678"]),
    st.text(max_size=30),
)
headers = st.lists(
    st.one_of(st.sampled_from(["email", "E-mailadres", "naam", "Telefoon", "IBAN"]), cells),
    min_size=0,
    max_size=5,
)


def csv_text(header: list[str], rows: list[list[str]], delimiter: str) -> str:
    def cell(value: str) -> str:
        if any(ch in value for ch in f'"{delimiter}\r\n'):
            return '"' + value.replace('"', '""') + '"'
        return value

    return "\n".join(delimiter.join(map(cell, row)) for row in [header, *rows])


@FEW
@given(
    st.one_of(
        st.binary(max_size=400),
        st.builds(
            lambda h, r, d: csv_text(h, r, d).encode("utf-8", "surrogatepass"),
            headers,
            st.lists(st.lists(cells, max_size=6), max_size=6),
            st.sampled_from([",", ";", "\t"]),
        ),
    ),
    st.booleans(),
)
def test_the_csv_reader_fails_cleanly_and_writes_nothing_on_bad_input(
    store: tuple[Engine, Settings, Path], content: bytes, dry_run: bool
) -> None:
    engine, config, folder = store
    path = folder / "leak.csv"
    path.write_bytes(content)
    before = snapshot(engine)
    try:
        import_csv(
            engine, config, incident=SLUG, partner="park-a", path=path, workers=1, dry_run=dry_run
        )
    except PortalError as refused:
        assert str(refused).strip()
        assert snapshot(engine) == before, "a refused file wrote something"
        return
    if dry_run:
        assert snapshot(engine) == before, "a dry run wrote something"


# -- the incident loader ----------------------------------------------------------------------


def mutate(text: str, cut: int, length: int, insert: str) -> str:
    at = cut % (len(text) + 1)
    return text[:at] + insert + text[at + length :]


@FEW
@given(
    st.one_of(
        st.text(max_size=400),
        st.builds(
            mutate,
            st.just(INCIDENT),
            st.integers(0, len(INCIDENT)),
            st.integers(0, 40),
            st.one_of(st.text(max_size=20), st.sampled_from(['"', "[", "]]", "=", "\n", "slug"])),
        ),
    )
)
def test_the_incident_loader_fails_cleanly_and_writes_nothing_on_bad_input(
    store: tuple[Engine, Settings, Path], text: str
) -> None:
    engine, _, folder = store
    path = folder / "fuzzed.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    before = snapshot(engine)
    try:
        load_incident_file(engine, path)
    except PortalError as refused:
        assert str(refused).strip()
        assert snapshot(engine) == before, "a refused incident file wrote something"


# -- the lookup form, in process --------------------------------------------------------------


@pytest.fixture(scope="module")
def client(store: tuple[Engine, Settings, Path]) -> Iterator[TestClient]:
    _, config, _ = store
    with TestClient(create_app(config, deliver_mail=False)) as client:
        yield client


@FEW
@given(st.one_of(anything, near_addresses))
def test_the_lookup_form_answers_303_or_400_and_never_echoes(
    client: TestClient, address: str
) -> None:
    page = client.get(f"/{SLUG}/")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token
    response = client.post(
        f"/{SLUG}/lookup",
        data={"email": address, "csrf_token": token.group(1)},
        follow_redirects=False,
    )

    assert response.status_code in (303, 400)
    if response.status_code == 400:
        assert 'data-error="email"' in response.text
        # The form keeps what was typed, escaped, in the field's value, and only there.
        field = re.search(r'<input id="email"[^>]*value="([^"]*)"', response.text)
        assert field, "the email field comes back"
        assert html.unescape(field.group(1)) == "".join(c for c in address if c.isprintable())[:320]
        rest = response.text.replace(field.group(0), "")
        stripped = address.strip()
        known = (INCIDENT, page.text, *MESSAGES)
        if len(stripped) > 3 and not any(stripped in text for text in known):
            assert stripped not in rest
