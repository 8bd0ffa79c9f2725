"""letter codes: people reached on paper look their results up by a code

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 20:00:00.000000

`letter_codes` keeps a letter's code only as a keyed hash, with the blind index of the
person's key columns; `letter_partners` the partners each code's letters named (never
twice). `sessions.letter_code_id` marks a session that a code started. No postal address
is stored anywhere.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "letter_codes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=False),
        sa.Column("person_key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("code_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("lang", sa.String(length=8), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_used_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name=op.f("fk_letter_codes_incident_id_incidents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_letter_codes")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_letter_codes_code_hash")),
        sa.UniqueConstraint(
            "incident_id", "person_key", name=op.f("uq_letter_codes_incident_person")
        ),
    )
    op.create_table(
        "letter_partners",
        sa.Column("code_id", sa.Integer(), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("fields", sa.BigInteger(), nullable=False),
        sa.Column("lettered_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["code_id"],
            ["letter_codes.id"],
            name=op.f("fk_letter_partners_code_id_letter_codes"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.id"],
            name=op.f("fk_letter_partners_partner_id_partners"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("code_id", "partner_id", name=op.f("pk_letter_partners")),
    )
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("letter_code_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("letter_code_id")
    op.drop_table("letter_partners")
    op.drop_table("letter_codes")
