"""audit_event.relayed_at / relayed_by: one worker relays each event to the notification channels

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 11:30:00

Each worker used to relay every stored event with an in-memory cursor: with
two workers every page went out twice, and events written during a failover
were never sent. A worker now claims an event with a compare-and-set
(``UPDATE ... SET relayed_at WHERE id = ? AND relayed_at IS NULL``, row count
1 = ours) before it sends it. Existing rows count as relayed (they were, or
are too old to page about now).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.add_column(sa.Column("relayed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("relayed_by", sa.String(length=200), nullable=True))
    event = sa.table("audit_event", sa.column("relayed_at", sa.DateTime(timezone=True)), sa.column("at", sa.DateTime(timezone=True)))
    op.execute(event.update().values(relayed_at=event.c.at))
    op.create_index("ix_audit_event_unrelayed", "audit_event", ["relayed_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_audit_event_unrelayed", table_name="audit_event")
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.drop_column("relayed_by")
        batch_op.drop_column("relayed_at")
