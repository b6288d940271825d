"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-27 05:19:01.652052
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "api_token",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("token_hash", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.String(length=120), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_token")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_token_token_hash")),
    )
    op.create_table(
        "app_user",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_app_user")),
        sa.UniqueConstraint("name", name=op.f("uq_app_user_name")),
    )
    op.create_table(
        "audit_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=120), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("region", sa.String(length=80), nullable=True),
        sa.Column("target", sa.String(length=80), nullable=True),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_event")),
    )
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.create_index("ix_audit_event_at", ["at"], unique=False)
        batch_op.create_index("ix_audit_event_kind_at", ["kind", "at"], unique=False)

    op.create_table(
        "flag",
        sa.Column("key", sa.String(length=160), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_flag")),
    )
    op.create_table(
        "health_state",
        sa.Column("key", sa.String(length=160), nullable=False),
        sa.Column("subject", sa.String(length=16), nullable=False),
        sa.Column("region", sa.String(length=80), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("since_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("quota_headroom", sa.Float(), nullable=True),
        sa.Column("config_problem", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_health_state")),
    )
    op.create_table(
        "health_transition",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=160), nullable=False),
        sa.Column("region", sa.String(length=80), nullable=False),
        sa.Column("vantage", sa.String(length=80), nullable=True),
        sa.Column("old", sa.String(length=16), nullable=False),
        sa.Column("new", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_health_transition")),
    )
    with op.batch_alter_table("health_transition", schema=None) as batch_op:
        batch_op.create_index("ix_health_transition_at", ["at"], unique=False)
        batch_op.create_index("ix_health_transition_key_at", ["key", "at"], unique=False)

    op.create_table(
        "leader_lease",
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=True),
        sa.Column("fencing_token", sa.Integer(), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leader_lease")),
    )
    op.create_table(
        "notification",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("channel", sa.String(length=80), nullable=False),
        sa.Column("event_kind", sa.String(length=32), nullable=False),
        sa.Column("group_key", sa.String(length=160), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification")),
    )
    with op.batch_alter_table("notification", schema=None) as batch_op:
        batch_op.create_index("ix_notification_created", ["created_at"], unique=False)

    op.create_table(
        "override",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("region", sa.String(length=80), nullable=True),
        sa.Column("target", sa.String(length=80), nullable=True),
        sa.Column("weight", sa.Integer(), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=True),
        sa.Column("who", sa.String(length=120), nullable=False),
        sa.Column("why", sa.Text(), nullable=False),
        sa.Column("forced", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lifted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lifted_by", sa.String(length=120), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_override")),
    )
    with op.batch_alter_table("override", schema=None) as batch_op:
        batch_op.create_index("ix_override_active", ["lifted_at", "expires_at"], unique=False)

    op.create_table(
        "plan",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checksum", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=120), nullable=False),
        sa.Column("fencing_token", sa.Integer(), nullable=True),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plan")),
    )
    with op.batch_alter_table("plan", schema=None) as batch_op:
        batch_op.create_index("ix_plan_created", ["created_at"], unique=False)

    op.create_table(
        "probe_result",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("endpoint_id", sa.String(length=160), nullable=False),
        sa.Column("region", sa.String(length=80), nullable=False),
        sa.Column("vantage", sa.String(length=80), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("headers_ms", sa.Float(), nullable=True),
        sa.Column("ttft_ms", sa.Float(), nullable=True),
        sa.Column("total_ms", sa.Float(), nullable=True),
        sa.Column("output_chunks", sa.Integer(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("finished", sa.Boolean(), nullable=False),
        sa.Column("finish_reason", sa.String(length=32), nullable=True),
        sa.Column("limit_requests", sa.Integer(), nullable=True),
        sa.Column("remaining_requests", sa.Integer(), nullable=True),
        sa.Column("limit_tokens", sa.Integer(), nullable=True),
        sa.Column("remaining_tokens", sa.Integer(), nullable=True),
        sa.Column("utilization_pct", sa.Float(), nullable=True),
        sa.Column("retry_after_ms", sa.Integer(), nullable=True),
        sa.Column("region_header", sa.String(length=80), nullable=True),
        sa.Column("apim_request_id", sa.String(length=80), nullable=True),
        sa.Column("request_id", sa.String(length=80), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_probe_result")),
    )
    with op.batch_alter_table("probe_result", schema=None) as batch_op:
        batch_op.create_index("ix_probe_result_endpoint_started", ["endpoint_id", "started_at"], unique=False)
        batch_op.create_index("ix_probe_result_region_started", ["region", "started_at"], unique=False)
        batch_op.create_index("ix_probe_result_started", ["started_at"], unique=False)

    op.create_table(
        "probe_rollup",
        sa.Column("endpoint_id", sa.String(length=160), nullable=False),
        sa.Column("vantage", sa.String(length=80), nullable=False),
        sa.Column("minute_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("region", sa.String(length=80), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("ok", sa.Integer(), nullable=False),
        sa.Column("throttled", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("ttft_p50_ms", sa.Float(), nullable=True),
        sa.Column("ttft_p95_ms", sa.Float(), nullable=True),
        sa.Column("total_p50_ms", sa.Float(), nullable=True),
        sa.Column("total_p95_ms", sa.Float(), nullable=True),
        sa.Column("tokens", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("endpoint_id", "vantage", "minute_at", name=op.f("pk_probe_rollup")),
    )
    with op.batch_alter_table("probe_rollup", schema=None) as batch_op:
        batch_op.create_index("ix_probe_rollup_region_minute", ["region", "minute_at"], unique=False)

    op.create_table(
        "target_endpoint",
        sa.Column("target", sa.String(length=80), nullable=False),
        sa.Column("region", sa.String(length=80), nullable=False),
        sa.Column("endpoint", sa.String(length=260), nullable=False),
        sa.Column("actual_weight", sa.Integer(), nullable=True),
        sa.Column("actual_priority", sa.Integer(), nullable=True),
        sa.Column("actual_enabled", sa.Boolean(), nullable=True),
        sa.Column("monitor_status", sa.String(length=40), nullable=True),
        sa.Column("desired_weight", sa.Integer(), nullable=True),
        sa.Column("desired_priority", sa.Integer(), nullable=True),
        sa.Column("desired_enabled", sa.Boolean(), nullable=True),
        sa.Column("desired_reason", sa.Text(), nullable=True),
        sa.Column("applied_weight", sa.Integer(), nullable=True),
        sa.Column("applied_priority", sa.Integer(), nullable=True),
        sa.Column("applied_enabled", sa.Boolean(), nullable=True),
        sa.Column("drift", sa.Text(), nullable=True),
        sa.Column("write_status", sa.String(length=16), nullable=True),
        sa.Column("write_error", sa.Text(), nullable=True),
        sa.Column("last_change_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("target", "region", name=op.f("pk_target_endpoint")),
    )
    op.create_table(
        "change",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("plan_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("target", sa.String(length=80), nullable=False),
        sa.Column("region", sa.String(length=80), nullable=False),
        sa.Column("endpoint", sa.String(length=260), nullable=False),
        sa.Column("field", sa.String(length=16), nullable=False),
        sa.Column("before", sa.JSON(), nullable=False),
        sa.Column("after", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(length=120), nullable=False),
        sa.Column("manual", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error_code", sa.String(length=120), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("fencing_token", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["plan_id"], ["plan.id"], name=op.f("fk_change_plan_id_plan"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_change")),
    )
    with op.batch_alter_table("change", schema=None) as batch_op:
        batch_op.create_index("ix_change_created", ["created_at"], unique=False)
        batch_op.create_index("ix_change_target_region", ["target", "region"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("change", schema=None) as batch_op:
        batch_op.drop_index("ix_change_target_region")
        batch_op.drop_index("ix_change_created")

    op.drop_table("change")
    op.drop_table("target_endpoint")
    with op.batch_alter_table("probe_rollup", schema=None) as batch_op:
        batch_op.drop_index("ix_probe_rollup_region_minute")

    op.drop_table("probe_rollup")
    with op.batch_alter_table("probe_result", schema=None) as batch_op:
        batch_op.drop_index("ix_probe_result_started")
        batch_op.drop_index("ix_probe_result_region_started")
        batch_op.drop_index("ix_probe_result_endpoint_started")

    op.drop_table("probe_result")
    with op.batch_alter_table("plan", schema=None) as batch_op:
        batch_op.drop_index("ix_plan_created")

    op.drop_table("plan")
    with op.batch_alter_table("override", schema=None) as batch_op:
        batch_op.drop_index("ix_override_active")

    op.drop_table("override")
    with op.batch_alter_table("notification", schema=None) as batch_op:
        batch_op.drop_index("ix_notification_created")

    op.drop_table("notification")
    op.drop_table("leader_lease")
    with op.batch_alter_table("health_transition", schema=None) as batch_op:
        batch_op.drop_index("ix_health_transition_key_at")
        batch_op.drop_index("ix_health_transition_at")

    op.drop_table("health_transition")
    op.drop_table("health_state")
    op.drop_table("flag")
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_event_kind_at")
        batch_op.drop_index("ix_audit_event_at")

    op.drop_table("audit_event")
    op.drop_table("app_user")
    op.drop_table("api_token")
