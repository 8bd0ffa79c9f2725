"""The in-memory limiter: moving windows, expiry that keeps up, and a bounded number of keys."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest
from limits import parse
from limits.aio.strategies import MovingWindowRateLimiter
from prometheus_client import REGISTRY

from portal.core.config import Settings
from portal.person.ratelimit import MemoryWindows, RateLimiter
from tests.fixtures_mail import free_port

pytestmark = pytest.mark.anyio


def limiter(limit: str, redis_url: str | None = None) -> RateLimiter:
    return RateLimiter(
        Settings(
            instance_dir=Path("."),
            database_url="sqlite://",
            secret_key="k",
            pepper=b"p",
            limit_per_address=limit,
            redis_url=redis_url,
        )
    )


async def hit_until_allowed(limits: RateLimiter, key: str, *, timeout: float = 3.0) -> None:
    """Polls: a refused hit counts nothing, so asking again does not move the window."""
    deadline = time.monotonic() + timeout
    while not await limits.hit("address", key):
        assert time.monotonic() < deadline, f"still refused after {timeout} s"
        await anyio.sleep(0.01)


async def test_it_allows_the_limit_and_refuses_the_next() -> None:
    limits = limiter("3/hour")
    assert [await limits.hit("address", "alice") for _ in range(4)] == [True] * 3 + [False]
    assert await limits.hit("address", "bob")


async def test_it_applies_every_limit_of_a_setting() -> None:
    limits = limiter("5/hour;2/minute")
    assert [await limits.hit("address", "alice") for _ in range(3)] == [True, True, False]


async def test_it_allows_again_once_the_window_has_passed() -> None:
    limits = limiter("2/second")
    started = time.monotonic()
    assert await limits.hit("address", "alice") and await limits.hit("address", "alice")
    assert not await limits.hit("address", "alice")
    await hit_until_allowed(limits, "alice")
    assert time.monotonic() - started >= 0.9  # refused for the whole window


async def test_it_drops_expired_keys_as_new_ones_come() -> None:
    limits = limiter("5/second")
    store = limits.storage
    assert isinstance(store, MemoryWindows)
    started = time.monotonic()
    for n in range(1_000):
        await limits.hit("address", f"first-{n}")
    first_dropped_at = None
    made = 0
    # The oldest keys go first: no more keys than the new ones means none of the first.
    while store.size > made:
        made += 1
        await limits.hit("address", f"second-{made}")
        if first_dropped_at is None and store.size < 1_000 + made:
            first_dropped_at = time.monotonic()
        assert time.monotonic() - started < 4, "expired keys are not dropped"
        await anyio.sleep(0.01)
    assert first_dropped_at is not None
    assert first_dropped_at - started >= 0.9  # none went before its window had passed


async def test_it_keeps_at_most_its_number_of_keys() -> None:
    store = MemoryWindows(max_keys=100)
    strategy = MovingWindowRateLimiter(store)
    item = parse("1/hour")
    for n in range(250):
        assert await strategy.hit(item, "address", str(n))
    assert store.size == 100
    assert not await strategy.hit(item, "address", "249")  # the newest are kept
    assert await strategy.hit(item, "address", "0")  # the oldest was forgotten


def fallbacks() -> float:
    return REGISTRY.get_sample_value("portal_limits_fallback_total") or 0.0


async def test_it_keeps_the_limits_in_memory_while_redis_does_not_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()  # nothing listens there
    limits = limiter("3/hour", redis_url=f"redis://127.0.0.1:{port}/0")
    before = fallbacks()
    started = time.monotonic()

    answers = [await limits.hit("address", "alice") for _ in range(4)]

    assert answers == [True] * 3 + [False]
    assert await limits.allows("address", "bob")
    assert await limits.redis_down()
    assert time.monotonic() - started < 2  # no request waits for the Redis that is not there
    assert fallbacks() - before == 5  # one per limit check
    warnings = [r.getMessage() for r in caplog.records if r.name == "portal.ratelimit"]
    assert warnings == [
        f"rate limits fall back to this process's memory: Redis at 127.0.0.1:{port} not answering"
    ]


async def test_it_says_nothing_of_redis_when_none_is_configured() -> None:
    assert not await limiter("3/hour").redis_down()
