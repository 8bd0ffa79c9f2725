"""The schema brought to the newest migration: Alembic when there is something to do, a
single query when there is not (every command and server start asks)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

from portal.store import db


def alembic_config(engine: Engine) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(db.MIGRATIONS))
    return config


def version(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def test_its_head_is_alembics_head_in_one_line_of_migrations(engine: Engine) -> None:
    scripts = ScriptDirectory.from_config(alembic_config(engine))
    assert scripts.get_heads() == [db.head_revision()]
    # One line: each migration's parent is the one before it, so the newest file is the head.
    revisions = [script.revision for script in scripts.walk_revisions()]
    assert revisions == sorted(revisions, reverse=True)
    assert version(engine) == db.head_revision()


def test_it_upgrades_a_schema_left_at_an_older_migration(engine: Engine) -> None:
    with engine.begin() as conn:
        config = alembic_config(engine)
        config.attributes["connection"] = conn
        command.downgrade(config, "0011")
    assert not inspect(engine).has_table("letter_codes")
    assert version(engine) == "0011"

    db.migrate(engine)

    assert inspect(engine).has_table("letter_codes")
    assert version(engine) == db.head_revision()


def test_it_migrates_a_new_database_and_then_leaves_it_as_it_is(engine: Engine) -> None:
    with engine.connect() as conn:
        salt = conn.execute(text("SELECT value FROM meta WHERE key = 'bidx_salt'")).scalar()
    db.migrate(engine)  # at head: nothing to do, the salt kept
    with engine.connect() as conn:
        assert conn.execute(text("SELECT value FROM meta WHERE key = 'bidx_salt'")).scalar() == salt
    assert version(engine) == db.head_revision()
