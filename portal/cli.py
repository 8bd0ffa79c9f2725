"""The `portal` command: parses arguments, calls the feature modules, prints the outcome."""

from __future__ import annotations

import asyncio
import getpass
import io
import logging
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text
from sqlalchemy import Engine
from typer.core import TyperCommand, TyperGroup, TyperOption

from portal import db, db_errors, logs
from portal.config import Settings
from portal.errors import PortalError
from portal.importer import ImportSummary, describe_lines, import_csv
from portal.printable import shown

if TYPE_CHECKING:
    from portal.notices import NotifySummary
    from portal.stats import IncidentOverview, RelayFigures

F = TypeVar("F", bound=Callable[..., Any])


def _untyped_flags(params: list[Any]) -> list[Any]:
    """The parameters, each flag given an empty metavar: typer's rich help prints that in
    place of the option's type, which for a flag it gives as `<bool>` (its plain help
    leaves it out), as if `--dry-run` took a value."""
    for param in params:
        if isinstance(param, TyperOption) and (param.is_flag or param.count):
            param.metavar = ""
    return params


class _Command(TyperCommand):
    """A command whose --help shows a flag as `--dry-run`, never `--dry-run <bool>`."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _untyped_flags(super().get_params(ctx))


class _Group(TyperGroup):
    """A group whose --help shows a flag as `--version`, never `--version <bool>`."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _untyped_flags(super().get_params(ctx))


class _Typer(typer.Typer):
    """A Typer whose commands are _Commands and whose groups are _Groups."""

    def __init__(self, **options: Any) -> None:
        super().__init__(cls=_Group, **options)

    def command(self, *args: Any, **options: Any) -> Callable[[F], F]:
        return super().command(*args, cls=_Command, **options)


# Markdown joins a docstring's wrapped lines into paragraphs: --help never breaks mid-sentence.
app = _Typer(
    help="breach-portal: the 'am I affected?' portal for one data breach.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
incident_app = _Typer(
    help="Describe incidents and their partners.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.add_typer(incident_app, name="incident")
admin_app = _Typer(help="Operator accounts of the admin area (/admin/).", no_args_is_help=True)
app.add_typer(admin_app, name="admin")

# soft_wrap: a line is printed whole, never folded at 80 columns when stdout is not a terminal.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
# Wide enough for any table: what a table measures at, to be printed at its own width.
UNBOUNDED = 100_000


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        _say(f"breach-portal {version('breach-portal')}")
        raise typer.Exit()


@app.callback()
def portal(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """breach-portal: the 'am I affected?' portal for one data breach."""


def operator_errors(fn: F) -> F:
    """Turns a PortalError or a database error into one line on stderr and exit status 1,
    never a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PortalError as exc:
            message = "\n".join(shown(line) for line in str(exc).split("\n"))
            err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, emoji=False)
            raise typer.Exit(exc.exit_code) from None
        except Exception as exc:
            # A database that stopped answering, a full disk, or a bug: one line, never the
            # error's text (it can hold a statement's parameters), and a log entry without.
            if db_errors.kind(exc) is None:
                raise
            line = db_errors.for_operator(exc)
            err.print(f"[bold red]error:[/] {escape(line)}", highlight=False, emoji=False)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _settings(*, server: bool = False) -> Settings:
    if server:
        logs.configure()
    else:
        logs.configure(logging.WARNING, structured=False)
    return Settings.from_env()


@contextmanager
def _database(settings: Settings) -> Iterator[Engine]:
    """The migrated database, disposed of when the command is done."""
    engine = db.make_engine(settings.database_url)
    try:
        db.migrate(engine)
        yield engine
    finally:
        engine.dispose()


def _refuse_another_pepper(engine: Engine, settings: Settings) -> None:
    """Stops a command that hashes addresses when the pepper in force is not the one the
    records were imported with: every lookup would answer "not affected" (design §4.1)."""
    from portal import fingerprints

    with engine.begin() as conn:
        found = fingerprints.check(conn, settings.pepper)
    for slug in found.adopted:
        logging.getLogger("portal.cli").warning(
            "incident %s holds records imported before pepper fingerprints were kept: the "
            "PORTAL_PEPPER in force is now recorded as theirs, unchecked; should people in "
            'the data be told "not affected", it is not: purge the incident and import it again',
            slug,
        )
    if found.mismatched:
        raise PortalError(fingerprints.refusal(found.mismatched))


@app.command()
@operator_errors
def init() -> None:
    """Create or migrate the database and create instance secrets if missing.

    Example: portal init
    """
    settings = _settings()
    with _database(settings):
        pass
    out.print(f"database ready: {_safe_url(settings.database_url)}")


@incident_app.command("load")
@operator_errors
def incident_load(
    file: Annotated[Path, typer.Argument(help="The incident file (TOML).")],
) -> None:
    """Create or update an incident and its partners from an incident file.

    Everything is validated first; nothing is written when anything is wrong.

    Example: portal incident load incident.toml
    """
    from portal.incidents import load_incident_file

    settings = _settings()
    with _database(settings) as engine:
        result = load_incident_file(engine, file)
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {escape(shown(warning))}", highlight=False, emoji=False)
    verb = "created" if result.created else "updated"
    _say(
        f"incident {result.incident.slug} {verb}: {result.partners_created} partner(s) added, "
        f"{result.partners_updated} updated"
    )


@incident_app.command("list")
@operator_errors
def incident_list() -> None:
    """List the incidents, each with its partners, records imported and requests open/overdue.

    A request is open until completed or rejected, and overdue when open past its
    (extended) due date.

    Example: portal incident list
    """
    from portal.clock import utcnow
    from portal.stats import incident_overview

    settings = _settings()
    with _database(settings) as engine, engine.connect() as conn:
        incidents = incident_overview(conn, today=utcnow().date())
    if not incidents:
        _say("no incidents yet: load one with portal incident load FILE.toml")
    for incident in incidents:
        _print_incident(incident)


def _print_incident(incident: IncidentOverview) -> None:
    partners = incident.partners
    width = max([len("partner"), *(len(p.slug) for p in partners)])

    def line(slug: str, records: int, open_: int, overdue: int, name: str = "") -> None:
        _say(f"  {slug:<{width}}  {records:>8}  {open_:>5}  {overdue:>7}  {name}".rstrip())

    _say(f"{incident.slug}: {shown(incident.title)}")
    _say(f"  {'partner':<{width}}  {'records':>8}  {'open':>5}  {'overdue':>7}  name")
    for p in partners:
        line(p.slug, p.records, p.requests_open, p.requests_overdue, shown(p.name))
    line(
        "total",
        sum(p.records for p in partners),
        sum(p.requests_open for p in partners),
        sum(p.requests_overdue for p in partners),
    )


@app.command("import")
@operator_errors
def import_command(
    incident: Annotated[str, typer.Argument(help="The incident's slug.")],
    partner: Annotated[str, typer.Argument(help="The partner's slug.")],
    file: Annotated[Path, typer.Argument(help="The partner's leaked records (CSV).")],
    map_: Annotated[
        list[str] | None,
        typer.Option("--map", help="COLUMN=FIELD, or COLUMN=- to ignore a column. Repeatable."),
    ] = None,
    email_column: Annotated[
        str | None, typer.Option("--email-column", help="The column holding the email address.")
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Hashing threads (default: all cores).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check and count everything, write nothing.")
    ] = False,
) -> None:
    """Import one partner's leaked records: only blind indexes and field sets are kept.

    Every row is imported or skipped with its line and reason; a file that cannot be read
    as a whole is refused before anything is written. Re-importing the same file changes
    nothing; more rows for the same address add fields.

    Example: portal import ticketing-2021 park-a park-a.csv --map "Lievelingskleur=-"
    """
    settings = _settings()
    mapping = _parse_map(map_ or [])
    with _database(settings) as engine:
        _refuse_another_pepper(engine, settings)
        summary = _import_with_progress(
            engine,
            settings,
            incident=incident,
            partner=partner,
            path=file,
            mapping=mapping,
            email_column=email_column,
            workers=workers,
            dry_run=dry_run,
        )
    _print_summary(summary, f"{file.name} into {incident}/{partner}")


def _parse_map(pairs: list[str]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for pair in pairs:
        column, sep, field = pair.partition("=")
        if not sep or not column.strip() or not field.strip():
            raise typer.BadParameter(
                f"expected COLUMN=FIELD, got {shown(repr(pair))}", param_hint="--map"
            )
        mapping[column.strip()] = field.strip()
    return mapping


class _Rate(ProgressColumn):
    """Rows (or addresses) per second, from rich's own speed estimate."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "rows")
        return Text(
            f"{speed:,.0f} {unit}/s" if speed else f"- {unit}/s", style="progress.data.speed"
        )


STAGES = {
    "reading": ("reading {name}", "lines"),
    "hashing": ("hashing addresses", "addresses"),
    "queueing": ("hashing and queueing notices", "addresses"),
}


def _import_with_progress(
    engine: Engine, settings: Settings, *, path: Path, **options: Any
) -> ImportSummary:
    """import_csv with a progress bar per stage on a terminal; nothing elsewhere."""
    with _progress_bar(path) as update:
        return import_csv(engine, settings, path=path, progress=update, **options)


@contextmanager
def _progress_bar(path: Path) -> Iterator[Callable[[str, int, int], None]]:
    """A progress bar per stage (total, done, rows/s, time left) on a terminal; else none."""
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _Rate(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar:
        tasks: dict[str, TaskID] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                label, unit = STAGES[stage]
                name = escape(shown(path.name, 40))
                tasks[stage] = bar.add_task(label.format(name=name), total=total, unit=unit)
            bar.update(tasks[stage], completed=done, total=total)

        yield update


def _print_summary(summary: ImportSummary, what: str) -> None:
    """The counts that add up (rows read = imported + skipped), then every skipped line."""
    dry = summary.dry_run
    title = "dry run: nothing written" if dry else "import summary"
    _say(f"{title} ({shown(what)}, {summary.delimiter}-separated)")
    would = "that would be " if dry else ""
    counts = [
        ("lines in the file", summary.lines),
        ("blank lines (not rows)", summary.blank_lines),
        ("rows read", summary.rows),
        (f"rows {would}imported", summary.imported),
        ("rows skipped", len(summary.skipped)),
    ]
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
    width = max(len(label) for label, _ in counts)
    for label, count in counts:
        _say(f"  {label:<{width}}  {count:>8}")
    _say(f"columns: {_columns(summary)}")
    if summary.skipped:
        _say(f"skipped rows ({len(summary.skipped)}), by line:")
        for reason, lines in summary.skipped_by_reason().items():
            _say(f"  {describe_lines(lines)}: {reason}")
    _say(_outcome(summary))


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


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _print_table(table: Table) -> None:
    """A table on stdout: on a terminal, folded to its width; elsewhere (a pipe, a file,
    cron) at the table's own full width, whatever COLUMNS says, so no cell is ever cut."""
    if out.is_terminal:
        out.print(table)
        return
    measure = Console(width=UNBOUNDED, file=io.StringIO()).measure(table)
    width = max(measure.maximum, len(str(table.title or "")))
    Console(width=width, file=out.file, soft_wrap=False).print(table)


def _say(text: str) -> None:
    """One line on stdout exactly as given: no markup, no wrapping (cron logs keep it whole)."""
    out.print(text, markup=False, highlight=False, emoji=False, soft_wrap=True)


@app.command()
@operator_errors
def notify(
    incident: Annotated[str, typer.Argument(help="The incident's slug.")],
    partner: Annotated[str, typer.Argument(help="The partner's slug.")],
    file: Annotated[Path, typer.Argument(help="The partner's leaked records (CSV), as imported.")],
    map_: Annotated[
        list[str] | None,
        typer.Option("--map", help="COLUMN=FIELD, or COLUMN=- to ignore a column. Repeatable."),
    ] = None,
    email_column: Annotated[
        str | None, typer.Option("--email-column", help="The column holding the email address.")
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(
            "--rate",
            help="Notices sent per second, all workers together (default: PORTAL_NOTICE_RATE, 10).",
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Hashing threads (default: all cores).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be queued, write nothing.")
    ] = False,
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
    from portal.app import TEMPLATES_DIR
    from portal.notices import notify as queue_notices

    settings = _settings()
    if settings.base_url_is_default and not dry_run:
        # A notice is mailed once, to everyone: a link to this machine would reach no one.
        raise PortalError(
            "PORTAL_BASE_URL is not set: the notices would link to http://127.0.0.1:8000, "
            "which works on this machine only; set it to the portal's public address"
        )
    mapping = _parse_map(map_ or [])
    with _database(settings) as engine, _progress_bar(file) as update:
        _refuse_another_pepper(engine, settings)
        summary = queue_notices(
            engine,
            settings,
            incident=incident,
            partner=partner,
            path=file,
            templates_dir=TEMPLATES_DIR,
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
    _say(f"{title} ({shown(what)}, {read.delimiter}-separated)")
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
    width = max(len(label) for label, _ in counts)
    for label, count in counts:
        _say(f"  {label:<{width}}  {count:>8}")
    columns = ", ".join(f'"{shown(c, 60)}" -> {key}' for c, key in read.columns.items())
    _say(f"columns: {columns}")
    if read.skipped:
        _say(f"skipped rows ({len(read.skipped)}), by line:")
        for reason, lines in read.skipped_by_reason().items():
            _say(f"  {describe_lines(lines)}: {reason}")
    _say(_notify_outcome(summary))


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
            f"{_duration(seconds)} from when the run queues them"
        )
    verb = "queued"
    return (
        f"{verb} {summary.new} notice(s) at {summary.rate:g}/s: the first due "
        f"{summary.first_at:%Y-%m-%d %H:%M:%S} UTC, the last {summary.last_at:%Y-%m-%d %H:%M:%S} "
        f"UTC ({hours:.1f} h); `portal serve` or `portal mail-worker` sends them"
    )


@app.command()
@operator_errors
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Web worker processes.")] = 1,
    no_mail_worker: Annotated[
        bool, typer.Option("--no-mail-worker", help="Leave mail to `portal mail-worker`.")
    ] = False,
) -> None:
    """Run the portal with uvicorn; queued mail is delivered in-process unless told not to.

    Every setting is checked first. Without PORTAL_BASE_URL, the links in mail point to
    this host and port.

    Example: PORTAL_BASE_URL=https://lek.example.org portal serve --host 0.0.0.0 --workers 4
    """
    settings = _served_at(_settings(server=True), host=host, port=port)
    settings.refuse_unsafe_production()
    if workers > 1 and not settings.redis_url:
        logging.getLogger("portal.cli").warning(
            "each of the %d workers keeps its own rate limits; set PORTAL_REDIS_URL to share them",
            workers,
        )
    with _database(settings) as engine:
        _refuse_another_pepper(engine, settings)
    if no_mail_worker:
        # The mail workers apart check the relay when they start; this process promises
        # "check your inbox" all the same, so it says so too.
        from portal.delivery import sender_for
        from portal.mail_worker import check_relay

        asyncio.run(check_relay(sender_for(settings)))
    _serve(settings, host=host, port=port, workers=workers, mail=not no_mail_worker)


def _serve(settings: Settings, *, host: str, port: int, workers: int, mail: bool) -> None:
    import uvicorn

    os.environ["PORTAL_IN_PROCESS_MAIL"] = "1" if mail else "0"
    if workers > 1:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_metrics_folder(settings))
    out.print(f"serving on http://{host}:{port}  (base URL {settings.base_url})")
    try:
        uvicorn.run(
            "portal.app:from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            # uvloop and httptools (dependencies) where they install; else asyncio and h11.
            loop="auto",
            http="auto",
            access_log=False,
            log_config=None,
            proxy_headers=False,
            server_header=False,
            # A deploy's SIGTERM: the requests in flight get this long at most; the lookups
            # they queued are written within the same time (portal.app's lifespan).
            timeout_graceful_shutdown=settings.shutdown_timeout,
        )
    except SystemExit as exc:
        if exc.code in (0, None):
            return
        # uvicorn has logged why (a port in use, say); the operator gets one line too.
        raise PortalError(f"could not serve on {host}:{port} (see the log line above)") from None


def _metrics_folder(settings: Settings) -> Path:
    """Where the workers write their metrics for /metrics to sum; emptied at each start.

    Figures of a previous run would otherwise be added to this one's.
    """
    folder = settings.instance_dir / "prometheus"
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()
    return folder


@app.command("mail-worker")
@operator_errors
def mail_worker() -> None:
    """Deliver queued mail and remind partners until stopped (when run apart from the web).

    Example: portal mail-worker
    """
    settings = _settings(server=True)
    with _database(settings) as engine:
        _refuse_another_pepper(engine, settings)
        out.print("delivering mail and reminding partners; stop with Ctrl+C")
        asyncio.run(_deliver_and_remind(engine, settings))


async def _deliver_and_remind(engine: Engine, settings: Settings) -> None:
    from portal.app import TEMPLATES_DIR
    from portal.deletions import mail_worker as worker_for
    from portal.forwarding import remind_periodically

    worker, stop = worker_for(engine, settings), asyncio.Event()
    await asyncio.gather(
        worker.run_until_signalled(stop),
        remind_periodically(
            engine, settings, stop, templates_dir=TEMPLATES_DIR, queued=worker.wake
        ),
    )


@app.command()
@operator_errors
def purge(
    incident: Annotated[
        str | None,
        typer.Option("--incident", help="With --all: the closed incident to erase entirely."),
    ] = None,
    everything: Annotated[
        bool, typer.Option("--all", help="With --incident: erase that incident entirely.")
    ] = False,
) -> None:
    """Apply the retention rules; safe to run daily from cron.

    Deletes links a day after they expire, expired sessions (the person's and the
    operators'), delivered mail that proves no request, the address of deletion requests
    closed longer ago than PORTAL_DELETION_RETENTION_DAYS (90), and audit entries older
    than PORTAL_AUDIT_RETENTION_DAYS (730). Prints what it removed.

    With --incident SLUG --all it erases a closed incident entirely (its partners, their
    records, links, sessions, deletion requests and their messages) and nothing else; it
    refuses while any of its requests is open or any of their messages is undelivered.

    Example: portal purge   (daily, from cron)

    Example: portal purge --incident ticketing-2021 --all
    """
    from portal.retention import purge as apply_retention
    from portal.retention import purge_incident

    if (incident is None) != (not everything):
        raise typer.BadParameter("--incident SLUG and --all go together", param_hint="--all")
    settings = _settings()
    with _database(settings) as engine:
        if incident is not None:
            gone = purge_incident(engine, incident)
            out.print(
                f"erased incident {gone.incident}: {gone.partners} partner(s), {gone.exposures} "
                f"record(s), {gone.requests} deletion request(s), {gone.links} link(s), "
                f"{gone.sessions} session(s), {gone.messages} message(s)",
                highlight=False,
                soft_wrap=True,
            )
            return
        report = apply_retention(engine, settings)
    out.print(
        f"purged {report.links} link(s), {report.sessions} session(s), {report.operator_sessions} "
        f"operator session(s), {report.outbox} delivered message(s), "
        f"{report.deletion_addresses} closed request address(es), {report.audit_entries} "
        "audit entr(ies)",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
@operator_errors
def stats(
    incident: Annotated[
        str | None, typer.Argument(help="An incident's slug (default: all).")
    ] = None,
) -> None:
    """Print per-partner figures: records, people found affected, deletion requests by
    status, overdue and median days to close, direct notices naming the partner (queued,
    sent, failed); and per incident: distinct people, lookups, verified visits, mail and
    notices. /admin/ shows the same figures.

    Nothing here says who looked up what: lookups and visits are counted, not recorded.

    Example: portal stats ticketing-2021
    """
    from portal.stats import PARTNER_NOTICES, incident_figures, partner_figures, relay_figures

    settings = _settings()
    with _database(settings) as engine, engine.connect() as conn:
        partners = partner_figures(conn, incident=incident)
        incidents = incident_figures(conn, incident=incident)
        relay = relay_figures(conn)
    statuses = ("received", "forwarded", "forward_failed", "completed", "rejected")
    table = Table(title="per partner: records, and deletion requests by status")
    columns = (
        "incident",
        "partner",
        "records",
        "found affected",
        *statuses,
        "overdue",
        "median days",
    )
    for column in columns:
        justify: Literal["left", "right"] = "left" if column in ("incident", "partner") else "right"
        table.add_column(column.replace("_", " "), justify=justify, overflow="fold")
    for row in partners:
        median = row.median_days_to_close
        table.add_row(
            row.incident,
            row.partner,
            str(row.records),
            str(row.found_affected),
            *(str(row.requests.get(s, 0)) for s in statuses),
            str(row.overdue),
            "-" if median is None else f"{median:g}",
        )
    _print_table(table)
    noticed = Table(title="per partner: direct notices naming it, by status")
    for column in ("incident", "partner", *(f"notices {s}" for s in PARTNER_NOTICES)):
        noticed.add_column(column, justify="left" if column in ("incident", "partner") else "right")
    for row in partners:
        noticed.add_row(row.incident, row.partner, *(str(row.notices[s]) for s in PARTNER_NOTICES))
    _print_table(noticed)
    for figures in incidents:
        mail = ", ".join(f"{k} {v}" for k, v in sorted(figures.mail.items())) or "none"
        out.print(
            f"{figures.incident}: {figures.distinct_people} distinct people in the data, "
            f"{figures.lookups} lookup(s) answered with a link, {figures.verified_visits} "
            f"verified visit(s), {figures.links_issued} link(s) on record; mail: {mail}",
            highlight=False,
            soft_wrap=True,
        )
        notices = ", ".join(f"{k} {v}" for k, v in figures.notices.items())
        _say(f"{figures.incident}: notices: {notices}")
        if figures.mail_failures:
            reasons = "; ".join(
                f"{count} {FAILURE_REASONS.get(reason, reason)}"
                for reason, count in sorted(figures.mail_failures.items())
            )
            _say(f"{figures.incident}: mail given up: {reasons}")
    if relay.failing:
        _say(_relay_failing(relay))


def _relay_failing(relay: RelayFigures) -> str:
    """The newest attempt at the relay failed: when, why, and what waits for it."""
    assert relay.last_failed_at is not None
    reason = (relay.last_error or "").partition(": ")[2] or relay.last_error
    sent = _when(relay.last_sent_at) or "never"
    return (
        f"mail relay failing: the newest attempt, {_when(relay.last_failed_at)}, failed: "
        f"{reason}; {relay.waiting} message(s) wait to be tried again; last delivery: {sent}"
    )


@app.command("export")
@operator_errors
def export_command(
    incident: Annotated[str, typer.Argument(help="The incident's slug.")],
    partner: Annotated[str, typer.Argument(help="The partner's slug.")],
    out_file: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Write the CSV to this file, readable by you alone (mode 0600), instead of "
            "to standard output.",
        ),
    ] = None,
) -> None:
    """Write a partner's deletion requests as CSV: the file /admin/ exports (reference,
    email, received, due, status, closed, outcome; cells that a spreadsheet would run as a
    formula start with ').

    The file holds the people's addresses. With --out it is written readable by you alone
    (mode 0600), whole or not at all. Every export is written in the audit log, as one from
    the admin area is, with the name you are logged in as on this machine (cli:NAME).

    Example: portal export ticketing-2021 park-a --out park-a-requests.csv
    """
    from portal.export import export_requests
    from portal.importer import require_partner

    settings = _settings()
    actor = f"cli:{_os_user()}"
    # One transaction: if the CSV cannot be written, the audit log does not say it was.
    with _database(settings) as engine, engine.begin() as conn:
        require_partner(conn, incident, partner)
        body, rows = export_requests(conn, incident=incident, partner=partner, actor=actor)
        if out_file is None:
            sys.stdout.buffer.write(body)
            sys.stdout.buffer.flush()
        else:
            _write_private(out_file, body)
    if out_file is not None:
        _say(f"exported {rows} request(s) of {incident}/{partner} to {out_file} (mode 0600)")


def _os_user() -> str:
    """The login name that ran the command, for the audit log; "(unknown)" if it has none
    that reads as a plain name (the log holds no address)."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = ""
    return name if re.fullmatch(r"[A-Za-z0-9._-]{1,64}", name) else "(unknown)"


def _write_private(path: Path, data: bytes) -> None:
    """Writes `data` to `path`, readable by its owner alone, whole or not at all."""
    try:
        # mkstemp makes the file with mode 0600; os.replace puts it in place in one step.
        fd, aside = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise PortalError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(aside, path)
    except OSError as exc:
        raise PortalError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        Path(aside).unlink(missing_ok=True)


# What `portal stats` says of a kind of mail failure (the error's class in last_error).
FAILURE_REASONS = {
    "NoSmtpUtf8": "the relay does not offer SMTPUTF8, which a non-ASCII address needs",
    "SMTPRecipientRefused": "refused by the recipient's server (bounced)",
    "SMTPRecipientsRefused": "refused by the recipient's server (bounced)",
    "SMTPDataError": "the message refused by the server",
}


@admin_app.command("create")
@operator_errors
def admin_create(
    username: Annotated[str, typer.Argument(help="The operator's name (lower case, no @).")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Create an operator account for the admin area.

    The password is asked twice without showing it, or read from the first line of
    standard input with --password-stdin. It must be at least 12 characters long and not
    one of the 10,000 most common passwords. The hash is argon2id.

    Example: portal admin create alice
    """
    from portal import accounts, audit

    settings = _settings()
    accounts.check_username(username)
    password = _read_password(password_stdin)
    accounts.check_password(password, username=username)
    with _database(settings) as engine, engine.begin() as conn:
        operator = accounts.create_operator(conn, username=username, password=password)
        audit.record(conn, actor="cli", action="operator_created", object=f"operator:{username}")
    out.print(
        f"operator {operator.username} created; sign in at {settings.base_url}/admin/login",
        soft_wrap=True,
    )


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise PortalError("no password on standard input")
        return password
    value: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return value


@admin_app.command("list")
@operator_errors
def admin_list() -> None:
    """List the operator accounts: name, created, last login, disabled.

    Example: portal admin list
    """
    from portal import accounts

    settings = _settings()
    with _database(settings) as engine, engine.connect() as conn:
        operators = accounts.list_operators(conn)
    table = Table(title="operator accounts")
    for column in ("name", "created", "last login", "disabled"):
        table.add_column(column, overflow="fold")
    for op in operators:
        table.add_row(
            op.username,
            _when(op.created_at),
            _when(op.last_login_at) or "never",
            _when(op.disabled_at) or "no",
        )
    _print_table(table)


def _when(moment: Any) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC" if moment is not None else ""


@admin_app.command("disable")
@operator_errors
def admin_disable(
    username: Annotated[str, typer.Argument(help="The operator's name.")],
) -> None:
    """Disable an operator account; its sessions end at once.

    Example: portal admin disable alice
    """
    from portal import accounts, audit

    settings = _settings()
    with _database(settings) as engine, engine.begin() as conn:
        accounts.disable_operator(conn, username)
        audit.record(conn, actor="cli", action="operator_disabled", object=f"operator:{username}")
    out.print(f"operator {username} disabled; their sessions have ended")


@app.command()
@operator_errors
def demo(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    records: Annotated[int, typer.Option(min=10, help="Synthetic people to make.")] = 2400,
) -> None:
    """Load a synthetic incident with three partners and serve it on http://127.0.0.1:PORT.

    Mail goes to the instance outbox; its links are printed here.

    Example: portal demo --port 8000
    """
    from portal import demo as demo_data
    from portal.incidents import load_incident_file

    logs.configure(logging.INFO, structured=False)
    settings = Settings.from_env()
    settings = _served_at(settings, host="127.0.0.1", port=port)
    with _database(settings) as engine, tempfile.TemporaryDirectory() as folder:
        _refuse_another_pepper(engine, settings)
        files = demo_data.write_demo_files(Path(folder), records=records)
        load_incident_file(engine, files[0])
        loaded = demo_data.is_loaded(engine)
        if loaded:
            out.print("demo records already imported")
        for path in files[1:] if not loaded else []:
            summary = _import_with_progress(
                engine, settings, incident=demo_data.DEMO_SLUG, partner=path.stem, path=path
            )
            out.print(f"{path.stem}: {summary.imported} records")
    out.print(
        "\n[bold]Try these addresses[/] (mail is written to the outbox and its link printed):"
    )
    for synthetic, what in demo_data.DEMO_ADDRESSES.items():
        out.print(f"  {synthetic:30} {what}", highlight=False)
    _serve(settings, host="127.0.0.1", port=port, workers=1, mail=True)


def _served_at(settings: Settings, *, host: str, port: int) -> Settings:
    """Without PORTAL_BASE_URL, links in mail point where the portal listens.

    The URL goes into the environment: uvicorn's worker processes read their settings there.
    """
    if not settings.base_url_is_default:
        return settings
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - comparing, not binding
        logging.getLogger("portal.cli").warning(
            "PORTAL_BASE_URL is not set: links in mail point to http://127.0.0.1:%d, which "
            "works on this machine only",
            port,
        )
        host = "127.0.0.1"
    named = f"[{host}]" if ":" in host else host
    os.environ["PORTAL_BASE_URL"] = f"http://{named}:{port}"
    return Settings.from_env()


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def main() -> None:
    """Entry point of the `portal` console script."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
