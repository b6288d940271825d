"""The hourly rollups: every hour row is the sum of its minutes, and a chart of whole hours read from them is the chart
the per-minute rollups give, on SQLite and PostgreSQL.

The region page's 7-day chart summed every per-minute rollup of its region over the week (about 151,000 rows at
3 vantages x 100 endpoints, 262-271 ms on PostgreSQL on each cache miss). Buckets of whole hours now come from
``probe_rollup_hour`` and only the minutes before the first whole hour from ``probe_rollup``. The oracle here is the
per-minute definition in Python, over the per-minute rows stored: random probe results around several hour edges,
rolled up by random windows (as the worker's ticks and re-runs do), some purged by retention at a random horizon,
then every bucket size that is a whole number of hours from a random start.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select, text

from controlplane.domain import Outcome, ProbeResult
from controlplane.store import Store, db, open_store, queries
from controlplane.store.models import ProbeResultRow, ProbeRollupHourRow, ProbeRollupRow, table
from controlplane.store.records import Bucket, Rollup

T0 = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
ENDPOINTS = {"eastus/gpt-4o": "eastus", "eastus/mini": "eastus", "westeurope/gpt-4o": "westeurope"}
REGIONS = ["eastus", "westeurope"]
LATENCIES = ("ttft_p50", "ttft_p95", "total_p50", "total_p95")
PROPS = settings(
    max_examples=30,
    deadline=None,
    derandomize=os.environ.get("CI") == "true",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],  # each example empties the tables first
)

MICRO = timedelta(microseconds=1)
# on an hour, a microsecond and a minute either side of it, for the hours around T0
EDGES = [T0 + h * HOUR + d for h in range(-2, 3) for d in (timedelta(0), MICRO, -MICRO, timedelta(minutes=1), -timedelta(minutes=1))]
instants = st.one_of(st.sampled_from(EDGES), st.integers(-2 * 3600, 3 * 3600).map(lambda s: T0 + timedelta(seconds=s)))
milliseconds = st.one_of(st.none(), st.sampled_from([120.0, 150.0, 0.0]), st.floats(0.0, 60_000.0, allow_nan=False))


@st.composite
def probe_results(draw: Any) -> ProbeResult:
    eid = draw(st.sampled_from(sorted(ENDPOINTS)))
    at = draw(instants)
    return ProbeResult(
        eid, ENDPOINTS[eid], draw(st.sampled_from(("eu", "us"))), at, draw(st.sampled_from(list(Outcome))), ttft_ms=draw(milliseconds), total_ms=draw(milliseconds)
    )  # fmt: skip


windows = st.tuples(instants, st.timedeltas(MICRO, timedelta(hours=3)))


def _reset(store: Store) -> None:
    with store.session() as s:
        for row in (ProbeResultRow, ProbeRollupRow, ProbeRollupHourRow):
            s.execute(delete(row))


def _minutes(store: Store) -> list[Rollup]:
    return store.rollups(T0 - timedelta(days=1))


def minute_buckets(minutes: list[Rollup], regions: list[str], since: datetime, bucket_s: int) -> dict[str, list[Bucket]]:
    """The per-minute definition: per region and bucket of ``bucket_s`` seconds from ``since``, counts summed and each
    latency the average of the minutes that have one."""
    groups: dict[tuple[str, int], list[Rollup]] = defaultdict(list)
    for m in minutes:
        if m.region in regions and m.minute_at >= since:
            groups[(m.region, int(m.minute_at.timestamp()) // bucket_s)].append(m)

    def average(ms: list[Rollup], name: str) -> float | None:
        values = [v for m in ms if (v := getattr(m, f"{name}_ms")) is not None]
        return math.fsum(values) / len(values) if values else None

    out: dict[str, list[Bucket]] = {r: [] for r in regions}
    for (region, b), ms in sorted(groups.items()):
        out[region].append(
            Bucket(
                b * bucket_s,
                sum(m.count for m in ms),
                sum(m.ok for m in ms),
                sum(m.throttled for m in ms),
                sum(m.failed for m in ms),
                *(average(ms, name) for name in LATENCIES),
            )
        )
    return out


def _same(got: dict[str, list[Bucket]], expected: dict[str, list[Bucket]]) -> None:
    """Equal bucket for bucket: counts exactly, averages up to float rounding (a sum in another order)."""
    assert {r: [b.start for b in bs] for r, bs in got.items()} == {r: [b.start for b in bs] for r, bs in expected.items()}
    for region, buckets in got.items():
        for g, e in zip(buckets, expected[region], strict=True):
            assert (g.count, g.ok, g.throttled, g.failed) == (e.count, e.ok, e.throttled, e.failed), (region, g, e)
            for name in ("ttft_p50", "ttft_p95", "total_p50", "total_p95"):
                a, b = getattr(g, name), getattr(e, name)
                assert (a is None) == (b is None) and (a is None or math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-9)), (region, name, g, e)


def _hours_are_their_minutes(store: Store) -> None:
    expected: dict[tuple[Any, ...], list[Any]] = {}
    for m in _minutes(store):
        key = (m.endpoint_id, m.vantage, m.minute_at.replace(minute=0), m.region)
        acc = expected.setdefault(key, [0, 0, 0, 0] + [v for _ in LATENCIES for v in (None, 0)])
        for i, v in enumerate((m.count, m.ok, m.throttled, m.failed)):
            acc[i] += v
        for j, name in enumerate(LATENCIES):
            if (v := getattr(m, f"{name}_ms")) is not None:
                acc[4 + 2 * j] = (acc[4 + 2 * j] or 0.0) + v
                acc[5 + 2 * j] += 1
    h = table(ProbeRollupHourRow).c
    with store.session() as s:
        stored = {(r.endpoint_id, r.vantage, r.hour_at, r.region): list(r[4:]) for r in s.execute(select(h))}
    assert stored.keys() == expected.keys()
    for key, values in stored.items():
        want = expected[key]
        assert values[:4] == want[:4] and values[5::2] == want[5::2], key
        assert all(
            (a is None) == (b is None) and (a is None or math.isclose(a, b, rel_tol=1e-12))
            for a, b in zip(values[4::2], want[4::2], strict=True)
        ), key


@PROPS
@given(
    results=st.lists(probe_results(), max_size=60),
    ticks=st.lists(windows, min_size=1, max_size=4),
    horizon=st.one_of(st.none(), instants),
    since=instants,
    bucket_s=st.sampled_from([3600, 7200, 86400]),
)
def test_a_chart_of_whole_hours_from_the_hourly_rollups_is_the_per_minute_chart(
    db_store: Store,
    results: list[ProbeResult],
    ticks: list[tuple[datetime, timedelta]],
    horizon: datetime | None,
    since: datetime,
    bucket_s: int,
) -> None:
    _reset(db_store)
    db_store.add_probe_results(results)
    for start, length in ticks:
        db_store.rollup(start, start + length)
    if horizon is not None:
        db_store.purge(raw_before=T0 - timedelta(days=1), rollup_before=horizon, batch=7, pace=0)

    _hours_are_their_minutes(db_store)
    expected = minute_buckets(_minutes(db_store), REGIONS, since, bucket_s)
    _same(queries.rollup_series(db_store, REGIONS, since, bucket_s), expected)
    _same(queries.rollup_series(db_store, REGIONS, since, bucket_s, hourly=False), expected)


def test_minutes_rolled_up_without_the_hourly_table_are_summed_by_the_next_rollup(db_store: Store) -> None:
    """Migration 0010 fills the hours from the minutes kept; an application that predates it may roll up more minutes
    before it is replaced (those of the hour it was in, and of the next ones). The new application's first rollup
    sums every hour from the newest one summed, not only the hours of its own window."""
    results = [
        ProbeResult("eastus/gpt-4o", "eastus", "eu", T0 + timedelta(minutes=m), Outcome.OK, ttft_ms=100.0 + m) for m in range(0, 200, 5)
    ]
    db_store.add_probe_results(results)
    db_store.rollup(T0, T0 + timedelta(minutes=30))  # summed into the hour at T0
    with db_store.session() as s:  # the former application: minutes of that hour and of the next two, no hours
        s.execute(
            table(ProbeRollupRow).insert(),
            [
                dict(endpoint_id="eastus/gpt-4o", vantage="eu", minute_at=T0 + timedelta(minutes=m), region="eastus", count=1, ok=1, throttled=0, failed=0, ttft_p50_ms=7.0, tokens=0)
                for m in (31, 62, 125)
            ],
        )  # fmt: skip
    db_store.rollup(T0 + timedelta(minutes=178), T0 + timedelta(minutes=181))
    _hours_are_their_minutes(db_store)
    _same(queries.rollup_series(db_store, ["eastus"], T0, 3600), minute_buckets(_minutes(db_store), ["eastus"], T0, 3600))


def test_the_rollup_sums_only_the_hours_its_minutes_are_in(db_store: Store) -> None:
    """At a tick the rollup rewrites the last minutes and sums their hour again, reading that hour's minutes, not
    the older hours'."""
    db_store.add_probe_results(
        [ProbeResult("eastus/gpt-4o", "eastus", "eu", T0 + timedelta(minutes=m), Outcome.OK) for m in range(-180, 60)]
    )
    db_store.rollup(T0 - 3 * HOUR, T0 + HOUR)
    with db_store.session() as s:
        s.execute(text("UPDATE probe_rollup SET count = 50 WHERE minute_at < :at"), {"at": T0})  # hours the tick must not touch
    db_store.rollup(T0 + timedelta(minutes=30), T0 + timedelta(minutes=33))
    series = queries.rollup_series(db_store, ["eastus"], T0 - 3 * HOUR, 3600)["eastus"]
    assert [b.count for b in series] == [60, 60, 60, 60]


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_migration_0010_sums_the_hours_of_every_rollup_kept(request: pytest.FixtureRequest, database: str) -> None:
    url = request.getfixturevalue("sqlite_url" if database == "sqlite" else "postgres_url")
    db.upgrade(url, "0009")
    engine = db.make_engine(url)
    minutes = [(eid, v, T0 + timedelta(minutes=m)) for eid in ENDPOINTS for v in ("eu", "us") for m in range(-70, 130, 7)]
    try:
        with engine.begin() as conn:
            conn.execute(
                table(ProbeRollupRow).insert(),
                [
                    dict(endpoint_id=eid, vantage=v, minute_at=at, region=ENDPOINTS[eid], count=6, ok=5, throttled=at.minute % 2, failed=0, tokens=0,
                         ttft_p50_ms=None if at.minute % 3 else 100.5 + at.minute, ttft_p95_ms=200.25, total_p50_ms=None, total_p95_ms=at.minute * 1.5)
                    for eid, v, at in minutes
                ],
            )  # fmt: skip
    finally:
        engine.dispose()
    db.upgrade(url)
    store = open_store(url)
    try:
        _hours_are_their_minutes(store)
        with store.session() as s:
            assert s.scalar(select(func.count()).select_from(ProbeRollupHourRow)) == len(ENDPOINTS) * 2 * 5  # 10:50 to 14:08
    finally:
        store.close()
