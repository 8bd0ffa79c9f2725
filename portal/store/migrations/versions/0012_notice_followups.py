"""follow-up notices for partners notified after a person's notice went out

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 20:00:00.000000

`notice_followups`: one row per follow-up notice (design §8 "Later partners"), numbered per
notice (unique), throttled like every notice (`send_after`), with its outbox row and direct
link. `notice_partners.followup_id`: the follow-up that names a partner recorded after the
notice went out; the table's primary key (notice, partner) keeps a partner from being named
twice. Bounces (design §8) need no column: a notice or follow-up is marked `bounced`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notice_followups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("notice_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("send_after", sa.DateTime(), nullable=False),
        sa.Column("outbox_id", sa.Integer(), nullable=True),
        sa.Column("link_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["notice_id"],
            ["notices.id"],
            name=op.f("fk_notice_followups_notice_id_notices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["outbox_id"],
            ["outbox.id"],
            name=op.f("fk_notice_followups_outbox_id_outbox"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["link_id"],
            ["links.id"],
            name=op.f("fk_notice_followups_link_id_links"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notice_followups")),
        sa.UniqueConstraint("notice_id", "number", name="uq_notice_followups_notice_number"),
    )
    op.create_index("ix_notice_followups_outbox_id", "notice_followups", ["outbox_id"])
    with op.batch_alter_table("notice_partners", schema=None) as batch_op:
        batch_op.add_column(sa.Column("followup_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_notice_partners_followup_id_notice_followups"),
            "notice_followups",
            ["followup_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("notice_partners", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_notice_partners_followup_id_notice_followups"), type_="foreignkey"
        )
        batch_op.drop_column("followup_id")
    op.drop_index("ix_notice_followups_outbox_id", table_name="notice_followups")
    op.drop_table("notice_followups")
