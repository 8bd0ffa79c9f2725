"""The options that several commands share, each declared once (`import` and `notify`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from portal.core.errors import PortalError
from portal.core.printable import shown
from portal.incidents.parts import WHOLE, Part, parse_part

Incident = Annotated[str, typer.Argument(help="The incident's slug.")]
Partner = Annotated[str, typer.Argument(help="The partner's slug.")]
RecordsFile = Annotated[Path, typer.Argument(help="The partner's leaked records (CSV).")]
ImportedFile = Annotated[
    Path, typer.Argument(help="The partner's leaked records (CSV), as imported.")
]
Map = Annotated[
    list[str] | None,
    typer.Option("--map", help="COLUMN=FIELD, or COLUMN=- to ignore a column. Repeatable."),
]
EmailColumn = Annotated[
    str | None, typer.Option("--email-column", help="The column holding the email address.")
]
Workers = Annotated[
    int | None, typer.Option("--workers", min=1, help="Hashing threads (default: all cores).")
]
PartOption = Annotated[
    str | None,
    typer.Option(
        "--part",
        metavar="K/N",
        help="Handle only the addresses in part K of N (split by blind index), so that N "
        "processes on N hosts share one file.",
    ),
]
DryRun = Annotated[
    bool, typer.Option("--dry-run", help="Check and count everything, write nothing.")
]
DryRunQueue = Annotated[
    bool, typer.Option("--dry-run", help="Count what would be queued, write nothing.")
]


def parse_map(pairs: list[str] | None) -> dict[str, str]:
    """--map COLUMN=FIELD pairs as a mapping; raises typer.BadParameter on a malformed one."""
    mapping: dict[str, str] = {}
    for pair in pairs or []:
        column, sep, field = pair.partition("=")
        if not sep or not column.strip() or not field.strip():
            raise typer.BadParameter(
                f"expected COLUMN=FIELD, got {shown(repr(pair))}", param_hint="--map"
            )
        mapping[column.strip()] = field.strip()
    return mapping


def part(text: str | None) -> Part:
    """--part K/N as a Part (the whole file without it); raises PortalError on a bad one."""
    if text is None:
        return WHOLE
    try:
        return parse_part(text)
    except PortalError as exc:
        message = str(exc).removeprefix(f"--part {text!r}: ")
        raise typer.BadParameter(message, param_hint="--part") from None
