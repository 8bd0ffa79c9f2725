"""Tests for the CSV import: ugly files, column mapping, idempotence, nothing stored in clear."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from portal.core import fields
from portal.core.blind_index import blind_index, normalise
from portal.core.config import Settings
from portal.core.errors import PortalError
from portal.incidents import importer
from portal.incidents.columns import plan_columns
from portal.incidents.importer import ImportSummary, Skipped, import_csv
from portal.incidents.stored import get_incident, get_partner, load_incident_file
from portal.store import db, tables
from tests.databases import stored_bytes

DATA = Path(__file__).parent.parent / "data"


@pytest.fixture
def incident(engine: Engine) -> str:
    return load_incident_file(engine, DATA / "incident.toml").incident.slug


def write(tmp_path: Path, text: str, name: str = "leak.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def run(engine: Engine, settings: Settings, path: Path, **options: object) -> ImportSummary:
    options.setdefault("partner", "shop-a")
    return import_csv(engine, settings, incident="webshop-2024", path=path, **options)  # type: ignore[arg-type]


def exposures(engine: Engine, partner: str = "shop-a") -> dict[bytes, set[str]]:
    with engine.connect() as conn:
        found = get_incident(conn, "webshop-2024")
        assert found is not None
        target = get_partner(conn, found.id, partner)
        assert target is not None
        t = tables.exposures
        rows = conn.execute(select(t.c.bidx, t.c.fields).where(t.c.partner_id == target.id))
        return {bidx: {f.key for f in fields.from_bits(bits)} for bidx, bits in rows}


def bidx_of(engine: Engine, settings: Settings, address: str) -> bytes:
    """The index a lookup computes for an address: must equal what the import stored."""
    with engine.connect() as conn:
        salt = db.ensure_salt(conn)
        found = get_incident(conn, "webshop-2024")
    assert found is not None
    return blind_index(normalise(address), pepper=settings.pepper, salt=salt, params=found.kdf)


def test_it_imports_a_dutch_excel_export(engine: Engine, settings: Settings, incident: str) -> None:
    summary = run(engine, settings, DATA / "dutch.csv")

    assert (summary.rows, summary.imported, summary.addresses) == (6, 4, 2)
    assert summary.invalid_lines == [4, 5]
    assert (summary.new_exposures, summary.updated_exposures, summary.unchanged) == (2, 0, 0)
    assert summary.skipped == [
        Skipped(4, "no email address"),
        Skipped(5, "not a valid address: an email address must have an @-sign"),
    ]
    assert summary.fields == {
        "email": 4,
        "name": 3,
        "gender": 3,
        "phone": 2,
        "address": 2,
        "postcode": 2,
        "city": 2,
    }
    assert summary.columns["E-mailadres"] == "email"
    assert summary.columns["Straat"] == "address"
    assert summary.columns["Postcode"] == "postcode"
    assert summary.columns["Woonplaats"] == "city"
    assert summary.columns["Mobiel"] == "phone"
    assert summary.delimiter == "semicolon"
    assert exposures(engine) == {
        bidx_of(engine, settings, "alice@example.com"): {
            "email",
            "name",
            "address",
            "postcode",
            "city",
            "gender",
        },
        bidx_of(engine, settings, "jan@bücher.de"): {"email", "name", "phone", "gender"},
    }


def test_it_stores_the_index_a_lookup_computes(
    engine: Engine, settings: Settings, incident: str, tmp_path: Path
) -> None:
    run(engine, settings, write(tmp_path, "email\n  Alice@Example.COM \n"))

    assert set(exposures(engine)) == {bidx_of(engine, settings, "alice@example.com")}
    assert bidx_of(engine, settings, "jan@bücher.de") == bidx_of(
        engine, settings, "JAN@xn--bcher-kva.de"
    )


def test_it_stores_no_address_or_value(
    engine: Engine,
    settings: Settings,
    incident: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)

    run(engine, settings, DATA / "dutch.csv")

    stored = stored_bytes(settings.database_url)
    assert stored
    for secret in ("alice", "Jansen", "Dorpsstraat", "1234 AB", "Utrecht", "0612345678", "bcher"):
        assert secret.lower().encode() not in stored.lower()
        assert secret.lower() not in caplog.text.lower()
    assert "bücher".encode() not in stored


def test_it_reports_physical_line_numbers(
    engine: Engine, settings: Settings, incident: str, tmp_path: Path
) -> None:
    text = (
        "email,adres,naam\n"  # 1
        'bob@example.org,"Kerkstraat 1\nAmsterdam",Bob\n'  # 2-3
        "\n"  # 4: blank, not a row
        "bob@@example.org,,Bob\n"  # 5
        ",,Nobody\n"  # 6
        '"multi\nline",,\n'  # 7-8
        "carol@example.org,,\n"  # 9
        ",,\n"  # 10: an empty row, not a row
        "dave@example\n"  # 11
    )

    summary = run(engine, settings, write(tmp_path, text))

    assert summary.invalid_lines == [5, 6, 7, 11]
    assert (summary.rows, summary.imported) == (6, 2)
    assert (summary.lines, summary.blank_lines, summary.multiline_rows) == (11, 2, 2)
    assert summary.short_rows == 1
    assert summary.fields == {"email": 2, "name": 1, "address": 1}


def test_it_exposes_only_fields_with_a_value(
    engine: Engine, settings: Settings, incident: str, tmp_path: Path
) -> None:
    text = "email;telefoon;iban;geboortedatum\na@example.org;  ;NL91ABNA0417164300;\n"

    run(engine, settings, write(tmp_path, text))

    assert list(exposures(engine).values()) == [{"email", "iban"}]


def test_it_sniffs_commas_despite_semicolons_in_values(
    engine: Engine, settings: Settings, incident: str, tmp_path: Path
) -> None:
    text = 'Email,Full Name,Bestellingen\n"a@example.org","De Vries; Jan","1; 2"\n'

    summary = run(engine, settings, write(tmp_path, text))

    assert summary.fields == {"email": 1, "name": 1, "order_history": 1}


def test_it_maps_and_ignores_columns(
    engine: Engine, settings: Settings, incident: str, tmp_path: Path
) -> None:
    text = "Mail,Lievelingskleur,Klant Code\na@example.org,blauw,K-1\n"

    summary = run(
        engine,
        settings,
        write(tmp_path, text),
        mapping={"LIEVELINGSKLEUR": "-", "klant_code": "customer_number"},
    )

    assert summary.ignored_columns == ["Lievelingskleur"]
    assert list(exposures(engine).values()) == [{"email", "customer_number"}]


def test_it_stops_at_an_unknown_column_before_writing(
    engine: Engine, settings: Settings, incident: str, tmp_path: Path
) -> None:
    text = "email,naam,Lievelingskleur\na@example.org,Ann,blauw\n"

    with pytest.raises(PortalError) as caught:
        run(engine, settings, write(tmp_path, text))

    message = str(caught.value)
    assert 'unknown column "Lievelingskleur"' in message
    assert '--map "Lievelingskleur=FIELD"' in message
    assert '--map "Lievelingskleur=-"' in message
    assert "customer_number" in message
    assert exposures(engine) == {}


def test_it_refuses_an_unknown_field_in_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(PortalError) as caught:
        plan_columns(["email", "kleur"], mapping={"kleur": "colour"}, email_column=None)

    assert 'unknown field "colour"' in str(caught.value)
    assert "password_hash" in str(caught.value)


def test_it_refuses_a_mapping_for_a_missing_column() -> None:
    with pytest.raises(PortalError, match='no column "kleur"'):
        plan_columns(["email", "naam"], mapping={"kleur": "-"}, email_column=None)


def test_it_says_how_to_name_a_missing_email_column(
    engine: Engine, settings: Settings, incident: str, tmp_path: Path
) -> None:
    path = write(tmp_path, "Contact;naam\na@example.org;Ann\n")

    with pytest.raises(PortalError) as caught:
        run(engine, settings, path)
    summary = run(engine, settings, path, email_column="contact")

    assert "e-mailadres" in str(caught.value)
    assert "--email-column" in str(caught.value)
    assert summary.columns == {"Contact": "email", "naam": "name"}


def test_it_is_idempotent(engine: Engine, settings: Settings, incident: str) -> None:
    run(engine, settings, DATA / "dutch.csv")
    before = exposures(engine)

    again = run(engine, settings, DATA / "dutch.csv")

    assert (again.new_exposures, again.updated_exposures, again.unchanged) == (0, 0, 2)
    assert exposures(engine) == before


def test_it_unites_fields_from_a_second_file(
    engine: Engine, settings: Settings, incident: str, tmp_path: Path
) -> None:
    run(engine, settings, write(tmp_path, "email,naam\nann@example.org,Ann\n", "one.csv"))

    second = run(
        engine,
        settings,
        write(tmp_path, "email,telefoon\nANN@example.org,06123\nbo@example.org,\n", "two.csv"),
    )

    assert (second.new_exposures, second.updated_exposures, second.unchanged) == (1, 1, 0)
    assert exposures(engine) == {
        bidx_of(engine, settings, "ann@example.org"): {"email", "name", "phone"},
        bidx_of(engine, settings, "bo@example.org"): {"email"},
    }


def test_it_keeps_partners_apart(
    engine: Engine, settings: Settings, incident: str, tmp_path: Path
) -> None:
    run(engine, settings, write(tmp_path, "email,naam\nann@example.org,Ann\n"))

    run(engine, settings, write(tmp_path, "email\nann@example.org\n"), partner="shop-b")

    assert list(exposures(engine, "shop-a").values()) == [{"email", "name"}]
    assert list(exposures(engine, "shop-b").values()) == [{"email"}]


def test_it_writes_nothing_in_a_dry_run(engine: Engine, settings: Settings, incident: str) -> None:
    summary = run(engine, settings, DATA / "dutch.csv", dry_run=True)

    assert summary.dry_run
    assert (summary.new_exposures, summary.imported) == (2, 4)
    assert exposures(engine) == {}


def test_it_hashes_in_chunks_on_many_threads(
    engine: Engine,
    settings: Settings,
    incident: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(importer, "CHUNK", 4)
    path = write(tmp_path, "email\n" + "".join(f"user{i}@example.org\n" for i in range(10)))
    calls: list[tuple[str, int, int]] = []

    run(engine, settings, path, workers=4, progress=lambda *call: calls.append(call))
    run(engine, settings, path, workers=1, partner="shop-b")

    assert calls[0] == ("reading", 0, 11)
    assert [c for c in calls if c[0] == "hashing"] == [
        ("hashing", 0, 10),
        ("hashing", 4, 10),
        ("hashing", 8, 10),
        ("hashing", 10, 10),
    ]
    assert set(exposures(engine, "shop-a")) == set(exposures(engine, "shop-b"))
    assert len(exposures(engine, "shop-a")) == 10


def test_it_refuses_a_file_without_valid_rows(
    engine: Engine, settings: Settings, incident: str, tmp_path: Path
) -> None:
    path = write(tmp_path, "email,naam\nsecret-value,Ann\n,Bob\n")

    with pytest.raises(PortalError) as caught:
        run(engine, settings, path)

    assert "2 rows read, all skipped" in str(caught.value)
    assert "no email address: line 3" in str(caught.value)
    assert "not a valid address: an email address must have an @-sign: line 2" in str(caught.value)
    assert "secret-value" not in str(caught.value)


def test_it_names_the_line_that_is_not_utf8(
    engine: Engine, settings: Settings, incident: str, tmp_path: Path
) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("email;naam\na@example.org;Ann\nb@example.org;Zoë\n".encode("latin-1"))

    with pytest.raises(PortalError) as caught:
        run(engine, settings, path)

    assert str(caught.value).startswith(f"{path}:3: not UTF-8")
    assert exposures(engine) == {}


def test_it_refuses_unknown_incidents_and_partners(
    engine: Engine, settings: Settings, incident: str
) -> None:
    path = DATA / "dutch.csv"

    with pytest.raises(PortalError) as no_incident:
        import_csv(engine, settings, incident="nope", partner="shop-a", path=path)
    with pytest.raises(PortalError) as no_partner:
        run(engine, settings, path, partner="shop-c")

    assert str(no_incident.value) == "unknown incident 'nope' (known: webshop-2024)"
    assert str(no_partner.value) == (
        "unknown partner 'shop-c' in incident 'webshop-2024' (known: shop-a, shop-b)"
    )


def test_it_reports_a_missing_or_empty_file(
    engine: Engine, settings: Settings, incident: str, tmp_path: Path
) -> None:
    with pytest.raises(PortalError, match="no such file"):
        run(engine, settings, tmp_path / "missing.csv")
    with pytest.raises(PortalError, match="header row is required"):
        run(engine, settings, write(tmp_path, ""))


def test_it_writes_each_partners_exposures_once_in_one_transaction(
    engine: Engine, incident: str
) -> None:
    """Two writes in one transaction (PostgreSQL: two COPYs through one temporary table)."""
    with engine.begin() as conn:
        found = get_incident(conn, "webshop-2024")
        assert found is not None
        shop_a, shop_b = (get_partner(conn, found.id, slug) for slug in ("shop-a", "shop-b"))
        assert shop_a is not None and shop_b is not None
        db.write_exposures(conn, shop_a.id, {b"a" * 32: fields.to_bits({"email"})})
        db.write_exposures(conn, shop_b.id, {b"b" * 32: fields.to_bits({"email", "name"})})
        db.write_exposures(conn, shop_b.id, {b"b" * 32: fields.to_bits({"phone"})})

    assert exposures(engine, "shop-a") == {b"a" * 32: {"email"}}
    assert exposures(engine, "shop-b") == {b"b" * 32: {"email", "name", "phone"}}
