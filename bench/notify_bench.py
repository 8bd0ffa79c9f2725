"""Notice queueing: a synthetic partner file imported, then `portal notify` timed on it.

Prints, per size, the queueing rate (distinct addresses queued per second, argon2id
included) beside the raw argon2id rate of the same machine, and the process's peak RSS.
Each size runs in a process of its own, so that one size's peak does not hide another's.

Usage: python bench/notify_bench.py [SIZE ...]   (default 10000 100000)
"""

from __future__ import annotations

import csv
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bruteforce import cpu_model
from portal.core.blind_index import KdfParams, blind_index
from portal.core.config import Settings
from portal.incidents.importer import import_csv
from portal.incidents.stored import load_incident_file
from portal.reach.notices import notify
from portal.store import db
from tests.factories import INCIDENT, RENDERER

SLUG, PARTNER = "ticketing-2021", "park-a"


def main(sizes: list[int]) -> None:
    cores = os.cpu_count() or 1
    print(f"python {platform.python_version()}, {cores} cores, {cpu_model()}")
    print(f"argon2id m=8 MiB t=1 p=1, SQLite; raw argon2id: {_argon2_rate(cores):,.0f} hashes/s")
    for size in sizes:
        child = [sys.executable, __file__, "--one", str(size)]
        subprocess.run(child, check=True)


def _argon2_rate(workers: int, count: int = 2000) -> float:
    """Addresses hashed per second on `workers` threads: the ceiling of any queueing rate."""
    addresses = [f"person{i}@example.org" for i in range(count)]

    def index(address: str) -> bytes:
        return blind_index(address, pepper=b"bench", salt=b"s" * 16, params=KdfParams())

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(index, addresses))
    return count / (time.perf_counter() - started)


def one(size: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(
            instance_dir=Path(folder),
            database_url=f"sqlite:///{folder}/portal.db",
            secret_key="bench",
            pepper=b"bench",
        )
        engine = db.make_engine(settings.database_url)
        db.migrate(engine)
        (Path(folder) / "incident.toml").write_text(INCIDENT, encoding="utf-8")
        load_incident_file(engine, Path(folder) / "incident.toml")
        path = _leak(Path(folder) / "park-a.csv", size)
        import_csv(engine, settings, incident=SLUG, partner=PARTNER, path=path)
        after_import = _peak_mib()
        started = time.perf_counter()
        summary = notify(
            engine,
            settings,
            incident=SLUG,
            partner=PARTNER,
            path=path,
            renderer=RENDERER,
            rate=10,
        )
        seconds = time.perf_counter() - started
        engine.dispose()
        database = Path(folder, "portal.db").stat().st_size / 2**20
    assert summary.new == size, summary
    print(
        f"{size:>7,} notices: {seconds:7.1f} s, {size / seconds:5.0f} addresses/s queued; "
        f"peak RSS {_peak_mib():.0f} MiB (after the import {after_import:.0f} MiB); "
        f"database {database:.0f} MiB; the schedule spans "
        f"{(summary.last_at - summary.first_at).total_seconds() / 3600:.1f} h at 10/s"  # type: ignore[operator]
    )


def _leak(path: Path, size: int) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "naam", "telefoon", "postcode"])
        writer.writerows(
            [f"person{i}@example.org", f"Naam {i}", "0600000000", "1234 AB"] for i in range(size)
        )
    return path


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        one(int(sys.argv[2]))
    else:
        main([int(a) for a in sys.argv[1:]] or [10_000, 100_000])
