"""The per-minute rollups, computed in SQL, are the ones the Python definition gives.

``Store.rollup`` used to read every raw result of its window into Python (the
worker calls it every 15 s for the last 3 minutes: thousands of rows at scale,
a burst of memory the allocator keeps) and group them there. Now it is a
DELETE of the window and one INSERT ... SELECT. That Python computation is
kept here as the oracle, and random results (every outcome, NULLs, ties,
several endpoints, vantages and minutes, times at the window's and the
minutes' edges) must give the same rows on SQLite and on PostgreSQL; re-running
a window replaces its rows and touches nothing outside it.
"""

from __future__ import annotations

import os
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select

from controlplane.domain import Outcome, ProbeResult
from controlplane.stats import percentile
from controlplane.store import Store
from controlplane.store.models import ProbeResultRow, ProbeRollupRow, table
from controlplane.store.records import Rollup
from tests.statements import statements_run

T0 = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
ENDPOINTS = {"eastus/gpt-4o": "eastus", "eastus/mini": "eastus", "westeurope/gpt-4o": "westeurope"}
VANTAGES = ("eu", "us", "asia")
FAILED = {o for o in Outcome} - {Outcome.OK, Outcome.THROTTLED}
# In CI (CI=true) the same examples every run, as in tests/unit/test_engine_properties.py.
PROPS = settings(
    max_examples=40,
    deadline=None,
    derandomize=os.environ.get("CI") == "true",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],  # each example empties the tables first
)


def python_rollup(results: list[ProbeResult]) -> dict[tuple[str, str, datetime], Rollup]:
    """The former ``Store.rollup``, on the results it read (``results_between(start, until)``, in start then id order)."""
    groups: dict[tuple[str, str, datetime], list[ProbeResult]] = defaultdict(list)
    for r in results:
        groups[(r.endpoint_id, r.vantage, r.started_at.replace(second=0, microsecond=0))].append(r)
    out = {}
    for (eid, vantage, minute), rs in groups.items():
        ttft = sorted(r.ttft_ms for r in rs if r.ttft_ms is not None)
        total = sorted(r.total_ms for r in rs if r.total_ms is not None and r.outcome in (Outcome.OK, Outcome.SLOW))
        out[(eid, vantage, minute)] = Rollup(
            endpoint_id=eid,
            vantage=vantage,
            minute_at=minute,
            region=rs[0].region,
            count=len(rs),
            ok=sum(r.outcome is Outcome.OK for r in rs),
            throttled=sum(r.outcome is Outcome.THROTTLED for r in rs),
            failed=sum(r.outcome in FAILED for r in rs),
            ttft_p50_ms=percentile(ttft, 0.5),
            ttft_p95_ms=percentile(ttft, 0.95),
            total_p50_ms=percentile(total, 0.5),
            total_p95_ms=percentile(total, 0.95),
            tokens=sum((r.prompt_tokens or 0) + (r.completion_tokens or 0) for r in rs),
        )
    return out


MICRO = timedelta(microseconds=1)
# instants around T0's minutes: on a minute, a microsecond either side, the last half millisecond before it
EDGES = [T0 + timedelta(minutes=m) + d for m in range(-2, 6) for d in (timedelta(0), MICRO, -MICRO, -400 * MICRO, timedelta(seconds=30))]
instants = st.one_of(
    st.sampled_from(EDGES),
    st.integers(-150_000_000, 330_000_000).map(lambda us: T0 + timedelta(microseconds=us)),
)
milliseconds = st.one_of(st.none(), st.sampled_from([120.0, 150.0, 150.0, 0.0]), st.floats(0.0, 60_000.0, allow_nan=False))
tokens = st.one_of(st.none(), st.integers(0, 5_000))


@st.composite
def probe_results(draw: Any) -> ProbeResult:
    eid = draw(st.sampled_from(sorted(ENDPOINTS)))
    return ProbeResult(
        eid,
        ENDPOINTS[eid],
        draw(st.sampled_from(VANTAGES)),
        draw(instants),
        draw(st.sampled_from(list(Outcome))),
        ttft_ms=draw(milliseconds),
        total_ms=draw(milliseconds),
        prompt_tokens=draw(tokens),
        completion_tokens=draw(tokens),
    )


@st.composite
def stale_rollups(draw: Any) -> list[dict[str, Any]]:
    """Rollup rows already stored, inside the window and out (what a former run or another window left)."""
    keys = draw(
        st.lists(
            st.tuples(st.sampled_from(sorted(ENDPOINTS)), st.sampled_from(VANTAGES), st.integers(-4, 7)),
            unique=True,
            max_size=12,
        )
    )
    return [
        dict(
            endpoint_id=eid,
            vantage=v,
            minute_at=T0 + timedelta(minutes=m),
            region=ENDPOINTS[eid],
            count=99,
            ok=1,
            throttled=2,
            failed=3,
            ttft_p50_ms=None,
            ttft_p95_ms=7.5,
            total_p50_ms=8.5,
            total_p95_ms=None,
            tokens=42,
        )
        for eid, v, m in keys
    ]


def _reset(store: Store) -> None:
    with store.session() as s:
        s.execute(delete(ProbeResultRow))
        s.execute(delete(ProbeRollupRow))


def _stored(store: Store) -> dict[tuple[str, str, datetime], Rollup]:
    return {(r.endpoint_id, r.vantage, r.minute_at): r for r in store.rollups(T0 - timedelta(days=1))}


@PROPS
@given(
    results=st.lists(probe_results(), max_size=90),
    stale=stale_rollups(),
    since=st.one_of(st.sampled_from(EDGES), st.integers(-60_000_000, 200_000_000).map(lambda us: T0 + timedelta(microseconds=us))),
    length=st.one_of(
        st.sampled_from([timedelta(minutes=3, seconds=1), timedelta(minutes=1), MICRO]), st.timedeltas(MICRO, timedelta(minutes=5))
    ),
)
def test_the_sql_rollup_gives_the_python_rows_and_replaces_only_its_window(
    db_store: Store, results: list[ProbeResult], stale: list[dict[str, Any]], since: datetime, length: timedelta
) -> None:
    _reset(db_store)
    db_store.add_probe_results(results)
    if stale:
        with db_store.session() as s:
            s.execute(table(ProbeRollupRow).insert(), stale)
    before = _stored(db_store)
    until = since + length
    start = since.replace(second=0, microsecond=0)
    expected = python_rollup(db_store.results_between(start, until))

    assert db_store.rollup(since, until) == len(expected)

    kept = {k: r for k, r in before.items() if not start <= k[2] < until}
    assert _stored(db_store) == {**kept, **expected}
    with db_store.session() as s:  # each minute is stored as a bound datetime is: found by equality, not only parsed back
        for minute in {k[2] for k in expected}:
            found = s.scalar(select(func.count()).select_from(ProbeRollupRow).where(ProbeRollupRow.minute_at == minute))
            assert found == sum(1 for k in {**kept, **expected} if k[2] == minute)


def test_a_window_rerun_after_more_results_replaces_its_rows(db_store: Store) -> None:
    first = [ProbeResult("eastus/gpt-4o", "eastus", "eu", T0 + timedelta(seconds=10 * i), Outcome.OK, ttft_ms=100.0 + i) for i in range(12)]
    db_store.add_probe_results(first)
    assert db_store.rollup(T0, T0 + timedelta(minutes=2)) == 2
    late = ProbeResult("eastus/gpt-4o", "eastus", "eu", T0 + timedelta(seconds=5), Outcome.TIMEOUT)
    db_store.add_probe_results([late])
    assert db_store.rollup(T0 + timedelta(seconds=30), T0 + timedelta(minutes=1)) == 1  # the whole first minute again, not the second
    rows = db_store.rollups(T0)
    assert [(r.minute_at, r.count, r.failed, r.ttft_p50_ms) for r in rows] == [
        (T0, 7, 1, 102.0),
        (T0 + timedelta(minutes=1), 6, 0, 108.0),
    ]


def test_the_rollup_is_a_delete_and_an_insert_select_per_table_with_no_raw_row_read_into_python(db_store: Store) -> None:
    db_store.add_probe_results(
        [ProbeResult(eid, region, v, T0 + timedelta(seconds=7 * i), Outcome.OK, ttft_ms=90.0) for eid, region in ENDPOINTS.items() for v in VANTAGES for i in range(20)]
    )  # fmt: skip
    with statements_run(db_store.engine) as seen:
        assert db_store.rollup(T0, T0 + timedelta(minutes=3)) == 3 * 3 * 3
    tables = [s for s in seen if "probe_result" in s or "probe_rollup" in s]
    assert len(tables) == 5, tables
    assert tables[0].lstrip().startswith("DELETE FROM probe_rollup ")
    assert "INSERT INTO probe_rollup " in tables[1] and "FROM probe_result" in tables[1]
    # then the hours of those minutes, from the newest hour summed: the same again, per hour from the minutes
    assert tables[2].lstrip().startswith("SELECT max(probe_rollup_hour.hour_at)")
    assert tables[3].lstrip().startswith("DELETE FROM probe_rollup_hour ")
    assert "INSERT INTO probe_rollup_hour " in tables[4] and "FROM probe_rollup " in tables[4]
