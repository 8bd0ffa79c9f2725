"""exposures keep one index, their primary key: every query names the partner

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 01:50:00.000000

`ix_exposures_bidx` stored every blind index a third time (row, primary key, this index)
and served no query: results, deletions, counters and notices all ask for a blind index at
named partners, which the primary key (partner_id, bidx) answers. Only `portal stats`'
count of distinct people scanned it, and sorts instead now. Measured with
bench/lookup_scale.py on 2 M exposures: 128.5 bytes per exposure on SQLite with the index,
87.1 without.
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_exposures_bidx", table_name="exposures")


def downgrade() -> None:
    op.create_index("ix_exposures_bidx", "exposures", ["bidx"])
