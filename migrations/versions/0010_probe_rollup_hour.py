"""probe_rollup_hour: the per-minute rollups summed per hour, for the long-range charts, filled from the rollups kept

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 04:00:00

The region page's 7-day chart summed every per-minute rollup of its region
over the week: about 151,000 rows at 3 vantages x 100 endpoints in 20
regions, 262-271 ms on PostgreSQL on each cache miss. ``probe_rollup_hour``
holds each hour's sums per endpoint, vantage and region (of the averaged
latency columns the sum and the number of minutes that have one), so a chart
of whole hours reads 1/60 of the rows and gets the same figures
(docs/adr/0017-hourly-rollups.md).

The table is new, so its indexes are built before it is filled, inside the
migration's transaction: nothing else reads or writes it until the
application that knows it starts. The fill is one INSERT ... SELECT of every
rollup kept, grouped per hour: 38.9 M rows at 90 days of that deployment, a
read that takes no lock a rollup writer waits for (ACCESS SHARE on
``probe_rollup``), measured in bench/scale.py (the ADR says why it is not
batched). An SQL script (alembic upgrade --sql) gets the same statements.
Hours the former application rolls up after this fill's snapshot are
recomputed by the new one's first rollup, which starts at the newest hour
already summed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

LATENCIES = ("ttft_p50", "ttft_p95", "total_p50", "total_p95")


def _hour_of(column: str, dialect: str) -> str:
    """SQL for the UTC hour of a stored minute, stored as the application binds an hour (see Store.rollup)."""
    if dialect == "sqlite":
        return f"substr({column}, 1, 13) || ':00:00.000000'"
    return f"timezone('UTC', date_trunc('hour', timezone('UTC', {column})))"


def upgrade() -> None:
    op.create_table(
        "probe_rollup_hour",
        sa.Column("endpoint_id", sa.String(length=160), nullable=False),
        sa.Column("vantage", sa.String(length=80), nullable=False),
        sa.Column("hour_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("region", sa.String(length=80), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("ok", sa.Integer(), nullable=False),
        sa.Column("throttled", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        *(
            c
            for name in LATENCIES
            for c in (sa.Column(f"{name}_sum", sa.Float(), nullable=True), sa.Column(f"{name}_n", sa.Integer(), nullable=False))
        ),
        sa.PrimaryKeyConstraint("endpoint_id", "vantage", "hour_at", "region", name=op.f("pk_probe_rollup_hour")),
    )
    with op.batch_alter_table("probe_rollup_hour", schema=None) as batch_op:
        batch_op.create_index("ix_probe_rollup_hour_region_hour", ["region", "hour_at"], unique=False)
        batch_op.create_index("ix_probe_rollup_hour_hour_at", ["hour_at"], unique=False)
    hour = _hour_of("minute_at", op.get_context().dialect.name)
    sums = ", ".join(f"{n}_sum, {n}_n" for n in LATENCIES)
    of_minutes = ", ".join(f"sum({n}_ms), count({n}_ms)" for n in LATENCIES)
    op.execute(
        sa.text(
            f"INSERT INTO probe_rollup_hour (endpoint_id, vantage, hour_at, region, count, ok, throttled, failed, {sums})"
            f" SELECT endpoint_id, vantage, {hour}, region, sum(count), sum(ok), sum(throttled), sum(failed), {of_minutes}"
            f" FROM probe_rollup GROUP BY endpoint_id, vantage, {hour}, region"
        )
    )


def downgrade() -> None:
    with op.batch_alter_table("probe_rollup_hour", schema=None) as batch_op:
        batch_op.drop_index("ix_probe_rollup_hour_hour_at")
        batch_op.drop_index("ix_probe_rollup_hour_region_hour")
    op.drop_table("probe_rollup_hour")
