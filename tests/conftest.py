"""Shared fixtures: settings for a fresh instance folder and a migrated engine, per backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from portal import db
from portal.config import Settings

pytest_plugins = ["tests.fixtures_mail", "tests.databases"]


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
