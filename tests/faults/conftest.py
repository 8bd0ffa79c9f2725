"""The fault tests' fixtures: one PostgreSQL cluster of their own per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.servers import Cluster, backend_chosen, own_postgres


@pytest.fixture(scope="session")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    backend_chosen(request.config, "postgresql")
    with own_postgres() as server:
        yield Cluster(server, tmp_path_factory.mktemp("templates"))
