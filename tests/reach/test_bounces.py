"""portal bounces: the VERP envelope sender of real SMTP mail, and real DSNs (Postfix's and
Exim's formats, tests/data/bounces/) read over a real LMTP listener, from a Maildir, an
mbox file and standard input."""

from __future__ import annotations

import asyncio
import mailbox
import smtplib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from portal.core.clock import utcnow
from portal.core.config import Settings
from portal.core.tokens import bounce_tags
from portal.operator.stats import partner_figures
from portal.reach import bounce_sources, bounces, notices
from portal.reach.bounces import BounceReader
from portal.store import hourly, tables
from portal.workers import mail_worker
from tests.factories import ALICE, BOB, RENDERER, load_personas
from tests.fixtures_mail import Received, free_port, running_smtp_server, wait_for_sync
from tests.server import portal_cli

SLUG = "ticketing-2021"
BOUNCES = "bounces@example.org"
DATA = Path(__file__).resolve().parent.parent / "data" / "bounces"


@pytest.fixture
def bouncing(settings: Settings) -> Settings:
    return replace(settings, bounce_address=BOUNCES, mail_from="portal@example.org")


@pytest.fixture
def sent(engine: Engine, bouncing: Settings, tmp_path: Path) -> dict[str, Received]:
    """Alice's and Bob's park-a notices, delivered to a real SMTP server: each by address."""
    load_personas(engine, bouncing, tmp_path)
    notices.notify(
        engine,
        bouncing,
        incident=SLUG,
        partner="park-a",
        path=tmp_path / "park-a.csv",
        renderer=RENDERER,
        rate=1000,
    )
    with running_smtp_server() as smtp:
        worker = mail_worker(engine, replace(bouncing, smtp_url=smtp.url()))
        assert asyncio.run(worker.deliver_due()) == 2
    return {m.rcpt_tos[0]: m for m in smtp.received}


def dsn(name: str, *, to: str, recipient: str = BOB) -> bytes:
    text = (DATA / name).read_text(encoding="utf-8")
    text = text.replace("@@BOUNCE_TO@@", to).replace("@@RECIPIENT@@", recipient)
    return text.replace("\n", "\r\n").encode()


def status_of(engine: Engine, outbox_id: int) -> str:
    n = tables.notices.c
    with engine.connect() as conn:
        return str(conn.scalar(select(n.status).where(n.outbox_id == outbox_id)))


def tag_of(received: Received) -> str:
    local = received.mail_from.rpartition("@")[0]
    return local.partition("+")[2]


@contextmanager
def lmtp_listener(reader: BounceReader) -> Iterator[tuple[str, int]]:
    """`serve_lmtp` on a free port, in a thread with its own event loop."""
    port, stop_loop = free_port(), asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(
        target=stop_loop.run_until_complete,
        args=(bounce_sources.serve_lmtp(reader, "127.0.0.1", port, stop),),
    )
    thread.start()
    wait_for_sync(lambda: _answers(port))
    try:
        yield "127.0.0.1", port
    finally:
        stop_loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        stop_loop.close()


def _answers(port: int) -> bool:
    try:
        smtplib.LMTP("127.0.0.1", port, timeout=2).quit()
    except OSError:
        return False
    return True


def lmtp_send(where: tuple[str, int], to: str, data: bytes) -> Any:
    with smtplib.LMTP(*where, timeout=10) as client:
        return client.sendmail("", [to], data)


def test_it_sends_each_message_from_a_signed_tag_that_names_it(
    engine: Engine, bouncing: Settings, sent: dict[str, Received]
) -> None:
    o = tables.outbox.c
    with engine.connect() as conn:
        ids = dict(conn.execute(select(o.id, o.kind)).all())
    for address, received in sent.items():
        local, _, domain = received.mail_from.rpartition("@")
        assert local.startswith("bounces+") and domain == "example.org"
        tag = tag_of(received)
        assert tag == tag.lower() and address.split("@")[0] not in tag
        assert ids[bounce_tags(bouncing).read(tag.upper())] == "notice"  # any case reads
        assert received.message["From"].addresses[0].addr_spec == "portal@example.org"
    assert len({tag_of(r) for r in sent.values()}) == 2


def test_it_sends_from_the_mail_from_address_without_a_bounce_address(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    load_personas(engine, settings, tmp_path)
    notices.notify(
        engine, settings, incident=SLUG, partner="park-a", path=tmp_path / "park-a.csv",
        renderer=RENDERER, rate=1000,
    )  # fmt: skip
    with running_smtp_server() as smtp:
        asyncio.run(mail_worker(engine, replace(settings, smtp_url=smtp.url())).deliver_due())
    assert {m.mail_from for m in smtp.received} == {"portal@localhost"}


def test_it_marks_a_notice_bounced_by_a_postfix_dsn_over_lmtp(
    engine: Engine, bouncing: Settings, sent: dict[str, Received]
) -> None:
    reader, bob = BounceReader(engine, bouncing), sent[BOB].mail_from
    with lmtp_listener(reader) as where:
        refused = lmtp_send(where, bob, dsn("postfix-dsn.eml", to=bob))

    assert refused == {}
    with engine.connect() as conn:
        o = tables.outbox.c
        rows = dict(conn.execute(select(o.recipient, o.id)).all())
        figures = {p.partner: p.notices for p in partner_figures(conn, incident=SLUG)}
        counted = hourly.total(conn, hourly.NOTICES_BOUNCED, since=utcnow())
    bob_id, alice_id = _ids(bouncing, sent)
    assert (status_of(engine, bob_id), status_of(engine, alice_id)) == ("bounced", "sent")
    assert figures["park-a"]["bounced"] == 1 and figures["park-a"]["sent"] == 1
    assert counted == 1 and rows == {None: rows[None]}  # addresses erased all the same
    assert reader.summary.counts[bounces.MARKED] == 1


def test_it_reads_an_exim_bounce_from_a_real_maildir_once(
    engine: Engine, bouncing: Settings, sent: dict[str, Received], tmp_path: Path
) -> None:
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    box.add(dsn("exim-bounce.eml", to=sent[BOB].mail_from))
    env = {"PORTAL_BOUNCE_ADDRESS": BOUNCES}

    first = portal_cli(bouncing, "bounces", "--maildir", str(tmp_path / "Maildir"), **env)
    again = portal_cli(bouncing, "bounces", "--maildir", str(tmp_path / "Maildir"), **env)

    assert first.returncode == 0, first.stderr
    out = first.stdout.decode()
    assert "notice marked bounced" in out and _count(out, "notice marked bounced") == 1
    assert _count(again.stdout.decode(), "messages read") == 0
    assert status_of(engine, _ids(bouncing, sent)[0]) == "bounced"
    assert BOB not in out + first.stderr


def test_it_counts_a_temporary_failure_and_marks_nothing(
    engine: Engine, bouncing: Settings, sent: dict[str, Received]
) -> None:
    reader = BounceReader(engine, bouncing)
    with lmtp_listener(reader) as where:
        lmtp_send(where, sent[BOB].mail_from, dsn("postfix-delayed.eml", to=sent[BOB].mail_from))

    assert reader.summary.counts[bounces.DELAYED] == 1
    assert status_of(engine, _ids(bouncing, sent)[0]) == "sent"
    with engine.connect() as conn:
        assert hourly.total(conn, hourly.BOUNCES_TEMPORARY, since=utcnow()) == 1


def test_it_ignores_and_counts_a_bounce_with_a_forged_tag(
    engine: Engine, bouncing: Settings, sent: dict[str, Received]
) -> None:
    bob_id, alice_id = _ids(bouncing, sent)
    genuine = tag_of(sent[ALICE])
    forged = f"bounces+{bob_id}-{genuine.partition('-')[2]}@example.org"  # Alice's MAC
    reader = BounceReader(engine, bouncing)
    with lmtp_listener(reader) as where:
        refused = lmtp_send(where, forged, dsn("postfix-dsn.eml", to=forged))

    assert refused == {}  # taken, so that no bounce of the bounce goes out, and ignored
    assert reader.summary.counts[bounces.FORGED] == 1
    assert (status_of(engine, bob_id), status_of(engine, alice_id)) == ("sent", "sent")
    with engine.connect() as conn:
        assert hourly.total(conn, hourly.BOUNCES_IGNORED, since=utcnow()) == 1


def test_it_refuses_a_recipient_that_is_not_a_bounce_address(
    engine: Engine, bouncing: Settings
) -> None:
    reader = BounceReader(engine, bouncing)
    with lmtp_listener(reader) as where, pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        lmtp_send(where, "postmaster@example.org", b"Subject: hi\r\n\r\nhello\r\n")
    assert refused.value.recipients["postmaster@example.org"][0] == 550


def test_it_reads_an_mbox_and_standard_input_each_counted(
    engine: Engine, bouncing: Settings, sent: dict[str, Received], tmp_path: Path
) -> None:
    box = mailbox.mbox(tmp_path / "bounces.mbox", create=True)
    box.add(dsn("postfix-dsn.eml", to=sent[BOB].mail_from))
    box.add(dsn("postfix-dsn.eml", to="bounces@example.org"))  # no tag: ignored
    box.close()
    env = {"PORTAL_BOUNCE_ADDRESS": BOUNCES}

    by_mbox = portal_cli(bouncing, "bounces", "--mbox", str(tmp_path / "bounces.mbox"), **env)
    piped = _piped(bouncing, dsn("postfix-dsn.eml", to=sent[BOB].mail_from), env)

    out = by_mbox.stdout.decode()
    assert _count(out, "messages read") == 2 and _count(out, "notice marked bounced") == 1
    assert _count(out, "ignored: no tag of this portal") == 1
    assert _count(piped, "notice bounced already") == 1


def test_it_refuses_to_read_bounces_without_a_bounce_address(
    bouncing: Settings, tmp_path: Path
) -> None:
    done = portal_cli(bouncing, "bounces", "--mbox", str(tmp_path / "none.mbox"))
    assert done.returncode == 1 and "PORTAL_BOUNCE_ADDRESS is not set" in done.stderr
    both = portal_cli(bouncing, "bounces", "-", "--mbox", "x", PORTAL_BOUNCE_ADDRESS=BOUNCES)
    assert both.returncode == 1 and "give one of" in both.stderr


def _piped(settings: Settings, data: bytes, env: dict[str, str]) -> str:
    import os
    import subprocess
    import sys

    environment = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")}
    environment.update(
        PORTAL_INSTANCE_DIR=str(settings.instance_dir),
        PORTAL_DATABASE_URL=settings.database_url,
        PORTAL_SECRET_KEY=settings.secret_key,
        PORTAL_PEPPER=settings.pepper.decode(),
        **env,
    )
    done = subprocess.run(
        [sys.executable, "-m", "portal", "bounces", "-"],
        input=data, env=environment, capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    return done.stdout.decode()


def _ids(settings: Settings, sent: dict[str, Received]) -> tuple[int, int]:
    """The outbox ids of Bob's and Alice's notices, as their envelope senders name them."""
    tags = bounce_tags(settings)
    return tags.read(tag_of(sent[BOB])), tags.read(tag_of(sent[ALICE]))


def _count(output: str, label: str) -> int:
    line = next(line for line in output.splitlines() if line.strip().startswith(label))
    return int(line.split()[-1])


def test_it_answers_each_recipient_from_a_real_lmtp_process(
    engine: Engine, bouncing: Settings, sent: dict[str, Received]
) -> None:
    import os
    import signal
    import socket
    import subprocess
    import sys

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")}
    env.update(
        PORTAL_INSTANCE_DIR=str(bouncing.instance_dir),
        PORTAL_DATABASE_URL=bouncing.database_url,
        PORTAL_SECRET_KEY=bouncing.secret_key,
        PORTAL_PEPPER=bouncing.pepper.decode(),
        PORTAL_BOUNCE_ADDRESS=BOUNCES,
    )
    command = [sys.executable, "-m", "portal", "bounces", "--lmtp", f"127.0.0.1:{port}"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_sync(lambda: _answers(port), timeout=60)
        bob, alice = sent[BOB].mail_from, sent[ALICE].mail_from
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            lines = _lmtp_dialogue(sock, [bob, alice], dsn("postfix-dsn.eml", to=bob))
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)

    # One status per recipient after DATA (RFC 2033): Bob's tag marks Bob's notice, and
    # Alice's, read from the same DSN, marks hers: only the tag says which message it was.
    assert lines[-2:] == ["250 2.0.0 notice marked bounced"] * 2, lines
    assert process.returncode == 0, err.decode()
    assert _count(out.decode(), "notice marked bounced") == 2
    bob_id, alice_id = _ids(bouncing, sent)
    assert (status_of(engine, bob_id), status_of(engine, alice_id)) == ("bounced", "bounced")


def _lmtp_dialogue(sock: Any, recipients: list[str], data: bytes) -> list[str]:
    """LHLO, an empty MAIL FROM, each recipient, DATA: every answer line, as sent."""
    reader = sock.makefile("rb")
    answers: list[str] = []

    def expect(count: int = 1) -> None:
        for _ in range(count):
            while True:
                line = reader.readline().decode().rstrip("\r\n")
                answers.append(line)
                if line[3:4] != "-":
                    break

    expect()  # the greeting
    for command in ("LHLO test", "MAIL FROM:<>", *(f"RCPT TO:<{r}>" for r in recipients)):
        sock.sendall(command.encode() + b"\r\n")
        expect()
    sock.sendall(b"DATA\r\n")
    expect()
    sock.sendall(data.rstrip(b"\r\n") + b"\r\n.\r\n")
    expect(len(recipients))
    sock.sendall(b"QUIT\r\n")
    return answers
