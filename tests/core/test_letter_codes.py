"""Tests for a letter's code: its printed form, check symbol, forgiving reading and hash."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from portal.core import letter_codes
from portal.core.letter_codes import InvalidCode, canonical, code_hash, derive, from_value

PRINTED = re.compile(r"^[0-9A-HJKMNP-TV-Z]{5}(-[0-9A-HJKMNP-TV-Z]{5}){3}-[0-9A-HJKMNP-TV-Z*~$=U]$")
values = st.integers(min_value=0, max_value=(1 << 100) - 1)


def mangle(code: str, data: st.DataObject) -> str:
    """The code as a person might type it: other case, spaces or no dashes, look-alikes."""
    typed = []
    for ch in code:
        if ch == "-":
            typed.append(data.draw(st.sampled_from(["-", " ", "", " - "])))
            continue
        if ch == "0":
            ch = data.draw(st.sampled_from(["0", "O", "o"]))
        elif ch == "1":
            ch = data.draw(st.sampled_from(["1", "I", "i", "L", "l"]))
        elif ch.isalpha():
            ch = data.draw(st.sampled_from([ch, ch.lower()]))
        typed.append(ch)
    return " " * data.draw(st.integers(0, 2)) + "".join(typed)


@given(values, st.data())
@example(0, None)
@example((1 << 100) - 1, None)
def test_it_reads_back_a_code_however_it_is_typed(value: int, data: st.DataObject | None) -> None:
    code = from_value(value)
    assert PRINTED.match(code)
    typed = mangle(code, data) if data is not None else code.lower()
    assert canonical(typed) == code.replace("-", "")
    assert code_hash(b"pepper", typed) == code_hash(b"pepper", code)


@given(values, st.integers(0, 20), st.integers(1, 31))
def test_it_refuses_a_code_with_one_symbol_changed(value: int, position: int, delta: int) -> None:
    body = from_value(value).replace("-", "")
    symbols = letter_codes.SYMBOLS
    if position < 20:
        changed = symbols[(symbols.index(body[position]) + delta) % 32]
        typed = body[:position] + changed + body[position + 1 :]
    else:
        checks = letter_codes.CHECK_SYMBOLS
        typed = body[:20] + checks[(checks.index(body[20]) + delta) % 37]
    with pytest.raises(InvalidCode):
        canonical(typed)


def test_the_check_symbol_is_the_value_mod_37() -> None:
    assert from_value(0) == "00000-00000-00000-00000-0"
    assert from_value(36) == "00000-00000-00000-00014-U"  # 36 = 1*32 + 4; 36 mod 37 is U
    assert from_value(37) == "00000-00000-00000-00015-0"
    assert from_value(32 * 37 + 10) == "00000-00000-00000-0015A-A"


@pytest.mark.parametrize(
    "typed", ["", "ABC", "00000-00000-00000-00000", "U0000-00000-00000-00000-0"]
)
def test_it_refuses_what_cannot_be_a_code(typed: str) -> None:
    with pytest.raises(InvalidCode):
        canonical(typed)


def test_a_derived_code_depends_on_the_secret_and_the_material() -> None:
    one = derive(b"secret", b"person")
    assert PRINTED.match(one)
    assert derive(b"secret", b"person") == one
    assert derive(b"other", b"person") != one
    assert derive(b"secret", b"another") != one


def test_the_hash_is_keyed() -> None:
    code = from_value(12345)
    assert code_hash(b"pepper", code) != code_hash(b"another pepper", code)
    assert len(code_hash(b"pepper", code)) == 32
