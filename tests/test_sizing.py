"""docs/deployment.md's sizing tables: each cell is the arithmetic of the rate it cites.

The import table scales from the measured hash rate per core (`bench/bruteforce.py`: 247
per core at the default cost, 4.4 times the time per guess at four times it) and the
import's share of it (0.95); the notice table is the count over the rate.
"""

from __future__ import annotations

import re

from tests.server import DOCS

SIZING = (DOCS / "deployment.md").read_text(encoding="utf-8")
PERFORMANCE = (DOCS / "performance.md").read_text(encoding="utf-8")
ROWS = (1_000_000, 6_200_000, 20_000_000)


def table_after(marker: str) -> list[list[str]]:
    block = SIZING.split(f"<!-- {marker}", 1)[1].split("\n\n", 1)[0]
    lines = [line for line in block.splitlines()[1:] if line.startswith("|")][2:]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_the_per_core_rates_follow_from_the_measured_figures() -> None:
    per_core = int(re.search(r"per core\s+: (\d+) guesses/s", PERFORMANCE).group(1))  # type: ignore[union-attr]
    slower = re.search(r"= ([\d.]+) times the time per guess", PERFORMANCE)
    assert slower is not None
    rates = {row[0]: int(row[1]) for row in table_after("sizing-import")}

    assert per_core == 247
    assert rates == {
        "default": round(0.95 * per_core),
        "4×": round(0.95 * per_core / float(slower.group(1))),
    }


def test_each_import_cell_is_rows_over_the_cores_rate() -> None:
    table = table_after("sizing-import")

    assert len(table) >= 10
    for _, rate, machines, *hours in table:
        hosts, cores = (int(n) for n in machines.split("×"))
        want = [f"{rows / (int(rate) * hosts * cores) / 3600:.2f}" for rows in ROWS]
        assert hours == want, (rate, machines)


def test_each_notice_cell_is_the_count_over_the_rate() -> None:
    table = table_after("sizing-notices")

    assert [row[0] for row in table] == ["10", "50", "100", "250", "500", "1,000"]
    for rate, *hours in table:
        per_second = int(rate.replace(",", ""))
        assert hours == [f"{count / per_second / 3600:.2f}" for count in ROWS], rate
