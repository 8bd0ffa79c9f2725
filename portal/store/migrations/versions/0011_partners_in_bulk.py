"""partners in bulk: a partner's `forward`, daily digests, and uploads of outcomes

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 20:10:00.000000

`partners.forward`: "each" (a request email and webhook per request, as before) or "daily"
(one digest a day and the partner queue page, design §8). `partner_digests`: one row per
digest queued, with its outbox rows; `deletion_requests.digest_id` names the digest that
carried a request, set in the transaction that queues the digest, so that no request is in
two. `partner_uploads`: what an upload of outcomes came to (counts, refused lines), shown on
the queue page after the upload; it holds references and reasons, never an address.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("partners") as batch_op:
        batch_op.add_column(
            sa.Column("forward", sa.String(length=8), nullable=False, server_default="each")
        )
    op.create_table(
        "partner_digests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("outbox_id", sa.Integer(), nullable=True),
        sa.Column("webhook_outbox_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.id"],
            name=op.f("fk_partner_digests_partner_id_partners"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_partner_digests")),
    )
    op.create_index(
        "ix_partner_digests_partner_id_created_at",
        "partner_digests",
        ["partner_id", "created_at"],
    )
    with op.batch_alter_table("deletion_requests") as batch_op:
        batch_op.add_column(sa.Column("digest_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            op.f("fk_deletion_requests_digest_id_partner_digests"),
            "partner_digests",
            ["digest_id"],
            ["id"],
            ondelete="SET NULL",
        )
    op.create_table(
        "partner_uploads",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("applied", sa.Integer(), nullable=False),
        sa.Column("refused", sa.Integer(), nullable=False),
        sa.Column("refusals", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.id"],
            name=op.f("fk_partner_uploads_partner_id_partners"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_partner_uploads")),
    )


def downgrade() -> None:
    op.drop_table("partner_uploads")
    with op.batch_alter_table("deletion_requests") as batch_op:
        batch_op.drop_constraint(
            op.f("fk_deletion_requests_digest_id_partner_digests"), type_="foreignkey"
        )
        batch_op.drop_column("digest_id")
    op.drop_index("ix_partner_digests_partner_id_created_at", table_name="partner_digests")
    op.drop_table("partner_digests")
    with op.batch_alter_table("partners") as batch_op:
        batch_op.drop_column("forward")
