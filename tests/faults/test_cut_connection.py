"""`portal import` and `portal notify` whose database connection is cut halfway.

Each stops with one line that says what happened and what to do: no traceback, and nothing
of a statement (no blind index, no address). What it committed is kept in whole batches,
and the rerun gives exactly what a clean run gives.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factories import write_csv
from tests.faults.servers import SLUG, Cluster, address, run_cli
from tests.fixtures_mail import wait_for_sync
from tests.server import portal_env, shows_in_the_guide

pytestmark = pytest.mark.e2e

PARTNER = "theater-b"
ROWS = 1100  # the importer writes 1000 at a time, notify 200
CUT = (
    "error: the database stopped answering (OperationalError); what was committed before "
    "stays, nothing after it was written: run the command again once it answers"
)


def started(env: dict[str, str], cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "portal", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def cut_once_written(cluster: Cluster, database: str, table: str, at_least: int) -> None:
    """Waits until `table` holds a committed batch, then cuts every connection."""
    query = f"SELECT count(*) FROM {table}"
    wait_for_sync(lambda: cluster.server.sql(query, database)[0][0] >= at_least, timeout=120)
    assert cluster.server.cut_connections(database) >= 1


def assert_one_line_without_values(process: subprocess.Popen[str]) -> str:
    """What the process printed, once it stopped as it should."""
    out, err = process.communicate(timeout=120)
    assert process.returncode == 1, (out, err)
    printed = out + err
    assert "Traceback" not in printed
    assert "[parameters" not in printed and "[SQL" not in printed
    assert "@example.net" not in printed
    assert not re.search(r"[0-9a-f]{32}", printed)  # no blind index
    lines = err.strip().splitlines()
    # The log entry says where, by the portal's functions only; the last line what to do.
    assert re.fullmatch(r"ERROR: database error \w+ in \w+\.\w+( < \w+\.\w+)*", lines[-2])
    assert lines[-1] == CUT
    return printed


def rows(cluster: Cluster, database: str, query: str) -> list[tuple[object, ...]]:
    return cluster.server.sql(query, database)


EXPOSURES = (
    "SELECT encode(e.bidx, 'hex'), e.fields FROM exposures e JOIN partners p "
    f"ON p.id = e.partner_id WHERE p.slug = '{PARTNER}' ORDER BY 1"
)
# A notice per address, naming the partner with the fields of the address's row, and its
# mail queued: what a clean notify gives for the imported file.
NOTICES = (
    "SELECT encode(n.bidx, 'hex'), np.fields FROM notices n "
    "JOIN notice_partners np ON np.notice_id = n.id JOIN outbox o ON o.id = n.outbox_id "
    "WHERE n.status = 'queued' AND np.named AND o.kind = 'notice' AND o.status = 'queued' "
    "ORDER BY 1"
)


def test_it_stops_with_one_line_and_the_rerun_gives_the_clean_result(
    tmp_path: Path, cluster: Cluster
) -> None:
    csv = write_csv(
        tmp_path / "theater-b.csv",
        [["email", "naam", "IBAN"]]
        + [[address(n), f"Person {n}", f"NL91ABNA{n:010d}"] for n in range(5000, 5000 + ROWS)],
    )
    cut, clean = cluster.database("fast"), cluster.database("fast")
    base = {"PORTAL_BASE_URL": "https://lek.example.org"}
    env = portal_env(tmp_path / "cut", PORTAL_DATABASE_URL=cluster.server.url(cut), **base)
    clean_env = portal_env(
        tmp_path / "clean", PORTAL_DATABASE_URL=cluster.server.url(clean), **base
    )
    importing = ("import", SLUG, PARTNER, csv.name)
    notifying = ("notify", SLUG, PARTNER, csv.name)

    running = started(env, tmp_path, *importing)
    cut_once_written(cluster, cut, "exposures e JOIN partners p ON p.id = e.partner_id "
                     f"WHERE p.slug = '{PARTNER}'", 1000)  # fmt: skip
    printed = assert_one_line_without_values(running)
    shows_in_the_guide("connection-cut", ran={" ".join(("portal", *importing)): printed})
    # Whole batches only: the first thousand, none of the rest.
    assert len(rows(cluster, cut, EXPOSURES)) == 1000
    assert run_cli(env, *importing, cwd=tmp_path).returncode == 0
    assert run_cli(clean_env, *importing, cwd=tmp_path).returncode == 0
    assert rows(cluster, cut, EXPOSURES) == rows(cluster, clean, EXPOSURES)
    assert len(rows(cluster, cut, EXPOSURES)) == ROWS

    running = started(env, tmp_path, *notifying)
    cut_once_written(cluster, cut, "notices", 200)
    assert_one_line_without_values(running)
    assert len(rows(cluster, cut, NOTICES)) % 200 == 0
    assert run_cli(env, *notifying, cwd=tmp_path).returncode == 0
    assert rows(cluster, cut, NOTICES) == rows(cluster, clean, EXPOSURES)
    assert rows(cluster, cut, "SELECT count(*) FROM outbox") == [(ROWS,)]
