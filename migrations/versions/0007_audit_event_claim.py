"""audit_event.claimed_at / claimed_by: an event is claimed, sent, then marked delivered

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 14:30:00

Migration 0005 made one worker relay each event by claiming it (``relayed_at``)
before sending it: a worker killed between the claim and the channel's answer
lost those events. Now the claim is its own pair of columns: ``claimed_at`` /
``claimed_by`` are set by the compare-and-set, and ``relayed_at`` /
``relayed_by`` only once every channel has answered. A claim older than the
relay's bound (group window + the slowest channel's send deadline + margin)
is stale and any worker may take it over by compare-and-set. Rows relayed
before this migration count as claimed by whoever relayed them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("claimed_by", sa.String(length=200), nullable=True))
    event = sa.table(
        "audit_event",
        sa.column("claimed_at", sa.DateTime(timezone=True)),
        sa.column("claimed_by", sa.String(length=200)),
        sa.column("relayed_at", sa.DateTime(timezone=True)),
        sa.column("relayed_by", sa.String(length=200)),
    )
    op.execute(event.update().where(event.c.relayed_at.is_not(None)).values(claimed_at=event.c.relayed_at, claimed_by=event.c.relayed_by))


def downgrade() -> None:
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.drop_column("claimed_by")
        batch_op.drop_column("claimed_at")
