"""The `portal` command: one module per command group; `main` builds the parser from them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

from portal.cli import imports, operator, reach, serving
from portal.cli.base import Typer, say

HELP = "breach-portal: the 'am I affected?' portal for one data breach."
# In the order `portal --help` lists them; the groups come after the commands.
COMMANDS: list[tuple[str, Callable[..., Any]]] = [
    ("init", serving.init),
    ("import", imports.import_command),
    ("notify", reach.notify),
    ("bounces", reach.bounces),
    ("letters", reach.letters),
    ("serve", serving.serve),
    ("mail-worker", serving.mail_worker),
    ("purge", operator.purge),
    ("stats", operator.stats),
    ("export", operator.export_command),
    ("demo", serving.demo),
]
GROUPS: list[tuple[str, dict[str, Any], list[tuple[str, Callable[..., Any]]]]] = [
    (
        "incident",
        {"help": "Describe incidents and their partners.", "rich_markup_mode": "markdown"},
        [("load", imports.incident_load), ("list", imports.incident_list)],
    ),
    (
        "admin",
        {"help": "Operator accounts of the admin area (/admin/)."},
        [
            ("create", operator.admin_create),
            ("list", operator.admin_list),
            ("disable", operator.admin_disable),
        ],
    ),
    (
        "partners",
        {"help": 'Partners that take their requests in bulk (forward = "daily").'},
        [("digest", reach.partners_digest)],
    ),
]


def build() -> typer.Typer:
    """The parser: every command of every group, under one `portal`."""
    # Markdown joins a docstring's wrapped lines into paragraphs: --help never breaks mid-sentence.
    app = Typer(
        help=HELP,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode="markdown",
    )
    app.callback()(portal)
    for name, options, commands in GROUPS:
        group = Typer(no_args_is_help=True, **options)
        for command, function in commands:
            group.command(command)(function)
        app.add_typer(group, name=name)
    for name, function in COMMANDS:
        app.command(name)(function)
    return app


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        say(f"breach-portal {version('breach-portal')}")
        raise typer.Exit()


def portal(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """breach-portal: the 'am I affected?' portal for one data breach."""


app = build()


def main() -> None:
    """Entry point of the `portal` console script."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
