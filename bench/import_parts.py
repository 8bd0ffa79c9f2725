"""Import in parts: N `portal import --part K/N` processes at once against one process.

Each scenario imports the same synthetic file of distinct addresses into a PostgreSQL
database of its own, at the default argon2id cost, with real `portal import` processes:

- `one process, 1 thread`: `--workers 1`, the baseline that parts are judged against
  (one host of one core);
- `N parts, 1 thread each`: N processes started together, `--part K/N --workers 1`, as N
  hosts of one core each would run them (target with N = 2: >= 1.6 x the baseline);
- `one process, all threads`: `--workers` = the machine's cores, for comparison: on one
  host, parts add nothing over the threads of one process.

Wall time from the first start to the last exit. Each scenario checks that the database
holds every address once. The machine's load average is printed before and after: on a
shared machine, other work takes cores away from every scenario alike only roughly.

Usage: python bench/import_parts.py [--rows N] [--parts N] [--postgresql URL]
Example: python bench/import_parts.py --rows 4000 --parts 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bruteforce import cpu_model  # noqa: E402
from bench.databases import POSTGRESQL, drop_scratch, new_scratch  # noqa: E402
from bench.import_scale import write_leak  # noqa: E402

SLUG, PARTNER = "ticketing-2021", "park-a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--parts", type=int, default=2)
    parser.add_argument("--postgresql", metavar="URL", default=POSTGRESQL)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print(f"{cpu_model()}, {cores} logical cores, PostgreSQL, default argon2id cost")
    print(f"{args.rows:,} distinct addresses; load before {_load()}")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "leak.csv"
        write_leak(path, args.rows)
        runs = [
            ("one process, 1 thread", [["--workers", "1"]]),
            (
                f"{args.parts} parts, 1 thread each",
                [
                    ["--workers", "1", "--part", f"{k}/{args.parts}"]
                    for k in range(1, 1 + args.parts)
                ],
            ),
            (f"one process, {cores} threads", [["--workers", str(cores)]]),
        ]
        seconds = {name: _scenario(Path(folder), path, args, extra) for name, extra in runs}
    base = seconds[runs[0][0]]
    for name, took in seconds.items():
        rate = args.rows / took
        print(f"  {name:<28} {took:7.1f} s  {rate:6.0f} rows/s  {base / took:4.2f} x one process")
    print(f"load after {_load()}")


def _scenario(folder: Path, path: Path, args: argparse.Namespace, extra: list[list[str]]) -> float:
    url = new_scratch(args.postgresql)
    try:
        env = _env(folder, url)
        _portal(env, folder, "init")
        (folder / "incident.toml").write_text(_incident(), encoding="utf-8")
        _portal(env, folder, "incident", "load", str(folder / "incident.toml"))
        started = time.perf_counter()
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "portal", "import", SLUG, PARTNER, str(path), *more],
                env=env,
                cwd=folder,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for more in extra
        ]
        for process in processes:
            _, stderr = process.communicate()
            if process.returncode:
                raise SystemExit(stderr)
        took = time.perf_counter() - started
        _check(url, args.rows)
        return took
    finally:
        drop_scratch(args.postgresql, url)


def _check(url: str, rows: int) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    engine = create_engine(make_url(url).set(drivername="postgresql+psycopg"))
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT count(DISTINCT bidx) FROM exposures")).scalar()
    engine.dispose()
    if stored != rows:
        raise SystemExit(f"{stored} exposures stored, {rows} expected")


def _incident() -> str:
    from tests.factories import INCIDENT

    return INCIDENT


def _env(folder: Path, url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")}
    env.update(
        PORTAL_INSTANCE_DIR=str(folder / "instance"),
        PORTAL_DATABASE_URL=url,
        PORTAL_SECRET_KEY="bench",
        PORTAL_PEPPER="bench-pepper",
    )
    return env


def _portal(env: dict[str, str], folder: Path, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "portal", *args], env=env, cwd=folder, capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(done.stderr)


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    main()
