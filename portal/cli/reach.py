"""Commands that reach people who did not come to the portal: `notify` (the direct notice)
and `letters` (on paper, with a personal code)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from portal import workers as root
from portal.cli import options
from portal.cli.base import database, duration, load_settings, operator_errors, progress_bar, say
from portal.cli.imports import say_counts, say_skipped
from portal.core.printable import shown
from portal.incidents.fingerprints import refuse_another_pepper
from portal.incidents.stored import get_incident
from portal.reach.letter_files import LetterContext, LetterFiles
from portal.reach.letters import LettersSummary, Options, make_letters
from portal.reach.notices import NotifySummary
from portal.reach.notices import notify as queue_notices


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
    dry_run: options.DryRunQueue = False,
) -> None:
    """Queue the direct notice (GDPR Art. 34): one personal email per distinct valid address
    of a partner's file, with a direct, single-use link to the results.

    Run it after `portal import` of the same file, with the same --map and --email-column.
    An address gets one notice per incident: a second partner's file merges into a notice
    not yet sent, which then names both. The mail workers send at most --rate notices per
    second, all workers together, in the order queued. Running it again, after a crash
    too, queues only what is missing: nothing is sent twice.

    Example: portal notify ticketing-2021 park-a park-a.csv --rate 20
    """
    settings = load_settings()
    mapping = options.parse_map(map_)
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
            progress=update,
        )
    _print_notify_summary(summary, f"{file.name} for {incident}/{partner}")


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
        ("rows skipped", len(read.skipped)),
        ("rows repeating an address", summary.repeated_rows),
        ("distinct addresses", read.addresses),
        ("new notices that would be queued" if dry else "new notices queued", summary.new),
        (
            "that would merge into unsent notices" if dry else "merged into unsent notices",
            summary.merged,
        ),
        ("already notified for this partner", summary.already),
        ("notice sent before (partner recorded only)", summary.after_sent),
        ("not imported for this partner (no notice)", summary.not_imported),
    ]
    say_counts(counts)
    columns = ", ".join(f'"{shown(c, 60)}" -> {key}' for c, key in read.columns.items())
    say(f"columns: {columns}")
    say_skipped(read)
    say(_notify_outcome(summary))


def _notify_outcome(summary: NotifySummary) -> str:
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
    OUT/letters.csv (and OUT/letters.pdf). Running it again makes no second letter for
    the same people; a later partner's file gives a follow-up letter naming that partner.

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
            ("rows without a valid email address", len(read.skipped)),
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
