"""hourly counters for the operator's notice-day overview

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 18:00:00.000000

`hourly_counters`: one row per hour (UTC, on the hour) and figure (`lookups`, `link_mails`,
`notices_sent`, `outbox_depth`, ...), bumped in the transactions that do the work. Nothing
in it says whose it was, and `portal purge` leaves it alone: the figures of notice day
outlive the rows they counted.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hourly_counters",
        sa.Column("hour", sa.DateTime(), nullable=False),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("hour", "name", name=op.f("pk_hourly_counters")),
    )


def downgrade() -> None:
    op.drop_table("hourly_counters")
