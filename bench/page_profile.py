"""Where a page's time goes: py-spy samples `portal serve` while wrk loads one page.

Starts the set-up of bench/page_bench.py (the standard incident, two partners' records,
Alice's session), then for each page samples the server process with py-spy (`pip install
py-spy`; it needs ptrace, so root or CAP_SYS_PTRACE) for DURATION seconds while wrk loads
that page, and prints the share of the samples spent in each part of the path (by the
package of the innermost frame: the event loop and uvicorn, Starlette, the portal's
middlewares, SQLAlchemy, the database driver, Jinja, logging, metrics, ...) and the
functions with the most samples, themselves and with what they call.

Usage: python bench/page_profile.py [DURATION] [CONNECTIONS]   (defaults 10 and 32)
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.page_bench import running_pages

TOP = 15
ROOT = Path(__file__).resolve().parent.parent
# The part of the path a frame's file belongs to, first match wins.
PARTS = [
    ("portal middlewares", "portal/web/middleware.py"),
    ("portal pages (csrf, render)", "portal/web/"),
    ("portal results (query, order)", "portal/person/"),
    ("portal other", "portal/"),
    ("sqlalchemy", "sqlalchemy/"),
    ("database driver", "sqlite3/"),
    ("database driver", "psycopg"),
    ("jinja2 + templates", "jinja2/"),
    ("jinja2 + templates", ".html"),
    ("jinja2 + templates", "markupsafe/"),
    ("babel (dates, plurals)", "babel/"),
    ("hmac (csrf, tokens)", "hmac.py"),
    ("hmac (csrf, tokens)", "itsdangerous/"),
    ("logging", "logging/"),
    ("json", "json/"),
    ("prometheus_client", "prometheus_client/"),
    ("starlette", "starlette/"),
    ("anyio threads", "anyio/"),
    ("threading", "threading.py"),
    ("uvicorn + httptools", "uvicorn/"),
    ("asyncio + uvloop", "asyncio/"),
    ("asyncio + uvloop", "uvloop"),
]
# The frames around every request (the CLI, uvicorn's start, the loop): not worth listing.
SHELL = (
    "typer/",
    "runpy",
    "portal/cli/",
    "portal/__main__",
    "uvicorn/main.py",
    "_compat.py",
    "asyncio/runners.py",
)
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def main(duration: int, connections: int) -> None:
    if shutil.which("wrk") is None or shutil.which("py-spy") is None:
        sys.exit("needs wrk (apt-get install wrk) and py-spy (pip install py-spy)")
    with running_pages() as (urls, portal), tempfile.TemporaryDirectory() as folder:
        for name in ("incident page", "results page"):
            url, cookie = urls[name]
            raw = Path(folder) / f"{name}.txt"
            stacks = sample(portal.pid, url, cookie, duration, connections, raw)
            report(name, stacks)


def sample(
    pid: int, url: str, cookie: str | None, duration: int, connections: int, out: Path
) -> Counter[tuple[str, ...]]:
    """The server's stacks (outermost frame first) and how often py-spy saw each."""
    spy_args = ["--pid", str(pid), "--duration", str(duration), "--rate", "250", "--nonblocking"]
    spy = subprocess.Popen(
        ["py-spy", "record", *spy_args, "--format", "raw", "--output", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    headers = ["-H", f"Cookie: {cookie}"] if cookie else []
    wrk = ["wrk", "-t1", f"-c{connections}", f"-d{duration + 1}s", *headers, url]
    rate = subprocess.run(wrk, capture_output=True, text=True, check=True).stdout
    spy.wait()
    print(next(line for line in rate.splitlines() if "Requests/sec" in line).strip())
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in out.read_text(encoding="utf-8").splitlines():
        frames, _, count = line.rpartition(" ")
        stacks[tuple(frames.split(";"))] += int(count)
    return stacks


def report(name: str, stacks: Counter[tuple[str, ...]]) -> None:
    busy = Counter({stack: n for stack, n in stacks.items() if not _idle(stack)})
    total = sum(busy.values())
    print(f"\n{name}: {total} samples with the server busy ({sum(stacks.values())} in all)")
    parts: Counter[str] = Counter()
    own: Counter[str] = Counter()
    within: Counter[str] = Counter()
    for stack, n in busy.items():
        parts[_part(stack[-1])] += n
        own[_short(stack[-1])] += n
        for frame in {_short(f) for f in stack if not any(w in f for w in SHELL)}:
            within[frame] += n
    print("  by part of the path (innermost frame):")
    for part, n in parts.most_common():
        print(f"    {100 * n / total:5.1f} %  {part}")
    print(f"  top {TOP} functions, with what they call:")
    for frame, n in within.most_common(TOP):
        print(f"    {100 * n / total:5.1f} %  {frame}")
    print(f"  top {TOP} functions, themselves:")
    for frame, n in own.most_common(TOP):
        print(f"    {100 * n / total:5.1f} %  {frame}")


def _idle(stack: tuple[str, ...]) -> bool:
    """The loop waiting for sockets, or a pool thread waiting for work."""
    inner = stack[-1]
    return any(word in inner for word in ("select (", "_worker (", "wait (", "run_forever ("))


def _part(frame: str) -> str:
    match = FRAME.match(frame)
    where = match.group("file") if match else frame
    return next((part for part, needle in PARTS if needle in where), "other")


def _short(frame: str) -> str:
    match = FRAME.match(frame)
    if not match:
        return frame
    where = match.group("file")
    for marker in ("site-packages/", "/lib/python3", f"{ROOT}/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{match.group('function')} ({where})"


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    main(*(args + [10, 32][len(args) :]))
