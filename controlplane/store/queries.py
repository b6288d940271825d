"""The dashboard's read queries, behind the store: typed values out, SQL (and its dialects) in here.

They must stay fast with a week of raw probe results (millions of rows), so
none scans raw results over long ranges: last-probe times are per-region
``MAX(started_at)`` lookups on the (region, started_at) index, 5-minute
figures and the vantage grid read one short index range and are aggregated
in SQL (only a row per region or cell comes back; the percentiles are
:mod:`controlplane.store.aggregates`'), series come from the per-minute
rollups, or for buckets of whole hours from the hourly ones, aggregated in
SQL (with ``aggregates``, where SQLite's SQL and PostgreSQL's differ).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Float, Integer, Select, any_, bindparam, case, cast, func, literal_column, null, select, union_all
from sqlalchemy.dialects.postgresql import ARRAY

from controlplane.domain import ChangeOrigin, ChangeStatus, EventKind, Field, HealthStateName, Outcome, ProbeResult, Transition
from controlplane.incidents import BAD, EVIDENCE_LOOKBACK, Incident, build
from controlplane.store.aggregates import count_where, grouped
from controlplane.store.models import ChangeRow, HealthTransitionRow, ProbeResultRow, ProbeRollupHourRow, ProbeRollupRow, table
from controlplane.store.records import Bucket, ChangeRecord, RegionStats
from controlplane.store.repo import LATENCIES, Store, _to_probe, ceil_hour


@dataclass(frozen=True, slots=True)
class VantageCell:
    """What one vantage saw of one endpoint over a short window."""

    last_outcome: str
    last_at: datetime
    ok: int
    total: int

    @property
    def state(self) -> str:
        """healthy (all ok), degraded (some ok), unhealthy (none ok)."""
        if self.ok == self.total:
            return "healthy"
        return "degraded" if self.ok else "unhealthy"


def _region_stats_query(since: datetime, region: str | None, dialect: str) -> Any:
    """(region, probes, ok, ttft p50, ttft p95) per region over [since, now), aggregated in the database.

    The percentiles are :func:`controlplane.stats.percentile`'s nearest rank on
    both dialects (:func:`controlplane.store.aggregates.grouped`; on PostgreSQL
    both figures share one sort per region).
    """
    t = table(ProbeResultRow)
    where = [t.c.started_at >= since, *([t.c.region == region] if region is not None else [])]
    rows = select(t.c.region, t.c.outcome, t.c.ttft_ms).where(*where)
    return grouped(
        rows,
        keys=("region",),
        columns=lambda c: (func.count(), count_where(c.outcome == Outcome.OK.value)),
        percentiles=(("ttft_ms", 0.5), ("ttft_ms", 0.95)),
        dialect=dialect,
    )


def region_stats(store: Store, since: datetime, region: str | None = None) -> dict[str, RegionStats]:
    """Per region over [since, now): probe count, success %, TTFT p50/p95 (one short index range, aggregated in SQL)."""
    q = _region_stats_query(since, region, store.engine.dialect.name)
    with store.connect() as conn:
        return {
            name: RegionStats(probes=int(n), success_pct=100.0 * int(ok) / int(n), ttft_p50=p50, ttft_p95=p95)
            for name, n, ok, p50, p95 in conn.execute(q)
        }


def _bucket_expr(store: Store, col: Any, seconds: int) -> Any:
    if store.engine.dialect.name == "sqlite":
        return cast(func.strftime("%s", col), Integer) // seconds  # integer division: one group per bucket
    return func.floor(func.date_part("epoch", col) / seconds)  # double precision; EXTRACT's numeric is slower per row


def _minute_rows(regions: list[str], since: datetime, until: datetime | None) -> Select[Any]:
    """The per-minute rollups of ``regions`` in [since, until), in the hourly rollups' columns (a latency's sum is the
    minute's value, its count 1 if it has one)."""
    t = table(ProbeRollupRow).c
    latencies = [
        c
        for name in LATENCIES
        for c in (t[f"{name}_ms"].label(f"{name}_sum"), case((t[f"{name}_ms"].is_(None), 0), else_=1).label(f"{name}_n"))
    ]
    q = select(t.region, t.minute_at.label("at"), t.count, t.ok, t.throttled, t.failed, *latencies)
    return q.where(t.region.in_(regions), t.minute_at >= since, *([t.minute_at < until] if until is not None else []))


def _hour_rows(regions: list[str], since: datetime) -> Select[Any]:
    h = table(ProbeRollupHourRow).c
    latencies = [h[f"{name}_{part}"] for name in LATENCIES for part in ("sum", "n")]
    return select(h.region, h.hour_at.label("at"), h.count, h.ok, h.throttled, h.failed, *latencies).where(
        h.region.in_(regions), h.hour_at >= since
    )


def rollup_series(store: Store, regions: list[str], since: datetime, bucket_s: int, hourly: bool = True) -> dict[str, list[Bucket]]:
    """Per region, buckets of ``bucket_s`` seconds from the rollups, aggregated in SQL: counts summed, each latency the
    average of the minutes that have one.

    Buckets of whole hours (``bucket_s`` a multiple of 3600) are summed from the hourly rollups, and only the minutes
    before the first whole hour from the per-minute ones: a 7-day chart reads 1/60 of the rows, and each hour row is
    exactly the sum of its minutes (``Store.rollup`` keeps it so), so the buckets are the per-minute ones (the latency
    averages up to float rounding). ``hourly=False`` sums the per-minute rollups alone, as every bucket was before
    migration 0010 (the tests' and the scale bench's reference).
    """
    head_end = ceil_hour(since)
    if hourly and bucket_s % 3600 == 0:
        hours = _hour_rows(regions, head_end)
        rows = union_all(_minute_rows(regions, since, head_end), hours).subquery() if since < head_end else hours.subquery()
    else:
        rows = _minute_rows(regions, since, None).subquery()
    r = rows.c
    bucket = _bucket_expr(store, r.at, bucket_s).label("bucket")
    averages = [cast(func.sum(r[f"{name}_sum"]), Float) / func.nullif(func.sum(r[f"{name}_n"]), 0) for name in LATENCIES]
    q = (
        select(r.region, bucket, func.sum(r.count), func.sum(r.ok), func.sum(r.throttled), func.sum(r.failed), *averages)
        .group_by(r.region, literal_column("bucket"))
        .order_by(r.region, literal_column("bucket"))
    )
    out: dict[str, list[Bucket]] = {r: [] for r in regions}
    with store.connect() as conn:
        for region, b, count, ok, throttled, failed, t50, t95, tot50, tot95 in conn.execute(q):
            out[region].append(
                Bucket(
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


def recent_probes(store: Store, region: str, limit: int = 50) -> list[ProbeResult]:
    """The newest probe results of a region, newest first, read from the (region, started_at) index.

    On PostgreSQL ``region = ANY(ARRAY[region])`` and ordering by the region too: with ``region = :region``
    the planner took the region as settled and walked ``ix_probe_result_started`` backwards (rows stored in
    time order make it look cheap), reading every newer row of every other region until it had ``limit`` of
    this one: the page of a region whose probes stopped an hour ago read an hour of the whole deployment, and
    in the scale bench the page read got slower with every row its writer stored (82,794 rows, 107 ms). An
    array is no settled value, so only the region's own index gives that order.
    """
    r = ProbeResultRow
    in_region = r.region == region
    if store.engine.dialect.name == "postgresql":
        in_region = r.region == any_(bindparam("regions", [region], type_=ARRAY(r.region.type)))
    with store.session() as s:
        q = select(r).where(in_region).order_by(r.region.desc(), r.started_at.desc()).limit(limit)
        return [_to_probe(row) for row in s.scalars(q)]


def _vantages_seen_query(since: datetime) -> Select[Any]:
    t = table(ProbeResultRow)
    return select(t.c.vantage, func.max(t.c.started_at)).where(t.c.started_at >= since).group_by(t.c.vantage)


def vantages_seen(store: Store, since: datetime) -> dict[str, datetime]:
    """Vantage -> its newest probe result at or after ``since`` (one short index range)."""
    with store.connect() as conn:
        return {v: _aware(at) for v, at in conn.execute(_vantages_seen_query(since))}


def vantage_cells(store: Store, since: datetime) -> dict[tuple[str, str], VantageCell]:
    """(endpoint id, vantage) -> what that vantage saw of that endpoint since ``since``: last outcome, ok of total.

    Aggregated in SQL, one row per cell: the last outcome is the newest row's
    (by start, then id) through a window function, portable to both databases.
    """
    with store.connect() as conn:
        return {
            (endpoint, vantage): VantageCell(last_outcome=last, last_at=_aware(at), ok=int(ok), total=int(n))
            for endpoint, vantage, last, at, ok, n in conn.execute(_vantage_cells_query(since))
        }


def _vantage_cells_query(since: datetime) -> Select[Any]:
    t = table(ProbeResultRow)
    newest_first = (t.c.started_at.desc(), t.c.id.desc())
    ranked = (
        select(
            t.c.endpoint_id,
            t.c.vantage,
            t.c.outcome,
            t.c.started_at,
            func.row_number().over(partition_by=(t.c.endpoint_id, t.c.vantage), order_by=newest_first).label("rn"),
        )
        .where(t.c.started_at >= since)
        .subquery()
    )
    r = ranked.c
    q = select(
        r.endpoint_id,
        r.vantage,
        func.max(case((r.rn == 1, r.outcome))),
        func.max(r.started_at),
        count_where(r.outcome == Outcome.OK.value),
        func.count(),
    ).group_by(r.endpoint_id, r.vantage)
    return q


def incidents(store: Store, since: datetime, targets_of: Mapping[str, set[str]], region: str | None = None) -> list[Incident]:
    """Every incident that started at or after ``since`` (newest first), from transitions, changes, overrides and panics.

    A handful of range reads on the ``at``/``created_at`` indexes; the grouping is
    :func:`controlplane.incidents.build`. Evidence is read from a little before ``since``.
    """
    th = table(HealthTransitionRow)
    cols = (th.c.subject, th.c.key, th.c.vantage, th.c.old, th.c.new, th.c.reason, th.c.at, th.c.evidence)
    q = select(*cols).where(th.c.at >= since - EVIDENCE_LOOKBACK).order_by(th.c.at, th.c.id)
    if region is not None:
        q = q.where(th.c.region == region)
    regions: list[Transition] = []
    endpoints: list[Transition] = []
    with store.connect() as conn:
        for subject, key, vantage, old, new, reason, at, evidence in conn.execute(q):
            t = Transition(subject, key, HealthStateName(old), HealthStateName(new), reason, _aware(at), vantage, tuple(evidence or ()))
            if subject == "region":
                if t.at >= since:
                    regions.append(t)
            elif t.new in BAD or t.at >= since:
                endpoints.append(t)
    ch = table(ChangeRow)
    names = [f.name for f in fields(ChangeRecord)]
    cq = select(*(ch.c[n] for n in names)).where(ch.c.created_at >= since).order_by(ch.c.created_at, ch.c.id)
    if region is not None:
        cq = cq.where(ch.c.region == region)
    changes: list[ChangeRecord] = []
    with store.connect() as conn:  # Core rows, not ORM objects: a month of changes is thousands of rows
        for row in conn.execute(cq):
            v = dict(zip(names, row, strict=True))
            v.update(
                created_at=_aware(v["created_at"]),
                finished_at=_aware(v["finished_at"]) if v["finished_at"] else None,
                field=Field(v["field"]),
                origin=ChangeOrigin(v["origin"]),
                status=ChangeStatus(v["status"]),
            )
            changes.append(ChangeRecord(**v))
    overrides = store.overrides(since=since, limit=100_000)
    panics = store.events(since=since, kinds=[EventKind.PANIC], limit=100_000)
    return build(regions, endpoints, changes, overrides, panics, targets_of)


@dataclass(frozen=True, slots=True)
class Recent:
    """The overview's three figures of the last minutes of raw results, read together."""

    stats: dict[str, RegionStats]  # region_stats(stats_since)
    seen: dict[str, datetime]  # vantages_seen(seen_since)
    cells: dict[tuple[str, str], VantageCell]  # vantage_cells(cells_since)


def recent(store: Store, stats_since: datetime, seen_since: datetime, cells_since: datetime) -> Recent:
    """:func:`region_stats`, :func:`vantages_seen` and :func:`vantage_cells` in one statement, value for value.

    The three queries as they are, each on its own short index range of the
    raw results, come back as one UNION ALL, each row tagged with the figure it
    belongs to, in a common set of columns (NULL where a figure has none): one
    round trip and one statement instead of three. (Reading the rows of the
    widest window once, in a materialized WITH, was slower on both databases:
    the grouping and the grid's window function then sort rows that the indexes
    give in order.)
    """
    t = table(ProbeResultRow)
    text_, at_, int_, float_ = t.c.vantage.type, t.c.started_at.type, t.c.id.type, t.c.ttft_ms.type

    def none(type_: Any) -> Any:
        return cast(null(), type_)

    stats = list(_region_stats_query(stats_since, None, store.engine.dialect.name).subquery("stats").c)
    seen = list(_vantages_seen_query(seen_since).subquery("seen").c)
    cells = list(_vantage_cells_query(cells_since).subquery("cells").c)
    # kind, key, second key, outcome, at, ok, n, p50, p95
    q = union_all(
        select(literal_column("0", Integer), stats[0], none(text_), none(text_), none(at_), stats[2], stats[1], stats[3], stats[4]),
        select(
            literal_column("1", Integer), seen[0], none(text_), none(text_), seen[1], none(int_), none(int_), none(float_), none(float_)
        ),
        select(literal_column("2", Integer), *cells[:4], cells[4], cells[5], none(float_), none(float_)),
    )
    out = Recent({}, {}, {})
    with store.connect() as conn:
        for kind, key, key2, outcome, at, ok, n, p50, p95 in conn.execute(q):
            if kind == 0:
                out.stats[key] = RegionStats(probes=int(n), success_pct=100.0 * int(ok) / int(n), ttft_p50=p50, ttft_p95=p95)
            elif kind == 1:
                out.seen[key] = _aware(at)
            else:
                out.cells[(key, key2)] = VantageCell(last_outcome=outcome, last_at=_aware(at), ok=int(ok), total=int(n))
    return out


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


__all__ = [
    "Recent",
    "VantageCell",
    "incidents",
    "recent",
    "recent_probes",
    "region_stats",
    "rollup_series",
    "vantage_cells",
    "vantages_seen",
]
