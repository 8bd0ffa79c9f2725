"""A letter's personal code: 100 bits as Crockford base32, its check symbol, its keyed hash.

Written `XXXXX-XXXXX-XXXXX-XXXXX-C`: four groups of five Crockford base32 symbols (5 bits
each, 100 bits in all) and Crockford's check symbol, the value mod 37. Typed back from
paper, a code is forgiven its spaces, dashes and case, and the letters that look like
digits (O for 0; I and L for 1). Pure functions, no I/O.
"""

from __future__ import annotations

import hashlib
import hmac

SYMBOLS = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CHECK_SYMBOLS = SYMBOLS + "*~$=U"
BITS = 100
GROUPS = 4
GROUP_LENGTH = 5
LENGTH = GROUPS * GROUP_LENGTH  # symbols before the check symbol
# What people type for what the code means: the letters Crockford reads as digits.
_READ_AS = str.maketrans({"O": "0", "I": "1", "L": "1"})
_IGNORED = " -\t\u00a0\u2010\u2011\u2012\u2013\u2014"


class InvalidCode(ValueError):
    """Not a code this portal could have printed (wrong length, symbol or check)."""


def from_value(value: int) -> str:
    """The printed code of a 100-bit value."""
    if not 0 <= value < 1 << BITS:
        raise ValueError("a code holds 100 bits")
    symbols = "".join(SYMBOLS[(value >> (5 * i)) & 31] for i in reversed(range(LENGTH)))
    groups = [symbols[i : i + GROUP_LENGTH] for i in range(0, LENGTH, GROUP_LENGTH)]
    return "-".join([*groups, CHECK_SYMBOLS[value % 37]])


def derive(secret: bytes, material: bytes) -> str:
    """The code that `secret` makes of `material`: 100 bits of HMAC-SHA256, as printed."""
    digest = hmac.new(secret, b"letter-code\0" + material, hashlib.sha256).digest()
    return from_value(int.from_bytes(digest[:13], "big") >> 4)


def canonical(typed: str) -> str:
    """The 21 symbols of a typed code (upper case, confusables read as digits); raises
    InvalidCode when it cannot be one."""
    text = "".join(ch for ch in typed if ch not in _IGNORED).upper()
    if len(text) != LENGTH + 1:
        raise InvalidCode
    body, check = text[:LENGTH].translate(_READ_AS), text[LENGTH]
    if check in "OIL":
        check = check.translate(_READ_AS)
    if any(ch not in SYMBOLS for ch in body) or check not in CHECK_SYMBOLS:
        raise InvalidCode
    value = 0
    for ch in body:
        value = value << 5 | SYMBOLS.index(ch)
    if CHECK_SYMBOLS[value % 37] != check:
        raise InvalidCode
    return body + check


def code_hash(pepper: bytes, code: str) -> bytes:
    """The keyed hash the portal stores and looks a code up by (32 bytes).

    HMAC-SHA256 with the pepper, not argon2id as for addresses: an address is guessable
    (a few billion candidates), a code is 100 random bits, beyond any search however fast
    the hash. Raises InvalidCode for anything that is not a code.
    """
    return hmac.new(pepper, b"letter-code\0" + canonical(code).encode(), hashlib.sha256).digest()
