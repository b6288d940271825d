"""What the dashboard shows, read from the store in a few cheap queries.

The overview must stay fast with a week of raw probe results (millions of
rows), so it never scans raw results over long ranges: last-probe times are
per-region ``MAX(started_at)`` lookups on the (region, started_at) index,
5-minute figures read one short index range, sparklines and charts come from
the per-minute rollups, aggregated in SQL.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Integer, and_, cast, func, literal_column, select

from controlplane.config import Settings, azure_name
from controlplane.domain import (
    ChangeStatus,
    EndpointHealth,
    EndpointSetting,
    Field,
    HealthStateName,
    LeaseName,
    Outcome,
    Override,
    OverrideKind,
    ProbeResult,
    RegionHealth,
    Transition,
    WriteStatus,
)
from controlplane.stats import percentile
from controlplane.store import Lease, Panic, Store, TargetEndpointRecord
from controlplane.store.models import ProbeResultRow, ProbeRollupRow
from probes.cost import estimate_monthly
from web import charts

log = logging.getLogger(__name__)

STATS_WINDOW = timedelta(minutes=5)
SPARK_WINDOW = timedelta(minutes=60)
RANGES = {"1h": (timedelta(hours=1), 60), "24h": (timedelta(hours=24), 600), "7d": (timedelta(days=7), 3600)}
_SUCCESS = (Outcome.OK.value,)


def stale_after(settings: Settings) -> float:
    """Seconds without a probe result after which a region's data is stale (default: 2 intervals)."""
    return settings.health.stale_after or 2 * settings.probe.interval


# ---------------------------------------------------------------- view values


@dataclass
class Banner:
    kind: str  # panic | frozen | stale | leader | config
    severity: str  # critical | warning | info
    text: str


@dataclass
class Stats:
    probes: int = 0
    success_pct: float | None = None
    ttft_p50: float | None = None
    ttft_p95: float | None = None


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
        }


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

    @property
    def differs(self) -> bool:
        out_of_it = self.actual.get("enabled") is False and self.desired.get("enabled") is False  # e.g. a member out of its APIM pool
        return any(
            self.desired.get(k) is not None
            and self.desired.get(k) != self.actual.get(k)
            and not (out_of_it and k != "enabled" and self.actual.get(k) is None)
            for k in ("enabled", "weight", "priority")
        )

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
            "in_sync": not self.differs,
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
        }


@dataclass
class Overview:
    now: datetime
    cards: list[RegionCard]
    targets: list[TargetView]
    banners: list[Banner]
    leader: Lease | None


# ---------------------------------------------------------------- queries


def last_probe_at(store: Store, regions: list[str]) -> dict[str, datetime]:
    """Newest probe start per region: one index lookup each (no scan of the table)."""
    t = ProbeResultRow.__table__
    out: dict[str, datetime] = {}
    with store.engine.connect() as conn:
        for region in regions:
            at = conn.execute(select(func.max(t.c.started_at)).where(t.c.region == region)).scalar()
            if at is not None:
                out[region] = at
    return out


def recent_stats(store: Store, since: datetime) -> dict[str, Stats]:
    """Per region over [since, now): probe count, success %, TTFT p50/p95 (one short index range)."""
    t = ProbeResultRow.__table__
    q = select(t.c.region, t.c.outcome, t.c.ttft_ms).where(t.c.started_at >= since)
    per: dict[str, tuple[list[str], list[float]]] = {}
    with store.engine.connect() as conn:
        for region, outcome, ttft in conn.execute(q):
            outcomes, ttfts = per.setdefault(region, ([], []))
            outcomes.append(outcome)
            if ttft is not None:
                ttfts.append(ttft)
    out = {}
    for region, (outcomes, ttfts) in per.items():
        ok = sum(1 for o in outcomes if o in _SUCCESS)
        ttfts.sort()
        out[region] = Stats(
            probes=len(outcomes),
            success_pct=100.0 * ok / len(outcomes),
            ttft_p50=percentile(ttfts, 0.5),
            ttft_p95=percentile(ttfts, 0.95),
        )
    return out


def _bucket_expr(store: Store, seconds: int) -> Any:
    col = ProbeRollupRow.__table__.c.minute_at
    if store.engine.dialect.name == "sqlite":
        return cast(func.strftime("%s", col), Integer) // seconds  # integer division: one group per bucket
    return func.floor(func.extract("epoch", col) / seconds)


def rollup_series(store: Store, regions: list[str], since: datetime, bucket_s: int) -> dict[str, list[charts.Bucket]]:
    """Per region, buckets of ``bucket_s`` seconds from the per-minute rollups, aggregated in SQL."""
    t = ProbeRollupRow.__table__
    bucket = _bucket_expr(store, bucket_s).label("bucket")
    q = (
        select(
            t.c.region,
            bucket,
            func.sum(t.c.count),
            func.sum(t.c.ok),
            func.sum(t.c.throttled),
            func.sum(t.c.failed),
            func.avg(t.c.ttft_p50_ms),
            func.avg(t.c.ttft_p95_ms),
            func.avg(t.c.total_p50_ms),
            func.avg(t.c.total_p95_ms),
        )
        .where(and_(t.c.region.in_(regions), t.c.minute_at >= since))
        .group_by(t.c.region, literal_column("bucket"))
        .order_by(t.c.region, literal_column("bucket"))
    )
    out: dict[str, list[charts.Bucket]] = {r: [] for r in regions}
    with store.engine.connect() as conn:
        for region, b, count, ok, throttled, failed, t50, t95, tot50, tot95 in conn.execute(q):
            out[region].append(
                charts.Bucket(
                    start=int(b) * bucket_s,
                    count=int(count or 0),
                    ok=int(ok or 0),
                    throttled=int(throttled or 0),
                    failed=int(failed or 0),
                    ttft_p50=t50,
                    ttft_p95=t95,
                    total_p50=tot50,
                    total_p95=tot95,
                )
            )
    return out


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
        self._entries: dict[tuple[str, int], tuple[float, int, int, list[charts.Bucket]]] = {}

    def series(self, store: Store, region: str, since: datetime, bucket_s: int, now: datetime) -> list[charts.Bucket]:
        key = (region, bucket_s)
        first = int(since.timestamp()) // bucket_s * bucket_s
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None:
            built, covered_from, settled_until, buckets = entry
            if self._now() - built < self.ttl_s and covered_from <= first:
                fresh = rollup_series(store, [region], datetime.fromtimestamp(settled_until, UTC), bucket_s)[region]
                return [b for b in buckets if b.start >= first] + fresh
        full = rollup_series(store, [region], since, bucket_s)[region]
        settled_until = int(now.timestamp() - self.settle_s) // bucket_s * bucket_s
        with self._lock:
            if len(self._entries) >= self.max_keys:
                self._entries.clear()
            self._entries[key] = (self._now(), first, settled_until, [b for b in full if b.start < settled_until])
        return full


def recent_probes(store: Store, region: str, limit: int = 50) -> list[ProbeResult]:
    """The newest probe results of a region (index-ordered, no sort of the range)."""
    from controlplane.store.repo import _to_probe  # the store's own row -> value mapping

    with store.session() as s:
        q = select(ProbeResultRow).where(ProbeResultRow.region == region).order_by(ProbeResultRow.started_at.desc()).limit(limit)
        return [_to_probe(r) for r in s.scalars(q)]


# ---------------------------------------------------------------- overview


def _card(
    settings: Settings,
    name: str,
    health: RegionHealth | None,
    last: datetime | None,
    stats: Stats,
    spark: charts.Chart,
    active: list[Override],
    now: datetime,
) -> RegionCard:
    age = (now - last).total_seconds() if last else None
    return RegionCard(
        name=name,
        azure_region=settings.region(name).azure_region,
        state=health.state.value if health else HealthStateName.UNKNOWN.value,
        score=health.score if health else None,
        reasons=list(health.reasons) if health else [],
        since=health.since if health else None,
        last_probe_at=last,
        age_s=age,
        stale=age is None or age > stale_after(settings),
        stats=stats,
        quota_headroom=health.quota_headroom if health else None,
        spark=spark,
        endpoints=sorted(health.endpoints, key=lambda e: e.endpoint_id) if health else [],
        overrides=[o for o in active if o.region == name],
    )


def _side(setting: EndpointSetting | None) -> dict[str, Any]:
    if setting is None:
        return {"enabled": None, "weight": None, "priority": None}
    return {"enabled": setting.enabled, "weight": setting.weight, "priority": setting.priority}


def target_views(
    settings: Settings, rows: list[TargetEndpointRecord], active: list[Override], panics: dict[str, Panic]
) -> list[TargetView]:
    by_key = {(r.target, r.region): r for r in rows}
    views = []
    for t in settings.targets:
        trows = []
        for region in t.endpoints:
            r = by_key.get((t.name, region))
            trows.append(
                TargetRow(
                    region=region,
                    endpoint=(r.endpoint if r else None) or azure_name(t, region),
                    desired=_side(r.desired if r else None),
                    actual=_side(r.actual if r else None),
                    desired_reason=r.desired_reason if r else None,
                    monitor_status=r.monitor_status if r else None,
                    drift=r.drift if r else None,
                    write_status=r.write_status if r else None,
                    write_error=r.write_error if r else None,
                    read_at=r.read_at if r else None,
                    overrides=[o for o in active if o.kind is not OverrideKind.FREEZE and o.applies_to(t.name, region)],
                    circuit_breakers=r.circuit_breakers if r else None,
                )
            )
        panic = panics.get(t.name)
        views.append(
            TargetView(
                name=t.name,
                kind=t.kind,
                routing=t.routing,
                min_serving=settings.min_serving(t),
                rows=trows,
                frozen_by=[o for o in active if o.kind is OverrideKind.FREEZE and o.target in (None, t.name)],
                panic=panic.reason if panic else None,
            )
        )
    return views


def lease_alive(lease: Lease | None, now: datetime) -> bool:
    return lease is not None and lease.alive(now)


def banners(
    settings: Settings,
    cards: list[RegionCard],
    active: list[Override],
    panics: dict[str, Panic],
    lease: Lease | None,
    endpoints: dict[str, EndpointHealth],
    now: datetime,
) -> list[Banner]:
    out: list[Banner] = []
    for target, panic in sorted(panics.items()):
        where = target or "all targets"
        out.append(
            Banner(
                "panic",
                "critical",
                f"Fail-open in {where}: {panic.reason}. Automation keeps every endpoint serving; the prober may be the fault.",
            )
        )
    for o in active:
        if o.kind is OverrideKind.FREEZE:
            until = f" until {o.expires_at:%Y-%m-%d %H:%M} UTC" if o.expires_at else ""
            out.append(Banner("frozen", "warning", f"Automation frozen for {o.target or 'every target'} by {o.who}{until}: {o.why}"))
    stale = [c for c in cards if c.stale]
    if stale:
        limit = int(stale_after(settings))
        names = ", ".join(c.name for c in stale)
        out.append(
            Banner(
                "stale",
                "critical" if len(stale) == len(cards) else "warning",
                f"Stale data: no probe results for more than {limit} s from {names}. Health shown may be out of date; is the prober running?",
            )
        )
    if not lease_alive(lease, now):
        out.append(
            Banner(
                "leader",
                "critical",
                "No leader: no worker holds the lease, so nothing is planned or applied to Azure. Is `regionguard run` running?",
            )
        )
    problems = sorted((e.endpoint_id, e.config_problem) for e in endpoints.values() if e.config_problem)
    for eid, problem in problems:
        out.append(
            Banner(
                "config",
                "critical",
                f"Configuration problem at {eid}: {problem}. This is not a regional outage; fix the credentials, deployment name or request.",
            )
        )
    return out


def overview(settings: Settings, store: Store, now: datetime) -> Overview:
    names = settings.region_names
    endpoints, regions = store.health()
    last = last_probe_at(store, names)
    stats = recent_stats(store, now - STATS_WINDOW)
    start = (now - SPARK_WINDOW).replace(second=0, microsecond=0)
    series = rollup_series(store, names, start, 60)
    active = store.active_overrides(now)
    panics = store.panics()
    lease = store.lease(LeaseName.LEADER)
    cards = [
        _card(
            settings,
            n,
            regions.get(n),
            last.get(n),
            stats.get(n, Stats()),
            charts.sparkline(series.get(n, []), start, now, 60),
            active,
            now,
        )
        for n in names
    ]
    targets = target_views(settings, store.target_endpoints(), active, panics)
    return Overview(
        now=now, cards=cards, targets=targets, banners=banners(settings, cards, active, panics, lease, endpoints, now), leader=lease
    )


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


def region_page(settings: Settings, store: Store, name: str, range_key: str, now: datetime, cache: SeriesCache | None = None) -> RegionPage:
    span, bucket_s = RANGES[range_key]
    _, regions = store.health()
    last = last_probe_at(store, [name])
    stats = recent_stats_for(store, name, now - STATS_WINDOW)
    start = (now - span).replace(second=0, microsecond=0)
    if cache is not None and bucket_s > 60:
        series = cache.series(store, name, start, bucket_s, now)
    else:
        series = rollup_series(store, [name], start, bucket_s)[name]
    active = store.active_overrides(now)
    spark_start = (now - SPARK_WINDOW).replace(second=0, microsecond=0)
    spark_buckets = series if range_key == "1h" else rollup_series(store, [name], spark_start, 60)[name]
    spark = charts.sparkline([b for b in spark_buckets if b.start >= spark_start.timestamp()], spark_start, now, 60)
    card = _card(settings, name, regions.get(name), last.get(name), stats, spark, active, now)
    recent = [o for o in store.overrides(limit=200) if o.region in (None, name) and o.kind is not OverrideKind.FREEZE][:50]
    panics = store.panics()
    targets = [t for t in target_views(settings, store.target_endpoints(), active, panics) if any(r.region == name for r in t.rows)]
    probes = recent_probes(store, name)
    costs = {eid: c for eid, c in estimate_monthly(settings, probes).items() if eid.startswith(name + "/")}
    return RegionPage(
        card=card,
        range_key=range_key,
        charts=charts.region_charts(series, start, now, bucket_s),
        probes=probes,
        transitions=store.transitions(region=name, limit=50),
        overrides=recent,
        active_ids={o.id for o in active if o.id is not None},
        targets=targets,
        costs=costs,
    )


def recent_stats_for(store: Store, region: str, since: datetime) -> Stats:
    t = ProbeResultRow.__table__
    q = select(t.c.outcome, t.c.ttft_ms).where(t.c.region == region, t.c.started_at >= since)
    with store.engine.connect() as conn:
        rows = list(conn.execute(q))
    if not rows:
        return Stats()
    ok = sum(1 for o, _ in rows if o in _SUCCESS)
    ttfts = sorted(x for _, x in rows if x is not None)
    return Stats(probes=len(rows), success_pct=100.0 * ok / len(rows), ttft_p50=percentile(ttfts, 0.5), ttft_p95=percentile(ttfts, 0.95))


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


_OWN_TABLES = {"transition", "plan", "change", "override"}


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
                    detail="; ".join(f"{c.target}/{c.region} {_what(c.field, c.actual, c.desired)} ({c.reason})" for c in changes)
                    or "no changes",
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
