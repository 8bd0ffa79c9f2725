"""Tests for the field vocabulary: labels, advice, bits, CSV column names, ordering."""

from __future__ import annotations

import pytest

from portal.core.fields import BY_KEY, FIELDS, HIGH, field_for_column, from_bits, squash, to_bits

# The vocabulary the design promises (§2 "CSV import").
DESIGN_COLUMNS = {
    "email": ["email", "e-mail", "emailadres", "e-mailadres", "mailadres", "email address", "mail"],
    "name": [
        "naam",
        "voornaam",
        "achternaam",
        "tussenvoegsel",
        "voorletters",
        "name",
        "first name",
        "last name",
        "full name",
    ],
    "gender": ["geslacht", "aanhef", "gender", "sex", "salutation"],
    "birth_date": ["geboortedatum", "date of birth", "birthdate", "dob"],
    "phone": [
        "telefoon",
        "telefoonnummer",
        "mobiel",
        "mobiel nummer",
        "phone",
        "telephone",
        "mobile",
        "phone number",
    ],
    "address": [
        "adres",
        "straat",
        "straatnaam",
        "huisnummer",
        "toevoeging",
        "address",
        "street",
        "house number",
    ],
    "postcode": ["postcode", "zip", "zip code", "postal code"],
    "city": ["woonplaats", "plaats", "stad", "city", "town"],
    "country": ["land", "country"],
    "iban": ["iban", "rekeningnummer", "bankrekeningnummer", "bank account"],
    "customer_number": [
        "klantnummer",
        "relatienummer",
        "lidnummer",
        "abonnementsnummer",
        "customer number",
        "member number",
    ],
    "password_hash": ["wachtwoord", "password", "password hash"],
    "order_history": ["bestellingen", "orders", "order history"],
    "ip_address": ["ip", "ip-adres", "ip address"],
    "username": ["gebruikersnaam", "username", "login"],
}
DESIGN_KEYS = [
    "email", "name", "gender", "birth_date", "phone", "address", "postcode", "city", "country",
    "iban", "password_hash",
    "order_history", "customer_number", "ip_address", "username", "security_questions",
    "credit_card", "national_id", "health_data", "photo",
]  # fmt: skip


def test_it_has_every_design_key() -> None:
    assert [f.key for f in FIELDS] == DESIGN_KEYS


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.key)
def test_it_has_labels_and_advice_in_every_language(field: object) -> None:
    for lang in ("nl", "en"):
        assert BY_KEY[field.key].label[lang].strip()  # type: ignore[attr-defined]
        assert BY_KEY[field.key].advice[lang].strip()  # type: ignore[attr-defined]


# The exposures table stores these bits: a bit once given is never moved or reused.
STABLE_BITS = {
    "email": 0, "name": 1, "gender": 2, "birth_date": 3, "phone": 4, "address": 5, "iban": 6,
    "password_hash": 7, "order_history": 8, "customer_number": 9, "ip_address": 10,
    "username": 11, "security_questions": 12, "credit_card": 13, "national_id": 14,
    "health_data": 15, "photo": 16, "postcode": 17, "city": 18, "country": 19,
}  # fmt: skip


def test_it_keeps_every_bit_where_it_was() -> None:
    assert {f.key: f.bit for f in FIELDS} == STABLE_BITS


def test_it_tells_a_postcode_or_town_from_an_address() -> None:
    for key in ("postcode", "city", "country"):
        assert BY_KEY[key].label["en"] != BY_KEY["address"].label["en"]
        assert BY_KEY[key].advice["nl"] != BY_KEY["address"].advice["nl"]
    assert field_for_column("Woonplaats") == "city"
    assert field_for_column("Postcode") == "postcode"
    assert field_for_column("Straat") == "address"


def test_it_gives_every_field_its_own_bit_within_a_bigint() -> None:
    bits = [f.bit for f in FIELDS]

    assert len(set(bits)) == len(bits)
    assert all(0 <= bit < 63 for bit in bits)


@pytest.mark.parametrize(
    ("column", "key"),
    [(column, key) for key, columns in DESIGN_COLUMNS.items() for column in columns],
)
def test_it_maps_the_design_vocabulary(column: str, key: str) -> None:
    assert field_for_column(column) == key


@pytest.mark.parametrize("key", DESIGN_KEYS)
def test_it_maps_every_key_to_itself(key: str) -> None:
    assert field_for_column(key) == key


@pytest.mark.parametrize(
    ("column", "key"),
    [
        ("E-Mailadres", "email"),
        (" E_MAIL.adres ", "email"),
        ("Date-of_Birth", "birth_date"),
        ("Postal.Code", "postcode"),
        ("House_Number", "address"),
        ("Mobiel Nummer", "phone"),
        ("IP-Adres", "ip_address"),
    ],
)
def test_it_ignores_case_spaces_hyphens_underscores_and_dots(column: str, key: str) -> None:
    assert field_for_column(column) == key


def test_it_knows_no_ambiguous_column_names() -> None:
    owners: dict[str, set[str]] = {}
    for f in FIELDS:
        for name in (*f.columns, f.key):
            owners.setdefault(squash(name), set()).add(f.key)

    assert {name: keys for name, keys in owners.items() if len(keys) > 1} == {}


def test_it_does_not_guess_unknown_columns() -> None:
    assert field_for_column("Lievelingskleur") is None


def test_it_orders_fields_most_serious_first() -> None:
    found = from_bits(to_bits(["name", "email", "password_hash", "iban", "birth_date"]))

    assert [f.key for f in found] == ["iban", "password_hash", "email", "birth_date", "name"]
    assert found[0].severity == HIGH


def test_it_round_trips_bits() -> None:
    keys = {"email", "photo", "national_id"}

    assert {f.key for f in from_bits(to_bits(keys))} == keys
    assert from_bits(0) == []
