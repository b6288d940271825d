"""SQLAlchemy 2.0 typed models.

Tables are singular snake_case, timestamps are UTC and named ``*_at``, enums
are stored as strings. The schema is created only by Alembic migrations
(``migrations/``); a naming convention on the MetaData keeps constraint names
identical on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, MetaData, String, Table, Text, TypeDecorator
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC; always hands back timezone-aware UTC datetimes (SQLite loses tzinfo)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def table(model: type[Base]) -> Table:
    """The Core ``Table`` of a mapped class (``DeclarativeBase`` types ``__table__`` as any FromClause)."""
    t = model.__table__
    if not isinstance(t, Table):
        raise TypeError(f"{model.__name__} is not mapped to a single table")
    return t


class ProbeResultRow(Base):
    __tablename__ = "probe_result"
    __table_args__ = (
        Index("ix_probe_result_endpoint_started", "endpoint_id", "started_at"),
        Index("ix_probe_result_region_started", "region", "started_at"),
        Index("ix_probe_result_started", "started_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    endpoint_id: Mapped[str] = mapped_column(String(160))
    region: Mapped[str] = mapped_column(String(80))
    vantage: Mapped[str] = mapped_column(String(80))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    outcome: Mapped[str] = mapped_column(String(32))
    status_code: Mapped[int | None] = mapped_column(Integer)
    headers_ms: Mapped[float | None] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    total_ms: Mapped[float | None] = mapped_column(Float)
    output_chunks: Mapped[int] = mapped_column(Integer, default=0)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    finished: Mapped[bool] = mapped_column(Boolean, default=False)
    finish_reason: Mapped[str | None] = mapped_column(String(32))
    limit_requests: Mapped[int | None] = mapped_column(Integer)
    remaining_requests: Mapped[int | None] = mapped_column(Integer)
    limit_tokens: Mapped[int | None] = mapped_column(Integer)
    remaining_tokens: Mapped[int | None] = mapped_column(Integer)
    utilization_pct: Mapped[float | None] = mapped_column(Float)
    retry_after_ms: Mapped[int | None] = mapped_column(Integer)
    region_header: Mapped[str | None] = mapped_column(String(80))
    apim_request_id: Mapped[str | None] = mapped_column(String(80))
    request_id: Mapped[str | None] = mapped_column(String(80))
    error: Mapped[str | None] = mapped_column(Text)
    anomalies: Mapped[str | None] = mapped_column(Text)  # fields replaced or clamped on the way in


class ProbeRollupRow(Base):
    """Per-minute aggregate per endpoint and vantage; kept longer than raw results.

    ``minute_at`` has an index of its own: the rollup tick, the retention and the rollups of every region
    select by it alone, and at 90 days of rollups the table is tens of millions of rows (migration 0009)."""

    __tablename__ = "probe_rollup"
    __table_args__ = (Index("ix_probe_rollup_region_minute", "region", "minute_at"), Index("ix_probe_rollup_minute_at", "minute_at"))

    endpoint_id: Mapped[str] = mapped_column(String(160), primary_key=True)
    vantage: Mapped[str] = mapped_column(String(80), primary_key=True)
    minute_at: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    region: Mapped[str] = mapped_column(String(80))
    count: Mapped[int] = mapped_column(Integer)
    ok: Mapped[int] = mapped_column(Integer)  # ok outcomes
    throttled: Mapped[int] = mapped_column(Integer)
    failed: Mapped[int] = mapped_column(Integer)  # counted against health, other than throttled
    ttft_p50_ms: Mapped[float | None] = mapped_column(Float)
    ttft_p95_ms: Mapped[float | None] = mapped_column(Float)
    total_p50_ms: Mapped[float | None] = mapped_column(Float)
    total_p95_ms: Mapped[float | None] = mapped_column(Float)
    tokens: Mapped[int] = mapped_column(Integer, default=0)


class ProbeRollupHourRow(Base):
    """The per-minute rollups summed per hour, endpoint, vantage and region: what long-range charts read (migration 0010).

    Each row is exactly the sum of the hour's ``probe_rollup`` rows: counts summed, and of each averaged latency
    column the sum and the number of minutes that have one, so an average over any whole hours is the average of
    the minutes, not an average of hourly averages. ``Store.rollup`` recomputes the hours whose minutes it rewrote,
    in the same transaction; retention drops them with the minutes (docs/adr/0017-hourly-rollups.md)."""

    __tablename__ = "probe_rollup_hour"
    __table_args__ = (Index("ix_probe_rollup_hour_region_hour", "region", "hour_at"), Index("ix_probe_rollup_hour_hour_at", "hour_at"))

    endpoint_id: Mapped[str] = mapped_column(String(160), primary_key=True)
    vantage: Mapped[str] = mapped_column(String(80), primary_key=True)
    hour_at: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    region: Mapped[str] = mapped_column(String(80), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    ok: Mapped[int] = mapped_column(Integer)
    throttled: Mapped[int] = mapped_column(Integer)
    failed: Mapped[int] = mapped_column(Integer)
    ttft_p50_sum: Mapped[float | None] = mapped_column(Float)  # sum of the minutes' ttft_p50_ms
    ttft_p50_n: Mapped[int] = mapped_column(Integer)  # minutes with a ttft_p50_ms
    ttft_p95_sum: Mapped[float | None] = mapped_column(Float)
    ttft_p95_n: Mapped[int] = mapped_column(Integer)
    total_p50_sum: Mapped[float | None] = mapped_column(Float)
    total_p50_n: Mapped[int] = mapped_column(Integer)
    total_p95_sum: Mapped[float | None] = mapped_column(Float)
    total_p95_n: Mapped[int] = mapped_column(Integer)


class HealthTransitionRow(Base):
    __tablename__ = "health_transition"
    __table_args__ = (Index("ix_health_transition_key_at", "key", "at"), Index("ix_health_transition_at", "at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject: Mapped[str] = mapped_column(String(16))  # endpoint | region
    key: Mapped[str] = mapped_column(String(160))
    region: Mapped[str] = mapped_column(String(80))
    vantage: Mapped[str | None] = mapped_column(String(80))
    old: Mapped[str] = mapped_column(String(16))
    new: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    evidence: Mapped[list[str]] = mapped_column(JSON, default=list)


class HealthStateRow(Base):
    """Latest evaluated health per endpoint and per region (what the dashboard shows)."""

    __tablename__ = "health_state"

    key: Mapped[str] = mapped_column(String(160), primary_key=True)  # endpoint id or region
    subject: Mapped[str] = mapped_column(String(16))
    region: Mapped[str] = mapped_column(String(80))
    state: Mapped[str] = mapped_column(String(16))
    score: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text)
    since_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    quota_headroom: Mapped[float | None] = mapped_column(Float)
    config_problem: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PlanRow(Base):
    __tablename__ = "plan"
    __table_args__ = (Index("ix_plan_created", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    checksum: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(120))
    fencing_token: Mapped[int | None] = mapped_column(Integer)
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)  # Plan.to_dict()


class ChangeRow(Base):
    __tablename__ = "change"
    __table_args__ = (Index("ix_change_target_region", "target", "region"), Index("ix_change_created", "created_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    plan_id: Mapped[int | None] = mapped_column(ForeignKey("plan.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    target: Mapped[str] = mapped_column(String(80))
    region: Mapped[str] = mapped_column(String(80))
    endpoint: Mapped[str] = mapped_column(String(260))
    field: Mapped[str] = mapped_column(String(16))
    before: Mapped[Any] = mapped_column(JSON)  # actual
    after: Mapped[Any] = mapped_column(JSON)  # desired
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(120))  # "automation" or user name
    origin: Mapped[str] = mapped_column(String(16), default="automation", server_default="automation")  # ChangeOrigin
    status: Mapped[str] = mapped_column(String(16))  # ChangeStatus: pending | applied | failed | skipped
    error_code: Mapped[str | None] = mapped_column(String(120))
    error_message: Mapped[str | None] = mapped_column(Text)
    fencing_token: Mapped[int | None] = mapped_column(Integer)


class TargetEndpointRow(Base):
    """Per target and region: last actual, desired and applied values (drift, dashboard)."""

    __tablename__ = "target_endpoint"

    target: Mapped[str] = mapped_column(String(80), primary_key=True)
    region: Mapped[str] = mapped_column(String(80), primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(260))
    actual_weight: Mapped[int | None] = mapped_column(Integer)
    actual_priority: Mapped[int | None] = mapped_column(Integer)
    actual_enabled: Mapped[bool | None] = mapped_column(Boolean)
    monitor_status: Mapped[str | None] = mapped_column(String(40))
    circuit_breaker: Mapped[str | None] = mapped_column(Text)  # JSON list: Azure's own trip rules, described (APIM)
    desired_weight: Mapped[int | None] = mapped_column(Integer)
    desired_priority: Mapped[int | None] = mapped_column(Integer)
    desired_enabled: Mapped[bool | None] = mapped_column(Boolean)
    desired_reason: Mapped[str | None] = mapped_column(Text)
    applied_weight: Mapped[int | None] = mapped_column(Integer)
    applied_priority: Mapped[int | None] = mapped_column(Integer)
    applied_enabled: Mapped[bool | None] = mapped_column(Boolean)
    drift: Mapped[str | None] = mapped_column(Text)  # description while drift is unresolved
    write_status: Mapped[str | None] = mapped_column(String(16))  # WriteStatus: pending | failed | unconfirmed | None
    write_error: Mapped[str | None] = mapped_column(Text)
    last_change_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class OverrideRow(Base):
    __tablename__ = "override"
    __table_args__ = (Index("ix_override_active", "lifted_at", "expires_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    region: Mapped[str | None] = mapped_column(String(80))
    target: Mapped[str | None] = mapped_column(String(80))
    weight: Mapped[int | None] = mapped_column(Integer)
    priority: Mapped[int | None] = mapped_column(Integer)
    who: Mapped[str] = mapped_column(String(120))
    why: Mapped[str] = mapped_column(Text)
    forced: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lifted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lifted_by: Mapped[str | None] = mapped_column(String(120))


class AuditEventRow(Base):
    __tablename__ = "audit_event"
    __table_args__ = (
        Index("ix_audit_event_at", "at"),
        Index("ix_audit_event_kind_at", "kind", "at"),
        Index("ix_audit_event_unrelayed", "relayed_at", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(120))
    summary: Mapped[str] = mapped_column(Text)
    region: Mapped[str | None] = mapped_column(String(80))
    target: Mapped[str | None] = mapped_column(String(80))
    severity: Mapped[str] = mapped_column(String(16), default="info")
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # relayed_at: every configured channel is done with the event (event_delivery, ADR 0018); claimed_at/by: ADR 0014's
    # claim for all channels at once, unused since migration 0011 (kept so a worker on the former code can still run)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    relayed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    relayed_by: Mapped[str | None] = mapped_column(String(200))


class NotificationChannelRow(Base):
    """A notification channel the relay has seen configured: events before it appeared are not owed to it (ADR 0018)."""

    __tablename__ = "notification_channel"

    name: Mapped[str] = mapped_column(String(80), primary_key=True)
    since_event_id: Mapped[int] = mapped_column(Integer)  # owed the events with a greater id
    added_at: Mapped[datetime] = mapped_column(UTCDateTime())
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # no longer configured: owed nothing


class EventDeliveryRow(Base):
    """One event on one channel: claimed by a worker (compare-and-set, stale after the relay's bound), then delivered."""

    __tablename__ = "event_delivery"
    __table_args__ = (Index("ix_event_delivery_claimed_by", "claimed_by"),)

    event_id: Mapped[int] = mapped_column(ForeignKey("audit_event.id", ondelete="CASCADE"), primary_key=True)
    channel: Mapped[str] = mapped_column(String(80), primary_key=True)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # the channel accepted it, or had nothing to send
    delivered_by: Mapped[str | None] = mapped_column(String(200))


class LeaderLeaseRow(Base):
    __tablename__ = "leader_lease"

    name: Mapped[str] = mapped_column(String(80), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(200))
    fencing_token: Mapped[int] = mapped_column(Integer, default=0)
    acquired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    renewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class FlagRow(Base):
    """Small system facts the dashboard shows: panic per target, worker heartbeat, ..."""

    __tablename__ = "flag"

    key: Mapped[str] = mapped_column(String(160), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class LoginThrottleRow(Base):
    """Failed sign-ins per submitted user name, whether or not such a user exists (controlplane.users)."""

    __tablename__ = "login_throttle"
    __table_args__ = (Index("ix_login_throttle_updated_at", "updated_at"),)

    name_key: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of the normalised name, never the name
    failures: Mapped[list[str]] = mapped_column(JSON)  # ISO times of the recent failures (at most lockout_after)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())  # the last failure: a row expires lockout_for after it


class UserRow(Base):
    __tablename__ = "app_user"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # viewer | operator | admin
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    session_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # +1 ends every session


class ApiTokenRow(Base):
    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class NotificationRow(Base):
    """One delivery attempt record per channel and event (timeline shows sent/failed)."""

    __tablename__ = "notification"
    __table_args__ = (Index("ix_notification_created", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    channel: Mapped[str] = mapped_column(String(80))
    event_kind: Mapped[str] = mapped_column(String(32))
    group_key: Mapped[str | None] = mapped_column(String(160))
    status: Mapped[str] = mapped_column(String(16))  # NotificationStatus: pending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
