"""What every command shares: the Typer classes, the consoles, settings and database, and
printing a line or a table whole."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

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

from portal.core import logs
from portal.core.config import Settings
from portal.core.errors import PortalError
from portal.core.printable import shown
from portal.store import db, db_errors

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


class Typer(typer.Typer):
    """A Typer whose commands are _Commands and whose groups are _Groups."""

    def __init__(self, **options: Any) -> None:
        super().__init__(cls=_Group, **options)

    def command(self, *args: Any, **options: Any) -> Callable[[F], F]:
        return super().command(*args, cls=_Command, **options)


# Markdown joins a docstring's wrapped lines into paragraphs: --help never breaks mid-sentence.


# soft_wrap: a line is printed whole, never folded at 80 columns when stdout is not a terminal.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
UNBOUNDED = 100_000


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


def load_settings(*, server: bool = False) -> Settings:
    if server:
        logs.configure()
    else:
        logs.configure(logging.WARNING, structured=False)
    return Settings.from_env()


@contextmanager
def database(settings: Settings) -> Iterator[Engine]:
    """The migrated database, disposed of when the command is done."""
    engine = db.make_engine(settings.database_url)
    try:
        db.migrate(engine)
        yield engine
    finally:
        engine.dispose()


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


@contextmanager
def progress_bar(path: Path) -> Iterator[Callable[[str, int, int], None]]:
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


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def print_table(table: Table) -> None:
    """A table on stdout: on a terminal, folded to its width; elsewhere (a pipe, a file,
    cron) at the table's own full width, whatever COLUMNS says, so no cell is ever cut."""
    if out.is_terminal:
        out.print(table)
        return
    measure = Console(width=UNBOUNDED, file=io.StringIO()).measure(table)
    width = max(measure.maximum, len(str(table.title or "")))
    Console(width=width, file=out.file, soft_wrap=False).print(table)


def say(text: str) -> None:
    """One line on stdout exactly as given: no markup, no wrapping (cron logs keep it whole)."""
    out.print(text, markup=False, highlight=False, emoji=False, soft_wrap=True)


def when(moment: Any) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC" if moment is not None else ""


def safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
