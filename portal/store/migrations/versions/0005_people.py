"""for people: the organisation and its website, a partner's certainty, the incident's sections,
and the sender name of each message

Revision ID: 0005
Revises: 0002
Create Date: 2026-12-01 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("organisation", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("website", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("sections", sa.Text(), nullable=True))
    with op.batch_alter_table("partners", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("certainty", sa.String(length=16), nullable=False, server_default="confirmed")
        )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sender_name", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("sender_name")
    with op.batch_alter_table("partners", schema=None) as batch_op:
        batch_op.drop_column("certainty")
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.drop_column("sections")
        batch_op.drop_column("website")
        batch_op.drop_column("organisation")
