"""Two `portal notify` processes at once on one PostgreSQL database: one notice per address.

Two files of one partner that share addresses, imported and then notified by two real
processes at the same time: every address gets exactly one notice and one message in the
outbox, and the two summaries together count each address once as new.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from portal.core.config import Settings
from portal.incidents.stored import load_incident_file
from portal.store import tables
from tests.factories import INCIDENT
from tests.server import count, start_portal_cli

SLUG = "ticketing-2021"

pytestmark = pytest.mark.backends(
    "postgresql", reason="many hosts share PostgreSQL; SQLite serves one machine"
)


def write(path: Path, numbers: range, column: str) -> Path:
    lines = [f"email,{column}", *(f"p{n}@example.org,x{n}" for n in numbers)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_at_once(settings: Settings, *commands: list[str]) -> list[str]:
    started = [
        start_portal_cli(settings, *command, PORTAL_BASE_URL="https://portal.example")
        for command in commands
    ]
    outputs = [process.communicate(timeout=600) for process in started]
    for process, (_, stderr) in zip(started, outputs, strict=True):
        assert process.returncode == 0, stderr
    return [stdout for stdout, _ in outputs]


def test_two_notify_runs_at_once_queue_one_notice_per_address(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "incident.toml").write_text(INCIDENT, encoding="utf-8")
    load_incident_file(engine, tmp_path / "incident.toml")
    names = write(tmp_path / "names.csv", range(0, 600), "naam")
    phones = write(tmp_path / "phones.csv", range(300, 900), "telefoon")
    run_at_once(
        settings,
        ["import", SLUG, "park-a", str(names)],
        ["import", SLUG, "park-a", str(phones)],
    )

    first, second = run_at_once(
        settings,
        ["notify", SLUG, "park-a", str(names), "--rate", "1000"],
        ["notify", SLUG, "park-a", str(phones), "--rate", "1000"],
    )

    n, o = tables.notices.c, tables.outbox.c
    with engine.connect() as conn:
        notices = conn.scalar(select(func.count()).select_from(tables.notices))
        distinct = conn.scalar(select(func.count(func.distinct(n.bidx))))
        mails = conn.scalar(select(func.count()).where(o.kind == "notice"))
    assert notices == distinct == mails == 900
    new = [count(out, "new notices queued") for out in (first, second)]
    already = [count(out, "already notified for this partner") for out in (first, second)]
    assert sum(new) == 900 and sum(already) == 300
