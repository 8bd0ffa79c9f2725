"""`portal import` on real files, as an operator runs it: every row accounted for, or refused.

Each refusal names the line and the fix and writes nothing; each import prints counts that
add up (rows read = imported + skipped) and lists every skipped line with its reason.
"""

from __future__ import annotations

import os
import re
import select
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factories import INCIDENT
from tests.server import assert_operator_error, count, environment, portal

SLUG = "ticketing-2021"


@pytest.fixture
def instance(tmp_path: Path) -> Path:
    """A folder whose instance has the personas' incident loaded and nothing imported."""
    (tmp_path / "incident.toml").write_text(INCIDENT, encoding="utf-8")
    load = portal(tmp_path, "incident", "load", "incident.toml")
    assert load.returncode == 0, load.stderr
    return tmp_path


def write(folder: Path, text: str | bytes, name: str = "leak.csv") -> Path:
    path = folder / name
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8", newline="")
    else:
        path.write_bytes(text)
    return path


def stored(folder: Path, partner: str = "park-a") -> int:
    """The exposures on record for a partner, read from the SQLite file itself."""
    with sqlite3.connect(folder / "instance" / "portal.db") as conn:
        (found,) = conn.execute(
            "SELECT count(*) FROM exposures JOIN partners ON partners.id = partner_id "
            "WHERE partners.slug = ?",
            (partner,),
        ).fetchone()
    return int(found)


def do_import(folder: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return portal(folder, "import", SLUG, "park-a", *args)


def people(n: int, start: int = 0) -> list[str]:
    return [f"person{i}@example.org,Naam {i}" for i in range(start, start + n)]


def assert_refused(
    result: subprocess.CompletedProcess[str], folder: Path, location: str, *words: str
) -> None:
    """Exit 1, one line naming `file:line`, and not one exposure written."""
    assert_operator_error(result, location, *words)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "import summary" not in result.stdout
    assert stored(folder) == 0


# -- refusals: the file cannot be read as a whole --------------------------------------------


def test_it_refuses_an_unclosed_quote_naming_its_line(instance: Path) -> None:
    rows = ["email,naam", *people(1000)]
    rows[3] = 'person2@example.org,"Naam 2'  # line 4 opens a quote that never closes
    path = write(instance, "\n".join(rows) + "\n")

    result = do_import(instance, path)

    assert_refused(result, instance, "leak.csv:4:", "quoted cell", "never closes")


def test_it_refuses_a_quote_that_swallows_rows_until_another_closes_it(instance: Path) -> None:
    rows = ["email,naam", *people(10)]
    rows[3] = 'person2@example.org,"Naam 2'
    rows[7] = 'person6@example.org,Naam 6"'  # closes line 4's quote: lines 5-8 are one cell
    path = write(instance, "\n".join(rows) + "\n")

    result = do_import(instance, path)

    assert_refused(result, instance, "leak.csv:4:", "runs on to line 8", "line 5")


def test_it_refuses_text_after_a_closing_quote(instance: Path) -> None:
    path = write(instance, 'email,naam\nann@example.org,"Ann" Jansen\n')

    result = do_import(instance, path)

    assert_refused(result, instance, "leak.csv:2:", "text follows a closing quote")


def test_it_refuses_a_row_with_more_cells_than_the_header(instance: Path) -> None:
    path = write(instance, "email,naam\nann@example.org,Ann\nbob@example.org,Jansen, Bob\n")

    result = do_import(instance, path)

    assert_refused(result, instance, "leak.csv:3:", "3 cells", "header has 2", "quote")


def test_it_reads_extra_empty_cells_as_nothing(instance: Path) -> None:
    path = write(instance, "email;naam\nann@example.org;Ann;;\nbob@example.org;Bob\n")

    result = do_import(instance, path)

    assert result.returncode == 0, result.stderr
    assert count(result.stdout, "rows imported") == 2
    assert stored(instance) == 2


def test_it_refuses_a_nul_byte(instance: Path) -> None:
    path = write(instance, b"email,naam\nann@example.org,Ann\nbob@example.org,B\x00b\n")

    result = do_import(instance, path)

    assert_refused(result, instance, "leak.csv:3:", "NUL byte", "CSV UTF-8")


def test_it_refuses_lines_that_end_in_cr_only(instance: Path) -> None:
    path = write(instance, b"email,naam\rann@example.org,Ann\rbob@example.org,Bob\r")

    result = do_import(instance, path)

    assert_refused(result, instance, "leak.csv:1:", "CR only", "LF or CRLF")


def test_it_refuses_two_email_columns_naming_both(instance: Path) -> None:
    path = write(instance, "email,naam,E-mail\nann@example.org,Ann,ann@work.example\n")

    refused = do_import(instance, path)
    assert_refused(refused, instance, '"email" and "E-mail"', "--email-column")
    chosen = do_import(instance, path, "--email-column", "email")

    assert chosen.returncode == 0, chosen.stderr
    assert count(chosen.stdout, "rows imported") == 1


def test_it_refuses_bytes_that_are_not_utf8(instance: Path) -> None:
    path = write(instance, "email;naam\nann@example.org;Zoë\n".encode("latin-1"))

    result = do_import(instance, path)

    assert_refused(result, instance, "leak.csv:2:", "not UTF-8", "CSV UTF-8")


def test_it_refuses_a_pipe_separated_file_naming_the_separators_it_reads(instance: Path) -> None:
    path = write(instance, "email|naam|telefoon\nann@example.org|Ann|0612345678\n")

    result = do_import(instance, path)

    assert_refused(
        result, instance, "leak.csv:1:", "separated by '|'", "commas, semicolons or tabs"
    )
    assert "--email-column" not in result.stderr


@pytest.mark.parametrize(
    ("header", "rows", "named"),
    [
        (";", ",", "by ',', but the header on line 1 by ';'"),
        (",", ";", "by ';', but the header on line 1 by ','"),
        ("\t", ",", "by ',', but the header on line 1 by tabs"),
    ],
    ids=["semicolon-header", "comma-header", "tab-header"],
)
def test_it_refuses_rows_separated_otherwise_than_the_header(
    instance: Path, header: str, rows: str, named: str
) -> None:
    lines = [header.join(["email", "naam", "telefoon"])]
    lines += [rows.join([f"person{i}@example.org", f"Naam {i}", ""]) for i in range(3)]
    path = write(instance, "\n\n" + "\n".join(lines) + "\n")

    result = do_import(instance, path)

    # The header is on line 3 after two blank lines; the first row on line 4.
    assert_refused(
        result, instance, "leak.csv:4:", "this row is separated", named.replace("line 1", "line 3")
    )
    assert "--email-column" not in result.stderr


def test_it_reads_values_that_hold_another_separator(instance: Path) -> None:
    path = write(instance, "email;naam\nann@example.org;Jansen, Ann\nbob@example.org\n")

    result = do_import(instance, path)

    assert result.returncode == 0, result.stderr
    assert "semicolon-separated" in result.stdout
    assert stored(instance) == 2


# -- what is read, and how it is accounted for ----------------------------------------------


def test_it_reads_a_tab_separated_file(instance: Path) -> None:
    path = write(instance, "email\tnaam\ttelefoon\nann@example.org\tAnn\t0612\n")

    result = do_import(instance, path)

    assert result.returncode == 0, result.stderr
    assert "tab-separated" in result.stdout
    assert count(result.stdout, "exposes phone") == 1
    assert stored(instance) == 1


def test_it_reads_missing_cells_as_empty_and_counts_short_rows(instance: Path) -> None:
    path = write(instance, "email,naam,telefoon\nann@example.org,Ann\nbob@example.org\n")

    result = do_import(instance, path)

    assert result.returncode == 0, result.stderr
    assert count(result.stdout, "rows imported") == 2
    assert count(result.stdout, r"short rows \(missing cells read as empty\)") == 2
    assert count(result.stdout, "exposes name") == 1
    assert "exposes phone" not in result.stdout


def test_it_imports_a_quoted_cell_over_several_lines(instance: Path) -> None:
    text = (
        "E-mailadres;Straat;Naam\r\n"
        'ann@example.org;"Kerkstraat 1\r\nAmsterdam";Ann\r\n'
        "bob@example.org;;Bob\r\n"
    )
    path = write(instance, "\ufeff" + text)

    result = do_import(instance, path)

    assert result.returncode == 0, result.stderr
    assert count(result.stdout, "rows read") == 2
    assert count(result.stdout, "rows with a cell over several lines") == 1
    assert count(result.stdout, "exposes address") == 1
    assert stored(instance) == 2


def test_it_lists_every_skipped_line_with_its_reason_never_its_value(instance: Path) -> None:
    text = (
        "email,naam\n"  # 1
        "ann@example.org,Ann\n"  # 2
        ",Nobody\n"  # 3
        "geheim-adres-zonder-apenstaart,Xander\n"  # 4
        "\n"  # 5
        "bob@example.org,Bob\n"  # 6
        "geheim@@example.org,Yvonne\n"  # 7
        ",Zoë\n"  # 8
    )
    path = write(instance, text)

    result = do_import(instance, path)

    assert result.returncode == 0, result.stderr
    read, imported, skipped = (
        count(result.stdout, label) for label in ("rows read", "rows imported", "rows skipped")
    )
    assert (read, imported, skipped) == (6, 2, 4)
    assert read == imported + skipped
    assert count(result.stdout, r"blank lines \(not rows\)") == 1
    assert "lines 3, 8: no email address" in result.stdout
    assert "line 4: not a valid address: an email address must have an @-sign" in result.stdout
    assert "line 7: not a valid address" in result.stdout
    assert "geheim" not in result.stdout + result.stderr


def test_it_says_would_import_on_a_dry_run_and_writes_nothing(instance: Path) -> None:
    path = write(instance, "\n".join(["email,naam", *people(3)]) + "\n")

    result = do_import(instance, path, "--dry-run")

    assert result.returncode == 0, result.stderr
    assert "dry run: nothing written" in result.stdout
    assert count(result.stdout, "rows that would be imported") == 3
    assert "would import 3 row(s)" in result.stdout
    assert "rows imported" not in result.stdout
    assert stored(instance) == 0


def test_it_says_so_when_a_reimport_changes_nothing(instance: Path) -> None:
    path = write(instance, "\n".join(["email,naam", *people(3)]) + "\n")

    first = do_import(instance, path)
    again = do_import(instance, path)

    assert "imported 3 row(s) with 3 address(es): 3 new" in first.stdout
    assert again.returncode == 0, again.stderr
    assert count(again.stdout, "new addresses") == 0
    assert count(again.stdout, "unchanged addresses") == 3
    assert "nothing changed: all 3 address(es) were already imported" in again.stdout
    assert stored(instance) == 3


def test_it_refuses_a_file_without_a_valid_address_listing_why(instance: Path) -> None:
    path = write(instance, "email,naam\ngeheim,Ann\n,Bob\n")

    result = do_import(instance, path)

    assert_refused(result, instance, "2 rows read, all skipped", "no email address: line 3")
    assert "geheim" not in result.stderr


# -- output that is safe and readable -------------------------------------------------------


def test_it_escapes_control_characters_from_the_file(instance: Path) -> None:
    column = "\x1b[2J\x1b]0;pwned\x07Kleur"
    path = write(instance, f"email,{column}\nann@example.org,rood\n")

    refused = do_import(instance, path)
    ignored = do_import(instance, path, "--map", f"{column}=-")

    for result in (refused, ignored):
        assert "\x1b" not in result.stdout + result.stderr
        assert "\x07" not in result.stdout + result.stderr
    assert "\\x1b[2J\\x1b]0;pwned\\x07Kleur" in refused.stderr
    assert ignored.returncode == 0, ignored.stderr
    assert 'ignored: "\\x1b[2J\\x1b]0;pwned\\x07Kleur"' in ignored.stdout


def test_it_does_not_wrap_output_that_is_not_a_terminal(instance: Path) -> None:
    header = ["E-mailadres", "Voornaam", "Achternaam", "Straat", "Huisnummer", "Woonplaats"]
    path = write(instance, ",".join(header) + "\nann@example.org,Ann,Aap,Dorpsstraat,1,Ede\n")

    result = do_import(instance, path)

    assert result.returncode == 0, result.stderr
    columns = next(line for line in result.stdout.splitlines() if line.startswith("columns:"))
    assert len(columns) > 80
    assert columns.endswith('"Woonplaats" -> city')


def test_it_gives_a_short_message_for_ten_thousand_unknown_columns(instance: Path) -> None:
    header = ",".join(["email", *(f"kolom{n}" for n in range(10_000))])
    path = write(instance, f"{header}\nann@example.org\n")

    result = do_import(instance, path)

    assert_refused(result, instance, "10000 unknown columns", '"kolom0"', "9,995 more")
    assert len(result.stderr) < 1000


def test_it_names_the_known_incidents_for_an_unknown_one(instance: Path) -> None:
    path = write(instance, "email\nann@example.org\n")

    result = portal(instance, "import", "no-such-breach", "park-a", path)

    assert_operator_error(result, "no-such-breach", f"known: {SLUG}")


def run_on_a_terminal(folder: Path, *args: str | Path) -> str:
    """Runs `portal ARGS` with stdout and stderr on a pseudo-terminal; returns all it drew."""
    controller, terminal = os.openpty()
    env = environment(folder / "instance", 120) | {"TERM": "xterm-256color"}
    process = subprocess.Popen(
        [sys.executable, "-m", "portal", *map(str, args)],
        cwd=folder,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    drawn = bytearray()
    while True:
        ready, _, _ = select.select([controller], [], [], 60)
        if not ready:
            process.kill()
            break
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closes when the process ends
            break
        if not chunk:
            break
        drawn += chunk
    os.close(controller)
    assert process.wait(timeout=60) == 0, drawn.decode(errors="replace")
    return drawn.decode("utf-8", errors="replace")


def test_it_shows_progress_with_its_total_a_rate_and_the_time_left(instance: Path) -> None:
    path = write(instance, "\n".join(["email", *(f"p{n}@example.org" for n in range(300))]))

    drawn = run_on_a_terminal(instance, "import", SLUG, "park-a", path, "--workers", "1")

    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn)
    frames = re.findall(r"hashing addresses\s+\S+\s+(\d+)/(\d+)\s+(\S+) addresses/s\s+(\S+)", plain)
    assert frames, plain
    assert {total for _, total, _, _ in frames} == {"300"}
    assert any(rate.replace(",", "").isdigit() for _, _, rate, _ in frames)
    assert any(re.fullmatch(r"\d+:\d\d:\d\d", left) for *_, left in frames)
    assert "/?" not in plain
    assert "import summary" in plain


def test_it_lists_the_first_thousand_skipped_lines_and_counts_the_rest(instance: Path) -> None:
    rows = ["email,naam", "ann@example.org,Ann", *(f"geen-adres-{n},X" for n in range(1050))]
    rows += [",Y"] * 3
    path = write(instance, "\n".join(rows) + "\n")

    result = do_import(instance, path)

    assert result.returncode == 0, result.stderr
    assert count(result.stdout, "rows read") == 1054
    assert count(result.stdout, "rows imported") == 1
    assert count(result.stdout, "rows skipped") == 1053
    assert "lines 3-1002: not a valid address" in result.stdout
    assert "and 53 more rows not listed here:" in result.stdout
    assert "    50 more: not a valid address" in result.stdout
    assert "    3 more: no email address" in result.stdout


@pytest.mark.parametrize("part", ["3/2", "0/2", "half"])
def test_it_refuses_a_part_that_does_not_exist(instance: Path, part: str) -> None:
    path = write(instance, "email\nann@example.org\n")

    result = do_import(instance, path, "--part", part)

    assert result.returncode == 2, result.stderr
    assert "--part" in result.stderr and "Traceback" not in result.stderr
    assert stored(instance) == 0
