"""How many SQL statements the overview (page and API) and the status read cost: a fixed number, whatever the size.

The overview's CPU is mostly its queries' round trips and their rows turned
into values, so each fact is read once per request, in a statement whose
count does not depend on how many regions, endpoints, targets, vantages,
overrides or flags there are. Counted on the engine (every statement the
driver runs), on SQLite and PostgreSQL, for a small and a large deployment
seeded alike.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from flask import render_template

from controlplane.config import Settings
from controlplane.domain import (
    EndpointHealth,
    EndpointSetting,
    FlagKind,
    HealthStateName,
    LeaseName,
    LivenessResult,
    Outcome,
    OverrideKind,
    RegionHealth,
    TargetState,
    Transition,
)
from controlplane.status import read_status
from controlplane.store import Store, open_store, queries
from controlplane.store.records import LivenessTally
from tests.fakes import at, make_settings, override, probe_result
from tests.statements import statements_run
from web import create_app, readmodel

NOW = at(3600)
VANTAGES = ("eu", "us")

# every statement of one overview / one status read, whatever the deployment's size:
# status: health, last probe per region, active overrides, flags (panics, config problems, liveness), target rows, lease;
# overview adds: one read of the last minutes of raw results (5-minute figures, vantages seen, vantage cells), sparkline
# rollups, the latest plan, and the incidents' transitions, changes, overrides and panic events
STATUS_QUERIES = 6
OVERVIEW_QUERIES = STATUS_QUERIES + 7
API_QUERIES = OVERVIEW_QUERIES - 1  # no sparklines


def _settings(regions: int, targets: tuple[str, ...]) -> Settings:
    return make_settings([f"r{i:02d}" for i in range(regions)], 2, targets=targets)


def _seed(store: Store, s: Settings) -> None:
    """Something of every kind the status shows, for every region, endpoint, target and vantage."""
    endpoints, regions, results, transitions = [], [], [], []
    for i, r in enumerate(s.regions):
        eps = [
            EndpointHealth(
                f"{r.name}/{e.name}", r.name, HealthStateName.HEALTHY, 1.0, "ok", config_problem="auth_error: 401" if i % 2 else None
            )
            for e in r.endpoints
        ]
        endpoints += eps
        regions.append(RegionHealth(r.name, HealthStateName.HEALTHY, 1.0, (), tuple(eps), 0.5, at(0)))
        for e in eps:
            results += [probe_result(e.endpoint_id, when=NOW - timedelta(seconds=k * 10), vantage=v) for k in range(3) for v in VANTAGES]
        transitions.append(
            Transition("region", r.name, HealthStateName.HEALTHY, HealthStateName.DEGRADED, "slow", NOW - timedelta(minutes=9))
        )
        store.add_override(override(OverrideKind.DRAIN, r.name, created=NOW - timedelta(minutes=5)))
    store.save_health(endpoints, regions, NOW)
    store.add_probe_results(results)
    store.rollup(NOW - timedelta(minutes=5), NOW)
    store.add_transitions(transitions)
    for t in s.targets:
        state = TargetState(t.name, {r: EndpointSetting(ep.weight, ep.priority, True) for r, ep in t.endpoints.items()})
        store.save_target_state(t.name, {r: f"ep-{r}" for r in t.endpoints}, state, state, NOW)
        store.add_override(override(OverrideKind.FREEZE, target=t.name, created=NOW - timedelta(minutes=5)))
        store.set_flag(FlagKind.PANIC, t.name, {"reason": "every endpoint looks unhealthy", "since": NOW.isoformat()}, NOW)
    store.set_flag(FlagKind.CONFIG_PROBLEMS, None, {"problems": ["auth_error at r01/gpt-0"]}, NOW)
    for v in VANTAGES:
        tally = LivenessTally()
        for e in endpoints:
            tally.add(LivenessResult(e.endpoint_id, e.region, v, NOW - timedelta(seconds=3), ok=True, status_code=200, latency_ms=9.0))
        store.set_flag(FlagKind.LIVENESS, v, tally.flag_value(), NOW)
    assert store.try_acquire_lease(LeaseName.LEADER, "worker-a", 3600, NOW - timedelta(seconds=5)) == 1


@contextmanager
def _counted(store: Store) -> Iterator[list[str]]:
    with statements_run(store.engine) as statements, store.reading():  # as the web app serves every GET
        yield statements


def _counts(url: str, regions: int, targets: tuple[str, ...]) -> tuple[int, int, int]:
    s = _settings(regions, targets)
    store = open_store(url, migrate=True)
    try:
        _seed(store, s)
        with _counted(store) as status:
            st = read_status(s, store, NOW)
        assert len(st.regions) == regions and all(r.liveness for r in st.regions) and len(st.panics) == len(targets)
        with _counted(store) as page:
            view = readmodel.overview(s, store, NOW, readmodel.SeriesCache())
        assert len(view.cards) == regions and view.grid is not None and len(view.grid.liveness) == 2 * regions * len(VANTAGES)
        with _counted(store) as api:
            readmodel.overview(s, store, NOW, sparks=False)
        return len(status), len(page), len(api)
    finally:
        store.close()


SIZES = {"small": (2, ("tm-weighted",)), "large": (12, ("tm-weighted", "tm-priority", "afd-prod", "fd-classic"))}


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_the_overview_reads_a_fixed_number_of_statements_whatever_the_size(db: str, size: str, request: pytest.FixtureRequest) -> None:
    regions, targets = SIZES[size]
    assert _counts(request.getfixturevalue(f"{db}_url"), regions, targets) == (STATUS_QUERIES, OVERVIEW_QUERIES, API_QUERIES)


def test_the_overview_is_the_same_from_one_read_of_the_last_minutes_as_from_three(db_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page's model with ``queries.recent`` equals the model built from the three separate reads it replaced."""
    s = _settings(4, ("tm-weighted", "tm-priority"))
    _seed(db_store, s)
    db_store.add_probe_results([probe_result("r01/gpt-0", when=NOW - timedelta(minutes=4), vantage="asia")])  # seen, not in the grid
    with db_store.reading():
        one = readmodel.overview(s, db_store, NOW)
        assert one.automation is not None and [v.name for v in one.automation.vantages] == ["asia", *VANTAGES]
        assert one.grid is not None and one.grid.vantages == ["asia", *VANTAGES] and one.cards[0].stats.probes == 12

        def three(store: Store, stats_since: datetime, seen_since: datetime, cells_since: datetime) -> queries.Recent:
            return queries.Recent(
                queries.region_stats(store, stats_since),
                queries.vantages_seen(store, seen_since),
                queries.vantage_cells(store, cells_since),
            )

        monkeypatch.setattr(queries, "recent", three)
        assert readmodel.overview(s, db_store, NOW) == one


GOLDEN = Path(__file__).with_name("overview_live.golden.html")


def test_the_overview_renders_the_same_html_as_before(db_store: Store) -> None:
    """The live part of the overview (cards, banners, vantage grid with liveness lines, targets), as main rendered it
    before the template's work per card and per cell was cut (``REGIONGUARD_WRITE_GOLDEN=1`` writes it again)."""
    s = _settings(4, ("tm-weighted", "tm-priority"))
    _seed(db_store, s)
    db_store.add_probe_results(
        [
            probe_result("r01/gpt-0", Outcome.TIMEOUT, NOW - timedelta(seconds=2), vantage="eu"),  # a degraded cell, its last outcome
            probe_result("r02/gpt-1", Outcome.SERVER_ERROR, NOW - timedelta(seconds=1), vantage="asia"),  # unhealthy, no liveness
        ]
    )
    tally = LivenessTally()
    tally.add(LivenessResult("r03/gpt-0", "r03", "asia", NOW - timedelta(seconds=4), ok=False, status_code=503, error="503 <busy>"))
    db_store.set_flag(FlagKind.LIVENESS, "asia", tally.flag_value(), NOW - timedelta(minutes=10))  # a stale one
    app = create_app(s, db_store, {"TESTING": True, "SECRET_KEY": "x"})
    with app.test_request_context("/partials/overview"), db_store.reading():
        html = render_template("_overview_live.html", view=readmodel.overview(s, db_store, NOW, readmodel.SeriesCache()))
    if os.environ.get("REGIONGUARD_WRITE_GOLDEN") == "1":
        GOLDEN.write_text(html)
    assert 'data-state="degraded"' in html and 'data-state="unhealthy"' in html and "live-failed" in html
    assert html == GOLDEN.read_text()
