"""The in-memory rate limiter with many distinct keys: memory, time per hit, expiry upkeep.

A flood of distinct addresses, as notice day brings, through `portal.person.ratelimit.RateLimiter`
without Redis. Two phases, each on a fresh limiter:

1. KEYS distinct keys hit once each within an hour's window: the memory held per key
   (tracemalloc), the time per hit, and the thread hops the store made meanwhile;
2. KEYS keys hit within a 2-second window, the window passes, then 2,000 more hits: how
   many keys are left, how long those hits took, and the thread hops of the sweep.

Between hits the loop yields, as a server does between requests, so that a store's
background tasks run. `--store limits` measures the library's MemoryStorage instead.

Usage: python bench/limiter_keys.py [KEYS] [--store portal|limits]   (default 100000)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from portal.core.config import Settings
from portal.person.ratelimit import RateLimiter

AFTER = 2_000


def limiter(window: str, store: str) -> RateLimiter:
    settings = Settings(
        instance_dir=Path("."),
        database_url="sqlite://",
        secret_key="bench",
        pepper=b"bench",
        limit_per_address=f"5/{window}",
    )
    made = RateLimiter(settings)
    if store == "limits":
        made.storage = MemoryStorage()
        made.strategy = MovingWindowRateLimiter(made.storage)
    return made


async def flood(target: RateLimiter, keys: int, prefix: str) -> float:
    started = time.perf_counter()
    for n in range(keys):
        await target.hit("address", f"{prefix}{n:028x}")
        await asyncio.sleep(0)
    return time.perf_counter() - started


def keys_held(target: RateLimiter) -> int:
    storage = target.storage
    if isinstance(storage, MemoryStorage):
        return len(storage.events)
    return int(getattr(storage, "size", 0))


def counting_thread_hops() -> Callable[[], int]:
    """Counts asyncio.to_thread calls (the library's sweep hops once per key)."""
    count = [0]
    original = asyncio.to_thread

    async def counting(func, /, *args, **kwargs):  # type: ignore[no-untyped-def]
        count[0] += 1
        return await original(func, *args, **kwargs)

    asyncio.to_thread = counting  # type: ignore[assignment]
    return lambda: count[0]


async def held_in_an_hour(keys: int, store: str, hops: Callable[[], int]) -> None:
    target = limiter("hour", store)
    gc.collect()
    tracemalloc.start()
    before = hops()
    elapsed = await flood(target, keys, "a")
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"1. {keys} distinct keys, each hit once in an hour's window")
    print(f"   keys held           {keys_held(target):9d}")
    print(f"   memory held         {held / 1e6:9.1f} MB  ({held / keys:.0f} bytes a key)")
    print(f"   time per hit        {elapsed / keys * 1e6:9.1f} µs  (under tracemalloc)")
    print(f"   thread hops         {hops() - before:9d}")


async def swept_after_the_window(keys: int, store: str, hops: Callable[[], int]) -> None:
    target = limiter("2 seconds", store)
    await flood(target, keys, "b")
    await asyncio.sleep(2.5)
    before, held = hops(), keys_held(target)
    elapsed = await flood(target, AFTER, "c")
    print(f"2. {keys} keys in a 2-second window; the window passes; {AFTER} more hits")
    print(f"   keys held before    {held:9d}")
    print(f"   keys held after     {keys_held(target):9d}")
    print(f"   time per hit        {elapsed / AFTER * 1e6:9.1f} µs")
    print(f"   thread hops         {hops() - before:9d}")


async def run(keys: int, store: str) -> None:
    hops = counting_thread_hops()
    print(f"python {platform.python_version()}, store: {store}")
    await held_in_an_hour(keys, store, hops)
    await swept_after_the_window(keys, store, hops)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("keys", nargs="?", type=int, default=100_000)
    parser.add_argument("--store", choices=("portal", "limits"), default="portal")
    args = parser.parse_args()
    asyncio.run(run(args.keys, args.store))


if __name__ == "__main__":
    main()
