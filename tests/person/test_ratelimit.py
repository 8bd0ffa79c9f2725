"""The in-memory limiter: moving windows, expiry that keeps up, and a bounded number of keys."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest
from limits import parse
from limits.aio.strategies import MovingWindowRateLimiter

from portal.core.config import Settings
from portal.person.ratelimit import MemoryWindows, RateLimiter

pytestmark = pytest.mark.anyio


def limiter(limit: str) -> RateLimiter:
    return RateLimiter(
        Settings(
            instance_dir=Path("."),
            database_url="sqlite://",
            secret_key="k",
            pepper=b"p",
            limit_per_address=limit,
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
