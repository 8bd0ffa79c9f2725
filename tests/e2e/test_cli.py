"""The operator's mistakes, made with the real `portal` command: one clear line, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import DATA, SLUG, csv_path, run_cli
from tests.server import portal_env, running_portal

pytestmark = pytest.mark.e2e

PARK_A = str(csv_path("park-a"))
OMROEP_C = str(csv_path("omroep-c"))
# (arguments, what the one line on stderr must say: the problem and how to fix it)
MISTAKES = {
    "missing CSV": (["import", SLUG, "park-a", "/nonexistent/park-a.csv"], "no such file"),
    "missing incident file": (["incident", "load", "/nonexistent/incident.toml"], "no such file"),
    "unknown incident": (["import", "zomerfestival-1999", "park-a", PARK_A], "unknown incident"),
    "unknown partner": (
        ["import", SLUG, "kermis-z", PARK_A],
        "(known: park-a, theater-b, omroep-c)",
    ),
    "bad TOML": (
        ["incident", "load", str(DATA / "bad-syntax.toml")],
        "bad-syntax.toml:2: languages: expected a list of languages in quotes",
    ),
    "unknown column": (["import", SLUG, "omroep-c", OMROEP_C], '--map "Lievelingskleur=-"'),
    "unknown field in --map": (
        ["import", SLUG, "omroep-c", OMROEP_C, "--map", "Lievelingskleur=kleur"],
        'unknown field "kleur"',
    ),
    "column name with brackets": (
        ["import", SLUG, "park-a", str(DATA / "bracketed-column.csv")],
        '--map "Opmerking [/intern]=-"',
    ),
}


@pytest.fixture
def env(instance: Path) -> dict[str, str]:
    return portal_env(instance)


def stats(env: dict[str, str]) -> str:
    run = run_cli(env, "stats")
    assert run.returncode == 0, run.stderr
    return run.stdout


@pytest.mark.parametrize("mistake", MISTAKES)
def test_it_runs_the_cli_errors_cleanly(env: dict[str, str], mistake: str) -> None:
    args, fix = MISTAKES[mistake]
    run = run_cli(env, *args)
    assert run.returncode == 1
    assert "Traceback" not in run.stdout + run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {lines}"
    assert lines[0].startswith("error: ")
    assert fix in lines[0]


def test_it_writes_nothing_when_an_import_or_incident_file_is_refused(
    env: dict[str, str], tmp_path: Path
) -> None:
    before = stats(env)
    unknown_column = tmp_path / "more-omroep-c.csv"
    unknown_column.write_text(
        "E-mail;Naam;Lievelingskleur\nnieuw.lid@voorbeeld.nl;Nieuw Lid;Roze\n", encoding="utf-8"
    )
    assert run_cli(env, "import", SLUG, "omroep-c", str(unknown_column)).returncode == 1
    assert run_cli(env, "incident", "load", str(DATA / "no-partners.toml")).returncode == 1
    assert stats(env) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["import", SLUG], "Missing argument 'partner'"),
        (["import", SLUG, "omroep-c", OMROEP_C, "--map", "Lievelingskleur"], "COLUMN=FIELD"),
        (["import", SLUG, "omroep-c", OMROEP_C, "--workers", "0"], "--workers"),
    ],
)
def test_it_answers_usage_errors_with_status_2(
    env: dict[str, str], args: list[str], message: str
) -> None:
    run = run_cli(env, *args)
    assert run.returncode == 2
    assert "Traceback" not in run.stdout + run.stderr
    assert message in run.stderr


def test_it_reports_every_incident_file_problem_with_its_line(env: dict[str, str]) -> None:
    run = run_cli(env, "incident", "load", str(DATA / "no-partners.toml"))
    assert run.returncode == 1
    assert "Traceback" not in run.stdout + run.stderr
    assert "no-partners.toml:" in run.stderr
    assert "at least one [[partners]] table is required" in run.stderr


def test_it_warns_that_workers_without_redis_keep_their_own_limits(tmp_path: Path) -> None:
    with running_portal(tmp_path / "instance", "--workers", "2") as portal:
        assert "each of the 2 workers keeps its own rate limits" in portal.log()
    with running_portal(tmp_path / "instance") as portal:
        assert "rate limits" not in portal.log()
