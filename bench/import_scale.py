"""Import at scale: rows/s against the raw argon2id rate on the same cores, and peak memory.

For each size, a synthetic CSV of that many distinct addresses is imported by `import_csv`
in a process of its own (so that each size has its own peak RSS), on all cores. The same
count of addresses is then hashed with argon2-cffi directly (HMAC-SHA256 with the pepper,
then argon2id at the default cost, as the blind index does) on as many threads, in another
fresh process: that is the rate the import cannot beat, and the ratio is what the import
is judged by (target: >= 0.9); half of that hashing runs just before the import and half
just after, so that on a shared machine both see about the same load. Peak RSS should not
grow with the row count. On SQLite the bench also prints the database's bytes per exposure
after VACUUM (target: <= 120).

`--read-only` measures only what the import holds before it hashes (the file read, checked
and deduplicated into its spill on disk), in minutes instead of hours.

`--kdf-memory KIB` imports with a cheaper argon2id than the default (the incident's
memory cost set to KIB, e.g. 64): the whole import, hashing and writing included, at
sizes the default cost would take hours for. Its rates say nothing about the default
cost (the output says which cost ran); its peak RSS is the figure it is for. Each row of
output prints the import's peak RSS, and the last line the growth from the smallest size
to each larger one (target: at most 8 MiB from 20 k to 200 k rows).

Usage: python bench/import_scale.py [ROWS ...] [--postgresql URL] [--read-only]
                                    [--kdf-memory KIB]
  (default: 10000 200000)
Example: python bench/import_scale.py 10000 200000
Example: python bench/import_scale.py --kdf-memory 64 20000 200000 2000000
Example: python bench/import_scale.py --read-only 10000 200000 2000000
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import hmac
import json
import os
import platform
import resource
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from argon2.low_level import Type, hash_secret_raw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bruteforce import cpu_model  # noqa: E402
from bench.databases import drop_scratch, new_scratch  # noqa: E402
from portal.core.blind_index import KdfParams  # noqa: E402

PARTNER = "park-a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", type=int, nargs="*", default=[10_000, 200_000])
    parser.add_argument("--postgresql", metavar="URL", help="import into PostgreSQL instead")
    parser.add_argument(
        "--read-only",
        action="store_true",
        help="only the import's reading phase (no hashing): its peak RSS per size, quickly",
    )
    parser.add_argument(
        "--kdf-memory",
        type=int,
        metavar="KIB",
        help="a cheaper argon2id memory cost for the import (peak RSS at large sizes)",
    )
    parser.add_argument("--child", nargs=3, metavar=("KIND", "FOLDER", "ROWS"), help="internal")
    args = parser.parse_args()
    params = KdfParams(memory_cost=args.kdf_memory or KdfParams().memory_cost)
    if args.child:
        kind, folder, rows = args.child
        print(json.dumps(_child(kind, Path(folder), int(rows), args.postgresql, params)))
        return
    cores = os.cpu_count() or 1
    cheaper = " (CHEAPER than the default: for the memory figures only)" if args.kdf_memory else ""
    print(f"{cpu_model()}, {cores} logical cores, Python {platform.python_version()}")
    print(
        f"argon2id t={params.time_cost} m={params.memory_cost} KiB p={params.parallelism}"
        f"{cheaper}, {cores} hashing threads, "
        f"{'PostgreSQL' if args.postgresql else 'SQLite'}, load {_load()}"
    )
    peaks: dict[int, float] = {}
    for rows in args.rows:
        with tempfile.TemporaryDirectory() as folder:
            if args.read_only:
                peaks[rows] = _measure_reading(Path(folder), rows)
            else:
                peaks[rows] = _measure(Path(folder), rows, args.postgresql, args.kdf_memory)
    smallest = min(peaks)
    growth = ", ".join(
        f"{rows:,} rows +{peak - peaks[smallest]:.1f} MiB" for rows, peak in peaks.items()
    )
    print(f"peak RSS growth from {smallest:,} rows: {growth}")


def _measure_reading(folder: Path, rows: int) -> float:
    write_leak(folder / "rows.csv", rows)
    read = _spawn("read", folder, rows, None)
    print(
        f"{rows:>9,} rows  reading phase {read['seconds']:6.1f} s  peak RSS "
        f"{read['peak_mib']:.1f} MiB (before {read['before_mib']:.1f} MiB), "
        f"{read['addresses']:,.0f} distinct addresses spilled for hashing"
    )
    return read["peak_mib"]


def _measure(folder: Path, rows: int, postgresql: str | None, kdf_memory: int | None) -> float:
    write_leak(folder / "rows.csv", rows)
    if kdf_memory:
        imported = _spawn("import", folder, rows, postgresql, kdf_memory)
        print(
            f"{rows:>9,} rows  import {imported['seconds']:8.1f} s {imported['rate']:6.0f} rows/s"
            f" (m={kdf_memory} KiB)  peak RSS import {imported['peak_mib']:.1f} MiB (before"
            f" import {imported['before_mib']:.1f})  load {_load()}"
        )
        return imported["peak_mib"]
    # Half the raw hashing before the import and half after: on a shared machine the
    # import is compared with what the cores gave around the same time.
    first = _spawn("raw", folder, rows // 2, postgresql)
    imported = _spawn("import", folder, rows, postgresql)
    second = _spawn("raw", folder, rows - rows // 2, postgresql)
    seconds = first["seconds"] + second["seconds"]
    raw = {"rate": rows / seconds, "peak_mib": max(first["peak_mib"], second["peak_mib"])}
    ratio = imported["rate"] / raw["rate"]
    print(
        f"{rows:>9,} rows  import {imported['seconds']:8.1f} s {imported['rate']:6.0f} rows/s"
        f"  raw argon2id {raw['rate']:6.0f} /s  ratio {ratio:.2f}"
        f"  peak RSS import {imported['peak_mib']:.0f} MiB (before import"
        f" {imported['before_mib']:.0f}), raw {raw['peak_mib']:.0f} MiB"
        f"  load {_load()}"
    )
    if "bytes_per_exposure" in imported:
        print(
            f"{'':>9}       SQLite after VACUUM: {imported['file_bytes']:,} bytes for "
            f"{imported['exposures']:,} exposures = {imported['bytes_per_exposure']:.1f} "
            "bytes per exposure"
        )
    return imported["peak_mib"]


def _spawn(
    kind: str, folder: Path, rows: int, postgresql: str | None, kdf_memory: int | None = None
) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", kind, str(folder), str(rows)]
    if postgresql:
        command += ["--postgresql", postgresql]
    if kdf_memory:
        command += ["--kdf-memory", str(kdf_memory)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode:
        raise SystemExit(done.stderr)
    result: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return result


def _child(
    kind: str, folder: Path, rows: int, postgresql: str | None, params: KdfParams
) -> dict[str, float]:
    if kind == "raw":
        return _raw(rows)
    if kind == "read":
        return _read(folder)
    return _import(folder, rows, postgresql, params)


def _read(folder: Path) -> dict[str, float]:
    """What the import holds before it hashes: the file read, checked and deduplicated."""
    from portal.incidents.columns import plan_columns
    from portal.incidents.reading import read_file
    from portal.incidents.spill import spill_folder

    before = _peak_mib()
    started = time.perf_counter()
    with spill_folder(folder) as spill:
        read = read_file(
            folder / "rows.csv",
            lambda header: plan_columns(header, mapping={}, email_column=None),
            None,
            pepper=b"bench",
            folder=spill,
        )
        for _ in read.distinct.sorted():  # the hashing phase's reading of the spill
            pass
    return {
        "seconds": time.perf_counter() - started,
        "peak_mib": _peak_mib(),
        "before_mib": before,
        "addresses": read.summary.addresses,
    }


def _raw(rows: int) -> dict[str, float]:
    """argon2-cffi alone: the blind index's HMAC and argon2id, on one thread per core."""
    params, pepper, salt = KdfParams(), secrets.token_bytes(32), secrets.token_bytes(16)

    def index(n: int) -> bytes:
        keyed = hmac.new(pepper, f"person{n}@example.org".encode(), hashlib.sha256).digest()
        return hash_secret_raw(
            secret=keyed,
            salt=salt,
            time_cost=params.time_cost,
            memory_cost=params.memory_cost,
            parallelism=params.parallelism,
            hash_len=32,
            type=Type.ID,
        )

    started = time.perf_counter()
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        for _ in pool.map(index, range(rows), chunksize=64):
            pass
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rate": rows / seconds, "peak_mib": _peak_mib()}


def _import(folder: Path, rows: int, postgresql: str | None, params: KdfParams) -> dict[str, float]:
    from portal.core.config import Settings
    from portal.incidents.importer import import_csv
    from portal.incidents.stored import load_incident_file
    from portal.store import db
    from tests.factories import INCIDENT

    url = new_scratch(postgresql) if postgresql else f"sqlite:///{folder}/portal.db"
    settings = Settings(instance_dir=folder, database_url=url, secret_key="bench", pepper=b"bench")
    engine = db.make_engine(url)
    db.migrate(engine)
    (folder / "incident.toml").write_text(INCIDENT, encoding="utf-8")
    load_incident_file(engine, folder / "incident.toml")
    if params != KdfParams():
        from sqlalchemy import update

        from portal.store import tables

        with engine.begin() as conn:
            conn.execute(update(tables.incidents).values(kdf_memory_cost=params.memory_cost))
    before = _peak_mib()
    started = time.perf_counter()
    summary = import_csv(
        engine, settings, incident="ticketing-2021", partner=PARTNER, path=folder / "rows.csv"
    )
    seconds = time.perf_counter() - started
    assert summary.new_exposures == rows, summary
    result = {
        "seconds": seconds,
        "rate": rows / seconds,
        "peak_mib": _peak_mib(),
        "before_mib": before,
    }
    engine.dispose()
    if postgresql:
        drop_scratch(postgresql, url)
    else:
        result.update(_sqlite_size(folder / "portal.db"))
    return result


def _sqlite_size(path: Path) -> dict[str, float]:
    # VACUUM INTO: a compact copy, not in WAL mode (a VACUUM there would sit in the -wal).
    copy = path.with_name("vacuumed.db")
    with sqlite3.connect(path) as conn:
        conn.execute("VACUUM INTO ?", (str(copy),))
        exposures = conn.execute("SELECT count(*) FROM exposures").fetchone()[0]
    size = copy.stat().st_size
    copy.unlink()
    return {"file_bytes": size, "exposures": exposures, "bytes_per_exposure": size / exposures}


def write_leak(path: Path, rows: int) -> None:
    """A partner's leaked file: person0 … person{rows-1}@example.org, with a name and more."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "naam", "telefoon", "postcode"])
        writer.writerows(
            [f"person{n}@example.org", f"Naam {n}", f"06{n:08d}" if n % 3 else "", "1234 AB"]
            for n in range(rows)
        )


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    main()
