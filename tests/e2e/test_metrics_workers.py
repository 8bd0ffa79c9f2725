"""/metrics with several worker processes: every worker's figures, summed."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.databases import Backend
from tests.factories import INCIDENT
from tests.server import running_portal

pytestmark = pytest.mark.e2e

SLUG = "ticketing-2021"
PAGE = 'portal_requests_total{method="GET",route="/{incident}/",status="200"}'


def test_it_sums_the_figures_of_every_worker(tmp_path: Path, backend: Backend) -> None:
    instance = tmp_path / "instance"
    backend.new_database(instance)
    with running_portal(instance, "--workers", "2", "--no-mail-worker") as portal:
        path = instance / "incident.toml"
        path.write_text(INCIDENT, encoding="utf-8")
        portal.cli("incident", "load", str(path))

        for _ in range(12):  # a new connection each: either worker may answer
            assert httpx.get(f"{portal.url}/{SLUG}/").status_code == 200
        answers = {_sample(httpx.get(f"{portal.url}/metrics").text) for _ in range(6)}

        assert answers == {12.0}
        written = {p.name.rsplit("_", 1)[-1] for p in (instance / "prometheus").glob("*.db")}
        assert len(written) >= 2, written  # files of two processes


def _sample(text: str) -> float:
    for row in text.splitlines():
        if row.startswith(f"{PAGE} "):
            return float(row.rsplit(" ", 1)[1])
    return 0.0
