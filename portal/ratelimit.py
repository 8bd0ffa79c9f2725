"""Abuse limits with the `limits` library: in memory by default, Redis when configured."""

from __future__ import annotations

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from portal.config import Settings


class RateLimiter:
    """Named limits ('address', 'client', 'confirm', 'login') over one shared storage."""

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
        self.items: dict[str, RateLimitItem] = {
            "address": parse(settings.limit_per_address),
            "client": parse(settings.limit_per_client),
            "confirm": parse(settings.limit_confirm_per_client),
            "login": parse(settings.limit_login),
        }

    async def hit(self, name: str, key: str) -> bool:
        """Counts one use of `key` under limit `name`; False when over the limit."""
        return await self.strategy.hit(self.items[name], "portal", name, key)

    async def reset(self) -> None:
        await self.storage.reset()
