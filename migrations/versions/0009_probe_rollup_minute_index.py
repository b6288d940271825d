"""probe_rollup_minute_index: an index on probe_rollup.minute_at, built without blocking the rollup writes

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 22:00:00

The rollup tick (every 15 s on the leader), the rollup retention and the
rollups of every region filter on ``minute_at`` alone, and neither the
primary key (endpoint_id, vantage, minute_at) nor (region, minute_at) leads
on it: on PostgreSQL each of them read the whole table, which the default
90 days of rollups make about 39 M rows at 3 vantages x 100 endpoints.

On PostgreSQL the index is built CONCURRENTLY, outside the migration's
transaction (a plain CREATE INDEX holds a SHARE lock on the table for the
whole build, and the leader's rollup writes would wait that long). Such a
build that fails or is stopped leaves an invalid index behind: running the
upgrade again drops it and builds it anew; a valid one (built, but the
revision not yet stamped) is kept.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

INDEX = "ix_probe_rollup_minute_at"


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        with op.batch_alter_table("probe_rollup", schema=None) as batch_op:
            batch_op.create_index(INDEX, ["minute_at"], unique=False)
        return
    with op.get_context().autocommit_block():
        valid = None  # an SQL script (alembic --sql) has no database to ask
        if not op.get_context().as_sql:
            query = sa.text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)")
            valid = op.get_bind().execute(query, {"name": INDEX}).scalar()
        if valid is False:  # left by a concurrent build that did not finish
            op.execute(sa.text(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}"))
        if not valid:
            op.create_index(INDEX, "probe_rollup", ["minute_at"], unique=False, postgresql_concurrently=True)


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        with op.batch_alter_table("probe_rollup", schema=None) as batch_op:
            batch_op.drop_index(INDEX)
        return
    with op.get_context().autocommit_block():
        op.execute(sa.text(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}"))
