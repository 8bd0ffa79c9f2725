"""Property tests: normalisation, the CSV reader and the incident loader never crash or
write on bad input; the lookup form never fails or echoes what it is given."""

from __future__ import annotations

import html
import re
import string
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from httpx import Response
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select
from starlette.testclient import TestClient

from portal.app import create_app
from portal.core.blind_index import MAX_ADDRESS_OCTETS, InvalidEmail, normalise
from portal.core.config import Settings
from portal.core.errors import PortalError
from portal.core.i18n import SUPPORTED, translations
from portal.incidents.importer import import_csv
from portal.incidents.stored import load_incident_file
from portal.store import tables
from tests.databases import Backend
from tests.factories import INCIDENT, incident_store

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
    url = backend.new_database(folder)
    engine, config = incident_store(folder, url, secret_key="k", pepper=b"p")
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


# Inputs that would show as markup, or break out of an attribute, were they echoed unescaped.
MARKUP = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "'><svg onload=alert(1)>",
    "</form><b>bold</b>",
    "<!--",
    "&lt;b&gt;&amp;",
    "{{ 7 * 7 }}",
]
markup_inputs = st.builds(
    lambda before, markup, after: before + markup + after,
    st.text(max_size=20),
    st.sampled_from(MARKUP),
    st.sampled_from(["", "@example.org", "@", " "]),
)
# What the form's error page shows for an input of its own, to compare the others with.
CONTROL = "x"


class Tokens(HTMLParser):
    """A page as the browser reads it: tags with their attributes, and non-blank text."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tokens: list[tuple[str, ...]] = []
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tokens.append(("tag", tag, *(f"{name}={value}" for name, value in attrs)))

    def handle_endtag(self, tag: str) -> None:
        self.tokens.append(("end", tag))

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.tokens.append(("text", " ".join(data.split())))

    def handle_comment(self, data: str) -> None:
        self.tokens.append(("comment", data))


def without_value(token: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(part for part in token if not part.startswith("value="))


def shape(token: tuple[str, ...]) -> tuple[str, ...]:
    """A token without its text: the kind, and for a tag its name and attribute names."""
    if token[0] in ("text", "comment"):
        return token[:1]
    return (token[0], token[1], *(part.split("=", 1)[0] for part in token[2:]))


def assert_only_the_field_echoes(page: str, control: str, typed: str) -> None:
    """The page differs from the control input's page only in the email field's value, which
    holds what was typed, and in the error message, one of a fixed set: the input shows
    nowhere else, neither as markup nor as text nor in another attribute."""
    ours, theirs = Tokens(page).tokens, Tokens(control).tokens
    assert list(map(shape, ours)) == list(map(shape, theirs)), "the input changed the markup"
    for mine, other in zip(ours, theirs, strict=True):
        if mine == other:
            continue
        if mine[:2] == ("tag", "input") and "id=email" in mine:
            assert without_value(mine) == without_value(other), "the input reached an attribute"
            assert f"value={typed}" in mine, "the field keeps what was typed"
        else:
            assert mine[0] == "text" and mine[1] in MESSAGES, f"the input shows in {mine}"
    # And in the source that value is escaped: it cannot end the attribute or open a tag.
    field = re.search(r'<input id="email"[^>]*\svalue="([^"]*)"', page)
    assert field, "the email field comes back"
    assert "<" not in field.group(1) and ">" not in field.group(1)
    assert html.unescape(field.group(1)) == typed


@FEW
@example(CONTROL)
@example("inva")  # once matched aria-invalid, when the check was a substring search
@example('"><script>alert(1)</script>')
@example("</form><b>bold</b>@example.org")
@given(st.one_of(anything, near_addresses, markup_inputs))
def test_the_lookup_form_answers_303_or_400_and_never_echoes(
    client: TestClient, address: str
) -> None:
    response = post_lookup(client, address)

    assert response.status_code in (303, 400)
    if response.status_code == 303:
        assert response.headers["location"] == f"/{SLUG}/sent"
        return
    assert 'data-error="email"' in response.text
    typed = "".join(c for c in address if c.isprintable())[:320]
    assert_only_the_field_echoes(response.text, post_lookup(client, CONTROL).text, typed)


def post_lookup(client: TestClient, address: str) -> Response:
    page = client.get(f"/{SLUG}/")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token
    return client.post(
        f"/{SLUG}/lookup",
        data={"email": address, "csrf_token": token.group(1)},
        follow_redirects=False,
    )
