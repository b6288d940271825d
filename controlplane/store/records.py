"""What the store hands out besides the domain values: typed, frozen records of its rows.

Callers never see an ORM row or a ``dict`` row: each table the store reads
back has one record type here (or a domain type: ``Override``,
``AuditEvent``, ``ProbeResult``, ``Transition``, ``EndpointHealth``), with
its enums (status, origin, field, kind) already parsed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from controlplane.domain import (
    Change,
    ChangeOrigin,
    ChangeStatus,
    EndpointSetting,
    Field,
    FlagKind,
    LivenessFailure,
    LivenessResult,
    NotificationStatus,
    Plan,
    WriteStatus,
)
from controlplane.textsafe import bounded_text


@dataclass(frozen=True, slots=True)
class PlanRecord:
    """A recorded plan (``plan`` table): the plan as it was when recorded."""

    id: int
    created_at: datetime
    checksum: str  # the checksum the plan had when recorded
    actor: str
    fencing_token: int | None
    dry_run: bool
    plan: Plan


@dataclass(frozen=True, slots=True)
class ChangeRecord:
    """One recorded change attempt (``change`` table)."""

    id: int
    plan_id: int | None
    created_at: datetime
    finished_at: datetime | None
    target: str
    region: str
    endpoint: str
    field: Field
    before: int | bool | None  # the actual value before the write
    after: int | bool | None  # the desired value written
    reason: str
    actor: str  # "automation" or the user
    origin: ChangeOrigin
    status: ChangeStatus
    error_code: str | None
    error_message: str | None
    fencing_token: int | None

    @property
    def manual(self) -> bool:
        return self.origin is ChangeOrigin.MANUAL

    @property
    def change(self) -> Change:
        return Change(self.target, self.region, self.endpoint, self.field, self.before, self.after, self.reason, self.origin)


@dataclass(frozen=True, slots=True)
class TargetEndpointRecord:
    """Per target and region (``target_endpoint``): last actual, desired and applied settings.

    A side is None until regionguard has read (actual), decided (desired) or
    written / adopted (applied) it.
    """

    target: str
    region: str
    endpoint: str  # the Azure name
    actual: EndpointSetting | None
    desired: EndpointSetting | None
    applied: EndpointSetting | None
    desired_reason: str | None
    monitor_status: str | None  # Azure's own view of the endpoint
    circuit_breakers: tuple[str, ...] | None  # Azure's own trip rules, described (APIM members); None: none or not read
    drift: str | None  # description while drift is unresolved
    write_status: WriteStatus | None
    write_error: str | None
    last_change_at: datetime | None
    read_at: datetime | None


@dataclass(frozen=True, slots=True)
class Lease:
    """The leader lease row (compare-and-set; the fencing token only grows)."""

    name: str
    holder: str | None
    fencing_token: int
    acquired_at: datetime | None
    renewed_at: datetime | None
    expires_at: datetime | None

    def alive(self, now: datetime) -> bool:
        """Someone holds it and it has not run out."""
        return bool(self.holder) and self.expires_at is not None and self.expires_at > now

    def holder_at(self, now: datetime) -> str | None:
        return self.holder if self.alive(now) else None


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: str  # viewer | operator | admin
    disabled: bool
    created_at: datetime
    password_hash: str = field(repr=False)
    session_version: int = 0  # a dashboard session is honoured only while it carries this


@dataclass(frozen=True, slots=True)
class LoginThrottle:
    """Recent failed sign-ins of one submitted name (known by a hash only) and its lock."""

    name_key: str
    failures: tuple[datetime, ...]
    locked_until: datetime | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A bearer token's record (never the token: only its hash is stored)."""

    id: int
    name: str
    role: str
    created_by: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    token_hash: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class NotificationRecord:
    """One delivery per channel and event batch (``notification``)."""

    id: int
    created_at: datetime
    channel: str
    event_kind: str
    group_key: str | None
    status: NotificationStatus
    attempts: int
    last_error: str | None
    sent_at: datetime | None
    payload: Mapping[str, Any]  # what was said (never URLs or keys)


@dataclass(frozen=True, slots=True)
class Rollup:
    """Per-minute aggregate of one endpoint from one vantage (``probe_rollup``)."""

    endpoint_id: str
    vantage: str
    minute_at: datetime
    region: str
    count: int
    ok: int
    throttled: int
    failed: int  # counted against health, other than throttled
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    total_p50_ms: float | None
    total_p95_ms: float | None
    tokens: int


@dataclass(frozen=True, slots=True)
class Flag:
    """A system flag (``flag``): ``kind`` and ``subject`` are parsed from its key."""

    kind: FlagKind
    subject: str | None
    value: Mapping[str, Any]
    updated_at: datetime


def parse_flag_key(key: str) -> tuple[FlagKind, str | None]:
    """``panic:tm-prod`` -> (PANIC, "tm-prod"); ``config_problems`` -> (CONFIG_PROBLEMS, None)."""
    kind, sep, subject = key.partition(":")
    return FlagKind(kind), (subject if sep else None)


def _flag_text(value: Mapping[str, Any]) -> str:
    """A flag's human text: its reason (or message, summary, text), else its fields."""
    for key in ("reason", "message", "summary", "text"):
        if value.get(key):
            return str(value[key])
    return ", ".join(f"{k}={v}" for k, v in value.items()) or "raised"


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Panic:
    """Fail-open raised for a target (a ``panic`` flag)."""

    target: str
    reason: str
    since: datetime | None
    updated_at: datetime

    @classmethod
    def from_flag(cls, flag: Flag) -> Panic:
        return cls(
            target=flag.subject or "", reason=_flag_text(flag.value), since=_parse_time(flag.value.get("since")), updated_at=flag.updated_at
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "since": self.since.isoformat() if self.since else None,
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class CredentialProblem:
    """A worker whose Azure credential failed every call of its last reconcile ticks (a ``credential`` flag, docs/adr/0016)."""

    holder: str
    error: str
    since: datetime | None  # its first failing tick
    stepped_down_at: datetime | None  # when it gave the lease up for it (None: it has not, or never led)
    cool_off_until: datetime | None
    updated_at: datetime

    @classmethod
    def from_flag(cls, flag: Flag) -> CredentialProblem:
        v = flag.value
        return cls(
            holder=flag.subject or "",
            error=str(v.get("error") or "the credential failed"),
            since=_parse_time(v.get("since")),
            stepped_down_at=_parse_time(v.get("stepped_down_at")),
            cool_off_until=_parse_time(v.get("cool_off_until")),
            updated_at=flag.updated_at,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "worker": self.holder,
            "error": self.error,
            "since": self.since.isoformat() if self.since else None,
            "stepped_down_at": self.stepped_down_at.isoformat() if self.stepped_down_at else None,
            "cool_off_until": self.cool_off_until.isoformat() if self.cool_off_until else None,
            "updated_at": self.updated_at.isoformat(),
        }


LIVENESS_RECENT = 20  # "failed of the last N liveness checks" (per endpoint and vantage)
LIVENESS_SUMMARY_EVERY_S = 10.0  # the worker stores its liveness summary when a check flips, else at most this often
_LIVENESS_TEXT_CHARS = 300
_LIVENESS_REASONS = {
    LivenessFailure.CONNECT_ERROR.value: "connect error",
    LivenessFailure.TLS_ERROR.value: "TLS error",
    LivenessFailure.TIMEOUT.value: "timeout",
    LivenessFailure.SERVER_ERROR.value: "server error",
}


class LivenessTally:
    """One worker's summary of its liveness checks, per endpoint: the last check and the outcomes of
    the last :data:`LIVENESS_RECENT` (bounded), stored as the flag ``liveness:<vantage>`` -- a row per
    vantage, rewritten in place, so the dashboard reads it without touching the raw results."""

    def __init__(self, recent: int = LIVENESS_RECENT) -> None:
        self._last: dict[str, LivenessResult] = {}
        self._recent: dict[str, deque[bool]] = {}
        self._totals: dict[str, list[int]] = {}  # endpoint id -> [ok, failed] since the worker started
        self._size = recent

    def add(self, result: LivenessResult) -> bool:
        """Count a check; True when it flipped the endpoint's last outcome (ok <-> failed)."""
        before = self._last.get(result.endpoint_id)
        self._last[result.endpoint_id] = result
        self._recent.setdefault(result.endpoint_id, deque(maxlen=self._size)).append(result.ok)
        self._totals.setdefault(result.endpoint_id, [0, 0])[0 if result.ok else 1] += 1
        return before is not None and before.ok != result.ok

    def flag_value(self) -> dict[str, Any]:
        endpoints: dict[str, Any] = {}
        for eid, r in self._last.items():
            recent = self._recent[eid]
            endpoints[eid] = {
                "at": r.started_at.isoformat(),
                "ok": r.ok,
                "failure": r.failure.value if r.failure else None,
                "status": r.status_code,
                "latency_ms": r.latency_ms,
                "error": r.error,
                "recent_checks": len(recent),
                "recent_failed": sum(1 for ok in recent if not ok),
                "checks_ok": self._totals[eid][0],
                "checks_failed": self._totals[eid][1],
            }
        return {"endpoints": endpoints}


@dataclass(frozen=True, slots=True)
class LivenessRecord:
    """A vantage's last liveness check of one endpoint and how many of its recent ones failed
    (from the ``liveness:<vantage>`` flag; text escaped on the way out)."""

    endpoint_id: str
    vantage: str
    at: datetime
    ok: bool
    failure: str | None  # a LivenessFailure value; None when ok (or written by a worker that did not say)
    status_code: int | None
    error: str | None
    recent_checks: int | None  # None: written by a worker that kept no recent outcomes
    recent_failed: int | None
    updated_at: datetime

    @property
    def reason(self) -> str:
        """``ok``, or why it failed: connect error, TLS error, timeout, server error 503."""
        if self.ok:
            return "ok"
        text = _LIVENESS_REASONS.get(self.failure or "", "failed")
        return f"{text} {self.status_code}" if self.status_code is not None else text


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _text_or_none(value: Any) -> str | None:
    return bounded_text(str(value), _LIVENESS_TEXT_CHARS) if value is not None else None


def liveness_of(flags: list[Flag]) -> list[LivenessRecord]:
    """Every (endpoint, vantage) the ``liveness`` flags summarise, sorted; entries that do not parse are skipped."""
    out = []
    for f in flags:
        endpoints = f.value.get("endpoints") if f.kind is FlagKind.LIVENESS and f.subject else None
        if not isinstance(endpoints, Mapping):
            continue
        for eid, e in endpoints.items():
            at = _parse_time(e.get("at")) if isinstance(e, Mapping) else None
            if at is None or not isinstance(e.get("ok"), bool):
                continue
            status = _int_or_none(e.get("status"))
            failure = e.get("failure") if isinstance(e.get("failure"), str) and e["failure"] in _LIVENESS_REASONS else None
            if failure is None and not e["ok"] and status is not None and (status >= 500 or status == 408):
                failure = LivenessFailure.SERVER_ERROR.value
            recent, failed = _int_or_none(e.get("recent_checks")), _int_or_none(e.get("recent_failed"))
            if recent is None or failed is None or failed > recent:
                recent = failed = None
            out.append(
                LivenessRecord(
                    endpoint_id=bounded_text(str(eid), 200),
                    vantage=bounded_text(f.subject or "", 200),
                    at=at,
                    ok=e["ok"],
                    failure=None if e["ok"] else failure,
                    status_code=status,
                    error=_text_or_none(e.get("error")),
                    recent_checks=recent,
                    recent_failed=failed,
                    updated_at=f.updated_at,
                )
            )
    out.sort(key=lambda r: (r.endpoint_id, r.vantage))
    return out


@dataclass(frozen=True, slots=True)
class RegionStats:
    """Probe figures of one region over a short recent window."""

    probes: int = 0
    success_pct: float | None = None
    ttft_p50: float | None = None
    ttft_p95: float | None = None


@dataclass(frozen=True, slots=True)
class Bucket:
    """Per-minute rollups of a region aggregated over one time bucket (charts)."""

    start: int  # epoch seconds
    count: int
    ok: int
    throttled: int
    failed: int
    ttft_p50: float | None = None
    ttft_p95: float | None = None
    total_p50: float | None = None
    total_p95: float | None = None

    @property
    def success_pct(self) -> float | None:
        return 100.0 * self.ok / self.count if self.count else None

    @property
    def throttle_pct(self) -> float | None:
        return 100.0 * self.throttled / self.count if self.count else None

    @property
    def bad_ratio(self) -> float:
        return (self.count - self.ok) / self.count if self.count else 0.0


__all__ = [
    "LIVENESS_RECENT",
    "LIVENESS_SUMMARY_EVERY_S",
    "ApiToken",
    "Bucket",
    "ChangeRecord",
    "CredentialProblem",
    "Flag",
    "Lease",
    "LivenessRecord",
    "LivenessTally",
    "NotificationRecord",
    "Panic",
    "PlanRecord",
    "RegionStats",
    "Rollup",
    "TargetEndpointRecord",
    "User",
    "config_problems_of",
    "credential_problems_of",
    "liveness_of",
    "panics_of",
    "parse_flag_key",
]


def config_problems_of(flags: list[Flag]) -> list[str]:
    """The problems a ``config_problems`` flag lists (none without one)."""
    for f in flags:
        if f.kind is FlagKind.CONFIG_PROBLEMS and f.subject is None:
            return [str(p) for p in f.value.get("problems", [])]
    return []


def credential_problems_of(flags: list[Flag]) -> list[CredentialProblem]:
    """Workers whose Azure credential fails, from the ``credential`` flags among ``flags`` (by worker)."""
    return [CredentialProblem.from_flag(f) for f in flags if f.kind is FlagKind.CREDENTIAL]


def panics_of(flags: list[Flag]) -> dict[str, Panic]:
    """Targets in fail-open, from the ``panic`` flags among ``flags``: target -> why and since when."""
    return {p.target: p for p in (Panic.from_flag(f) for f in flags if f.kind is FlagKind.PANIC)}
