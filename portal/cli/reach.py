"""Commands that reach people who did not come to the portal: `notify` (the direct notice),
`bounces` (what became of it), `letters` (on paper, with a personal code), and partners in
bulk: `partners digest`."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from portal import workers as root
from portal.cli import options
from portal.cli.base import database, duration, load_settings, operator_errors, progress_bar, say
from portal.cli.imports import say_counts, say_skipped
from portal.core.errors import PortalError
from portal.core.printable import shown
from portal.incidents.fingerprints import refuse_another_pepper
from portal.incidents.stored import get_incident
from portal.reach import bounce_sources
from portal.reach.bounces import BounceReader
from portal.reach.letter_files import LetterContext, LetterFiles
from portal.reach.letters import LettersSummary, Options, make_letters
from portal.reach.notices import NotifySummary
from portal.reach.notices import notify as queue_notices
from portal.requests.digests import send_due_digests


@operator_errors
def notify(
    incident: options.Incident,
    partner: options.Partner,
    file: options.ImportedFile,
    map_: options.Map = None,
    email_column: options.EmailColumn = None,
    rate: Annotated[
        float | None,
        typer.Option(
            "--rate",
            help="Notices sent per second, all workers together (default: PORTAL_NOTICE_RATE, 10).",
        ),
    ] = None,
    workers: options.Workers = None,
    part: options.PartOption = None,
    dry_run: options.DryRunQueue = False,
) -> None:
    """Queue the direct notice (GDPR Art. 34): one personal email per distinct valid address
    of a partner's file, with a direct, single-use link to the results.

    Run it after `portal import` of the same file, with the same --map and --email-column.
    An address gets one notice per incident: a second partner's file merges into a notice
    not yet sent, which then names both.

    Once the notice went out, the person gets one follow-up notice naming only the partners
    new to them, in the same schedule. The mail workers send at most --rate notices per
    second, all workers together, in the order queued.

    Running it again, after a crash too, queues only what is missing: nothing is sent
    twice. With --part K/N, N processes (on N hosts, on one PostgreSQL database) share the
    file, each queueing its part.

    Example: portal notify ticketing-2021 park-a park-a.csv --rate 20
    """
    settings = load_settings()
    mapping = options.parse_map(map_)
    chosen = options.part(part)
    with database(settings) as engine, progress_bar(file) as update:
        refuse_another_pepper(engine, settings.pepper)
        summary = queue_notices(
            engine,
            settings,
            incident=incident,
            partner=partner,
            path=file,
            renderer=root.renderer(),
            mapping=mapping,
            email_column=email_column,
            rate=rate,
            workers=workers,
            dry_run=dry_run,
            part=chosen,
            progress=update,
        )
    part_of = f", part {chosen}" if chosen.count > 1 else ""
    _print_notify_summary(summary, f"{file.name} for {incident}/{partner}{part_of}")


def _print_notify_summary(summary: NotifySummary, what: str) -> None:
    """The counts that add up, every skipped line, then when the notices go out."""
    read, dry = summary.read, summary.dry_run
    title = "dry run: nothing written" if dry else "notify summary"
    say(f"{title} ({shown(what)}, {read.delimiter}-separated)")
    counts = [
        ("lines in the file", read.lines),
        ("blank lines (not rows)", read.blank_lines),
        ("rows read", read.rows),
        ("rows with a valid address", read.imported),
        ("rows skipped", read.skipped_rows),
        *([("rows left to other parts", read.other_parts)] if read.part.count > 1 else []),
        ("rows repeating an address", summary.repeated_rows),
        ("distinct addresses", read.addresses),
        ("new notices that would be queued" if dry else "new notices queued", summary.new),
        (
            "that would merge into unsent notices" if dry else "merged into unsent notices",
            summary.merged,
        ),
        ("already notified for this partner", summary.already),
        (
            "follow-ups that would be queued" if dry else "follow-ups queued (notice sent before)",
            summary.followups,
        ),
        ("merged into unsent follow-ups", summary.followups_merged),
        ("notice failed or bounced (partner recorded only)", summary.unreachable),
        ("not imported for this partner (no notice)", summary.not_imported),
    ]
    say_counts(counts)
    columns = ", ".join(f'"{shown(c, 60)}" -> {key}' for c, key in read.columns.items())
    say(f"columns: {columns}")
    say_skipped(read)
    say(_notify_outcome(summary))


def _notify_outcome(summary: NotifySummary) -> str:
    told = _first_notices(summary)
    if summary.followups:
        verb = "would queue" if summary.dry_run else "queued"
        told += (
            f"; {verb} {summary.followups} follow-up notice(s) naming this partner to people "
            "whose notice went out before, in the same schedule"
        )
    return told


def _first_notices(summary: NotifySummary) -> str:
    if not summary.new:
        verb = "would queue" if summary.dry_run else "queued"
        return f"{verb} no new notice ({summary.merged} merged into unsent ones)"
    assert summary.first_at is not None and summary.last_at is not None
    span = summary.last_at - summary.first_at
    hours = span.total_seconds() / 3600
    if summary.dry_run:
        seconds = (summary.new - 1) / summary.rate
        return (
            f"would queue {summary.new} notice(s) at {summary.rate:g}/s, sent over "
            f"{duration(seconds)} from when the run queues them"
        )
    verb = "queued"
    return (
        f"{verb} {summary.new} notice(s) at {summary.rate:g}/s: the first due "
        f"{summary.first_at:%Y-%m-%d %H:%M:%S} UTC, the last {summary.last_at:%Y-%m-%d %H:%M:%S} "
        f"UTC ({hours:.1f} h); `portal serve` or `portal mail-worker` sends them"
    )


@operator_errors
def partners_digest(
    incident: Annotated[
        str | None, typer.Argument(help="Only this incident's partners (default: every one).")
    ] = None,
) -> None:
    """Send now the daily digests that are due: to each partner with forward = "daily" that
    has new deletion requests and had no digest in the last 24 hours, one email listing
    them (and one signed batch webhook call when it has a webhook), with a link to its queue.

    The mail worker does this by itself once a day; this command queues the due digests and
    delivers the outbox once. A request is never in two digests.

    Example: portal partners digest ticketing-2021
    """
    settings = load_settings()
    renderer = root.renderer()
    with database(settings) as engine:
        queued = send_due_digests(engine, settings, renderer=renderer, incident=incident)
        delivered = asyncio.run(root.mail_worker(engine, settings).deliver_due()) if queued else 0
    say(f"{queued} digest(s) queued, {delivered} message(s) delivered")


@operator_errors
def bounces(
    source: Annotated[
        str | None,
        typer.Argument(help="`-`: read one bounce from standard input (a pipe transport)."),
    ] = None,
    maildir: Annotated[
        Path | None, typer.Option("--maildir", help="Read the bounces of this Maildir.")
    ] = None,
    mbox: Annotated[
        Path | None, typer.Option("--mbox", help="Read the bounces of this mbox file.")
    ] = None,
    lmtp: Annotated[
        str | None,
        typer.Option("--lmtp", help="Listen on HOST:PORT for bounces handed over by LMTP."),
    ] = None,
) -> None:
    """Read delivery status notifications (bounces) of the portal's own mail: a permanent
    failure marks the notice `bounced`, a temporary one is counted.

    Needs PORTAL_BOUNCE_ADDRESS: each message then goes out with the envelope sender
    `bounces+TAG@domain`, the tag signed and naming the message. A bounce whose tag does not
    verify (forged), that has none, or that reports no failure is ignored and counted.

    A Maildir's bounces are flagged Seen once read, so that a run from cron reads each once;
    an mbox file is read whole and left as it is. With --lmtp it runs until stopped
    (Ctrl+C, SIGTERM), answering one status per recipient, and prints the summary then.

    Example: portal bounces --maildir /var/mail/portal-bounces
    """
    chosen = [given for given in (source, maildir, mbox, lmtp) if given is not None]
    if len(chosen) != 1 or (source is not None and source != "-"):
        raise PortalError("give one of --maildir DIR, --mbox FILE, - (standard input) or --lmtp")
    settings = load_settings(server=lmtp is not None)
    if not settings.bounce_address:
        raise PortalError(
            "PORTAL_BOUNCE_ADDRESS is not set: the portal's mail carries no tag to read a "
            "bounce by; set it (bounces@example.org) before the mail goes out"
        )
    with database(settings) as engine:
        reader = BounceReader(engine, settings)
        _read_bounces(reader, maildir=maildir, mbox=mbox, lmtp=lmtp)
    _print_bounce_summary(reader)


def _read_bounces(
    reader: BounceReader, *, maildir: Path | None, mbox: Path | None, lmtp: str | None
) -> None:
    if maildir is not None:
        if not (maildir / "cur").is_dir() or not (maildir / "new").is_dir():
            raise PortalError(f"{shown(str(maildir))} is not a Maildir (no cur/ and new/)")
        bounce_sources.read_maildir(reader, maildir)
    elif mbox is not None:
        if not mbox.is_file():
            raise PortalError(f"{shown(str(mbox))}: no such file")
        bounce_sources.read_mbox(reader, mbox)
    elif lmtp is not None:
        host, port = _host_port(lmtp)
        say(f"listening for bounces over LMTP on {host}:{port}; stop with Ctrl+C")
        asyncio.run(_until_signalled(reader, host, port))
    else:
        bounce_sources.read_stream(reader, sys.stdin.buffer)


def _host_port(value: str) -> tuple[str, int]:
    host, colon, port = value.rpartition(":")
    if not (colon and host and port.isdigit() and 0 < int(port) < 65536):
        raise PortalError(f"--lmtp must be HOST:PORT, such as 127.0.0.1:8024: {shown(value)}")
    return host.strip("[]"), int(port)


async def _until_signalled(reader: BounceReader, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await bounce_sources.serve_lmtp(reader, host, port, stop)
    except OSError as exc:
        raise PortalError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _print_bounce_summary(reader: BounceReader) -> None:
    say("bounces summary (no address is kept)")
    say_counts(reader.summary.rows())


@operator_errors
def letters(  # long: one typer option per parameter, each with its help
    incident: options.Incident,
    partner: options.Partner,
    file: options.RecordsFile,
    out: Annotated[
        Path, typer.Option("--out", help="The folder to write letters.csv (and letters.pdf) to.")
    ],
    bounced: Annotated[
        bool, typer.Option("--bounced", help="Also the people whose notice bounced.")
    ] = False,
    everyone: Annotated[
        bool,
        typer.Option("--all", help="Everyone in the file, and again those already written to."),
    ] = False,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            help="COL,COL: the columns that tell people apart across partners' files "
            "(default: the postal columns).",
        ),
    ] = None,
    pdf: Annotated[bool, typer.Option("--pdf", help="Also write letters.pdf, A4.")] = False,
    map_: options.Map = None,
    email_column: options.EmailColumn = None,
    dry_run: options.DryRun = False,
) -> None:
    """Make letters with a personal code for the people of a partner's file who have no
    valid email address (with --bounced also those whose notice bounced; --all everyone).

    The file is read as `portal import` reads it. Each person (rows with the same --key
    columns) gets one code, which opens their results at /INCIDENT/code; the portal keeps
    only a keyed hash of it and of the key, never a postal address: those are only in
    OUT/letters.csv (and OUT/letters.pdf).

    Running it again makes no second letter for the same people; a later partner's file
    gives a follow-up letter naming that partner.

    Example: portal letters ticketing-2021 park-a park-a.csv --out out/ --pdf --key name,postcode
    """
    settings = load_settings()
    wanted = Options(
        bounced=bounced,
        everyone=everyone,
        key=[k.strip() for k in key.split(",") if k.strip()] if key else None,
        dry_run=dry_run,
    )
    files = LetterFiles(out) if not dry_run else None
    with database(settings) as engine, progress_bar(file) as update:
        refuse_another_pepper(engine, settings.pepper)
        with engine.connect() as conn:
            found = get_incident(conn, incident)
        if files is not None and pdf and found:
            files.context = LetterContext(found, settings, root.renderer())
        summary = make_letters(
            engine,
            settings,
            incident=incident,
            partner=partner,
            path=file,
            options=wanted,
            mapping=options.parse_map(map_),
            email_column=email_column,
            progress=update,
            output=files,
        )
    written = sorted(files.written) if files is not None else []
    _print_letters_summary(summary, f"{file.name} for {incident}/{partner}", written)


def _print_letters_summary(summary: LettersSummary, what: str, written: list[Path]) -> None:
    read, dry = summary.read, summary.dry_run
    say(f"{'dry run: nothing written' if dry else 'letters summary'} ({shown(what)})")
    say_counts(
        [
            ("rows read", read.rows),
            ("rows with a valid address", read.imported),
            ("rows without a valid email address", read.skipped_rows),
            ("rows without a postal address (no letter)", len(summary.without_address)),
            ("people (by key)", summary.people),
            ("reached by email (no letter)", summary.with_email),
            ("whose notice bounced", summary.bounced),
            ("first letters", summary.first),
            ("follow-up letters (a new partner)", summary.follow_ups),
            ("letters again (--all)", summary.again),
            ("written to before (no letter)", summary.already),
        ]
        + [("of an interrupted run, made again", summary.resumed)] * bool(summary.resumed)
    )
    say_skipped(read)
    for path in written:
        say(f"wrote {shown(str(path))}")
    say(
        f"{len(summary.letters)} letter(s); the portal kept no postal address: only a keyed "
        "hash of each code and key"
    )
