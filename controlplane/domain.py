"""Plain value types that flow along the loop.

probes -> ProbeResult -> health -> EndpointHealth / RegionHealth (+ Transition)
-> strategy -> DesiredState -> planner -> Plan[Change] -> guardrails -> Plan
-> actuators (read ActualState, apply Plan).

Everything here is a frozen dataclass that a test can build by hand. Nothing
here does I/O. Timestamps are timezone-aware UTC datetimes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol


class Clock(Protocol):
    """Time is injected so hysteresis, cooldowns and leases are testable."""

    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------- probes


class Outcome(StrEnum):
    """Exactly one per probe attempt."""

    OK = "ok"
    SLOW = "slow"
    THROTTLED = "throttled"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    CONNECT_ERROR = "connect_error"
    TRUNCATED = "truncated"
    BAD_CONTENT = "bad_content"
    CONTENT_FILTERED = "content_filtered"
    AUTH_ERROR = "auth_error"
    NOT_FOUND = "not_found"
    BAD_REQUEST = "bad_request"


# Outcomes that point at our own configuration rather than at a region:
# they raise an alert instead of draining a region by themselves.
CONFIG_PROBLEM_OUTCOMES = frozenset({Outcome.AUTH_ERROR, Outcome.NOT_FOUND, Outcome.BAD_REQUEST})


def endpoint_id(region: str, endpoint: str) -> str:
    """The stable key of an LLM endpoint: ``region/endpoint``."""
    return f"{region}/{endpoint}"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One synthetic chat completion against one LLM endpoint from one vantage."""

    endpoint_id: str  # "region/endpoint"
    region: str
    vantage: str
    started_at: datetime
    outcome: Outcome
    status_code: int | None = None
    headers_ms: float | None = None  # time to response headers
    ttft_ms: float | None = None  # time to first non-empty delta.content
    total_ms: float | None = None
    output_chunks: int = 0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finished: bool = False  # finish_reason seen and [DONE] received
    finish_reason: str | None = None
    limit_requests: int | None = None
    remaining_requests: int | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    utilization_pct: float | None = None  # PTU: azure-openai-deployment-utilization
    retry_after_ms: int | None = None
    region_header: str | None = None  # x-ms-region
    apim_request_id: str | None = None
    request_id: str | None = None
    error: str | None = None  # truncated, secrets scrubbed
    anomalies: str | None = None  # what arrived unparseable or out of range, and was dropped or clamped

    @property
    def endpoint(self) -> str:
        return self.endpoint_id.split("/", 1)[1]

    def quota_headroom(self) -> float | None:
        """Fraction of quota left in [0, 1], from the most telling header."""
        if self.utilization_pct is not None:
            return max(0.0, min(1.0, 1.0 - self.utilization_pct / 100.0))
        fractions = []
        if self.limit_tokens and self.remaining_tokens is not None:
            fractions.append(self.remaining_tokens / self.limit_tokens)
        if self.limit_requests and self.remaining_requests is not None:
            fractions.append(self.remaining_requests / self.limit_requests)
        if not fractions:
            return None
        return max(0.0, min(1.0, min(fractions)))


class LivenessFailure(StrEnum):
    """Why a liveness check failed (what on-call sees next to it)."""

    CONNECT_ERROR = "connect_error"  # DNS, refused, reset before any answer
    TLS_ERROR = "tls_error"  # the TLS handshake failed (certificate, protocol)
    TIMEOUT = "timeout"  # no answer within the liveness deadline
    SERVER_ERROR = "server_error"  # a 5xx (or 408) from the models list


@dataclass(frozen=True, slots=True)
class LivenessResult:
    """One zero-token liveness check (the data plane's models list) of an LLM endpoint.

    ``ok`` is False for what says the endpoint cannot serve: a connect or TLS
    error, a timeout, a 5xx. A 401/403/404/429 is an answer from a live
    service (``ok`` True; the LLM probe classifies those). A liveness check
    never changes a health state by itself: a failed one asks for LLM
    confirmation probes at once. It costs no tokens.
    """

    endpoint_id: str
    region: str
    vantage: str
    started_at: datetime
    ok: bool
    status_code: int | None = None
    latency_ms: float | None = None
    error: str | None = None  # truncated, secrets scrubbed
    failure: LivenessFailure | None = None  # why it failed (None: ok)


# ---------------------------------------------------------------- health


class HealthStateName(StrEnum):
    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of health state, with why and the evidence."""

    subject: str  # "endpoint" or "region"
    key: str  # endpoint id or region name
    old: HealthStateName
    new: HealthStateName
    reason: str
    at: datetime
    vantage: str | None = None  # None = after quorum
    evidence: tuple[str, ...] = ()  # short descriptions of the results that decided it


@dataclass(frozen=True, slots=True)
class EndpointHealth:
    endpoint_id: str
    region: str
    state: HealthStateName
    score: float  # [0, 1]
    reason: str
    since: datetime | None = None
    quota_headroom: float | None = None  # [0, 1], None when unknown
    config_problem: str | None = None  # e.g. "auth_error: 401 from ..." (alert, no drain)


@dataclass(frozen=True, slots=True)
class RegionHealth:
    region: str
    state: HealthStateName
    score: float
    reasons: tuple[str, ...]
    endpoints: tuple[EndpointHealth, ...] = ()
    quota_headroom: float | None = None
    since: datetime | None = None


# ---------------------------------------------------------------- targets


class Field(StrEnum):
    WEIGHT = "weight"
    PRIORITY = "priority"
    ENABLED = "enabled"


@dataclass(frozen=True, slots=True)
class EndpointSetting:
    """What a traffic object says about one of its endpoints (region)."""

    weight: int | None = None
    priority: int | None = None
    enabled: bool = True

    def get(self, f: Field) -> int | bool | None:
        value: int | bool | None = getattr(self, f.value)
        return value


@dataclass(frozen=True, slots=True)
class TargetState:
    """Actual (read from Azure) or desired state of one target, keyed by region."""

    target: str
    endpoints: dict[str, EndpointSetting]  # region -> setting
    monitor_status: dict[str, str] = field(default_factory=dict)  # region -> Azure's own view
    reasons: dict[str, str] = field(default_factory=dict)  # region -> why (desired only)
    unmanaged: tuple[str, ...] = ()  # names present in Azure that config does not own
    manual: tuple[str, ...] = ()  # desired only: regions an operator override decides (their changes are manual)
    circuit_breakers: dict[str, tuple[str, ...]] = field(default_factory=dict)  # region -> Azure's own trip rules (APIM), described
    read_errors: dict[str, str] = field(default_factory=dict)  # actual only: region -> why Azure's answer for it is unreadable


ActualState = TargetState
DesiredState = TargetState


# ---------------------------------------------------------------- plans


class ChangeKind(StrEnum):
    """Order of importance when the write budget is short: drains first."""

    DRAIN = "drain"
    RESTORE = "restore"
    PRIORITY = "priority"
    WEIGHT = "weight"


CHANGE_KIND_RANK = {ChangeKind.DRAIN: 0, ChangeKind.RESTORE: 1, ChangeKind.PRIORITY: 2, ChangeKind.WEIGHT: 3}


class ChangeOrigin(StrEnum):
    """Who asked for a change: the engine, an operator override, or the fail-open rule."""

    AUTOMATION = "automation"
    MANUAL = "manual"  # an operator override decides the endpoint: no cooldown, ramp or budget hold
    FAIL_OPEN = "fail_open"  # every endpoint looked unhealthy: back to baseline; the write budget never holds it


class ChangeStatus(StrEnum):
    """A recorded change's state (``change.status``): recorded pending before its write."""

    PENDING = "pending"
    APPLIED = "applied"
    FAILED = "failed"
    SKIPPED = "skipped"


class WriteStatus(StrEnum):
    """A target endpoint's last write, while it is not settled (``target_endpoint.write_status``)."""

    PENDING = "pending"
    FAILED = "failed"
    UNCONFIRMED = "unconfirmed"  # written, but the read-back shows another value


@dataclass(frozen=True, slots=True)
class Change:
    target: str
    region: str
    endpoint: str  # the Azure name (TM endpoint, FD backend address, AFD origin)
    field: Field
    actual: int | bool | None
    desired: int | bool | None
    reason: str
    origin: ChangeOrigin = ChangeOrigin.AUTOMATION

    @property
    def manual(self) -> bool:
        """Caused by an operator override."""
        return self.origin is ChangeOrigin.MANUAL

    @property
    def kind(self) -> ChangeKind:
        if self.field is Field.ENABLED:
            return ChangeKind.RESTORE if self.desired else ChangeKind.DRAIN
        if self.field is Field.PRIORITY:
            return ChangeKind.PRIORITY
        return ChangeKind.WEIGHT

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "region": self.region,
            "endpoint": self.endpoint,
            "field": self.field.value,
            "actual": self.actual,
            "desired": self.desired,
            "reason": self.reason,
            "manual": self.manual,
            "origin": self.origin.value,
            "kind": self.kind.value,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Change:
        """The inverse of :meth:`to_dict` (a recorded plan's body; older bodies have ``manual`` only)."""
        origin = d.get("origin") or (ChangeOrigin.MANUAL if d.get("manual") else ChangeOrigin.AUTOMATION)
        return cls(
            target=d["target"],
            region=d["region"],
            endpoint=d["endpoint"],
            field=Field(d["field"]),
            actual=d.get("actual"),
            desired=d.get("desired"),
            reason=d.get("reason") or "",
            origin=ChangeOrigin(origin),
        )

    def describe(self) -> str:
        return f"{self.target}/{self.endpoint} ({self.region}): {self.field.value} {self.actual} -> {self.desired} ({self.reason})"


@dataclass(frozen=True, slots=True)
class Skipped:
    """A change a guardrail held back, and which rule and why."""

    change: Change
    rule: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"change": self.change.to_dict(), "rule": self.rule, "reason": self.reason}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Skipped:
        return cls(Change.from_dict(d["change"]), d["rule"], d.get("reason") or "")


@dataclass(frozen=True, slots=True)
class Plan:
    changes: tuple[Change, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    panics: tuple[str, ...] = ()  # fail-open alerts raised while planning (target: reason)

    def __bool__(self) -> bool:
        return bool(self.changes)

    def for_target(self, target: str) -> Plan:
        return Plan(
            changes=tuple(c for c in self.changes if c.target == target),
            skipped=tuple(s for s in self.skipped if s.change.target == target),
            panics=self.panics,
        )

    def with_changes(self, changes: tuple[Change, ...] | list[Change], skipped: tuple[Skipped, ...] | list[Skipped] = ()) -> Plan:
        return replace(self, changes=tuple(changes), skipped=self.skipped + tuple(skipped))

    def to_dict(self) -> dict[str, Any]:
        return {
            "checksum": self.checksum,
            "changes": [c.to_dict() for c in self.changes],
            "skipped": [s.to_dict() for s in self.skipped],
            "panics": list(self.panics),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Plan:
        """The inverse of :meth:`to_dict` (the checksum is recomputed, not read)."""
        return cls(
            changes=tuple(Change.from_dict(c) for c in d.get("changes", ())),
            skipped=tuple(Skipped.from_dict(s) for s in d.get("skipped", ())),
            panics=tuple(d.get("panics", ())),
        )

    @property
    def checksum(self) -> str:
        """Stable over what would be written, so 'apply the plan I reviewed' works."""
        key = sorted((c.target, c.region, c.endpoint, c.field.value, repr(c.actual), repr(c.desired)) for c in self.changes)
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]

    def to_text(self) -> str:
        if not self.changes and not self.skipped and not self.panics:
            return "No changes."
        lines = [f"Plan {self.checksum}: {len(self.changes)} change(s)"]
        lines += [f"  ~ {c.describe()}" for c in self.changes]
        lines += [f"  ! held by {s.rule}: {s.change.describe()} -- {s.reason}" for s in self.skipped]
        lines += [f"  PANIC {p}" for p in self.panics]
        return "\n".join(lines)


# ---------------------------------------------------------------- overrides


class OverrideKind(StrEnum):
    DRAIN = "drain"  # take a region out of (all or one) target(s)
    PIN = "pin"  # fix a weight / priority of a region in a target
    FREEZE = "freeze"  # no automated changes (target or global)
    MAINTENANCE = "maintenance"  # region drained for a window; no alerts for it
    FAILOVER = "failover"  # priority target: send traffic to a region


@dataclass(frozen=True, slots=True)
class Override:
    kind: OverrideKind
    who: str
    why: str
    created_at: datetime
    region: str | None = None  # None = every region
    target: str | None = None  # None = every target
    weight: int | None = None  # pin
    priority: int | None = None  # pin
    expires_at: datetime | None = None
    lifted_at: datetime | None = None
    forced: bool = False  # admin forced it past min_serving
    id: int | None = None

    def active(self, now: datetime) -> bool:
        if self.lifted_at is not None and self.lifted_at <= now:
            return False
        return self.expires_at is None or self.expires_at > now

    def applies_to(self, target: str, region: str | None = None) -> bool:
        if self.target is not None and self.target != target:
            return False
        return region is None or self.region is None or self.region == region

    def describe(self) -> str:
        scope = f"{self.region or 'all regions'} in {self.target or 'all targets'}"
        return f"{self.kind.value} {scope} by {self.who}: {self.why}"


class EventKind(StrEnum):
    """What an audit event is about (``audit_event.kind``)."""

    TRANSITION = "transition"  # a region's health changed
    PLAN = "plan"  # a plan was refused (not the reviewed one)
    CHANGE = "change"  # a write to Azure applied, failed, confirmed later or not confirmed
    OVERRIDE = "override"  # an operator action (drain, pin, freeze, ...)
    OVERRIDE_LIFTED = "override_lifted"
    DRIFT = "drift"  # Azure changed outside regionguard, or the drift was resolved
    PANIC = "panic"  # fail-open raised or over
    CONFIG_PROBLEM = "config_problem"
    READ_ERROR = "read_error"  # Azure could not be read (or can be again)
    LEASE = "lease"  # a worker became, or stopped being, leader
    LOGIN = "login"  # a dashboard sign-in (password or OIDC), refused or not


class FlagKind(StrEnum):
    """System flags (``flag.key`` is ``<kind>:<subject>``, or just ``<kind>`` for a singleton)."""

    PANIC = "panic"  # subject: target; value {"reason", "since"}
    DRIFT_REVERT = "drift_revert"  # subject: "<target>/<region>"; an operator asked to revert this drift
    CONFIG_PROBLEMS = "config_problems"  # singleton; value {"problems": [...]}
    LIVENESS = "liveness"  # subject: vantage; value: controlplane.store.records.LivenessTally.flag_value()
    CREDENTIAL = "credential"  # subject: worker (holder id); value: controlplane.runtime.stepdown.CredentialWatch.flag_value()

    def key(self, subject: str | None = None) -> str:
        return self.value if subject is None else f"{self.value}:{subject}"


class NotificationStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


class LeaseName(StrEnum):
    LEADER = "leader"  # the one writer: plans and writes to Azure


@dataclass(frozen=True, slots=True)
class AuditEvent:
    kind: EventKind
    at: datetime
    actor: str  # user name, "automation", "worker:<id>"
    summary: str
    region: str | None = None
    target: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    severity: str = "info"  # info | warning | critical
    id: int | None = None


def as_jsonable(value: Any) -> Any:
    """dataclass -> JSON-ready dict (datetimes ISO 8601, enums as values)."""
    if hasattr(value, "__dataclass_fields__"):
        value = asdict(value)
    if isinstance(value, dict):
        return {k: as_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, StrEnum):
        return value.value
    return value
