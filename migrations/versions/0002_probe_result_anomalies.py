"""probe_result.anomalies: what arrived unparseable or out of range

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 10:20:00

A probe answer with ``retry-after: 1e308`` or a NUL byte in its body is
stored with the offending field clamped, escaped or dropped; this column
says which, so the row is never mistaken for a clean one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("probe_result", schema=None) as batch_op:
        batch_op.add_column(sa.Column("anomalies", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("probe_result", schema=None) as batch_op:
        batch_op.drop_column("anomalies")
