"""The dashboard's 5-minute figures, aggregated in SQL, give the numbers the Python definition gives.

``region_stats`` used to read every raw row of the window into Python and
take :func:`controlplane.stats.percentile` (nearest rank). Now PostgreSQL
aggregates with ``percentile_disc`` and SQLite with a window-function rank;
both must agree with that definition value for value, on every count from 1
up (where ``ceil(q * n)`` turns), with ties and with results that have no
TTFT (throttled, failed).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from controlplane.domain import Outcome, ProbeResult
from controlplane.stats import percentile
from controlplane.store import RegionStats, Store, open_store, queries

T0 = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
SINCE = T0 - timedelta(minutes=5)


def _results(regions: int = 45, seed: int = 11) -> list[ProbeResult]:
    """Region k has k + 1 results in the window (so n runs 1..regions), ties, some without a TTFT; one region has none."""
    rng = random.Random(seed)
    out = []
    for k in range(regions):
        region = f"r{k:03d}"
        for _ in range(k + 1):
            at = SINCE + timedelta(seconds=rng.uniform(0, 299))
            roll = rng.random()
            if roll < 0.15:
                out.append(ProbeResult(f"{region}/a", region, "v1", at, Outcome.THROTTLED, status_code=429))
            elif roll < 0.2:
                out.append(ProbeResult(f"{region}/a", region, "v2", at, Outcome.SERVER_ERROR, status_code=503))
            else:
                ttft = float(rng.choice([120, 150, 150, 200])) if roll < 0.4 else rng.uniform(50, 900)  # ties, and plain floats
                out.append(ProbeResult(f"{region}/a", region, "v1", at, Outcome.OK, status_code=200, ttft_ms=ttft, total_ms=ttft + 300))
        # outside the window: must not count
        out.append(ProbeResult(f"{region}/a", region, "v1", SINCE - timedelta(seconds=1), Outcome.OK, ttft_ms=1.0, total_ms=2.0))
    for i in range(3):  # a region where nothing answered: no TTFT at all
        out.append(ProbeResult("quota/a", "quota", "v1", SINCE + timedelta(seconds=i), Outcome.THROTTLED, status_code=429))
    return out


def _python_path(results: list[ProbeResult], since: datetime) -> dict[str, RegionStats]:
    """The old path: every raw row of the window into Python, nearest-rank percentiles there."""
    per: dict[str, tuple[list[str], list[float]]] = {}
    for r in results:
        if r.started_at < since:
            continue
        outcomes, ttfts = per.setdefault(r.region, ([], []))
        outcomes.append(r.outcome.value)
        if r.ttft_ms is not None:
            ttfts.append(r.ttft_ms)
    out = {}
    for name, (outcomes, ttfts) in per.items():
        ttfts.sort()
        ok = sum(1 for o in outcomes if o == Outcome.OK.value)
        out[name] = RegionStats(len(outcomes), 100.0 * ok / len(outcomes), percentile(ttfts, 0.5), percentile(ttfts, 0.95))
    return out


def test_the_five_minute_figures_match_the_nearest_rank_definition_exactly(db_store: Store) -> None:
    results = _results()
    db_store.add_probe_results(results)
    expected = _python_path(results, SINCE)
    assert len(expected) == 46 and expected["quota"] == RegionStats(3, 0.0, None, None)
    assert queries.region_stats(db_store, SINCE) == expected
    assert queries.region_stats(db_store, SINCE, region="r020") == {"r020": expected["r020"]}
    assert queries.region_stats(db_store, T0 + timedelta(minutes=1)) == {}


def test_sqlite_and_postgres_give_the_same_figures_for_the_same_data(sqlite_url: str, postgres_url: str) -> None:
    results = _results(regions=60, seed=23)
    figures = []
    for url in (sqlite_url, postgres_url):
        s = open_store(url, migrate=True)
        try:
            s.add_probe_results(results)
            figures.append(queries.region_stats(s, SINCE))
        finally:
            s.close()
    assert figures[0] == figures[1] == _python_path(results, SINCE)


def _cells_python_path(results: list[ProbeResult], since: datetime) -> dict[tuple[str, str], queries.VantageCell]:
    """The old path: the window's rows oldest first into Python, the last one wins."""
    cells: dict[tuple[str, str], queries.VantageCell] = {}
    for r in sorted((r for r in results if r.started_at >= since), key=lambda r: r.started_at):
        old = cells.get((r.endpoint_id, r.vantage))
        ok = (old.ok if old else 0) + int(r.outcome is Outcome.OK)
        cells[(r.endpoint_id, r.vantage)] = queries.VantageCell(r.outcome.value, r.started_at, ok, (old.total if old else 0) + 1)
    return cells


def test_the_vantage_grid_cells_match_the_row_by_row_reading(db_store: Store) -> None:
    rng = random.Random(5)
    outcomes = [Outcome.OK, Outcome.OK, Outcome.OK, Outcome.TIMEOUT, Outcome.THROTTLED]
    results = [
        ProbeResult(f"r{k % 4}/d{k % 3}", f"r{k % 4}", ("eu", "us", "asia")[k % 5 % 3], SINCE + timedelta(seconds=k, milliseconds=rng.randrange(900)),
                    rng.choice(outcomes), ttft_ms=100.0)
        for k in range(-30, 240)
    ]  # fmt: skip
    rng.shuffle(results)  # inserted out of order: the newest is by time, not by id
    db_store.add_probe_results(results)
    expected = _cells_python_path(results, SINCE)
    assert len(expected) == 36 and {c.state for c in expected.values()} == {"healthy", "degraded", "unhealthy"}
    assert queries.vantage_cells(db_store, SINCE) == expected


def test_the_overviews_one_read_of_the_last_minutes_gives_the_three_figures_value_for_value(db_store: Store) -> None:
    """``queries.recent`` reads the raw results once for the 5-minute figures, the vantages seen and the grid's cells:
    each must equal its own query, whichever of the three windows is the oldest, the newest, or empty."""
    results = _results()
    rng = random.Random(9)
    results += [
        ProbeResult(f"r{k % 4}/d{k % 3}", f"r{k % 4}", ("eu", "us", "asia")[k % 5 % 3], SINCE + timedelta(seconds=k, milliseconds=rng.randrange(900)),
                    rng.choice([Outcome.OK, Outcome.TIMEOUT]), ttft_ms=rng.choice([None, 100.0, 130.5]))
        for k in range(-400, 300)
    ]  # fmt: skip
    rng.shuffle(results)
    db_store.add_probe_results(results)
    starts = [SINCE - timedelta(minutes=3), SINCE, T0 - timedelta(seconds=20), T0 + timedelta(minutes=1)]
    for stats_since, seen_since, cells_since in [(starts[1], starts[1], starts[2]), (starts[1], starts[0], starts[2]),
                                                 (starts[2], starts[1], starts[0]), (starts[3], starts[0], starts[1]),
                                                 (starts[0], starts[3], starts[3])]:  # fmt: skip
        got = queries.recent(db_store, stats_since, seen_since, cells_since)
        assert got.stats == queries.region_stats(db_store, stats_since) == _python_path(results, stats_since)
        assert got.seen == queries.vantages_seen(db_store, seen_since)
        assert got.cells == queries.vantage_cells(db_store, cells_since) == _cells_python_path(results, cells_since)
    full = queries.recent(db_store, SINCE, SINCE, T0 - timedelta(seconds=20))
    assert len(full.stats) == 50 and full.seen.keys() == {"v1", "v2", "eu", "us", "asia"} and full.cells
