"""Commands that describe incidents and import their records: `incident load|list`, `import`."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from sqlalchemy import Engine

from portal.cli import options
from portal.cli.base import (
    database,
    err,
    load_settings,
    operator_errors,
    progress_bar,
    say,
)
from portal.core.clock import utcnow
from portal.core.config import Settings
from portal.core.printable import shown
from portal.incidents.fingerprints import refuse_another_pepper
from portal.incidents.importer import ImportSummary, describe_lines, import_csv
from portal.incidents.stored import load_incident_file
from portal.operator.stats import IncidentOverview, incident_overview


@operator_errors
def incident_load(
    file: Annotated[Path, typer.Argument(help="The incident file (TOML).")],
) -> None:
    """Create or update an incident and its partners from an incident file.

    Everything is validated first; nothing is written when anything is wrong.

    Example: portal incident load incident.toml
    """
    settings = load_settings()
    with database(settings) as engine:
        result = load_incident_file(engine, file)
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {escape(shown(warning))}", highlight=False, emoji=False)
    verb = "created" if result.created else "updated"
    say(
        f"incident {result.incident.slug} {verb}: {result.partners_created} partner(s) added, "
        f"{result.partners_updated} updated"
    )


@operator_errors
def incident_list() -> None:
    """List the incidents, each with its partners, records imported and requests open/overdue.

    A request is open until completed or rejected, and overdue when open past its
    (extended) due date.

    Example: portal incident list
    """
    settings = load_settings()
    with database(settings) as engine, engine.connect() as conn:
        incidents = incident_overview(conn, today=utcnow().date())
    if not incidents:
        say("no incidents yet: load one with portal incident load FILE.toml")
    for incident in incidents:
        _print_incident(incident)


def _print_incident(incident: IncidentOverview) -> None:
    partners = incident.partners
    width = max([len("partner"), *(len(p.slug) for p in partners)])

    def line(slug: str, records: int, open_: int, overdue: int, name: str = "") -> None:
        say(f"  {slug:<{width}}  {records:>8}  {open_:>5}  {overdue:>7}  {name}".rstrip())

    say(f"{incident.slug}: {shown(incident.title)}")
    say(f"  {'partner':<{width}}  {'records':>8}  {'open':>5}  {'overdue':>7}  name")
    for p in partners:
        line(p.slug, p.records, p.requests_open, p.requests_overdue, shown(p.name))
    line(
        "total",
        sum(p.records for p in partners),
        sum(p.requests_open for p in partners),
        sum(p.requests_overdue for p in partners),
    )


@operator_errors
def import_command(
    incident: options.Incident,
    partner: options.Partner,
    file: options.RecordsFile,
    map_: options.Map = None,
    email_column: options.EmailColumn = None,
    workers: options.Workers = None,
    part: options.PartOption = None,
    dry_run: options.DryRun = False,
) -> None:
    """Import one partner's leaked records: only blind indexes and field sets are kept.

    Every row is imported or skipped with its line and reason; a file that cannot be read
    as a whole is refused before anything is written. Re-importing the same file changes
    nothing; more rows for the same address add fields. With --part K/N, N processes (on
    N hosts, on one PostgreSQL database) share the file, each importing its part.

    Example: portal import ticketing-2021 park-a park-a.csv --map "Lievelingskleur=-"
    """
    settings = load_settings()
    mapping = options.parse_map(map_)
    chosen = options.part(part)
    with database(settings) as engine:
        refuse_another_pepper(engine, settings.pepper)
        summary = import_with_progress(
            engine,
            settings,
            incident=incident,
            partner=partner,
            path=file,
            mapping=mapping,
            email_column=email_column,
            workers=workers,
            dry_run=dry_run,
            part=chosen,
        )
    _print_summary(summary, f"{file.name} into {incident}/{partner}{_part(summary)}")


def _part(summary: ImportSummary) -> str:
    return f", part {summary.part}" if summary.part.count > 1 else ""


def _print_summary(summary: ImportSummary, what: str) -> None:
    """The counts that add up (rows read = imported + skipped), then every skipped line."""
    dry = summary.dry_run
    title = "dry run: nothing written" if dry else "import summary"
    say(f"{title} ({shown(what)}, {summary.delimiter}-separated)")
    would = "that would be " if dry else ""
    counts = [
        ("lines in the file", summary.lines),
        ("blank lines (not rows)", summary.blank_lines),
        ("rows read", summary.rows),
        (f"rows {would}imported", summary.imported),
        ("rows skipped", summary.skipped_rows),
    ]
    if summary.part.count > 1:
        counts.append(("rows left to other parts", summary.other_parts))
    if summary.short_rows:
        counts.append(("short rows (missing cells read as empty)", summary.short_rows))
    if summary.multiline_rows:
        counts.append(("rows with a cell over several lines", summary.multiline_rows))
    counts += [
        ("distinct addresses", summary.addresses),
        (f"new addresses{' (would be added)' if dry else ''}", summary.new_exposures),
        (f"addresses {'that would gain' if dry else 'with new'} fields", summary.updated_exposures),
        ("unchanged addresses", summary.unchanged),
    ]
    counts += [(f"exposes {key}", count) for key, count in summary.fields.items()]
    say_counts(counts)
    say(f"columns: {_columns(summary)}")
    say_skipped(summary)
    say(_outcome(summary))


def say_counts(counts: list[tuple[str, int]]) -> None:
    """Each count on a line of its own, the labels in one column."""
    width = max(len(label) for label, _ in counts)
    for label, count in counts:
        say(f"  {label:<{width}}  {count:>8}")


def say_skipped(read: ImportSummary) -> None:
    """The skipped lines of a file read, grouped by why (the first SKIPPED_LISTED of them;
    past those, how many more each reason has)."""
    if not read.skipped_rows:
        return
    say(f"skipped rows ({read.skipped_rows}), by line:")
    for reason, lines in read.skipped_by_reason().items():
        say(f"  {describe_lines(lines)}: {reason}")
    if read.unlisted:
        listed = Counter(skipped.reason for skipped in read.skipped)
        say(f"  and {read.unlisted} more rows not listed here:")
        for reason, count in read.skipped_reasons.items():
            if count > listed[reason]:
                say(f"    {count - listed[reason]} more: {reason}")


def _columns(summary: ImportSummary) -> str:
    used = ", ".join(f'"{shown(c, 60)}" -> {key}' for c, key in summary.columns.items())
    ignored = ", ".join(f'"{shown(c, 60)}"' for c in summary.ignored_columns)
    return f"{used}; ignored: {ignored}" if ignored else used


def _outcome(summary: ImportSummary) -> str:
    if not summary.changed:
        were = "are" if summary.dry_run else "were"
        would = "would change" if summary.dry_run else "changed"
        return (
            f"nothing {would}: all {summary.addresses} address(es) {were} already imported "
            "for this partner with these fields"
        )
    verb = "would import" if summary.dry_run else "imported"
    return (
        f"{verb} {summary.imported} row(s) with {summary.addresses} address(es): "
        f"{summary.new_exposures} new, {summary.updated_exposures} with new fields, "
        f"{summary.unchanged} unchanged"
    )


def import_with_progress(
    engine: Engine, settings: Settings, *, path: Path, **given: Any
) -> ImportSummary:
    """import_csv with a progress bar per stage on a terminal; nothing elsewhere."""
    with progress_bar(path) as update:
        return import_csv(engine, settings, path=path, progress=update, **given)
