"""Abuse limits with the `limits` library: in memory by default, Redis when configured.

While a configured Redis does not answer, each process keeps the limits in its own memory
(design §6, Failures): no request is refused, and none fails, for Redis's sake.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit

from limits import RateLimitItem, parse_many
from limits.aio.storage import MovingWindowSupport, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from redis.exceptions import RedisError

from portal.core import metrics
from portal.core.config import Settings

log = logging.getLogger("portal.ratelimit")
T = TypeVar("T")

# Distinct keys one limit keeps in memory (some 300 bytes each). Past it, the key hit least
# recently is forgotten: memory stays bounded under a flood of distinct addresses, at the
# price of letting a forgotten key start afresh. Redis (PORTAL_REDIS_URL) has no such cap.
MAX_KEYS_PER_LIMIT = 200_000
# Expired keys dropped per hit at most, so that no single request pays for a whole sweep.
SWEEP_PER_HIT = 64
# While Redis is down, one limit check in this many seconds tries it again; the others go
# straight to memory, so that no request waits on a server that is not there.
REDIS_PROBE_SECONDS = 3.0
# A Redis that does not answer within this long counts as down (a dropped packet, say).
REDIS_TIMEOUT = 1.0
REDIS_ERRORS = (StorageError, RedisError, OSError)


class RateLimiter:
    """Named limits ('address', 'client', 'confirm', 'login', 'login_account') in one storage."""

    def __init__(self, settings: Settings) -> None:
        self.storage: Storage
        self.redis: RedisWatch | None = None
        if settings.redis_url:
            uri = settings.redis_url.replace("redis://", "async+redis://", 1).replace(
                "rediss://", "async+rediss://", 1
            )
            self.storage = RedisStorage(
                uri,
                implementation="redispy",
                wrap_exceptions=True,
                socket_connect_timeout=REDIS_TIMEOUT,
                socket_timeout=REDIS_TIMEOUT,
            )
            self.redis = RedisWatch(settings.redis_url)
        else:
            self.storage = MemoryWindows()
        self.strategy = MovingWindowRateLimiter(self.storage)
        # Where the limits are kept while Redis does not answer: this process's memory.
        self.memory = MovingWindowRateLimiter(MemoryWindows())
        self.key = hmac.new(settings.secret_key.encode(), b"portal.ratelimit", "sha256").digest()
        # A setting may hold several limits ("10/hour;50/day"): every one of them applies.
        self.items: dict[str, list[RateLimitItem]] = {
            "address": parse_many(settings.limit_per_address),
            "client": parse_many(settings.limit_per_client),
            "code": parse_many(settings.limit_per_code_client),
            "confirm": parse_many(settings.limit_confirm_per_client),
            "login": parse_many(settings.limit_login),
            "login_account": parse_many(settings.limit_login_per_account),
        }

    async def hit(self, name: str, key: str) -> bool:
        """Counts one use of `key` under limit `name`; False when over the limit.

        The storage sees only a keyed hash: no client address or blind index in Redis.
        """
        keys = ("portal", name, self._pseudonym(name, key))
        items = self.items[name]

        async def hit(strategy: MovingWindowRateLimiter) -> bool:
            for item in items:
                if not await strategy.test(item, *keys):
                    return False
            return all([await strategy.hit(item, *keys) for item in items])

        return await self._checked(hit)

    async def retry_after(self, name: str, key: str) -> int:
        """Whole seconds until `key` may use limit `name` again: for a 429's Retry-After."""
        keys = ("portal", name, self._pseudonym(name, key))

        async def waits(strategy: MovingWindowRateLimiter) -> list[float]:
            now = time.time()
            return [
                stats.reset_time - now
                for item in self.items[name]
                if (stats := await strategy.get_window_stats(item, *keys)).remaining <= 0
            ]

        return max(1, math.ceil(max(await self._checked(waits), default=1)))

    def longest_window(self) -> int:
        """Seconds of the longest window of any limit: an upper bound on any wait."""
        return max(item.get_expiry() for items in self.items.values() for item in items)

    async def allows(self, name: str, key: str) -> bool:
        """Whether one more use of `key` would stay within limit `name`, counting nothing.

        For limits on failures (a wrong password): test first, `hit` only when it failed.
        """
        keys = ("portal", name, self._pseudonym(name, key))

        async def allows(strategy: MovingWindowRateLimiter) -> bool:
            return all([await strategy.test(item, *keys) for item in self.items[name]])

        return await self._checked(allows)

    async def redis_down(self) -> bool:
        """Whether a configured Redis does not answer now (for /healthz); asks it when due."""
        if self.redis is None:
            return False
        if self.redis.worth_asking():
            if await self.storage.check():
                self.redis.answered()
            else:
                self.redis.failed()
        return self.redis.down

    async def _checked(self, check: Callable[[MovingWindowRateLimiter], Awaitable[T]]) -> T:
        """`check` against the shared storage; against this process's memory while a
        configured Redis does not answer (logged once per outage, counted per check)."""
        if self.redis is None:
            return await check(self.strategy)
        if self.redis.worth_asking():
            try:
                answer = await check(self.strategy)
            except REDIS_ERRORS:
                self.redis.failed()
            else:
                self.redis.answered()
                return answer
        metrics.limits_fallback_total.inc()
        return await check(self.memory)

    def _pseudonym(self, name: str, key: str) -> str:
        message = f"{name}\0{key}".encode()
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()[:32]

    async def reset(self) -> None:
        await self.storage.reset()
        await self.memory.storage.reset()


class RedisWatch:
    """Whether Redis answers, as the limit checks find it; says so in the log once a change."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.where = f"{parts.hostname}:{parts.port or 6379}"  # never the password
        self.down = False
        self.next_probe = 0.0

    def worth_asking(self) -> bool:
        """True while Redis answers, and once per probe interval while it does not."""
        if not self.down:
            return True
        now = time.monotonic()
        if now < self.next_probe:
            return False
        self.next_probe = now + REDIS_PROBE_SECONDS  # the other checks meanwhile: memory
        return True

    def failed(self) -> None:
        self.next_probe = time.monotonic() + REDIS_PROBE_SECONDS
        if not self.down:
            self.down = True
            log.warning(
                "rate limits fall back to this process's memory: Redis at %s not answering",
                self.where,
            )

    def answered(self) -> None:
        if self.down:
            self.down = False
            log.warning("rate limits are shared in Redis at %s again", self.where)


class MemoryWindows(Storage, MovingWindowSupport):
    """Moving windows in process memory, whose upkeep does not grow with the number of keys.

    `limits`' own MemoryStorage keeps a lock per key, and after a hit it sweeps every key it
    holds, with a thread hop per key: with 100k distinct addresses in the window, one sweep
    costs seconds of CPU, and the next starts as soon as it ends. Here each window's keys are
    kept in the order of their last hit, so the expired ones are at the front: each hit drops
    a few of them, and no lock is needed (nothing awaits inside an operation: the event loop
    runs each one whole).
    """

    STORAGE_SCHEME = None  # made directly, never from a URI

    def __init__(self, max_keys: int = MAX_KEYS_PER_LIMIT) -> None:
        super().__init__()
        self.max_keys = max_keys
        # Per window length (seconds): key -> its hit times, oldest first, at most `limit`.
        self.windows: dict[int, OrderedDict[str, list[float]]] = {}

    @property
    def base_exceptions(self) -> type[Exception]:
        return ValueError

    @property
    def size(self) -> int:
        """How many keys are held, expired ones not yet dropped included."""
        return sum(len(keys) for keys in self.windows.values())

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if amount > limit:
            return False
        now = time.time()
        keys = self._keys(expiry, now)
        hits = _recent(keys.get(key, []), now - expiry)
        if len(hits) + amount > limit:
            return False
        keys[key] = [*hits, *[now] * amount][-limit:]
        keys.move_to_end(key)
        if len(keys) > self.max_keys:
            keys.popitem(last=False)
        return True

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        now = time.time()
        hits = _recent(self._keys(expiry, now).get(key, []), now - expiry)
        return (hits[0] if hits else now), len(hits)

    def _keys(self, expiry: int, now: float) -> OrderedDict[str, list[float]]:
        """The keys of one window length, after dropping a few that have expired."""
        keys = self.windows.setdefault(expiry, OrderedDict())
        for _ in range(SWEEP_PER_HIT):
            oldest = next(iter(keys.values()), None)
            if oldest is None or oldest[-1] > now - expiry:
                break
            keys.popitem(last=False)
        return keys

    async def clear(self, key: str) -> None:
        for keys in self.windows.values():
            keys.pop(key, None)

    async def reset(self) -> int | None:
        count = sum(len(keys) for keys in self.windows.values())
        self.windows.clear()
        return count

    async def check(self) -> bool:
        return True

    # Fixed-window counters: the portal uses moving windows only.
    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        raise NotImplementedError("MemoryWindows keeps moving windows only")

    async def get(self, key: str) -> int:
        raise NotImplementedError("MemoryWindows keeps moving windows only")

    async def get_expiry(self, key: str) -> float:
        raise NotImplementedError("MemoryWindows keeps moving windows only")


def _recent(hits: list[float], cutoff: float) -> list[float]:
    """The hits after `cutoff` (hits are oldest first, and few: at most the limit)."""
    return [hit for hit in hits if hit > cutoff]
