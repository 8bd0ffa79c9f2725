"""Alembic environment: runs on the connection that `db.migrate` hands over."""

from __future__ import annotations

from alembic import context

from portal.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only `alembic revision --autogenerate` gets here
    from portal.core.config import Settings
    from portal.store.db import make_engine

    engine = make_engine(Settings.from_env().database_url)
    with engine.begin() as connection:
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
