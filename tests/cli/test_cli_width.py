"""Output that is not a terminal is the same at any width: nothing cut, folded or wrapped.

Every command that prints a table or a summary runs through a pipe at COLUMNS=80 and at
COLUMNS=400, with a partner whose name is 99 characters and whose slug is the longest
allowed: the text must be the same, and hold each long value whole on one line.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.databases import Backend
from tests.factories import INCIDENT, PARK_A, write_csv
from tests.server import environment

SLUG = "ticketing-2021"
LONG_SLUG = "stichting-openluchtmuseum-" + "x" * 38
LONG_NAME = (
    "Stichting Openluchtmuseum voor de Volkscultuur, Ambacht en Geschiedenis uit "
    "Oost-Nederland Elst Gld"
)
LONG_USER = "operator.van.de.stichting.openluchtmuseum"
FILE = "klanten-van-de-stichting-openluchtmuseum-met-e-mailadres-naam-telefoon-en-postcode.csv"
WIDTHS = (80, 400)
COMMANDS = [
    ["--version"],
    ["init"],
    ["incident", "load", "incident.toml"],
    ["incident", "list"],
    ["import", SLUG, LONG_SLUG, FILE, "--dry-run"],
    ["import", SLUG, LONG_SLUG, FILE],
    ["notify", SLUG, LONG_SLUG, FILE, "--dry-run"],
    ["stats"],
    ["stats", SLUG],
    ["admin", "list"],
    ["purge"],
]
# What each command must show whole, on one line.
WHOLE = {
    "incident list": [LONG_SLUG, LONG_NAME],
    "import": [FILE, LONG_SLUG],
    "notify": [FILE, LONG_SLUG],
    "stats": [LONG_SLUG],
    "admin list": [LONG_USER],
}


def run(folder: Path, args: list[str], columns: int, stdin: str = "") -> tuple[str, str]:
    """The command's stdout and stderr through pipes, at a terminal width of `columns`."""
    result = subprocess.run(
        [sys.executable, "-m", "portal", *args],
        cwd=folder,
        env=environment(folder / "instance", columns),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (args, result.stderr)
    return result.stdout, result.stderr


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Path:
    """The personas' incident with a partner of the longest slug and a 99-character name,
    its records imported, and an operator with a long name."""
    assert len(LONG_NAME) == 99 and len(LONG_SLUG) == 64
    folder = tmp_path_factory.mktemp("width")
    backend.new_database(folder / "instance")
    partner = f'\n[[partners]]\nslug = "{LONG_SLUG}"\nname = "{LONG_NAME}"\n'
    partner += 'contact_email = "privacy@openluchtmuseum.example"\n'
    (folder / "incident.toml").write_text(INCIDENT + partner, encoding="utf-8")
    write_csv(folder / FILE, PARK_A)
    run(folder, ["incident", "load", "incident.toml"], 80)
    run(folder, ["import", SLUG, LONG_SLUG, FILE], 80)
    run(folder, ["admin", "create", LONG_USER, "--password-stdin"], 80, "a long enough pass 9\n")
    return folder


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(args[:2]) for args in COMMANDS])
def test_it_prints_the_same_text_at_any_width(instance: Path, args: list[str]) -> None:
    narrow, wide = (run(instance, args, columns) for columns in WIDTHS)

    assert narrow == wide
    stdout = narrow[0]
    for name, values in WHOLE.items():
        if " ".join(args).startswith(name):
            lines = stdout.splitlines()
            for value in values:
                assert any(value in line for line in lines), f"{value!r} cut in:\n{stdout}"


def test_it_erases_an_incident_with_the_same_text_at_any_width(instance: Path) -> None:
    said = []
    for columns in WIDTHS:
        said.append(run(instance, ["purge", "--incident", SLUG, "--all"], columns))
        run(instance, ["incident", "load", "incident.toml"], columns)
        run(instance, ["import", SLUG, LONG_SLUG, FILE], columns)

    assert said[0] == said[1]
    assert f"erased incident {SLUG}: 4 partner(s)" in said[0][0]
