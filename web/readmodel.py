"""What the dashboard shows: the status read model (controlplane.status) plus its figures and charts.

Facts (health, freshness, desired vs actual, lease, overrides, panics) come
from :func:`controlplane.status.read_status`, the same model `regionguard
status` prints; 5-minute figures, series and recent probes come from the
store's dashboard queries (:mod:`controlplane.store.queries`). This module
only shapes them for the templates and the JSON API: no SQL here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from controlplane import incidents as incident_model
from controlplane.config import Settings
from controlplane.domain import (
    ChangeStatus,
    EndpointHealth,
    EndpointSetting,
    EventKind,
    Field,
    HealthStateName,
    Override,
    OverrideKind,
    ProbeResult,
    Transition,
    WriteStatus,
)
from controlplane.status import LivenessStatus, RegionStatus, SystemStatus, TargetEndpointStatus, TargetStatus, read_status, stale_after
from controlplane.store import Lease, RegionStats, Store, queries
from probes.cost import estimate_monthly
from web import charts, traffic

log = logging.getLogger(__name__)

STATS_WINDOW = timedelta(minutes=5)
SPARK_WINDOW = timedelta(minutes=60)
RANGES = {"1h": (timedelta(hours=1), 60), "24h": (timedelta(hours=24), 600), "7d": (timedelta(days=7), 3600)}

Stats = RegionStats  # the dashboard's 5-minute figures per region

__all__ = ["RANGES", "TIMELINE_KINDS", "SeriesCache", "overview", "region_card", "region_page", "stale_after", "target_views", "timeline"]


# ---------------------------------------------------------------- view values


@dataclass
class Banner:
    kind: str  # panic | frozen | stale | leader | credential | config
    severity: str  # critical | warning | info
    text: str


@dataclass
class RegionCard:
    name: str
    azure_region: str
    state: str
    score: float | None
    reasons: list[str]
    since: datetime | None
    last_probe_at: datetime | None
    age_s: float | None
    stale: bool
    stats: Stats
    quota_headroom: float | None
    spark: charts.Chart
    endpoints: list[EndpointHealth]
    overrides: list[Override]
    liveness: list[LivenessStatus] = field(default_factory=list)  # per endpoint and vantage: the last liveness check

    @classmethod
    def of(cls, region: RegionStatus, stats: Stats, spark: charts.Chart) -> RegionCard:
        return cls(
            name=region.name,
            azure_region=region.azure_region,
            state=region.state.value,
            score=region.score,
            reasons=list(region.reasons),
            since=region.since,
            last_probe_at=region.last_probe_at,
            age_s=region.age_s,
            stale=region.stale,
            stats=stats,
            quota_headroom=region.quota_headroom,
            spark=spark,
            endpoints=list(region.endpoints),
            overrides=list(region.overrides),
            liveness=list(region.liveness),
        )

    @property
    def drained(self) -> bool:
        """An operator drain (or maintenance) is active for this region: Restore applies, not Drain."""
        return any(o.kind in (OverrideKind.DRAIN, OverrideKind.MAINTENANCE) for o in self.overrides)

    @property
    def reason_text(self) -> str:
        if self.reasons:
            return "; ".join(self.reasons)
        if self.state == HealthStateName.UNKNOWN.value:
            return "no health evaluated yet"
        return "all recent probes answered correctly and in time"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "azure_region": self.azure_region,
            "state": self.state,
            "score": self.score,
            "reasons": self.reasons,
            "since": self.since.isoformat() if self.since else None,
            "last_probe_at": self.last_probe_at.isoformat() if self.last_probe_at else None,
            "last_probe_age_s": None if self.age_s is None else round(self.age_s, 1),
            "stale": self.stale,
            "probes_5m": self.stats.probes,
            "success_pct_5m": self.stats.success_pct,
            "ttft_p50_ms_5m": self.stats.ttft_p50,
            "ttft_p95_ms_5m": self.stats.ttft_p95,
            "quota_headroom": self.quota_headroom,
            "endpoints": [
                {
                    "id": e.endpoint_id,
                    "state": e.state.value,
                    "score": e.score,
                    "reason": e.reason,
                    "quota_headroom": e.quota_headroom,
                    "config_problem": e.config_problem,
                }
                for e in self.endpoints
            ],
            "overrides": [o.id for o in self.overrides],
            "liveness": [c.to_dict() for c in self.liveness],
        }


def _side(setting: EndpointSetting | None) -> dict[str, Any]:
    if setting is None:
        return {"enabled": None, "weight": None, "priority": None}
    return {"enabled": setting.enabled, "weight": setting.weight, "priority": setting.priority}


@dataclass
class TargetRow:
    region: str
    endpoint: str
    desired: dict[str, Any]
    actual: dict[str, Any]
    desired_reason: str | None
    monitor_status: str | None
    drift: str | None
    write_status: WriteStatus | None
    write_error: str | None
    read_at: datetime | None
    overrides: list[Override]
    circuit_breakers: tuple[str, ...] | None = None  # Azure's own trip rules (APIM members), read-only
    in_sync: bool = True

    @classmethod
    def of(cls, e: TargetEndpointStatus) -> TargetRow:
        return cls(
            region=e.region,
            endpoint=e.endpoint,
            desired=_side(e.desired),
            actual=_side(e.actual),
            desired_reason=e.desired_reason,
            monitor_status=e.monitor_status,
            drift=e.drift,
            write_status=e.write_status,
            write_error=e.write_error,
            read_at=e.read_at,
            overrides=list(e.overrides),
            circuit_breakers=e.circuit_breakers,
            in_sync=e.in_sync,
        )

    @property
    def differs(self) -> bool:
        return not self.in_sync

    def to_dict(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "endpoint": self.endpoint,
            "desired": self.desired,
            "actual": self.actual,
            "desired_reason": self.desired_reason,
            "monitor_status": self.monitor_status,
            "drift": self.drift,
            "write_status": self.write_status,
            "write_error": self.write_error,
            "read_at": self.read_at.isoformat() if self.read_at else None,
            "in_sync": self.in_sync,
            "overrides": [o.id for o in self.overrides],
            "circuit_breakers": list(self.circuit_breakers) if self.circuit_breakers is not None else None,
        }


@dataclass
class TargetView:
    name: str
    kind: str
    routing: str
    min_serving: int
    rows: list[TargetRow]
    frozen_by: list[Override] = field(default_factory=list)
    panic: str | None = None

    @classmethod
    def of(cls, t: TargetStatus) -> TargetView:
        return cls(
            name=t.name,
            kind=t.kind,
            routing=t.routing,
            min_serving=t.min_serving,
            rows=[TargetRow.of(e) for e in t.endpoints],
            frozen_by=list(t.frozen_by),
            panic=t.panic.reason if t.panic else None,
        )

    @property
    def serving_region(self) -> str | None:
        """Priority routing: the enabled endpoint with the lowest priority number in Azure now (None: none serving)."""
        serving = [r for r in self.rows if r.actual.get("enabled") is True and r.actual.get("priority") is not None]
        return min(serving, key=lambda r: r.actual["priority"]).region if serving else None

    @property
    def order(self) -> list[str]:
        return [r.region for r in self.rows]

    @property
    def actual_shares(self) -> traffic.Shares:
        """Each region's share of this target's traffic as read from Azure."""
        return traffic.shares(self.routing, {r.region: r.actual for r in self.rows}, self.order)

    @property
    def desired_shares(self) -> traffic.Shares | None:
        """The share once the desired state is applied (None: nothing decided yet); unset fields keep Azure's value."""
        if all(r.desired.get("enabled") is None for r in self.rows):
            return None
        merged = {r.region: {k: r.actual.get(k) if v is None else v for k, v in r.desired.items()} for r in self.rows}
        return traffic.shares(self.routing, merged, self.order)

    @property
    def shares_differ(self) -> bool:
        want = self.desired_shares
        return want is not None and want.to_dict() != self.actual_shares.to_dict()

    @property
    def serving_desired(self) -> int:
        return sum(1 for r in self.rows if r.desired.get("enabled") is not False)

    @property
    def serving_actual(self) -> int:
        return sum(1 for r in self.rows if r.actual.get("enabled") is True)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "routing": self.routing,
            "min_serving": self.min_serving,
            "frozen_by": [o.id for o in self.frozen_by],
            "panic": self.panic,
            "endpoints": [r.to_dict() for r in self.rows],
            "traffic_share": {
                "actual": self.actual_shares.to_dict(),
                "desired": want.to_dict() if (want := self.desired_shares) is not None else None,
            },
        }


@dataclass
class VantageSeen:
    name: str
    last_at: datetime
    age_s: float
    fresh: bool


@dataclass
class Automation:
    """What automation is doing right now: the strip at the top of the overview."""

    mode: str  # active | frozen | panic | dry-run | no leader (the most serious first)
    frozen: list[Override]  # active freezes (target None: every target)
    panics: dict[str, str]  # target -> reason
    dry_run: bool
    leader: str | None
    fencing_token: int | None
    lease_renewed_age_s: float | None
    vantages: list[VantageSeen]
    unfrozen_targets: list[str]  # targets a freeze could still apply to (empty: everything is frozen)

    @property
    def frozen_everywhere(self) -> bool:
        return any(o.target is None for o in self.frozen)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "frozen": [
                {"id": o.id, "target": o.target, "who": o.who, "why": o.why, "until": o.expires_at.isoformat() if o.expires_at else None}
                for o in self.frozen
            ],
            "panics": self.panics,
            "dry_run": self.dry_run,
            "leader": self.leader,
            "fencing_token": self.fencing_token,
            "vantages": [{"name": v.name, "last_at": v.last_at.isoformat(), "fresh": v.fresh} for v in self.vantages],
        }


def seen_since(settings: Settings, now: datetime) -> datetime:
    """The automation strip lists the vantages with a result since then."""
    return now - timedelta(seconds=max(stale_after(settings) * 5, 300))


def automation(settings: Settings, store: Store, status: SystemStatus, seen: dict[str, datetime] | None = None) -> Automation:
    """``seen``: :func:`queries.vantages_seen` since :func:`seen_since`, if already read."""
    now = status.now
    fresh_s = stale_after(settings)
    if seen is None:
        seen = queries.vantages_seen(store, seen_since(settings, now))
    vantages = [
        VantageSeen(name, at, (now - at).total_seconds(), (now - at).total_seconds() <= fresh_s) for name, at in sorted(seen.items())
    ]
    freezes = [o for o in status.overrides if o.kind is OverrideKind.FREEZE]
    plans = store.plans(limit=1)
    dry_run = settings.azure.dry_run or bool(plans and plans[0].dry_run)
    panics = {target or "all targets": p.reason for target, p in sorted(status.panics.items())}
    if status.leader is None:
        mode = "no leader"
    elif panics:
        mode = "panic"
    elif freezes:
        mode = "frozen"
    elif dry_run:
        mode = "dry-run"
    else:
        mode = "active"
    frozen_targets = {o.target for o in freezes}
    lease = status.lease
    return Automation(
        mode=mode,
        frozen=freezes,
        panics=panics,
        dry_run=dry_run,
        leader=status.leader,
        fencing_token=lease.fencing_token if lease and status.leader else None,
        lease_renewed_age_s=(now - lease.renewed_at).total_seconds() if lease and lease.renewed_at else None,
        vantages=vantages,
        unfrozen_targets=[] if None in frozen_targets else [t.name for t in settings.targets if t.name not in frozen_targets],
    )


@dataclass
class VantageGrid:
    """Endpoints x vantages: what each prober saw of each endpoint over the last ``window_s`` seconds."""

    vantages: list[str]
    endpoints: list[str]  # endpoint ids, config order
    cells: dict[tuple[str, str], queries.VantageCell]
    window_s: float
    liveness: dict[tuple[str, str], LivenessStatus] = field(default_factory=dict)  # (endpoint, vantage) -> last check

    def cell(self, endpoint: str, vantage: str) -> queries.VantageCell | None:
        return self.cells.get((endpoint, vantage))

    def check(self, endpoint: str, vantage: str) -> LivenessStatus | None:
        return self.liveness.get((endpoint, vantage))

    def to_dict(self) -> dict[str, Any]:
        return {
            "window_s": self.window_s,
            "vantages": self.vantages,
            "cells": {
                e: {
                    v: ({"state": c.state, "ok": c.ok, "total": c.total, "last": c.last_outcome} if (c := self.cell(e, v)) else None)
                    for v in self.vantages
                }
                for e in self.endpoints
            },
        }


def vantage_grid(
    settings: Settings,
    store: Store,
    status: SystemStatus,
    vantages: list[str],
    regions: list[str] | None = None,
    cells: dict[tuple[str, str], queries.VantageCell] | None = None,
) -> VantageGrid:
    """The grid from the raw results of the last ``stale_after`` (one short index range; ``cells``: that read, if
    already made) and the stored liveness summaries (no raw read): a vantage that only checks liveness gets a column too."""
    window = stale_after(settings)
    if cells is None:
        cells = queries.vantage_cells(store, status.now - timedelta(seconds=window))
    checks = {(c.check.endpoint_id, c.check.vantage): c for r in status.regions for c in r.liveness}
    live = {v for (_, v), c in checks.items() if not c.stale}
    names = sorted(set(vantages) | {v for _, v in cells} | live)
    endpoints = [f"{r.name}/{e.name}" for r in settings.regions if regions is None or r.name in regions for e in r.endpoints]
    return VantageGrid(names, endpoints, cells, window, checks)


@dataclass
class Overview:
    now: datetime
    cards: list[RegionCard]
    targets: list[TargetView]
    banners: list[Banner]
    leader: Lease | None
    automation: Automation | None = None
    open_incidents: list[incident_model.Incident] = field(default_factory=list)
    grid: VantageGrid | None = None


# ---------------------------------------------------------------- series


class SeriesCache:
    """Chart buckets of long ranges that can no longer change, kept for a few minutes.

    A bucket that ended more than ``settle_s`` ago is final (the worker rolls
    up each minute shortly after it ends), so a 7-day chart re-reads only its
    newest buckets from the rollups on each render; the rest comes from here,
    rebuilt after ``ttl_s`` (which also bounds how long a late backfill stays
    unseen). Per process, bounded, thread-safe.
    """

    def __init__(
        self, ttl_s: float = 300.0, settle_s: float = 300.0, max_keys: int = 256, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s, self.settle_s, self.max_keys = ttl_s, settle_s, max_keys
        self._now = monotonic
        self._lock = threading.Lock()
        self._entries: dict[tuple[tuple[str, ...], int], tuple[float, int, int, dict[str, list[charts.Bucket]]]] = {}

    def series(self, store: Store, region: str, since: datetime, bucket_s: int, now: datetime) -> list[charts.Bucket]:
        return self.series_of(store, [region], since, bucket_s, now)[region]

    def series_of(self, store: Store, regions: list[str], since: datetime, bucket_s: int, now: datetime) -> dict[str, list[charts.Bucket]]:
        """Per region, like :func:`queries.rollup_series`; one query for the newest buckets of all of them."""
        key = (tuple(regions), bucket_s)
        first = int(since.timestamp()) // bucket_s * bucket_s
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None:
            built, covered_from, settled_until, settled = entry
            if self._now() - built < self.ttl_s and covered_from <= first:
                fresh = queries.rollup_series(store, regions, datetime.fromtimestamp(max(settled_until, first), UTC), bucket_s)
                return {r: [b for b in settled[r] if b.start >= first] + fresh[r] for r in regions}
        full = queries.rollup_series(store, regions, since, bucket_s)
        settled_until = int(now.timestamp() - self.settle_s) // bucket_s * bucket_s
        with self._lock:
            if len(self._entries) >= self.max_keys:
                self._entries.clear()
            self._entries[key] = (self._now(), first, settled_until, {r: [b for b in full[r] if b.start < settled_until] for r in regions})
        return full


# ---------------------------------------------------------------- overview


def target_views(status: SystemStatus, target: str | None = None) -> list[TargetView]:
    """Every configured target (or one), desired vs actual per region."""
    return [TargetView.of(t) for t in status.targets if target is None or t.name == target]


def banners(settings: Settings, status: SystemStatus) -> list[Banner]:
    out: list[Banner] = []
    for target, panic in sorted(status.panics.items()):
        where = target or "all targets"
        out.append(
            Banner(
                "panic",
                "critical",
                f"Fail-open in {where}: {panic.reason}. Automation keeps every endpoint serving; the prober may be the fault.",
            )
        )
    for o in status.overrides:
        if o.kind is OverrideKind.FREEZE:
            until = f" until {o.expires_at:%Y-%m-%d %H:%M} UTC" if o.expires_at else ""
            out.append(Banner("frozen", "warning", f"Automation frozen for {o.target or 'every target'} by {o.who}{until}: {o.why}"))
    stale = [r for r in status.regions if r.stale]
    if stale:
        limit = int(stale_after(settings))
        names = ", ".join(r.name for r in stale)
        out.append(
            Banner(
                "stale",
                "critical" if len(stale) == len(status.regions) else "warning",
                f"Stale data: no probe results for more than {limit} s from {names}. Health shown may be out of date; is the prober running?",
            )
        )
    if status.leader is None:
        out.append(
            Banner(
                "leader",
                "critical",
                "No leader: no worker holds the lease, so nothing is planned or applied to Azure. Is `regionguard run` running?",
            )
        )
    for c in status.credentials:  # docs/adr/0016: a leader that cannot authenticate to Azure gives the lease up
        down = f"; it stepped down at {c.stepped_down_at:%H:%M:%S} UTC for a worker whose credential works" if c.stepped_down_at else ""
        since = f" since {c.since:%H:%M:%S} UTC" if c.since else ""
        leading = " It leads nonetheless: no other worker took the lease, so nothing reaches Azure." if status.leader == c.holder else ""
        out.append(Banner("credential", "critical", f"Azure credential failing on worker {c.holder}{since}: {c.error}{down}.{leading}"))
    problems = sorted((e.endpoint_id, e.config_problem) for e in status.endpoint_health.values() if e.config_problem)
    for eid, problem in problems:
        out.append(
            Banner(
                "config",
                "critical",
                f"Configuration problem at {eid}: {problem}. This is not a regional outage; fix the credentials, deployment name or request.",
            )
        )
    return out


def overview(settings: Settings, store: Store, now: datetime, cache: SeriesCache | None = None, sparks: bool = True) -> Overview:
    """The overview page's model. ``sparks=False`` (the JSON API, which has no charts) skips reading
    and drawing the sparklines: each card then carries an empty one."""
    status = read_status(settings, store, now)
    names = settings.region_names
    # the 5-minute figures, the vantages seen and the vantage grid: one read of the last minutes of raw results
    recent = queries.recent(store, now - STATS_WINDOW, seen_since(settings, now), now - timedelta(seconds=stale_after(settings)))
    stats = recent.stats
    start = (now - SPARK_WINDOW).replace(second=0, microsecond=0)
    # an hour of every region's minute rollups is ~18,000 rows at scale: settled minutes come from the cache
    if not sparks:
        series: dict[str, list[charts.Bucket]] = {}
    elif cache is not None:
        series = cache.series_of(store, names, start, 60, now)
    else:
        series = queries.rollup_series(store, names, start, 60)
    cards = [RegionCard.of(r, stats.get(r.name, Stats()), charts.sparkline(series.get(r.name, []), start, now, 60)) for r in status.regions]
    auto = automation(settings, store, status, recent.seen)
    return Overview(
        now=now,
        cards=cards,
        targets=target_views(status),
        banners=banners(settings, status),
        leader=status.lease,
        automation=auto,
        grid=vantage_grid(settings, store, status, [v.name for v in auto.vantages], cells=recent.cells),
        open_incidents=[i for i in queries.incidents(store, now - OPEN_INCIDENT_LOOKBACK, targets_of(settings)) if i.open],
    )


def region_card(settings: Settings, store: Store, name: str, now: datetime) -> tuple[RegionCard, VantageGrid]:
    """One region's card and vantage grid (the API's region endpoint): the overview's figures for one region."""
    status = read_status(settings, store, now, regions=[name])
    stats = queries.region_stats(store, now - STATS_WINDOW, region=name).get(name, Stats())
    start = (now - SPARK_WINDOW).replace(second=0, microsecond=0)
    spark = charts.sparkline(queries.rollup_series(store, [name], start, 60)[name], start, now, 60)
    return RegionCard.of(status.region(name), stats, spark), vantage_grid(settings, store, status, [], regions=[name])


# ---------------------------------------------------------------- incidents

OPEN_INCIDENT_LOOKBACK = timedelta(hours=24)  # the overview's banner looks for open incidents that started this recently
INCIDENT_DAYS = 30


def targets_of(settings: Settings) -> dict[str, set[str]]:
    """Region -> the targets it serves in."""
    return {r: {t.name for t in settings.targets if r in t.endpoints} for r in settings.region_names}


class IncidentCache:
    """Incidents that ended long enough ago are final: kept per process, only the recent part is re-read.

    The records incidents are built from are appended at the time they happen,
    so an incident closed ``settle`` before the last read cannot change. Each
    read re-reads from the start of the oldest incident that may still change
    (or ``settle`` ago); everything is rebuilt after ``ttl_s``. Thread-safe, bounded.
    """

    def __init__(
        self, settle: timedelta = timedelta(minutes=30), ttl_s: float = 300.0, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.settle, self.ttl_s = settle, ttl_s
        self._now = monotonic
        self._lock = threading.Lock()
        self._entries: dict[str | None, tuple[float, datetime, datetime, list[incident_model.Incident]]] = {}

    def incidents(
        self, store: Store, since: datetime, targets: dict[str, set[str]], now: datetime, region: str | None = None
    ) -> list[incident_model.Incident]:
        with self._lock:
            entry = self._entries.get(region)
        if entry is not None and self._now() - entry[0] < self.ttl_s and entry[1] <= since:
            built, covered_from, reread_from, final = entry
            fresh = queries.incidents(store, reread_from, targets, region=region)
            found = fresh + [i for i in final if i.started_at >= since]
        else:
            built, covered_from = self._now(), since
            found = queries.incidents(store, since, targets, region=region)
        cutoff = now - self.settle
        changing = [i.started_at for i in found if i.ended_at is None or i.ended_at >= cutoff]
        reread_from = min([cutoff, *changing])
        keep = [i for i in found if i.started_at < reread_from]
        with self._lock:
            if len(self._entries) > 64:
                self._entries.clear()
            self._entries[region] = (built, covered_from, reread_from, keep)
        found.sort(key=lambda i: i.started_at, reverse=True)
        return found


LIST_ROWS = 100  # the incident list shows the newest this many; the figures count all of them


@dataclass
class IncidentList:
    incidents: list[incident_model.Incident]
    figures: incident_model.Figures
    days: int
    outcomes: list[str]  # every outcome class seen, for the filter


def incident_list(
    settings: Settings,
    store: Store,
    now: datetime,
    region: str | None = None,
    state: str | None = None,
    outcome: str | None = None,
    days: int = INCIDENT_DAYS,
    cache: IncidentCache | None = None,
) -> IncidentList:
    since = now - timedelta(days=days)
    if cache is not None:
        found = cache.incidents(store, since, targets_of(settings), now, region=region)
    else:
        found = queries.incidents(store, since, targets_of(settings), region=region)
    outcomes = sorted({o for i in found for o in i.outcomes})
    if state == "open":
        found = [i for i in found if i.open]
    elif state == "closed":
        found = [i for i in found if not i.open]
    if outcome:
        found = [i for i in found if outcome in i.outcomes]
    return IncidentList(found, incident_model.figures(found), days, outcomes)


def parse_incident_id(settings: Settings, incident_id: str) -> tuple[str, datetime] | None:
    region, _, stamp = incident_id.rpartition("-")
    if region not in settings.region_names:
        return None
    try:
        started = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    return region, started


def incident(settings: Settings, store: Store, incident_id: str) -> incident_model.Incident | None:
    parsed = parse_incident_id(settings, incident_id)
    if parsed is None:
        return None
    region, started = parsed
    found = queries.incidents(store, started, targets_of(settings), region=region)
    return next((i for i in found if i.id == incident_id), None)


def plan_reasons(inc: incident_model.Incident) -> list[tuple[str, list[str]]]:
    """The reasons behind the incident's writes, each once, with the target/field changes it explains."""
    out: dict[str, list[str]] = {}
    for w in inc.writes:
        what = f"{w.target}: {_what(Field(w.field), w.before, w.after)}"
        bucket = out.setdefault(w.reason, [])
        if what not in bucket:
            bucket.append(what)
    return list(out.items())


# ---------------------------------------------------------------- region page


@dataclass
class RegionPage:
    card: RegionCard
    range_key: str
    charts: list[charts.Chart]
    probes: list[ProbeResult]
    transitions: list[Transition]
    overrides: list[Override]
    active_ids: set[int]
    targets: list[TargetView]
    costs: dict[str, Any] = field(default_factory=dict)  # endpoint id -> probes.cost.CostEstimate
    currency: str = "USD"  # probe.cost_currency: what the endpoints' pricing is in
    grid: VantageGrid | None = None  # this region's endpoints x vantages


def region_page(settings: Settings, store: Store, name: str, range_key: str, now: datetime, cache: SeriesCache | None = None) -> RegionPage:
    span, bucket_s = RANGES[range_key]
    status = read_status(settings, store, now, regions=[name])
    stats = queries.region_stats(store, now - STATS_WINDOW, region=name).get(name, Stats())
    start = (now - span).replace(second=0, microsecond=0)
    if cache is not None and bucket_s > 60:
        series = cache.series(store, name, start, bucket_s, now)
    else:
        series = queries.rollup_series(store, [name], start, bucket_s)[name]
    spark_start = (now - SPARK_WINDOW).replace(second=0, microsecond=0)
    spark_buckets = series if range_key == "1h" else queries.rollup_series(store, [name], spark_start, 60)[name]
    spark = charts.sparkline([b for b in spark_buckets if b.start >= spark_start.timestamp()], spark_start, now, 60)
    card = RegionCard.of(status.region(name), stats, spark)
    recent = [o for o in store.overrides(limit=200) if o.region in (None, name) and o.kind is not OverrideKind.FREEZE][:50]
    targets = [t for t in target_views(status) if any(r.region == name for r in t.rows)]
    probes = queries.recent_probes(store, name)
    costs = {eid: c for eid, c in estimate_monthly(settings, probes).items() if eid.startswith(name + "/")}
    return RegionPage(
        card=card,
        range_key=range_key,
        charts=charts.region_charts(series, start, now, bucket_s),
        probes=probes,
        transitions=store.transitions(region=name, limit=50),
        overrides=recent,
        active_ids={o.id for o in status.overrides if o.id is not None},
        targets=targets,
        costs=costs,
        currency=settings.probe.cost_currency,
        grid=vantage_grid(settings, store, status, [], regions=[name]),
    )


# ---------------------------------------------------------------- timeline


TIMELINE_KINDS = ("transition", "plan", "change", "override", "event")


@dataclass
class TimelineItem:
    at: datetime
    kind: str  # transition | plan | change | override | event
    title: str
    detail: str
    actor: str
    region: str | None = None
    target: str | None = None
    severity: str = "info"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "kind": self.kind,
            "title": self.title,
            "detail": self.detail,
            "actor": self.actor,
            "region": self.region,
            "target": self.target,
            "severity": self.severity,
            "extra": self.extra,
        }


_OWN_TABLES = {EventKind.TRANSITION, EventKind.PLAN, EventKind.CHANGE, EventKind.OVERRIDE}  # shown from their own tables


def timeline(
    store: Store,
    region: str | None = None,
    target: str | None = None,
    kinds: set[str] | None = None,
    limit: int = 200,
    now: datetime | None = None,
) -> list[TimelineItem]:
    """Transitions, plans, changes, overrides and other audit events, newest first."""
    want = kinds or set(TIMELINE_KINDS)
    items: list[TimelineItem] = []
    if "transition" in want and target is None:
        for t in store.transitions(region=region, limit=limit):
            items.append(
                TimelineItem(
                    at=t.at,
                    kind="transition",
                    title=f"{t.key}: {t.old.value} -> {t.new.value}",
                    detail=t.reason,
                    actor=f"health{' @' + t.vantage if t.vantage else ''}",
                    region=t.key.split("/", 1)[0],
                    severity="critical" if t.new is HealthStateName.UNHEALTHY else "info",
                    extra={"evidence": list(t.evidence), "subject": t.subject},
                )
            )
    if "plan" in want:
        for p in store.plans(limit=limit):
            changes = p.plan.changes
            if region and not any(c.region == region for c in changes):
                continue
            if target and not any(c.target == target for c in changes):
                continue
            items.append(
                TimelineItem(
                    at=p.created_at,
                    kind="plan",
                    title=f"plan {p.checksum}: {len(changes)} change(s){' (dry run)' if p.dry_run else ''}",
                    detail=_plan_detail(changes),
                    actor=p.actor,
                    severity="warning" if p.plan.panics else "info",
                    extra={
                        "fencing_token": p.fencing_token,
                        "skipped": [f"{s.rule}: {s.reason}" for s in p.plan.skipped],
                        "panics": list(p.plan.panics),
                    },
                )
            )
    if "change" in want:
        for c in store.changes(region=region, target=target, limit=limit):
            items.append(
                TimelineItem(
                    at=c.created_at,
                    kind="change",
                    title=f"{c.target}/{c.endpoint} ({c.region}): {_what(c.field, c.before, c.after)} [{c.status.value}]",
                    detail=c.reason,
                    actor=c.actor + (" (manual)" if c.manual else ""),
                    region=c.region,
                    target=c.target,
                    severity="critical" if c.status is ChangeStatus.FAILED else "info",
                    extra={
                        "fencing_token": c.fencing_token,
                        "status": c.status.value,
                        "error": " ".join(x for x in (c.error_code, c.error_message) if x) or None,
                    },
                )
            )
    if "override" in want:
        for o in store.overrides(limit=limit):
            if region and o.region not in (None, region):
                continue
            if target and o.target not in (None, target):
                continue
            state = "lifted" if o.lifted_at else ("expired" if now and o.expires_at and o.expires_at <= now else "active")
            items.append(
                TimelineItem(
                    at=o.created_at,
                    kind="override",
                    title=f"#{o.id} {o.kind.value} {o.region or 'all regions'} in {o.target or 'all targets'}{_pin_text(o)}{' (FORCED)' if o.forced else ''} [{state}]",
                    detail=o.why,
                    actor=o.who,
                    region=o.region,
                    target=o.target,
                    severity="warning",
                    extra={
                        "expires_at": o.expires_at.isoformat() if o.expires_at else None,
                        "lifted_at": o.lifted_at.isoformat() if o.lifted_at else None,
                        "id": o.id,
                    },
                )
            )
    if "event" in want:
        for e in store.events(region=region, target=target, limit=limit):
            if e.kind in _OWN_TABLES:
                continue
            items.append(
                TimelineItem(
                    at=e.at,
                    kind="event",
                    title=f"{e.kind}: {e.summary}",
                    detail="",
                    actor=e.actor,
                    region=e.region,
                    target=e.target,
                    severity=e.severity,
                )
            )
    items.sort(key=lambda i: i.at, reverse=True)
    return items[:limit]


def _plan_detail(changes: Any) -> str:
    """A plan's changes grouped under each reason, so a reason shared by many changes is said once."""
    by_reason: dict[str, list[str]] = {}
    for c in changes:
        by_reason.setdefault(c.reason, []).append(f"{c.target}/{c.region} {_what(c.field, c.actual, c.desired)}")
    return "; ".join(f"{', '.join(whats)} ({reason})" for reason, whats in by_reason.items()) or "no changes"


def _value(v: Any) -> str:
    return {True: "enabled", False: "disabled", None: "unset"}.get(v, str(v)) if isinstance(v, bool | None) else str(v)


def _what(field_name: Field, before: Any, after: Any) -> str:
    if field_name is Field.ENABLED:
        return f"{_value(before)} -> {_value(after)}"
    return f"{field_name.value} {_value(before)} -> {_value(after)}"


def _pin_text(o: Override) -> str:
    parts = []
    if o.weight is not None:
        parts.append(f"weight {o.weight}")
    if o.priority is not None:
        parts.append(f"priority {o.priority}")
    return (" to " + ", ".join(parts)) if parts else ""
