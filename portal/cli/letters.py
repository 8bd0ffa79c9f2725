"""`portal letters`: letters with a personal code for the people email does not reach."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from portal import workers as root
from portal.cli import options
from portal.cli.base import database, load_settings, operator_errors, progress_bar, say
from portal.cli.imports import say_counts, say_skipped
from portal.core.printable import shown
from portal.incidents.fingerprints import refuse_another_pepper
from portal.incidents.stored import get_incident
from portal.reach.letter_files import LetterContext, refuse_to_overwrite, write_letters
from portal.reach.letters import LettersSummary, Options, make_letters


@operator_errors
def letters(  # long: one typer option per parameter, each with its help
    incident: options.Incident,
    partner: options.Partner,
    file: options.ImportedFile,
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
    if not dry_run:
        refuse_to_overwrite(out)
    written: list[Path] = []
    with database(settings) as engine, progress_bar(file) as update:
        refuse_another_pepper(engine, settings.pepper)
        with engine.connect() as conn:
            found = get_incident(conn, incident)
        context = LetterContext(found, settings, root.renderer()) if pdf and found else None

        def deliver(made: LettersSummary) -> None:
            written.extend(write_letters(out, made.letters, made.postal_fields, context))

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
            deliver=deliver,
        )
    _print_summary(summary, f"{file.name} for {incident}/{partner}", written)


def _print_summary(summary: LettersSummary, what: str, written: list[Path]) -> None:
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
    )
    say_skipped(read)
    for path in written:
        say(f"wrote {shown(str(path))}")
    say(
        f"{len(summary.letters)} letter(s); the portal kept no postal address: only a keyed "
        "hash of each code and key"
    )
