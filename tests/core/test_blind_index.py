"""Tests for address normalisation and the keyed blind index."""

from __future__ import annotations

import pytest

from portal.core.blind_index import InvalidEmail, KdfParams, blind_index, normalise

PEPPER, SALT = b"pepper", b"0123456789abcdef"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("  Alice@Example.COM ", "alice@example.com"),
        ("\tbob@example.org\n", "bob@example.org"),
        ("jan@bu\u0308cher.de", "jan@xn--bcher-kva.de"),
        ("jan@BÜCHER.de", "jan@xn--bcher-kva.de"),
        ("jan@bücher.de", "jan@xn--bcher-kva.de"),
        ("JAN@XN--BCHER-KVA.DE", "jan@xn--bcher-kva.de"),
        ("first.last+tag@example.com", "first.last+tag@example.com"),
        # RFC 6531: a non-ASCII local part is an address like any other, NFC and lower case.
        ("Jörg@Bücher.de", "jörg@xn--bcher-kva.de"),
        ("jose\u0301@example.com", "jos\u00e9@example.com"),
        ("ÉLISE@Example.com", "élise@example.com"),
    ],
)
def test_it_normalises(given: str, expected: str) -> None:
    assert normalise(given) == expected


def test_it_refuses_bytes_that_were_not_utf8() -> None:
    # U+FFFD stands where a form held bytes that were not UTF-8: no mail could reach it.
    with pytest.raises(InvalidEmail) as refused:
        normalise("\ufffd@x.nl")
    assert refused.value.code == "control"


def test_a_non_ascii_local_part_has_one_blind_index_however_it_is_typed() -> None:
    def index(address: str) -> bytes:
        return blind_index(normalise(address), pepper=PEPPER, salt=SALT, params=KdfParams())

    assert index("jörg@bücher.de") == index("JO\u0308RG@BU\u0308CHER.DE")
    assert index("jörg@bücher.de") != index("jorg@bücher.de")


@pytest.mark.parametrize(
    "given",
    [
        "a\x01b@example.com",
        "a@example.com\r\nBcc: victim@example.org",
        "a\nb@example.com",
        "a\x00@example.com",
        "a\u200b@example.com",
        "a" * 65 + "@example.com",
        "a@" + ".".join(["b" * 60] * 5) + ".nl",
        "info@p\u0430ypal.com",  # Cyrillic а among Latin letters
        "info@\u03bfpenai.com",  # Greek ο
        "<script>@example.com",
        "<b>x</b>@example.com",
        "not-an-address",
        "",
        "@example.com",
        "a@",
        "a@localhost",
        "a b@example.com",
    ],
)
def test_it_refuses(given: str) -> None:
    with pytest.raises(InvalidEmail) as caught:
        normalise(given)

    assert given.strip() == "" or given.strip() not in str(caught.value)


def test_it_accepts_the_longest_local_part() -> None:
    assert normalise("a" * 64 + "@example.com") == "a" * 64 + "@example.com"


def test_it_accepts_a_non_latin_domain_in_one_script() -> None:
    assert normalise("ivan@пример.рф").endswith("@xn--e1afmkfd.xn--p1ai")


def test_it_makes_a_32_byte_deterministic_index() -> None:
    first = blind_index("a@example.com", pepper=PEPPER, salt=SALT, params=KdfParams())

    assert len(first) == 32
    assert first == blind_index("a@example.com", pepper=PEPPER, salt=SALT, params=KdfParams())
    assert first != blind_index("b@example.com", pepper=PEPPER, salt=SALT, params=KdfParams())


def test_it_depends_on_pepper_salt_and_params() -> None:
    base = blind_index("a@example.com", pepper=PEPPER, salt=SALT, params=KdfParams())

    assert base != blind_index("a@example.com", pepper=b"other", salt=SALT, params=KdfParams())
    assert base != blind_index(
        "a@example.com", pepper=PEPPER, salt=b"fedcba9876543210", params=KdfParams()
    )
    assert base != blind_index(
        "a@example.com", pepper=PEPPER, salt=SALT, params=KdfParams(time_cost=2)
    )
