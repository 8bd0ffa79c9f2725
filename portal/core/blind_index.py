"""Email normalisation and the keyed argon2id blind index; pure functions, no I/O."""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
from dataclasses import dataclass
from typing import ClassVar

from argon2.low_level import Type, hash_secret_raw
from email_validator import EmailNotValidError, validate_email

MAX_LOCAL_OCTETS = 64
MAX_ADDRESS_OCTETS = 254
# Scripts that look alike: a domain label mixing two of them imitates another domain.
CONFUSABLE_SCRIPTS = frozenset({"LATIN", "CYRILLIC", "GREEK"})
# Cyrillic and Greek letters drawn like Latin ones: a label made of nothing else under an
# ASCII top-level domain ("аррӏе.com") is a whole-script look-alike of a Latin domain.
LATIN_LOOKALIKES = frozenset("аԁеһіјӏорԛѕԝхусьү" + "αικνορτυ")


class InvalidEmail(ValueError):
    """An address the portal refuses, with a `code` naming why (pages translate it).

    The message never echoes the input.
    """

    MESSAGES: ClassVar[dict[str, str]] = {
        "missing": "Enter an email address.",
        "control": "The address contains control characters.",
        "too_long": "The address is longer than 254 characters.",
        "local_too_long": "The part before the @ is longer than 64 characters.",
        "mixed_script": "The domain mixes alphabets, as look-alike domains do.",
        "lookalike": "The domain imitates another one with look-alike letters.",
        "invalid": "This is not a valid email address.",
    }

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(self.MESSAGES[code])
        self.code = code
        # email-validator's reason for "invalid", cut before any part that quotes the input.
        self.detail = detail.split(" (", 1)[0].rstrip(".")


@dataclass(frozen=True)
class KdfParams:
    """argon2id parameters; stored with each incident so lookups hash as the import did."""

    time_cost: int = 1
    memory_cost: int = 8192  # KiB: 8 MiB
    parallelism: int = 1


def normalise(address: str) -> str:
    """Trim, NFC, lower-case, domain to IDNA ASCII; raises InvalidEmail with the reason."""
    address = unicodedata.normalize("NFC", address.strip())
    if not address:
        raise InvalidEmail("missing")
    # U+FFFD stands where a form held bytes that were not UTF-8.
    if any(
        unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") or ch == "\ufffd" for ch in address
    ):
        raise InvalidEmail("control")
    if len(address.encode()) > MAX_ADDRESS_OCTETS:
        raise InvalidEmail("too_long")
    local, _, domain = address.rpartition("@")
    if len(local.encode()) > MAX_LOCAL_OCTETS:
        raise InvalidEmail("local_too_long")
    # A non-ASCII local part (RFC 6531) is an address like any other: its mail goes out with
    # SMTPUTF8 (portal.mail.delivery), and a relay without it fails that message with the reason.
    labels = domain.split(".")
    for label in labels:
        if _mixes_scripts(label):
            raise InvalidEmail("mixed_script")
        if labels[-1].isascii() and _imitates_latin(label):
            raise InvalidEmail("lookalike")
    try:
        valid = validate_email(address, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as exc:
        raise InvalidEmail("invalid", str(exc)) from None
    return f"{valid.local_part.lower()}@{valid.ascii_domain.lower()}"


def _mixes_scripts(label: str) -> bool:
    scripts = {unicodedata.name(ch, "UNKNOWN").split(" ")[0] for ch in label if ch.isalpha()}
    return len(scripts & CONFUSABLE_SCRIPTS) > 1


def _imitates_latin(label: str) -> bool:
    letters = [ch for ch in label.lower() if ch.isalpha()]
    return bool(letters) and all(ch in LATIN_LOOKALIKES for ch in letters)


def blind_index(normalised: str, *, pepper: bytes, salt: bytes, params: KdfParams) -> bytes:
    """argon2id(HMAC-SHA256(pepper, address), salt): 32 bytes, compared by equality.

    CPU-bound (argon2-cffi releases the GIL): call it from a thread, never the event loop.
    """
    return stretch(keyed_index(normalised, pepper=pepper), salt=salt, params=params)


def keyed_index(normalised: str, *, pepper: bytes) -> bytes:
    """HMAC-SHA256(pepper, address): the blind index's first, cheap step (32 bytes).

    An import deduplicates and splits its file into parts on it before the costly step,
    so that each address is stretched once, by one part.
    """
    return hmac.new(pepper, normalised.encode(), hashlib.sha256).digest()


def stretch(keyed: bytes, *, salt: bytes, params: KdfParams) -> bytes:
    """argon2id of a keyed index: the blind index's costly step."""
    return hash_secret_raw(
        secret=keyed,
        salt=salt,
        time_cost=params.time_cost,
        memory_cost=params.memory_cost,
        parallelism=params.parallelism,
        hash_len=32,
        type=Type.ID,
    )
