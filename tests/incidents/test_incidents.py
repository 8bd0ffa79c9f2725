"""Tests for the incident file: loading, reloading, validation with line numbers."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import Engine, Table, func, select, update

from portal.core.blind_index import KdfParams
from portal.core.errors import PortalError
from portal.incidents.file import parse_incident_file
from portal.incidents.stored import (
    get_incident,
    get_partner,
    get_partners,
    list_incidents,
    load_incident_file,
)
from portal.store import tables

DATA = Path(__file__).parent.parent / "data"

VALID = """\
slug = "ticketing-2021"
languages = ["nl", "en"]
discovered = 2021-02-22
contact_email = "privacy@example.org"
regulator_notified = true

[title]
nl = "Datalek bij Tickets"
en = "Data breach at Tickets"

[notice]
nl = \"\"\"
Wat er gebeurde: één bestand lekte.
\"\"\"
en = \"\"\"
What happened: one file leaked.
\"\"\"

[[faq]]
question = { nl = "Wat nu?", en = "What now?" }
answer = { nl = "Let op.", en = "Be careful." }

[[partners]]
slug = "park-a"
name = "Attractiepark A"
contact_email = "privacy@park-a.example"
webhook_url = "https://park-a.example/hooks/erasure"
webhook_secret = "secret"
"""

# Every line of this file has something wrong with it, or with what it leaves out.
BROKEN = """\
slug = "Ticketing 2021"
languages = ["nl", "en", "de"]
discovered = "yesterday"
contact_email = "not an address"
regulator_notified = "yes"
titel = "typo"

[title]
nl = ""

[notice]
nl = "Er lekte iets."

[[faq]]
question = { nl = "Wat nu?" }
answer = { nl = "Let op." }

[[partners]]
slug = "park-a"
name = "Park A"
contact_email = "privacy@park-a.example"
webhook_url = "ftp://park-a.example/"

[[partners]]
slug = "park-a"
name = ""
contact_email = "nobody"
webhook_url = "https://park-b.example/hook"
colour = "blue"
"""


def write(tmp_path: Path, text: str, name: str = "incident.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def count(engine: Engine, table: Table) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(table)) or 0)


def test_it_creates_an_incident_and_its_partners(engine: Engine, tmp_path: Path) -> None:
    result = load_incident_file(engine, write(tmp_path, VALID))

    assert result.created
    assert (result.partners_created, result.partners_updated) == (1, 0)
    with engine.connect() as conn:
        incident = get_incident(conn, "ticketing-2021")
        assert incident is not None
        partners = get_partners(conn, incident.id)
    assert incident == result.incident
    assert incident.languages == ["nl", "en"]
    assert incident.title["en"] == "Data breach at Tickets"
    assert "één bestand" in incident.notice["nl"]
    assert incident.faq == [
        {
            "question": {"nl": "Wat nu?", "en": "What now?"},
            "answer": {"nl": "Let op.", "en": "Be careful."},
        }
    ]
    assert incident.discovered == date(2021, 2, 22)
    assert incident.contact_email == "privacy@example.org"
    assert incident.regulator_notified is True
    assert incident.kdf == KdfParams()
    assert [(p.slug, p.name, p.webhook_url, p.webhook_secret) for p in partners] == [
        ("park-a", "Attractiepark A", "https://park-a.example/hooks/erasure", "secret")
    ]


def test_it_stores_text_as_readable_json(engine: Engine, tmp_path: Path) -> None:
    load_incident_file(engine, write(tmp_path, VALID))

    with engine.connect() as conn:
        notice = conn.scalar(select(tables.incidents.c.notice))
    assert notice is not None and "één" in notice


def test_it_updates_the_incident_and_partners_on_reload(engine: Engine, tmp_path: Path) -> None:
    load_incident_file(engine, write(tmp_path, VALID))
    changed = VALID.replace('name = "Attractiepark A"', 'name = "Park A (renamed)"').replace(
        "regulator_notified = true", "regulator_notified = false"
    )
    changed += (
        '\n[[partners]]\nslug = "zoo-b"\nname = "Dierentuin B"\n'
        'contact_email = "dpo@zoo-b.example"\n'
    )

    result = load_incident_file(engine, write(tmp_path, changed))

    assert not result.created
    assert (result.partners_created, result.partners_updated) == (1, 1)
    assert result.incident.regulator_notified is False
    with engine.connect() as conn:
        partners = get_partners(conn, result.incident.id)
        zoo = get_partner(conn, result.incident.id, "zoo-b")
    assert [(p.slug, p.name) for p in partners] == [
        ("park-a", "Park A (renamed)"),
        ("zoo-b", "Dierentuin B"),
    ]
    assert zoo is not None and zoo.webhook_url is None
    assert count(engine, tables.incidents) == 1


def test_it_keeps_the_stored_kdf_params_on_reload(engine: Engine, tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    load_incident_file(engine, path)
    with engine.begin() as conn:
        conn.execute(update(tables.incidents).values(kdf_time_cost=3, kdf_memory_cost=16384))

    result = load_incident_file(engine, path)

    assert result.incident.kdf == KdfParams(time_cost=3, memory_cost=16384, parallelism=1)


def test_it_reports_every_problem_with_its_line_and_writes_nothing(
    engine: Engine, tmp_path: Path
) -> None:
    path = write(tmp_path, BROKEN)

    with pytest.raises(PortalError) as caught:
        load_incident_file(engine, path)

    lines = str(caught.value).splitlines()
    expected = [
        (1, "slug must be"),
        (2, "unsupported language 'de'"),
        (3, "discovered: expected a date such as 2021-02-22 (without quotes), got a text"),
        (4, "contact_email is not a valid email address"),
        (5, "regulator_notified: expected true or false (without quotes), got a text"),
        (6, "unknown key 'titel'"),
        (8, "title needs a non-empty text for 'en'"),
        (9, "title needs a non-empty text for 'nl'"),
        (11, "notice needs a non-empty text for 'en'"),
        (15, "faq entry 1 question needs a non-empty text for 'en'"),
        (16, "faq entry 1 answer needs a non-empty text for 'en'"),
        (22, "partner 1: webhook_url must be an http(s) URL"),
        (25, "partner slug 'park-a' is used twice"),
        (26, "partner 2: name is required"),
        (27, "partner 2: contact_email is not a valid"),
        (28, "partner 2: webhook_url needs a webhook_secret"),
        (29, "partner 2: unknown key 'colour'"),
    ]
    for line, message in expected:
        assert any(text.startswith(f"{path}:{line}: ") and message in text for text in lines), (
            f"line {line}: {message!r} not in {lines}"
        )
    assert count(engine, tables.incidents) == 0
    assert count(engine, tables.partners) == 0


def test_it_reports_missing_tables_at_the_top(tmp_path: Path) -> None:
    path = write(tmp_path, 'slug = "x"\nlanguages = ["en"]\n')

    with pytest.raises(PortalError) as caught:
        parse_incident_file(path)

    message = str(caught.value)
    for missing in ("title", "notice", "contact_email", "regulator_notified", "[[partners]]"):
        assert missing in message
    assert all(line.startswith(f"{path}:") for line in message.splitlines())


def test_it_reports_a_toml_syntax_error_with_its_line(engine: Engine, tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace('name = "Attractiepark A"', 'name = "Attractiepark A'))

    with pytest.raises(PortalError) as caught:
        load_incident_file(engine, path)

    assert str(caught.value).startswith(f"{path}:25: ")
    assert count(engine, tables.incidents) == 0


@pytest.mark.parametrize(
    ("written", "instead", "line", "said"),
    [
        (
            "regulator_notified = true",
            "regulator_notified = ture",
            5,
            "regulator_notified: expected true or false (without quotes), got ture",
        ),
        (
            "discovered = 2021-02-22",
            "discovered = 2021-02-30",
            3,
            "discovered: expected a date such as 2021-02-22 (without quotes), got 2021-02-30 "
            "(not a valid date)",
        ),
        (
            'slug = "ticketing-2021"',
            "slug = ticketing-2021",
            1,
            'slug: expected a slug in quotes, such as "ticketing-2021", got ticketing-2021',
        ),
        (
            'languages = ["nl", "en"]',
            'languages = [\n  "nl",\n  en,\n]',
            4,
            'languages: expected a list of languages in quotes, such as ["nl", "en"], got en',
        ),
        (
            'en = "What now?" }',
            "en = What now? }",
            20,
            "faq entry 1: question.en: expected a text in quotes",
        ),
        (
            'name = "Attractiepark A"',
            'name = "Attractiepark A',
            25,
            'partner 1: name: expected a name in quotes (1-200 characters), got "Attractiepark A '
            "(a text without its closing quote)",
        ),
        (
            'name = "Attractiepark A"',
            'name = "Attractiepark A"\nname = "Park A"',
            26,
            "partner 1: name: given twice",
        ),
        (
            'languages = ["nl", "en"]',
            'languages = ["nl", "en"',
            2,
            'languages: expected a list of languages in quotes, such as ["nl", "en"], got '
            '["nl", "en" (a list without its closing ])',
        ),
    ],
    ids=[
        "boolean",
        "date",
        "bare-slug",
        "list-over-lines",
        "inline-table",
        "open-quote",
        "twice",
        "list-never-closed",
    ],
)
def test_it_names_the_key_and_what_it_takes_for_a_value_toml_cannot_read(
    tmp_path: Path, written: str, instead: str, line: int, said: str
) -> None:
    path = write(tmp_path, VALID.replace(written, instead))

    with pytest.raises(PortalError) as caught:
        parse_incident_file(path)

    assert str(caught.value).startswith(f"{path}:{line}: {said}")


def test_it_never_prints_a_webhook_secret_it_cannot_read(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace('webhook_secret = "secret"', "webhook_secret = s3cr3t"))

    with pytest.raises(PortalError) as caught:
        parse_incident_file(path)

    assert str(caught.value) == (
        f"{path}:28: partner 1: webhook_secret: expected a text in quotes, got something else "
        "(not a TOML value)"
    )


def test_it_names_the_line_that_opens_a_text_that_never_closes(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.rstrip().rsplit("\n", 1)[0] + '\nwebhook_secret = """\nsecret\n')

    with pytest.raises(PortalError) as caught:
        parse_incident_file(path)

    assert str(caught.value).startswith(f"{path}:28: partner 1: webhook_secret: expected a text")


@pytest.mark.parametrize(
    ("left_out", "line", "said"),
    [
        ('slug = "ticketing-2021"\n', 1, 'slug is required: a slug in quotes, such as "ticketing-'),
        ('languages = ["nl", "en"]\n', 1, "languages is required: a list of languages"),
        ('contact_email = "privacy@example.org"\n', 1, "contact_email is required: an email"),
        ("regulator_notified = true\n", 1, "regulator_notified is required: true or false"),
        (
            'slug = "park-a"\n',
            23,
            'partner 1: slug is required: a slug in quotes, such as "park-a"',
        ),
        ('name = "Attractiepark A"\n', 23, "partner 1: name is required (1-200 characters)"),
    ],
    ids=[
        "slug",
        "languages",
        "contact-email",
        "regulator-notified",
        "partner-slug",
        "partner-name",
    ],
)
def test_it_says_required_for_a_key_left_out(
    tmp_path: Path, left_out: str, line: int, said: str
) -> None:
    path = write(tmp_path, VALID.replace(left_out, "", 1))

    with pytest.raises(PortalError) as caught:
        parse_incident_file(path)

    lines = str(caught.value).splitlines()
    assert any(text.startswith(f"{path}:{line}: {said}") for text in lines), lines


def test_it_reports_a_missing_file(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"

    with pytest.raises(PortalError, match="no such file") as caught:
        load_incident_file(engine, path)

    assert str(caught.value) == f"cannot read {path}: no such file"


def test_it_lists_incidents(engine: Engine, tmp_path: Path) -> None:
    load_incident_file(engine, write(tmp_path, VALID))
    load_incident_file(engine, DATA / "incident.toml")

    with engine.connect() as conn:
        slugs = [i.slug for i in list_incidents(conn)]
        missing = get_incident(conn, "nope")
    assert slugs == ["ticketing-2021", "webshop-2024"]
    assert missing is None


def test_it_falls_back_to_the_default_language(engine: Engine, tmp_path: Path) -> None:
    incident = load_incident_file(engine, write(tmp_path, VALID)).incident

    assert incident.text(incident.title, "en") == "Data breach at Tickets"
    assert incident.text(incident.title, "fr") == "Datalek bij Tickets"


def test_it_accepts_an_incident_without_faq_or_date(tmp_path: Path) -> None:
    text = VALID.replace("discovered = 2021-02-22\n", "")
    text = text[: text.index("[[faq]]")] + text[text.index("[[partners]]") :]

    data = parse_incident_file(write(tmp_path, text))

    assert data["faq"] == []
    assert data["discovered"] is None


def test_it_takes_stronger_blind_index_parameters_for_a_new_incident(
    engine: Engine, tmp_path: Path
) -> None:
    text = VALID + "\n[blind_index]\nmemory_kib = 65536\ntime_cost = 3\n"
    result = load_incident_file(engine, write(tmp_path, text))
    assert result.incident.kdf == KdfParams(time_cost=3, memory_cost=65536, parallelism=1)


def test_it_refuses_to_change_the_parameters_of_a_stored_incident(
    engine: Engine, tmp_path: Path
) -> None:
    load_incident_file(engine, write(tmp_path, VALID))
    stronger = VALID + "\n[blind_index]\ntime_cost = 2\n"
    with pytest.raises(PortalError, match="keeps its blind_index parameters"):
        load_incident_file(engine, write(tmp_path, stronger))
    with engine.connect() as conn:
        assert conn.scalar(select(tables.incidents.c.kdf_time_cost)) == 1


def test_it_reports_bad_blind_index_parameters_with_their_line(tmp_path: Path) -> None:
    text = VALID + "\n[blind_index]\nmemory_kib = 1024\nsalt = 'x'\n"
    with pytest.raises(PortalError) as caught:
        parse_incident_file(write(tmp_path, text))
    lines = len(VALID.splitlines())
    assert f"incident.toml:{lines + 3}: blind_index.memory_kib must be" in str(caught.value)
    assert f"incident.toml:{lines + 4}: blind_index: unknown key 'salt'" in str(caught.value)


def test_it_refuses_a_slug_that_the_portal_uses_itself(tmp_path: Path) -> None:
    text = VALID.replace('slug = "', 'slug = "static" # ', 1)
    with pytest.raises(PortalError, match="'static' is taken"):
        parse_incident_file(write(tmp_path, text))


def test_it_refuses_a_partner_called_all(tmp_path: Path) -> None:
    text = VALID.replace('slug = "park-a"', 'slug = "all"')
    assert text != VALID
    with pytest.raises(PortalError, match="'all' is taken"):
        parse_incident_file(write(tmp_path, text))


def test_it_refuses_control_characters_in_a_name_or_webhook(engine: Engine, tmp_path: Path) -> None:
    """A NUL would reach the database (PostgreSQL refuses it) and the partner's mail."""
    text = VALID.replace('name = "Attractiepark A"', 'name = "Attractiepark\\u0000 A"')
    assert text != VALID
    with pytest.raises(PortalError, match="partner 1: name must be one line"):
        load_incident_file(engine, write(tmp_path, text))
    assert count(engine, tables.partners) == 0
