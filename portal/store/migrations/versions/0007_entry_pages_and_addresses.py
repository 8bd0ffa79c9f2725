"""partner entry pages and several addresses in one visit: a partner's intro, the entry
partner of a link and a session, the session a link was asked from, and a session's further
addresses

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-02 00:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("partners", schema=None) as batch_op:
        batch_op.add_column(sa.Column("intro", sa.Text(), nullable=True))
    with op.batch_alter_table("links", schema=None) as batch_op:
        batch_op.add_column(sa.Column("partner_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("session_id", sa.Integer(), nullable=True))
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("partner_id", sa.Integer(), nullable=True))
    op.create_table(
        "session_addresses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("bidx", sa.LargeBinary(length=32), nullable=False),
        sa.Column("sealed_email", sa.LargeBinary(), nullable=False),
        sa.Column("verified_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name=op.f("fk_session_addresses_session_id_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_session_addresses")),
        sa.UniqueConstraint("session_id", "bidx", name=op.f("uq_session_addresses_session_bidx")),
    )


def downgrade() -> None:
    op.drop_table("session_addresses")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("partner_id")
    with op.batch_alter_table("links", schema=None) as batch_op:
        batch_op.drop_column("session_id")
        batch_op.drop_column("partner_id")
    with op.batch_alter_table("partners", schema=None) as batch_op:
        batch_op.drop_column("intro")
