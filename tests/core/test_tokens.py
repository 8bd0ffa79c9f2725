"""Signed tokens: one purpose each, a max age, tamper-proof; sealing with a token's secret."""

from __future__ import annotations

import base64
import hashlib
import time

import pytest
from itsdangerous.timed import TimestampSigner

from portal.core.tokens import (
    SECRET_BYTES,
    SealedText,
    TokenExpired,
    TokenInvalid,
    TokenService,
    seal,
    token_hash,
    unseal,
)

KEY = "a-secret-key-for-tests"


def links(max_age: int = 3600) -> TokenService:
    return TokenService(KEY, purpose="link", max_age=max_age)


def test_it_reads_back_the_secret_it_issued() -> None:
    token, secret = links().issue()
    assert len(secret) == SECRET_BYTES
    assert links().read(token) == secret


def test_it_issues_a_new_secret_each_time() -> None:
    (first, a), (second, b) = links().issue(), links().issue()
    assert first != second
    assert a != b


def test_it_refuses_a_tampered_token() -> None:
    token, _ = links().issue()
    payload, _, rest = token.partition(".")
    # Tamper with the payload's first character: all six of its bits are data, whereas the
    # last character of a base64 segment can differ in padding bits only.
    forged = ("B" if payload[0] != "B" else "C") + payload[1:] + "." + rest
    with pytest.raises(TokenInvalid):
        links().read(forged)
    signature_flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    with pytest.raises(TokenInvalid):
        links().read(signature_flipped)


def test_it_refuses_garbage() -> None:
    for token in ("", "not-a-token", "a.b.c"):
        with pytest.raises(TokenInvalid):
            links().read(token)


def test_it_refuses_a_token_of_another_purpose() -> None:
    token, _ = TokenService(KEY, purpose="session", max_age=3600).issue()
    with pytest.raises(TokenInvalid) as caught:
        links().read(token)
    assert not isinstance(caught.value, TokenExpired)


def test_it_refuses_a_token_signed_with_another_key() -> None:
    token, _ = TokenService("another-key", purpose="link", max_age=3600).issue()
    with pytest.raises(TokenInvalid):
        links().read(token)


def test_it_refuses_a_genuine_value_that_is_not_a_secret() -> None:
    token = links().serializer.dumps("c2hvcnQ=")  # base64 of 5 bytes, not SECRET_BYTES
    with pytest.raises(TokenInvalid):
        links().read(token)


def test_it_tells_an_expired_token_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    service = links(max_age=60)
    with monkeypatch.context() as patched:
        patched.setattr(TimestampSigner, "get_timestamp", lambda self: int(time.time()) - 61)
        token, _ = service.issue()
    with pytest.raises(TokenExpired):
        service.read(token)


def test_it_accepts_a_token_just_within_its_max_age(monkeypatch: pytest.MonkeyPatch) -> None:
    service = links(max_age=60)
    with monkeypatch.context() as patched:
        patched.setattr(TimestampSigner, "get_timestamp", lambda self: int(time.time()) - 30)
        token, secret = service.issue()
    assert service.read(token) == secret


def test_it_reads_an_expired_token_only_when_asked_for_any_age(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = links(max_age=60)
    with monkeypatch.context() as patched:
        patched.setattr(TimestampSigner, "get_timestamp", lambda self: int(time.time()) - 3600)
        token, secret = service.issue()
    with pytest.raises(TokenExpired):
        service.read(token)
    assert service.read_any_age(token) == secret
    with pytest.raises(TokenInvalid):
        TokenService(KEY, purpose="notice", max_age=60).read_any_age(token)


def test_it_unseals_what_it_sealed() -> None:
    _, secret = links().issue()
    sealed = seal(secret, "alice@example.org")
    assert b"alice" not in sealed
    assert unseal(secret, sealed) == "alice@example.org"


def test_it_seals_the_same_text_differently_each_time() -> None:
    _, secret = links().issue()
    assert seal(secret, "alice@example.org") != seal(secret, "alice@example.org")


def test_it_refuses_to_unseal_with_another_secret() -> None:
    (_, secret), (_, other) = links().issue(), links().issue()
    with pytest.raises(TokenInvalid):
        unseal(other, seal(secret, "alice@example.org"))


def test_it_refuses_to_unseal_a_damaged_box() -> None:
    _, secret = links().issue()
    sealed = bytearray(seal(secret, "alice@example.org"))
    sealed[-1] ^= 1
    with pytest.raises(TokenInvalid):
        unseal(secret, bytes(sealed))
    with pytest.raises(TokenInvalid):
        unseal(secret, b"short")


def test_it_keeps_only_the_sha256_of_a_secret() -> None:
    _, secret = links().issue()
    assert token_hash(secret) == hashlib.sha256(secret).digest()
    assert len(token_hash(secret)) == 32


def sent(max_age: int = 600) -> SealedText:
    return SealedText(KEY, purpose="sent-address", max_age=max_age, size=64)


def test_it_opens_a_sealed_text_it_sealed_and_no_other() -> None:
    sealed = sent().seal("alice@example.org")
    assert sent().open(sealed) == "alice@example.org"
    assert "alice" not in sealed and b"alice" not in base64.urlsafe_b64decode(sealed)
    with pytest.raises(TokenInvalid):
        SealedText(KEY, purpose="another", max_age=600, size=64).open(sealed)
    with pytest.raises(TokenInvalid):
        SealedText("another-key", purpose="sent-address", max_age=600, size=64).open(sealed)
    with pytest.raises(TokenInvalid):
        sent().open(("B" if sealed[0] != "B" else "C") + sealed[1:])
    for garbage in ("", "not base64!", "AAAA"):
        with pytest.raises(TokenInvalid):
            sent().open(garbage)


def test_it_seals_every_text_to_one_length() -> None:
    lengths = {len(sent().seal(text)) for text in ("", "a@b.nl", "x" * 40 + "@example.org")}
    assert len(lengths) == 1
    assert sent().open(sent().seal("x" * 100)) == "", "too long: sealed as nothing"


def test_it_opens_a_sealed_text_only_within_its_max_age(monkeypatch: pytest.MonkeyPatch) -> None:
    sealed = sent(max_age=600).seal("alice@example.org")
    later = time.time() + 601
    monkeypatch.setattr("portal.core.tokens.time.time", lambda: later)
    with pytest.raises(TokenExpired):
        sent(max_age=600).open(sealed)
