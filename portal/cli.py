"""The `portal` command: parses arguments, calls the feature modules, prints the outcome."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy import Engine

from portal import db, logs
from portal.config import Settings
from portal.errors import PortalError
from portal.importer import ImportSummary, import_csv

app = typer.Typer(
    help="breach-portal: the 'am I affected?' portal for one data breach.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
incident_app = typer.Typer(help="Describe incidents and their partners.", no_args_is_help=True)
app.add_typer(incident_app, name="incident")
admin_app = typer.Typer(help="Operator accounts of the admin area (/admin/).", no_args_is_help=True)
app.add_typer(admin_app, name="admin")

out = Console()
err = Console(stderr=True, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])


def operator_errors(fn: F) -> F:
    """Turns a PortalError into one line on stderr and exit status 1, never a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PortalError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            raise typer.Exit(exc.exit_code) from None

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
    verb = "created" if result.created else "updated"
    out.print(
        f"incident {result.incident.slug} {verb}: {result.partners_created} partner(s) added, "
        f"{result.partners_updated} updated"
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

    Re-importing the same file changes nothing; more rows for the same address add fields.

    Example: portal import ticketing-2021 park-a park-a.csv --map "Lievelingskleur=-"
    """
    settings = _settings()
    mapping = _parse_map(map_ or [])
    with _database(settings) as engine:
        summary = _import_with_progress(
            engine, settings, incident, partner, file, mapping, email_column, workers, dry_run
        )
    _print_summary(summary)


def _parse_map(pairs: list[str]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for pair in pairs:
        column, sep, field = pair.partition("=")
        if not sep or not column.strip() or not field.strip():
            raise typer.BadParameter(f"expected COLUMN=FIELD, got {pair!r}", param_hint="--map")
        mapping[column.strip()] = field.strip()
    return mapping


def _import_with_progress(
    engine: Engine,
    settings: Settings,
    incident: str,
    partner: str,
    file: Path,
    mapping: dict[str, str],
    email_column: str | None,
    workers: int | None,
    dry_run: bool,
) -> ImportSummary:
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task(f"hashing {escape(file.name)}", total=None)
        return import_csv(
            engine,
            settings,
            incident=incident,
            partner=partner,
            path=file,
            mapping=mapping,
            email_column=email_column,
            workers=workers,
            dry_run=dry_run,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )


def _print_summary(summary: ImportSummary) -> None:
    table = Table(title="dry run: nothing written" if summary.dry_run else "import summary")
    table.add_column("")
    table.add_column("count", justify="right")
    table.add_row("rows read", str(summary.rows))
    table.add_row("rows imported", str(summary.imported))
    table.add_row("new addresses", str(summary.new_exposures))
    table.add_row("addresses with new fields", str(summary.updated_exposures))
    table.add_row("unchanged", str(summary.unchanged))
    table.add_row("rows without a valid email", str(len(summary.invalid_lines)))
    for key, count in sorted(summary.fields.items()):
        table.add_row(f"  exposes {key}", str(count))
    out.print(table)
    if summary.invalid_lines:
        shown = ", ".join(str(n) for n in summary.invalid_lines[:20])
        more = " …" if len(summary.invalid_lines) > 20 else ""
        err.print(f"skipped lines without a valid e-mail: {shown}{more}", highlight=False)


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

    Example: PORTAL_BASE_URL=https://lek.example.org portal serve --host 0.0.0.0 --workers 4
    """
    settings = _settings(server=True)
    settings.refuse_unsafe_production()
    with _database(settings):
        pass
    _serve(settings, host=host, port=port, workers=workers, mail=not no_mail_worker)


def _serve(settings: Settings, *, host: str, port: int, workers: int, mail: bool) -> None:
    import uvicorn

    os.environ["PORTAL_IN_PROCESS_MAIL"] = "1" if mail else "0"
    out.print(f"serving on http://{host}:{port}  (base URL {settings.base_url})")
    try:
        uvicorn.run(
            "portal.app:from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            access_log=False,
            log_config=None,
            proxy_headers=False,
            server_header=False,
        )
    except SystemExit as exc:
        if exc.code in (0, None):
            return
        # uvicorn has logged why (a port in use, say); the operator gets one line too.
        raise PortalError(f"could not serve on {host}:{port} (see the log line above)") from None


@app.command("mail-worker")
@operator_errors
def mail_worker() -> None:
    """Deliver queued mail and remind partners until stopped (when run apart from the web).

    Example: portal mail-worker
    """
    settings = _settings(server=True)
    with _database(settings) as engine:
        out.print("delivering mail and reminding partners; stop with Ctrl+C")
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_deliver_and_remind(engine, settings))


async def _deliver_and_remind(engine: Engine, settings: Settings) -> None:
    from portal.app import TEMPLATES_DIR
    from portal.deletions import mail_worker as worker_for
    from portal.forwarding import remind_periodically

    worker, stop = worker_for(engine, settings), asyncio.Event()
    await asyncio.gather(
        worker.run(stop),
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
    status, overdue and median days to close; and per incident: distinct people, lookups,
    verified visits and mail.

    Nothing here says who looked up what: lookups and visits are counted, not recorded.

    Example: portal stats ticketing-2021
    """
    from portal.stats import incident_figures, partner_figures

    settings = _settings()
    with _database(settings) as engine, engine.connect() as conn:
        partners = partner_figures(conn, incident=incident)
        incidents = incident_figures(conn, incident=incident)
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
    Console(width=max(out.width, 160)).print(table)
    for figures in incidents:
        mail = ", ".join(f"{k} {v}" for k, v in sorted(figures.mail.items())) or "none"
        out.print(
            f"{figures.incident}: {figures.distinct_people} distinct people in the data, "
            f"{figures.lookups} lookup(s) answered with a link, {figures.verified_visits} "
            f"verified visit(s), {figures.links_issued} link(s) on record; mail: {mail}",
            highlight=False,
            soft_wrap=True,
        )


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
    Console(width=max(out.width, 100)).print(table)


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
    if settings.base_url == "http://127.0.0.1:8000" and port != 8000:
        settings = _with_base_url(settings, f"http://127.0.0.1:{port}")
    with _database(settings) as engine, tempfile.TemporaryDirectory() as folder:
        files = demo_data.write_demo_files(Path(folder), records=records)
        load_incident_file(engine, files[0])
        loaded = demo_data.is_loaded(engine)
        if loaded:
            out.print("demo records already imported")
        for path in files[1:] if not loaded else []:
            summary = _import_with_progress(
                engine, settings, demo_data.DEMO_SLUG, path.stem, path, {}, None, None, False
            )
            out.print(f"{path.stem}: {summary.imported} records")
    out.print(
        "\n[bold]Try these addresses[/] (mail is written to the outbox and its link printed):"
    )
    for synthetic, what in demo_data.DEMO_ADDRESSES.items():
        out.print(f"  {synthetic:30} {what}", highlight=False)
    _serve(settings, host="127.0.0.1", port=port, workers=1, mail=True)


def _with_base_url(settings: Settings, base_url: str) -> Settings:
    os.environ["PORTAL_BASE_URL"] = base_url
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
