"""each incident's pepper fingerprint, and when each outbox row was last attempted

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 09:00:00.000000

`incidents.pepper_fingerprint`: the keyed hash of a fixed string under the pepper and salt
the incident's records were imported with (portal.incidents.fingerprints), so that a command started
with another pepper refuses instead of answering "not affected" to everyone. NULL until the
first import writes records; an incident imported before this column existed gets it at the
next guarded start (adopted, with a warning, unless a deletion request's address proves the
pepper wrong). `outbox.attempted_at`: when the last attempt to deliver the row was made, so
that `portal stats` can tell whether the newest attempts failed and why.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pepper_fingerprint", sa.String(length=64), nullable=True))
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempted_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("attempted_at")
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.drop_column("pepper_fingerprint")
