"""The one status read model: what `regionguard status`, the dashboard and the API all show.

Per configured region its health and freshness, per configured target and
region desired vs actual, the leader lease, active overrides, fail-open
panics and configuration problems, read from the store in a few cheap
queries. Presenters (the CLI's text and JSON, the dashboard's cards and
banners, the API's JSON) format it; none reads the store for these facts
on its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from controlplane.config import Settings, Target, azure_name
from controlplane.domain import (
    EndpointHealth,
    EndpointSetting,
    FlagKind,
    HealthStateName,
    LeaseName,
    Override,
    OverrideKind,
    RegionHealth,
    WriteStatus,
)
from controlplane.store.records import (
    LIVENESS_SUMMARY_EVERY_S,
    CredentialProblem,
    Flag,
    Lease,
    LivenessRecord,
    Panic,
    TargetEndpointRecord,
    config_problems_of,
    credential_problems_of,
    liveness_of,
    panics_of,
)


def stale_after(settings: Settings) -> float:
    """Seconds without a probe result after which a region's data is stale (default: 2 intervals)."""
    return settings.health.stale_after or 2 * settings.probe.interval


def liveness_stale_after(settings: Settings) -> float:
    """Seconds after which a vantage's last liveness check is stale: its prober stopped checking (or
    storing). The summary is stored at least every LIVENESS_SUMMARY_EVERY_S while checks run."""
    return max(stale_after(settings), LIVENESS_SUMMARY_EVERY_S + 3 * settings.probe.liveness_interval)


@dataclass(frozen=True, slots=True)
class LivenessStatus:
    """A vantage's last liveness check of one endpoint, as of ``now``."""

    check: LivenessRecord
    age_s: float
    stale: bool

    def to_dict(self) -> dict[str, object]:
        c = self.check
        return {
            "endpoint": c.endpoint_id,
            "vantage": c.vantage,
            "ok": c.ok,
            "reason": c.reason,
            "failure": c.failure,
            "status": c.status_code,
            "error": c.error,
            "at": c.at.isoformat(),
            "age_s": round(self.age_s, 1),
            "stale": self.stale,
            "recent_checks": c.recent_checks,
            "recent_failed": c.recent_failed,
        }


@dataclass(frozen=True, slots=True)
class RegionStatus:
    name: str
    azure_region: str
    state: HealthStateName
    score: float | None  # None: no health evaluated yet, or the state is unknown (no score, not 1.00)
    reasons: tuple[str, ...]
    since: datetime | None
    last_probe_at: datetime | None
    age_s: float | None  # seconds since the last probe; None: never probed
    stale: bool
    quota_headroom: float | None
    endpoints: tuple[EndpointHealth, ...]  # sorted by endpoint id
    overrides: tuple[Override, ...]  # active overrides naming this region
    config_problems: tuple[str, ...] = ()  # "<endpoint id>: <problem>": ours to fix, not the region's fault
    evaluated: bool = False  # the leader has saved a health for it
    liveness: tuple[LivenessStatus, ...] = ()  # per endpoint and vantage, sorted: the last liveness check


@dataclass(frozen=True, slots=True)
class TargetEndpointStatus:
    """One configured endpoint of a target: desired vs actual, and why."""

    target: str
    region: str
    endpoint: str  # the Azure name
    desired: EndpointSetting | None  # None: not decided yet
    actual: EndpointSetting | None  # None: not read yet
    desired_reason: str | None
    monitor_status: str | None
    drift: str | None
    write_status: WriteStatus | None
    write_error: str | None
    read_at: datetime | None
    circuit_breakers: tuple[str, ...] | None
    overrides: tuple[Override, ...]  # active overrides (not freezes) that apply here
    known: bool  # the store has a row for it (regionguard has read or decided it)

    @property
    def in_sync(self) -> bool:
        """Every desired field is what Azure shows (vacuously true before a decision).

        An endpoint out of service on both sides (e.g. a member out of its APIM
        pool) holds no weight or priority there: only ``enabled`` counts.
        """
        want, have = self.desired, self.actual
        if want is None:
            return True
        if have is None:
            return False
        if want.enabled != have.enabled:
            return False
        out_of_it = want.enabled is False and have.enabled is False
        return all(
            d is None or d == a or (out_of_it and a is None) for d, a in ((want.weight, have.weight), (want.priority, have.priority))
        )


@dataclass(frozen=True, slots=True)
class TargetStatus:
    name: str
    kind: str
    routing: str
    min_serving: int
    endpoints: tuple[TargetEndpointStatus, ...]  # in config order
    frozen_by: tuple[Override, ...]
    panic: Panic | None


@dataclass(frozen=True, slots=True)
class SystemStatus:
    now: datetime
    regions: tuple[RegionStatus, ...]  # in config order
    targets: tuple[TargetStatus, ...]  # in config order
    lease: Lease | None
    overrides: tuple[Override, ...]  # every active override
    panics: dict[str, Panic]  # target -> fail-open
    config_problems: tuple[str, ...]
    endpoint_health: dict[str, EndpointHealth] = field(default_factory=dict)  # endpoint id -> latest health
    credentials: tuple[CredentialProblem, ...] = ()  # workers whose Azure credential fails (docs/adr/0016)

    @property
    def leader(self) -> str | None:
        """The worker holding the lease now (None: nothing plans or writes)."""
        return self.lease.holder_at(self.now) if self.lease else None

    @property
    def frozen(self) -> tuple[str | None, ...]:
        """Targets automation is frozen for (None: every target)."""
        return tuple(o.target for o in self.overrides if o.kind is OverrideKind.FREEZE)

    def region(self, name: str) -> RegionStatus:
        return next(r for r in self.regions if r.name == name)

    def target(self, name: str) -> TargetStatus:
        return next(t for t in self.targets if t.name == name)


def region_status(
    settings: Settings,
    name: str,
    health: RegionHealth | None,
    last: datetime | None,
    active: list[Override],
    now: datetime,
    config_problems: Iterable[str] = (),
    liveness: Iterable[LivenessRecord] = (),
) -> RegionStatus:
    """One region's status; ``config_problems`` ("<endpoint id>: <problem>") and ``liveness`` are this region's
    (:func:`read_status` groups them by region once, instead of each region scanning all of them)."""
    age = (now - last).total_seconds() if last else None
    region = settings.region(name)
    live_stale = liveness_stale_after(settings)
    known = health is not None and health.state is not HealthStateName.UNKNOWN
    return RegionStatus(
        name=name,
        azure_region=region.azure_region,
        state=health.state if health else HealthStateName.UNKNOWN,
        score=health.score if health and known else None,
        reasons=tuple(health.reasons) if health else (),
        since=health.since if health else None,
        last_probe_at=last,
        age_s=age,
        stale=age is None or age > stale_after(settings),
        quota_headroom=health.quota_headroom if health else None,
        endpoints=tuple(sorted(health.endpoints, key=lambda e: e.endpoint_id)) if health else (),
        overrides=tuple(o for o in active if o.region == name),
        config_problems=tuple(config_problems),
        evaluated=health is not None,
        liveness=tuple(
            LivenessStatus(c, age_s, age_s > live_stale) for c in liveness for age_s in [max(0.0, (now - c.at).total_seconds())]
        ),
    )


def target_status(
    settings: Settings, t: Target, rows: dict[tuple[str, str], TargetEndpointRecord], active: list[Override], panics: dict[str, Panic]
) -> TargetStatus:
    endpoints = []
    for region in t.endpoints:
        r = rows.get((t.name, region))
        endpoints.append(
            TargetEndpointStatus(
                target=t.name,
                region=region,
                endpoint=(r.endpoint if r else None) or azure_name(t, region),
                desired=r.desired if r else None,
                actual=r.actual if r else None,
                desired_reason=r.desired_reason if r else None,
                monitor_status=r.monitor_status if r else None,
                drift=r.drift if r else None,
                write_status=r.write_status if r else None,
                write_error=r.write_error if r else None,
                read_at=r.read_at if r else None,
                circuit_breakers=r.circuit_breakers if r else None,
                overrides=tuple(o for o in active if o.kind is not OverrideKind.FREEZE and o.applies_to(t.name, region)),
                known=r is not None,
            )
        )
    return TargetStatus(
        name=t.name,
        kind=t.kind,
        routing=t.routing,
        min_serving=settings.min_serving(t),
        endpoints=tuple(endpoints),
        frozen_by=tuple(o for o in active if o.kind is OverrideKind.FREEZE and o.target in (None, t.name)),
        panic=panics.get(t.name),
    )


STATUS_FLAGS = (FlagKind.PANIC, FlagKind.CONFIG_PROBLEMS, FlagKind.LIVENESS, FlagKind.CREDENTIAL)  # read together, once per status


def read_status(settings: Settings, store: StatusSource, now: datetime, *, regions: list[str] | None = None) -> SystemStatus:
    """Status of every configured region (or just ``regions``) and target, as of ``now``.

    Six statements whatever the size (tests/integration/test_page_queries.py):
    health, last probes, active overrides, the flags (panics, configuration
    problems, liveness summaries, failing credentials), target rows and the lease; each fact is
    grouped by region once here, not looked up per region or target.
    """
    names = settings.region_names if regions is None else regions
    endpoint_health, region_health = store.health()
    last = store.last_probe_at(names)
    active = store.active_overrides(now)
    flags = store.flags(*STATUS_FLAGS)
    panics = panics_of(flags)
    rows = {(r.target, r.region): r for r in store.target_endpoints()}
    problems: dict[str, list[str]] = {}
    for e in endpoint_health.values():
        if e.config_problem:
            problems.setdefault(e.region, []).append(f"{e.endpoint_id}: {e.config_problem}")
    region_of = {f"{r.name}/{e.name}": r.name for r in settings.regions for e in r.endpoints}  # configured endpoints only
    checks: dict[str, list[LivenessRecord]] = {}
    for c in liveness_of(flags):
        if (region := region_of.get(c.endpoint_id)) is not None:
            checks.setdefault(region, []).append(c)
    return SystemStatus(
        now=now,
        regions=tuple(
            region_status(settings, n, region_health.get(n), last.get(n), active, now, problems.get(n, ()), checks.get(n, ()))
            for n in names
        ),
        targets=tuple(target_status(settings, t, rows, active, panics) for t in settings.targets),
        lease=store.lease(),
        overrides=tuple(active),
        panics=panics,
        config_problems=tuple(config_problems_of(flags)),
        endpoint_health=endpoint_health,
        credentials=tuple(credential_problems_of(flags)),
    )


class StatusSource(Protocol):
    """What :func:`read_status` asks the store."""

    def health(self) -> tuple[dict[str, EndpointHealth], dict[str, RegionHealth]]: ...
    def last_probe_at(self, regions: Iterable[str] | None = None) -> dict[str, datetime]: ...
    def active_overrides(self, now: datetime) -> list[Override]: ...
    def flags(self, *kinds: FlagKind) -> list[Flag]: ...
    def target_endpoints(self, target: str | None = None) -> list[TargetEndpointRecord]: ...
    def lease(self, name: LeaseName = LeaseName.LEADER) -> Lease | None: ...


__all__ = [
    "STATUS_FLAGS",
    "LivenessStatus",
    "RegionStatus",
    "StatusSource",
    "SystemStatus",
    "TargetEndpointStatus",
    "TargetStatus",
    "liveness_stale_after",
    "read_status",
    "region_status",
    "stale_after",
    "target_status",
]
