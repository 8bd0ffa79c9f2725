"""The disk under SQLite full, with `portal serve` running and `portal import` started.

The disk is a real one filled up: a small tmpfs of the test's own, so SQLite meets ENOSPC
and answers SQLITE_FULL as it would on a full disk. (`PRAGMA max_page_count` would give
SQLITE_FULL too, but only on a connection the test opens, never the server's.) Mounting
needs root; elsewhere the test is skipped with that reason.

A page that must write answers 503 with Retry-After; pages that read go on; a lookup is
answered 303 and waits for room; the import stops with the reason and writes nothing half.
Once there is room again, everything answers without a restart, every lookup gets its
mail, and the import run again gives exactly what a clean import gives.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import sqlite3
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.factories import write_csv
from tests.faults.servers import (
    LOAD_LIMITS,
    SLUG,
    LookupClient,
    address,
    backend_chosen,
    confirm,
    csrf,
    incident_text,
    load_and_import,
    run_cli,
    running_portals,
    running_relay,
)
from tests.fixtures_mail import SmtpServer, wait_for_sync
from tests.server import portal_env, shows_in_the_guide

pytestmark = pytest.mark.e2e

FULL = (
    "error: the disk under the database is full (OperationalError); what was committed "
    "before stays, nothing after it was written: free space, then run the command again"
)
UNSENT = "SELECT count(*) FROM outbox WHERE sent_at IS NULL"
EXPOSURES = (
    "SELECT hex(e.bidx), e.fields FROM exposures e JOIN partners p ON p.id = e.partner_id "
    "WHERE p.slug = 'theater-b' ORDER BY 1"
)


@contextmanager
def small_disk(folder: Path, size: str = "8m") -> Iterator[Path]:
    """A tmpfs of `size` mounted on `folder`, unmounted afterwards."""
    folder.mkdir(parents=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small disk to fill needs root (CI on this machine runs as root)")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small disk to fill: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(disk: Path) -> Path:
    """Writes a file until the disk has no room left for a byte."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def truncate_wal(path: Path) -> None:
    """Empties SQLite's write-ahead log, so that the next write needs new room on disk."""

    def truncated() -> bool:
        with sqlite3.connect(path) as conn:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return busy == 0

    wait_for_sync(truncated)


def fill_with_the_log_empty(disk: Path, database: Path) -> Path:
    """The disk filled while SQLite's write-ahead log is empty. A log with frames in it is
    written over from its start once checkpointed, and a small write then needs no new room:
    a write the server made between the checkpoint and the filling (its mail worker's, its
    counters') is checkpointed away and the disk filled again."""
    for _ in range(10):
        truncate_wal(database)
        filler = fill(disk)
        if database.with_name(database.name + "-wal").stat().st_size == 0:
            return filler
        filler.unlink()
    raise AssertionError("the server kept writing: no moment with an empty log to fill the disk")


def read(path: Path, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(query).fetchall()


def test_it_answers_503_and_writes_nothing_half_with_the_disk_full(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    backend_chosen(request.config, "sqlite")
    csv = write_csv(
        tmp_path / "theater-b.csv",
        [["email", "naam", "IBAN"]]
        + [[address(n), f"Person {n}", f"NL91ABNA{n:010d}"] for n in range(5000, 5300)],
    )
    with small_disk(tmp_path / "disk") as disk, running_relay() as relay:
        database = disk / "portal.db"
        settings = {"PORTAL_DATABASE_URL": f"sqlite:///{database}", **LOAD_LIMITS}
        env = portal_env(tmp_path / "operator", PORTAL_SMTP_URL=relay.url(), **settings)
        load_and_import(env, tmp_path / "operator", incident_text(), range(0, 200, 4))
        truncate_wal(database)
        # The clean import's starting point: the same incident and salt, on a roomy disk.
        clean = tmp_path / "clean.db"
        shutil.copy(database, clean)
        importing = ("import", SLUG, "theater-b", csv.name)

        with (
            running_portals([(tmp_path / "server", dict(env))]) as (server,),
            httpx.Client(base_url=server.url, timeout=10) as browser,
            LookupClient(server) as client,
        ):
            assert client.look_up(address(0)) == 303
            wait_for_sync(lambda: relay.received, timeout=30)
            found = re.search(r"/v/[A-Za-z0-9_.\-]+", relay.received[0].content.decode())
            assert found
            link = found[0]

            # The worker's own record of that mail, before the disk fills: this test is
            # about the pages, the lookups and the import meeting a full disk.
            wait_for_sync(lambda: read(database, UNSENT) == [(0,)])
            filler = fill_with_the_log_empty(disk, database)
            page = browser.get(link)
            pressed = browser.post(link, data={"csrf_token": csrf(page)})
            incident = browser.get(f"/{SLUG}/")
            waiting = [address(n) for n in range(10, 15)]
            answers = [client.look_up(email) for email in waiting]
            stopped = run_cli(env, *importing, cwd=tmp_path)
            kept = read(database, EXPOSURES)

            filler.unlink()
            with server.log_on_failure():
                wait_for_sync(lambda: confirm(browser, link).status_code == 303, timeout=30)
                wait_for_sync(lambda: set(waiting) <= recipients(relay), timeout=30)
            rerun = run_cli(env, *importing, cwd=tmp_path)
            log = server.log()

        assert page.status_code == 200  # reading needs no room
        assert pressed.status_code == 503
        assert pressed.headers["retry-after"] == "5"
        assert 'data-error-status="503"' in pressed.text
        assert incident.status_code == 200
        assert answers == [303] * len(waiting)

        assert stopped.returncode == 1
        assert stopped.stderr.strip().splitlines()[-1] == FULL
        assert "Traceback" not in stopped.stderr + stopped.stdout
        printed = {" ".join(("portal", *importing)): stopped.stderr + stopped.stdout}
        shows_in_the_guide("disk-full", ran=printed)
        assert kept == []  # nothing half-written

        assert rerun.returncode == 0, rerun.stderr
        clean_env = {**env, "PORTAL_DATABASE_URL": f"sqlite:///{clean}"}
        assert run_cli(clean_env, *importing, cwd=tmp_path).returncode == 0
        assert read(database, EXPOSURES) == read(clean, EXPOSURES)
        assert len(read(database, EXPOSURES)) == 300
        assert Counter(to for m in relay.received for to in m.rcpt_tos if to in waiting) == {
            email: 1 for email in waiting
        }
        unavailable = [line for line in log.splitlines() if "database unavailable" in line]
        assert "database unavailable (OperationalError) on POST /v/…" in unavailable[0]
        assert '"code": "SQLITE_FULL"' in unavailable[0]  # the driver's word, not its text
        assert "Traceback" not in log
        assert '"status": 500' not in log


def recipients(relay: SmtpServer) -> set[str]:
    return {to for message in list(relay.received) for to in message.rcpt_tos}
