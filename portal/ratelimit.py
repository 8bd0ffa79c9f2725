"""Abuse limits with the `limits` library: in memory by default, Redis when configured."""

from __future__ import annotations

import hashlib
import hmac
import math
import time

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from portal.config import Settings


class RateLimiter:
    """Named limits ('address', 'client', 'confirm', 'login', 'login_account') in one storage."""

    def __init__(self, settings: Settings) -> None:
        self.storage: Storage
        if settings.redis_url:
            uri = settings.redis_url.replace("redis://", "async+redis://", 1).replace(
                "rediss://", "async+rediss://", 1
            )
            self.storage = RedisStorage(uri, implementation="redispy")
        else:
            self.storage = MemoryStorage()
        self.strategy = MovingWindowRateLimiter(self.storage)
        self.key = hmac.new(settings.secret_key.encode(), b"portal.ratelimit", "sha256").digest()
        # A setting may hold several limits ("10/hour;50/day"): every one of them applies.
        self.items: dict[str, list[RateLimitItem]] = {
            "address": parse_many(settings.limit_per_address),
            "client": parse_many(settings.limit_per_client),
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
        for item in items:
            if not await self.strategy.test(item, *keys):
                return False
        return all([await self.strategy.hit(item, *keys) for item in items])

    async def retry_after(self, name: str, key: str) -> int:
        """Whole seconds until `key` may use limit `name` again: for a 429's Retry-After."""
        keys = ("portal", name, self._pseudonym(name, key))
        now = time.time()
        waits = [
            stats.reset_time - now
            for item in self.items[name]
            if (stats := await self.strategy.get_window_stats(item, *keys)).remaining <= 0
        ]
        return max(1, math.ceil(max(waits, default=1)))

    def longest_window(self) -> int:
        """Seconds of the longest window of any limit: an upper bound on any wait."""
        return max(item.get_expiry() for items in self.items.values() for item in items)

    async def allows(self, name: str, key: str) -> bool:
        """Whether one more use of `key` would stay within limit `name`, counting nothing.

        For limits on failures (a wrong password): test first, `hit` only when it failed.
        """
        keys = ("portal", name, self._pseudonym(name, key))
        return all([await self.strategy.test(item, *keys) for item in self.items[name]])

    def _pseudonym(self, name: str, key: str) -> str:
        message = f"{name}\0{key}".encode()
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()[:32]

    async def reset(self) -> None:
        await self.storage.reset()
