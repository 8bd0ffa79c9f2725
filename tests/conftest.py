"""Shared fixtures: settings for a fresh instance folder and a migrated engine, per backend."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from sqlalchemy import Engine
from starlette.testclient import TestClient

from portal.app import create_app
from portal.core.config import Settings
from portal.store import db
from tests.factories import load_personas

pytest_plugins = ["tests.fixtures_mail", "tests.databases"]

# The suite is a gate, not a fuzzer: every run, in CI and from the README's command alike,
# tries the same examples (derandomize), keeps none for the next run (no example database:
# a failure once stored there failed every later run in that checkout), and never fails on
# a shared machine's timing. A failure prints the blob that replays it. `HYPOTHESIS_PROFILE=
# explore pytest tests/...` searches anew, with the database, to look for new failures.
hypothesis_settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    print_blob=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
hypothesis_settings.register_profile("explore", max_examples=1000, deadline=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (`@pytest.mark.anyio`) run on asyncio, as uvicorn runs the portal."""
    return "asyncio"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        instance_dir=tmp_path,
        database_url=database_url,
        secret_key="test-secret",
        pepper=b"test-pepper",
    )


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = db.make_engine(settings.database_url)
    db.migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def client(engine: Engine, settings: Settings, tmp_path: Path) -> Iterator[TestClient]:
    """The personas' incident in the app, in process (mail stays in the outbox)."""
    load_personas(engine, settings, tmp_path)
    app = create_app(settings, deliver_mail=False)
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        yield client


@pytest.fixture(scope="module")
def redis_db(request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    """The Redis database that the test module names in REDIS_DB (only that one is
    flushed), empty before and after the module; skipped without a server, except in CI."""
    client = redis.Redis(host="127.0.0.1", port=6379, db=request.module.REDIS_DB)
    try:
        client.ping()
    except redis.ConnectionError:
        client.close()
        if os.environ.get("CI"):
            raise  # CI starts Redis (.ci/run): there, a missing server is a failure
        pytest.skip("no Redis server on 127.0.0.1:6379 (start one, or let .ci/run do it)")
    client.flushdb()
    yield client
    client.flushdb()
    client.close()
