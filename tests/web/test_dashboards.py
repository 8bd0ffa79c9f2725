"""docs/grafana-dashboard.json and docs/prometheus-alerts.yml: every metric and label they
name is one /metrics exports, and the alerts fire when they should (promtool, when present)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine
from starlette.testclient import TestClient

from portal.app import create_app
from portal.core import metrics
from portal.core.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
ALERTS = ROOT / "docs" / "prometheus-alerts.yml"
ALERT_TESTS = ROOT / "tests" / "data" / "alerts-test.yml"
PROMTOOL = shutil.which("promtool")
# What the issue asks of the dashboard and the alerts: these metrics, at least.
DASHBOARD_NEEDS = {"portal_requests_total", "portal_request_seconds_bucket",
                   "portal_lookup_queue_depth", "portal_lookups_shed_total", "portal_hashes_total",
                   "portal_emails_queued_total", "portal_emails_sent_total",
                   "portal_emails_failed_total", "portal_limits_fallback_total"}  # fmt: skip
ALERTS_NEEDED = {"PortalDatabaseDown", "PortalOutboxGrowing", "PortalLookupsShed",
                 "PortalLimitsFallback", "PortalRequestsOverdue"}  # fmt: skip
TARGET = {"job", "instance"}  # the labels Prometheus gives every series it scrapes
# PromQL's own words: functions, aggregations and keywords, which are not metric names.
PROMQL = {
    "abs", "absent", "absent_over_time", "avg", "avg_over_time", "bottomk", "ceil", "changes",
    "clamp", "clamp_max", "clamp_min", "count", "count_over_time", "count_values", "day_of_month",
    "deriv", "exp", "floor", "group", "histogram_quantile", "holt_winters", "idelta", "increase",
    "irate", "label_join", "label_replace", "ln", "log2", "log10", "max", "max_over_time", "min",
    "min_over_time", "predict_linear", "quantile", "quantile_over_time", "rate", "resets",
    "round", "scalar", "sort", "sort_desc", "sqrt", "stddev", "stdvar", "sum", "sum_over_time",
    "time", "timestamp", "topk", "vector", "and", "or", "unless", "by", "without", "on",
    "ignoring", "group_left", "group_right", "offset", "bool", "inf", "nan",
}  # fmt: skip


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside it


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in panels(dashboard()) for t in p.get("targets", [])]


def alert_exprs() -> list[str]:
    return re.findall(r"^\s+expr: (.+)$", ALERTS.read_text(encoding="utf-8"), re.M)


def names_in(expr: str) -> tuple[set[str], set[str]]:
    """The metric names an expression reads, and the label names it groups by."""
    grouped = set()
    for labels in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        grouped |= {label.strip() for label in labels.split(",") if label.strip()}
    bare = re.sub(r'"[^"]*"', "", expr)  # strings
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", bare)  # label matchers, ranges
    bare = re.sub(r"\b(?:by|without)\s*\([^)]*\)", "", bare)
    words = set(re.findall(r"(?<![\w.$])[a-zA-Z_:][\w:]*", bare))
    return words - PROMQL, grouped


@pytest.fixture
def exported(engine: Engine, settings: Settings) -> dict[str, str]:
    """Every sample name /metrics can show (from its TYPE lines), with the family's type."""
    with TestClient(create_app(settings, deliver_mail=False)) as client:
        text = client.get("/metrics").text
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
    }
    return {
        family.name + suffix: family.type
        for family in text_string_to_metric_families(text)
        for suffix in suffixes.get(family.type, ("",))
    }


def label_names() -> dict[str, set[str]]:
    """Each metric's sample names with the labels they carry (a bucket's `le` too)."""
    found: dict[str, set[str]] = {}
    for value in vars(metrics).values():
        if isinstance(value, Counter | Gauge | Histogram):
            labels = set(value._labelnames)
            name = value._name  # a counter's without the _total it exports
            for suffix in ("", "_total", "_bucket", "_sum", "_count"):
                found[name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return found


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_it_names_only_metrics_and_labels_that_metrics_exports(
    source: str, exported: dict[str, str]
) -> None:
    exprs = dashboard_exprs() if source == "dashboard" else alert_exprs()
    assert exprs
    labels = label_names()
    for expr in exprs:
        names, grouped = names_in(expr)
        assert names, f"no metric in {expr!r}"
        missing = names - exported.keys()
        assert not missing, f"{source}: {sorted(missing)} not in /metrics ({expr!r})"
        known = set().union(TARGET, *(labels.get(name, set()) for name in names))
        assert grouped <= known, f"{source}: grouped by {sorted(grouped - known)} in {expr!r}"


def test_it_reads_the_metrics_the_issue_asks_for() -> None:
    named = set().union(*(names_in(expr)[0] for expr in dashboard_exprs()))
    assert named >= DASHBOARD_NEEDS, sorted(DASHBOARD_NEEDS - named)
    in_alerts = set().union(*(names_in(expr)[0] for expr in alert_exprs()))
    assert {"portal_database_up", "portal_outbox_depth", "portal_lookups_shed_total",
            "portal_limits_fallback_total", "portal_requests_overdue"} <= in_alerts  # fmt: skip


def test_it_sees_a_name_that_metrics_does_not_export(exported: dict[str, str]) -> None:
    """The check above can fail: a misspelt metric or a counter without _total is caught."""
    for wrong in ("sum(rate(portal_request_total[5m]))", "rate(portal_hashes[5m])"):
        assert names_in(wrong)[0] - exported.keys()
    assert names_in('sum by (route, le) (rate(x_bucket{route="/"}[$__rate_interval]))') == (
        {"x_bucket"},
        {"route", "le"},
    )


def test_it_is_a_dashboard_grafana_imports() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 36 and board["uid"] and board["title"]
    assert [i["name"] for i in board["__inputs"]] == ["DS_PROMETHEUS"]
    assert [v["name"] for v in board["templating"]["list"] if v["type"] == "datasource"] == [
        "DS_PROMETHEUS"
    ]
    shown = [p for p in panels(board) if p["type"] != "row"]
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in shown:
        assert panel["title"] and panel["gridPos"]["w"] > 0
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        assert all(t["datasource"] == panel["datasource"] for t in panel["targets"])


# -- promtool --------------------------------------------------------------------------


@pytest.fixture
def promtool() -> str:
    if PROMTOOL is None:
        # As for the other tools: skipped with the reason on a laptop, a failure in CI.
        missing = "promtool is missing: apt-get install prometheus (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    return PROMTOOL


def run(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_it_writes_alert_rules_promtool_accepts(promtool: str) -> None:
    checked = run(promtool, "check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 5 rules found" in checked.stdout
    named = set(re.findall(r"^\s+- alert: (\w+)$", ALERTS.read_text(encoding="utf-8"), re.M))
    assert named == ALERTS_NEEDED


def test_it_fires_each_alert_when_it_should_and_not_before(promtool: str) -> None:
    tested = set(re.findall(r"alertname: (\w+)", ALERT_TESTS.read_text(encoding="utf-8")))
    assert tested == ALERTS_NEEDED
    result = run(promtool, "test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_it_writes_dashboard_queries_promtool_parses(promtool: str, tmp_path: Path) -> None:
    """Each panel's query as a recording rule, Grafana's interval variable made 5m."""
    rules = ["groups:", "  - name: dashboard", "    rules:"]
    for n, expr in enumerate(dashboard_exprs()):
        rules += [f"      - record: dashboard:query_{n}", f"        expr: {json.dumps(expr)}"]
        rules[-1] = rules[-1].replace("$__rate_interval", "5m")
    path = tmp_path / "dashboard-rules.yml"
    path.write_text("\n".join(rules) + "\n", encoding="utf-8")
    checked = run(promtool, "check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_promtool_refuses_a_broken_rule(promtool: str, tmp_path: Path) -> None:
    """The checks above can fail."""
    path = tmp_path / "broken.yml"
    path.write_text(
        "groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: sum by (job (x)\n",
        encoding="utf-8",
    )
    assert run(promtool, "check", "rules", str(path)).returncode != 0
