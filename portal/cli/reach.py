"""Commands that reach people who did not come to the portal: `notify` (the direct notice)."""

from __future__ import annotations

from typing import Annotated

import typer

from portal import workers as root
from portal.cli import options
from portal.cli.base import database, duration, load_settings, operator_errors, progress_bar, say
from portal.cli.imports import say_counts, say_skipped
from portal.core.printable import shown
from portal.incidents.fingerprints import refuse_another_pepper
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
    part: options.PartOption = None,
    dry_run: options.DryRunQueue = False,
) -> None:
    """Queue the direct notice (GDPR Art. 34): one personal email per distinct valid address
    of a partner's file, with a direct, single-use link to the results.

    Run it after `portal import` of the same file, with the same --map and --email-column.
    An address gets one notice per incident: a second partner's file merges into a notice
    not yet sent, which then names both. The mail workers send at most --rate notices per
    second, all workers together, in the order queued. Running it again, after a crash
    too, queues only what is missing: nothing is sent twice. With --part K/N, N processes
    (on N hosts, on one PostgreSQL database) share the file, each queueing its part.

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
