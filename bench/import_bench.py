"""Import throughput: synthetic CSV rows hashed and written per second, by worker count.

Usage: python bench/import_bench.py [ROWS]   (default 4000)
"""

from __future__ import annotations

import csv
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from bench.bruteforce import cpu_model
from portal.core.config import Settings
from portal.incidents.importer import import_csv
from portal.incidents.stored import load_incident_file
from portal.store import db

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.factories import INCIDENT


def main(rows: int) -> None:
    print(f"python {platform.python_version()}, {os.cpu_count()} cores, {cpu_model()}")
    print(f"{rows} rows, argon2id m=8 MiB t=1 p=1, SQLite")
    for workers in sorted({1, os.cpu_count() or 1}):
        with tempfile.TemporaryDirectory() as folder:
            seconds = _run(Path(folder), rows, workers)
        print(f"workers={workers}: {seconds:.2f} s, {rows / seconds:.0f} rows/s")


def _run(folder: Path, rows: int, workers: int) -> float:
    settings = Settings(
        instance_dir=folder,
        database_url=f"sqlite:///{folder}/portal.db",
        secret_key="bench",
        pepper=b"bench",
    )
    engine = db.make_engine(settings.database_url)
    db.migrate(engine)
    (folder / "incident.toml").write_text(INCIDENT, encoding="utf-8")
    load_incident_file(engine, folder / "incident.toml")
    path = folder / "rows.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "naam", "telefoon"])
        writer.writerows([f"person{i}@example.org", f"Naam {i}", "0600000000"] for i in range(rows))
    started = time.perf_counter()
    import_csv(
        engine, settings, incident="ticketing-2021", partner="park-a", path=path, workers=workers
    )
    elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 4000)
