"""The `portal` command: parses arguments, calls the feature modules, prints the outcome."""

from __future__ import annotations

import asyncio
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
    if workers > 1 and not settings.redis_url:
        logging.getLogger("portal.cli").warning(
            "each of the %d workers keeps its own rate limits; set PORTAL_REDIS_URL to share them",
            workers,
        )
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
    """Deliver queued mail until stopped (for deployments that run it apart from the web).

    Example: portal mail-worker
    """
    from portal.deletions import mail_worker as worker_for

    settings = _settings(server=True)
    with _database(settings) as engine:
        out.print("delivering mail; stop with Ctrl+C")
        asyncio.run(worker_for(engine, settings).run_until_signalled())


@app.command()
@operator_errors
def purge() -> None:
    """Apply the retention rules (design §4.6); run it daily.

    Deletes links a day after expiry, expired sessions and delivered mail that proves no
    request, and erases the address of deletion requests closed longer ago than
    PORTAL_DELETION_RETENTION_DAYS.

    Example: portal purge   (e.g. from cron)
    """
    from portal.retention import purge as apply_retention

    settings = _settings()
    with _database(settings) as engine:
        report = apply_retention(engine, settings)
    out.print(
        f"purged {report.links} link(s), {report.sessions} session(s), {report.outbox} "
        f"delivered message(s), {report.deletion_addresses} closed request address(es)"
    )


@app.command()
@operator_errors
def stats(
    incident: Annotated[
        str | None, typer.Argument(help="An incident's slug (default: all).")
    ] = None,
) -> None:
    """Print per-partner figures: records and deletion requests by status.

    Example: portal stats ticketing-2021
    """
    from portal.stats import incident_figures, partner_figures

    settings = _settings()
    with _database(settings) as engine, engine.connect() as conn:
        partners = partner_figures(conn, incident=incident)
        incidents = incident_figures(conn)
    statuses = ("received", "forwarded", "forward_failed", "completed", "rejected")
    table = Table(title="per partner: records, and deletion requests by status")
    for column in ("incident", "partner", "records", *statuses):
        justify: Literal["left", "right"] = "left" if column in ("incident", "partner") else "right"
        table.add_column(column.replace("_", " "), justify=justify, overflow="fold")
    for row in partners:
        table.add_row(
            row.incident,
            row.partner,
            str(row.records),
            *(str(row.requests.get(s, 0)) for s in statuses),
        )
    Console(width=max(out.width, 120)).print(table)
    for figures in incidents:
        if incident in (None, figures.incident):
            mail = ", ".join(f"{k} {v}" for k, v in sorted(figures.mail.items())) or "none"
            out.print(
                f"{figures.incident}: {figures.links_issued} link(s) on record, "
                f"{figures.verified_visits} verified visit(s) on record; mail: {mail}",
                highlight=False,
            )


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
