"""event_delivery / notification_channel: each event is claimed, sent and marked per channel

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 05:00:00

Migration 0007 claimed and marked an event once for all its channels: when
one channel accepted it and another gave up after its retries (its receiver
down for a minute), the event was marked relayed and never sent to the one
that failed (docs/adr/0018-notifications-at-least-once-per-channel.md).
``event_delivery`` holds one row per event and channel (the claim by
compare-and-set, then the delivery); ``notification_channel`` the channels the
relay has seen configured, each owed only the events stored after it appeared.

Carried over: ``audit_event.relayed_at`` now means "every channel is done with
it", which is what it meant for every event relayed before (the former relay
marked an event once its channels had answered): those are never claimed
again. Events not relayed yet (``relayed_at`` NULL, within the relay's
horizon) are owed to every channel of the first configuration the new relay
registers (``notification_channel`` empty: each starts at event 0), so none
is lost to the upgrade; channels configured after that start at the newest
event. The former claims (``claimed_at`` / ``claimed_by``) are left as they
are, for a worker still on the former code during a rolling upgrade. New
tables only, no data moved: an SQL script (``alembic upgrade --sql``) is the
same statements.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notification_channel",
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("since_event_id", sa.Integer(), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_notification_channel")),
    )
    op.create_table(
        "event_delivery",
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=80), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_by", sa.String(length=200), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_by", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(["event_id"], ["audit_event.id"], name=op.f("fk_event_delivery_event_id_audit_event"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("event_id", "channel", name=op.f("pk_event_delivery")),
    )
    with op.batch_alter_table("event_delivery", schema=None) as batch_op:
        batch_op.create_index("ix_event_delivery_claimed_by", ["claimed_by"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("event_delivery", schema=None) as batch_op:
        batch_op.drop_index("ix_event_delivery_claimed_by")
    op.drop_table("event_delivery")
    op.drop_table("notification_channel")
