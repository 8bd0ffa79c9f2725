"""portal notify with real processes: the notice link, a kill -9, two workers, no address kept."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text

from portal.store import tables
from tests.databases import stored_bytes
from tests.e2e.conftest import (
    ALICE,
    BOB,
    JAN,
    SLUG,
    Browser,
    csv_path,
    expected_fields,
    mails_to,
    open_browser,
    partners_on,
    portal_link,
    run_cli,
    text_of,
    wait_for_mail,
)
from tests.e2e.test_privacy import leaked_in, spellings
from tests.fixtures_mail import SmtpServer, wait_for_sync
from tests.server import portal_env, running_mail_worker, running_portal

pytestmark = pytest.mark.e2e

NOTIFIED = ("park-a", "theater-b")
CHUNK = 200  # portal.reach.notices.CHUNK: each chunk of notices is committed on its own


def database_url(instance: Path) -> str:
    return portal_env(instance).get("PORTAL_DATABASE_URL") or f"sqlite:///{instance}/portal.db"


def notice_counts(instance: Path) -> Counter[str]:
    engine = create_engine(database_url(instance).replace("postgresql:", "postgresql+psycopg:"))
    try:
        with engine.connect() as conn:
            n = tables.notices.c
            rows = conn.execute(select(n.status, func.count()).group_by(n.status)).all()
    finally:
        engine.dispose()
    return Counter({status: count for status, count in rows})


BASE_URL = "https://lek.example.org"  # where the notices link: set, as notify requires


def notify(
    instance: Path, partner: str, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    environment = portal_env(instance, **({"PORTAL_BASE_URL": BASE_URL} | env))
    done = run_cli(environment, "notify", SLUG, partner, str(csv_path(partner)), *args)
    assert done.returncode == 0, done.stderr
    return done


def count(output: str, label: str) -> int:
    found = re.search(rf"^\s*{re.escape(label)}.*?\s(\d+)$", output, re.M)
    assert found, f"no {label!r} in:\n{output}"
    return int(found.group(1))


def notified_addresses() -> set[str]:
    return {a for p in NOTIFIED for a in expected_fields(p)}


def test_it_leads_a_notified_person_to_the_results_and_keeps_no_address(
    instance: Path, smtp_server: SmtpServer, browsers: list[Browser]
) -> None:
    addresses = notified_addresses()
    smtp = smtp_server.url()
    with running_portal(instance, "--no-mail-worker", PORTAL_SMTP_URL=smtp) as portal:
        first = notify(instance, "park-a", PORTAL_BASE_URL=portal.url)
        # Before any is sent: alice's notice names both partners.
        second = notify(instance, "theater-b", PORTAL_BASE_URL=portal.url)
        assert count(second.stdout, "merged into unsent notices") == len(
            set(expected_fields("park-a")) & set(expected_fields("theater-b"))
        )
        with running_mail_worker(portal.env, instance / "worker.log"):
            for address in addresses:
                wait_for_mail(smtp_server, address, timeout=30)
            wait_for_sync(lambda: notice_counts(instance)["sent"] == len(addresses), timeout=30)
        message = mails_to(smtp_server, ALICE)[0]
        assert message["Subject"] == "Datalek: uw gegevens (Datalek bij TicketDienst)"
        body = text_of(message, "plain")
        assert "Attractiepark A" in body and "Theater B" in body and "Omroep C" not in body
        alice = open_browser(browsers, portal)
        assert alice.confirm(portal_link(message, portal.url)).status_code == 303
        assert set(partners_on(alice.results())) >= set(NOTIFIED)
        stats = portal.cli("stats", SLUG).stdout
    assert [len(mails_to(smtp_server, a)) for a in addresses] == [1] * len(addresses)
    assert f"notices: queued 0, sent {len(addresses)}, failed 0, bounced 0" in stats

    # The portal has stopped: every file is as it stays. No notified address anywhere.
    needles = {s for a in addresses for s in spellings(a)}
    files = sorted(p for p in instance.rglob("*") if p.is_file())
    assert {"server.log", "worker.log"} <= {p.name for p in files}
    kept = {p.name: p.read_bytes() for p in files}
    kept |= {"the database": stored_bytes(database_url(instance))}
    kept |= {"notify's output": (first.stdout + first.stderr + second.stdout).encode()}
    for name, blob in kept.items():
        assert not leaked_in(blob, needles), f"{name} holds {leaked_in(blob, needles)}"
    # Positive control: the same search finds them in what the SMTP server received.
    received = b"".join(r.content for r in smtp_server.received)
    assert leaked_in(received, spellings(BOB)) and leaked_in(received, {JAN})


def test_it_sends_each_notice_once_after_a_kill_and_a_rerun(
    instance: Path, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    people = [f"persoon{n}@voorbeeld.nl" for n in range(3 * CHUNK)]
    leak = tmp_path / "park-a.csv"
    leak.write_text("email;naam\n" + "".join(f"{a};Naam\n" for a in people), encoding="utf-8")
    env = portal_env(instance, PORTAL_BASE_URL=BASE_URL)
    assert run_cli(env, "import", SLUG, "park-a", str(leak)).returncode == 0
    command = [sys.executable, "-m", "portal", "notify", SLUG, "park-a", str(leak)]
    killed = subprocess.Popen(
        [*command, "--rate", "1000"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_sync(lambda: sum(notice_counts(instance).values()) >= CHUNK, timeout=300)
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
    halfway = sum(notice_counts(instance).values())
    rerun = run_cli(env, "notify", SLUG, "park-a", str(leak), "--rate", "1000")

    assert killed.returncode == -signal.SIGKILL, "notify ended before it could be killed"
    assert CHUNK <= halfway < len(people) and halfway % CHUNK == 0
    assert rerun.returncode == 0, rerun.stderr
    assert count(rerun.stdout, "already notified for this partner") == halfway
    assert count(rerun.stdout, "new notices queued") == len(people) - halfway
    with running_mail_worker(
        portal_env(instance, PORTAL_SMTP_URL=smtp_server.url()), tmp_path / "worker.log"
    ):
        wait_for_sync(lambda: notice_counts(instance)["sent"] == len(people), timeout=300)
    received = Counter(to for r in smtp_server.received for to in r.rcpt_tos)
    assert received == Counter(people)


def test_it_holds_the_rate_across_two_mail_workers(
    instance: Path, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    rate, people = 10, [f"p{n}@tempo.example" for n in range(40)]
    leak = tmp_path / "theater-b.csv"
    leak.write_text("email\n" + "".join(f"{a}\n" for a in people), encoding="utf-8")
    # Unbuffered: each worker's "delivering mail" line says it is up.
    env = portal_env(
        instance, PORTAL_SMTP_URL=smtp_server.url(), PORTAL_BASE_URL=BASE_URL, PYTHONUNBUFFERED="1"
    )
    assert run_cli(env, "import", SLUG, "theater-b", str(leak)).returncode == 0
    with (
        running_mail_worker(env, tmp_path / "one.log") as one,
        running_mail_worker(env, tmp_path / "two.log") as two,
    ):
        up = "delivering mail"
        wait_for_sync(lambda: up in one.log() and up in two.log(), timeout=120)
        done = run_cli(env, "notify", SLUG, "theater-b", str(leak), "--rate", str(rate))
        assert done.returncode == 0, done.stderr
        wait_for_sync(lambda: notice_counts(instance)["sent"] == len(people), timeout=60)
        logs = one.log() + two.log()
    times = sorted(r.at for r in smtp_server.received)
    assert len(times) == len(people)
    # Both workers sent some: the rate held across them, not within one.
    assert "(notice) sent" in one.log() and "(notice) sent" in two.log(), logs
    # 40 at 10/s are due over 3.9 s. Unthrottled, two workers send 40 in well under 1 s.
    assert times[-1] - times[0] >= (len(people) - 1) / rate - 1.2
    for start in times:  # no second holds more than one poll's worth past the rate
        assert sum(start <= t < start + 1 for t in times) <= 2 * rate


def test_it_counts_and_writes_nothing_in_a_dry_run(instance: Path) -> None:
    url = database_url(instance)
    before = _rows(url)
    dry = notify(instance, "park-a", "--dry-run")

    assert "dry run: nothing written" in dry.stdout
    assert count(dry.stdout, "new notices that would be queued") == len(expected_fields("park-a"))
    assert _rows(url) == before
    notify(instance, "park-a")
    again = notify(instance, "theater-b", "--dry-run")
    assert count(again.stdout, "that would merge into unsent notices") >= 1
    assert sum(notice_counts(instance).values()) == len(expected_fields("park-a"))


def _rows(url: str) -> dict[str, list[tuple[object, ...]]]:
    engine = create_engine(url.replace("postgresql:", "postgresql+psycopg:"))
    try:
        with engine.connect() as conn:
            return {
                t.name: sorted(
                    map(tuple, conn.execute(text(f'SELECT * FROM "{t.name}"'))), key=repr
                )
                for t in tables.metadata.sorted_tables
            }
    finally:
        engine.dispose()
