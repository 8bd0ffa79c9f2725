"""What one brute-force guess against the blind index costs, on this machine.

A guess is what an attacker holding the database *and* the pepper must do per candidate
address: normalise it, HMAC-SHA256 it with the pepper, argon2id it with the deployment
salt at the incident's parameters, and compare. Without the pepper there is nothing to
guess with: the HMAC key is 48 random url-safe characters (288 bits).

Example: python bench/bruteforce.py --seconds 5
Example: python bench/bruteforce.py --time-cost 4   (four passes: 4x the default cost)
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from portal.core.blind_index import KdfParams, blind_index, normalise

LIST_SIZES = (1_000_000, 10_000_000, 100_000_000)


def guess(address: str, pepper: bytes, salt: bytes, params: KdfParams) -> bytes:
    """One guess costs what a lookup costs: normalise, then the keyed argon2id index."""
    return blind_index(normalise(address), pepper=pepper, salt=salt, params=params)


def guesses_per_second(threads: int, seconds: float, params: KdfParams) -> float:
    """Guesses per second over `threads` threads (argon2-cffi releases the GIL)."""
    pepper, salt = secrets.token_bytes(32), secrets.token_bytes(16)

    def worker(n: int) -> int:
        done, deadline = 0, time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            guess(f"candidate{n}.{done}@example.org", pepper, salt, params)
            done += 1
        return done

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(worker, range(threads)))
    return total / (time.perf_counter() - started)


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def duration(seconds: float) -> str:
    for unit, size in (("years", 365 * 86400), ("days", 86400), ("hours", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:,.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time per run")
    parser.add_argument("--time-cost", type=int, default=KdfParams.time_cost)
    parser.add_argument("--memory-kib", type=int, default=KdfParams.memory_cost)
    args = parser.parse_args()
    params = KdfParams(time_cost=args.time_cost, memory_cost=args.memory_kib)
    cores = os.cpu_count() or 1

    one = guesses_per_second(1, args.seconds, params)
    every = guesses_per_second(cores, args.seconds, params)

    python = platform.python_version()
    print(f"machine      : {cpu_model()}, {cores} logical cores, Python {python}")
    print(
        f"argon2id     : time_cost={params.time_cost}, memory_cost={params.memory_cost} KiB "
        f"({params.memory_cost // 1024} MiB), parallelism={params.parallelism}"
        f"{' (defaults)' if params == KdfParams() else ''}"
    )
    print(f"one guess    : {1000 / one:.2f} ms (normalise + HMAC-SHA256 + argon2id), one core")
    print(f"per core     : {one:,.0f} guesses/s")
    print(f"all {cores} cores  : {every:,.0f} guesses/s")
    for size in LIST_SIZES:
        print(
            f"list of {size:>11,} addresses: {duration(size / one)} on one core, "
            f"{duration(size / every)} on this machine, "
            f"{size / one / 3600:,.1f} core-hours"
        )
    print(
        "each guess costs "
        f"{params.memory_cost // 1024} MiB of memory for its duration; a GPU or a rented fleet "
        "divides the wall time, not the core-hours."
    )


if __name__ == "__main__":
    main()
