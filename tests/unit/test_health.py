"""Health: windows, hysteresis, vantage quorum, region aggregation, reasons."""

from __future__ import annotations

import json

import pytest

from controlplane.domain import HealthStateName as H
from controlplane.domain import Outcome
from controlplane.engine.health import HealthEvaluator
from tests.fakes import at, endpoint_ids, make_settings, probe_result

EAST = "eastus/gpt-4o"
WEST = "westeurope/gpt-4o"
JAPAN = "japaneast/gpt-4o"


def warm(
    ev: HealthEvaluator, eids=(EAST, WEST, JAPAN), start: float = 0.0, n: int = 10, step: float = 15.0, vantage: str = "local"
) -> float:
    """n successes per endpoint, one every `step` s; returns the time after the last."""
    t = start
    for _ in range(n):
        for e in eids:
            ev.observe(probe_result(e, Outcome.OK, t, vantage=vantage))
        t += step
    return t


def feed(ev: HealthEvaluator, eid: str, outcomes: list[str], start: float, step: float = 5.0, vantage: str = "local", **kw) -> float:
    t = start
    for o in outcomes:
        ev.observe(probe_result(eid, o, t, vantage=vantage, **kw))
        t += step
    return t


def test_it_stays_unknown_until_m_successes_in_a_row() -> None:
    ev = HealthEvaluator(make_settings())
    feed(ev, EAST, ["ok", "ok"], 0, 30)
    assert ev.evaluate(at(61)).endpoints[EAST].state is H.UNKNOWN
    assert ev.evaluate(at(61)).regions["eastus"].state is H.UNKNOWN
    feed(ev, EAST, ["ok"], 60, 30)
    report = ev.evaluate(at(61))
    assert report.endpoints[EAST].state is H.HEALTHY
    assert report.regions["eastus"].state is H.HEALTHY


def test_k_consecutive_failures_mark_it_unhealthy_with_reason_and_evidence() -> None:
    ev = HealthEvaluator(make_settings())
    t = warm(ev)
    ev.evaluate(at(t))
    transitions = []
    for o in ["timeout"] * 5:
        transitions += ev.observe(probe_result(EAST, o, t))
        t += 5
    down = [tr for tr in transitions if tr.new is H.UNHEALTHY]
    assert len(down) == 1 and down[0].vantage == "local"
    assert down[0].reason == "5 consecutive timeouts"
    assert sum("timeout" in e for e in down[0].evidence) == 5
    report = ev.evaluate(at(t))
    assert report.endpoints[EAST].state is H.UNHEALTHY
    assert report.regions["eastus"].state is H.UNHEALTHY
    assert [(x.subject, x.key, x.old, x.new) for x in report.transitions] == [
        ("endpoint", EAST, H.HEALTHY, H.UNHEALTHY),
        ("region", "eastus", H.HEALTHY, H.UNHEALTHY),
    ]


def test_a_single_lost_probe_changes_nothing() -> None:
    ev = HealthEvaluator(make_settings(health={"stale_after": "10m"}))
    t = warm(ev)
    before = ev.evaluate(at(t))
    assert ev.observe(probe_result(EAST, "timeout", t)) == []
    t = feed(ev, EAST, ["ok"] * 5, t + 5)
    report = ev.evaluate(at(t))
    assert report.endpoints[EAST].state is H.HEALTHY
    assert report.transitions == []
    assert before.regions["eastus"].state is H.HEALTHY


def test_intermittent_failures_over_the_ratio_mark_it_unhealthy_without_k_in_a_row() -> None:
    ev = HealthEvaluator(make_settings())
    t = warm(ev, n=20)
    pattern = ["server_error", "server_error", "ok"] * 7  # never 5 in a row, 2/3 of the window failing
    for o in pattern:
        ev.observe(probe_result(EAST, o, t))
        t += 5
    eh = ev.evaluate(at(t)).endpoints[EAST]
    assert eh.state is H.UNHEALTHY
    assert "of last 20 probes were server errors" in eh.reason
    assert ":1 odds of a 30% fault over 3% noise" in eh.reason


def test_partial_throttling_weighs_it_down_by_what_it_serves_and_never_drains() -> None:
    ev = HealthEvaluator(make_settings(health={"window": 10}))
    t = warm(ev)
    outcomes = ["ok", "throttled", "throttled", "ok", "throttled", "throttled", "ok", "throttled", "throttled", "throttled"] * 6
    for o in outcomes:
        ev.observe(probe_result(EAST, o, t, retry_after_ms=12000 if o == "throttled" else None))
        t += 5
    eh = ev.evaluate(at(t)).endpoints[EAST]
    assert eh.state is H.DEGRADED
    assert eh.score == pytest.approx(0.3)
    assert eh.reason.startswith("throttled: 7 of last 10 probes 429 (serves about 30%), retry-after 12 s")
    # Retry-After sets when to look again
    assert ev.next_probe_in(EAST, "local") == pytest.approx(12.0)


def test_a_throttled_endpoint_is_drained_only_when_it_serves_nothing() -> None:
    s = make_settings(health={"throttled_to_down": 12})
    ev = HealthEvaluator(s)
    t = warm(ev)
    t = feed(ev, EAST, ["throttled"] * 11, t, retry_after_ms=2000)
    assert ev.evaluate(at(t)).endpoints[EAST].state is H.DEGRADED
    assert ev.next_probe_in(EAST, "local") == pytest.approx(5.0)  # degraded: fast interval, not before Retry-After
    feed(ev, EAST, ["throttled"], t, retry_after_ms=2000)
    eh = ev.evaluate(at(t)).endpoints[EAST]
    assert eh.state is H.UNHEALTHY
    assert eh.reason == "serves nothing: 12 consecutive 429s, retry-after 2.0 s"


def test_a_slow_median_makes_it_degraded_not_unhealthy_with_a_lower_score() -> None:
    ev = HealthEvaluator(make_settings())
    t = warm(ev)
    t = feed(ev, EAST, ["slow"] * 20, t, ttft_ms=6000.0)
    eh = ev.evaluate(at(t)).endpoints[EAST]
    assert eh.state is H.DEGRADED
    assert "20 of last 20 probes were slow answers" in eh.reason
    # (3 s / 6 s)^2 per slow probe
    assert eh.score == pytest.approx(0.25, abs=0.01)


def test_one_slow_probe_in_a_tiny_window_is_not_a_slow_median() -> None:
    ev = HealthEvaluator(make_settings(health={"window": 2, "failures_to_down": 2}))
    t = warm(ev, n=4)
    ev.observe(probe_result(EAST, "slow", t, ttft_ms=9000.0))
    assert ev.evaluate(at(t)).endpoints[EAST].state is H.HEALTHY


def test_partial_errors_make_it_degraded_and_cost_score() -> None:
    ev = HealthEvaluator(make_settings(health={"window": 10}))
    t = warm(ev)
    t = feed(ev, EAST, ["ok", "server_error", "ok", "server_error", "ok", "ok", "server_error", "server_error", "ok", "ok"] * 2, t)
    eh = ev.evaluate(at(t)).endpoints[EAST]
    assert eh.state is H.DEGRADED
    assert eh.score == pytest.approx(0.6)
    assert "4 of last 10 probes were server errors" in eh.reason


def test_it_comes_back_only_after_m_successes_and_the_dwell() -> None:
    s = make_settings(health={"min_dwell": 60, "successes_to_up": 3})
    ev = HealthEvaluator(s)
    t = warm(ev)
    t = feed(ev, EAST, ["connect_error"] * 10, t)  # down, and the whole window failing
    last_bad = t - 5
    ups = []
    while t < last_bad + 200:
        ups += [tr for tr in ev.observe(probe_result(EAST, "ok", t)) if tr.new is H.HEALTHY]
        if ups:
            break
        t += 5
    assert ups, "never came back"
    # the ratio rule held until half the window was clean (5 successes), then the 60 s dwell
    assert ups[0].at >= at(last_bad + 60)
    assert ups[0].reason.startswith("recovered:")


def test_recovery_reason_says_what_it_still_needs() -> None:
    ev = HealthEvaluator(make_settings())
    t = warm(ev)
    t = feed(ev, EAST, ["connect_error"] * 5, t)
    t = feed(ev, EAST, ["ok"] * 2, t)
    eh = ev.evaluate(at(t)).endpoints[EAST]
    assert eh.state is H.UNHEALTHY
    assert eh.reason.startswith("recovering: 2 ok in a row (needs 3)")
    assert "was: 5 consecutive connect errors" in eh.reason


def test_flapping_holds_it_out_until_the_penalty_decays_and_it_is_stable() -> None:
    s = make_settings(
        health={"min_dwell": 30, "flap_half_life": "10m", "flap_hold": 1.4, "flap_reuse": 0.75, "flap_stable": "5m", "flap_max_hold": "30m"}
    )
    ev = HealthEvaluator(s)
    t = warm(ev)

    def down_then_up(t: float, limit: float = 3000) -> tuple[float | None, float]:
        """Down (5 connect errors), then ok every 5 s until it is healthy or `limit` s passed."""
        t = feed(ev, EAST, ["connect_error"] * 5, t)
        start = t
        while t < start + limit:
            if any(tr.new is H.HEALTHY for tr in ev.observe(probe_result(EAST, "ok", t))):
                return t - start, t + 5
            t += 5
        return None, t

    first, t = down_then_up(t)
    assert first == pytest.approx(30, abs=5)  # one outage: the dwell only
    # a second outage 1 minute later: penalty 1 x 2^-(~1 min / 10 min) + 1 > 1.4: held out
    t = feed(ev, EAST, ["ok"] * 12, t)
    t = feed(ev, EAST, ["connect_error"] * 5, t)
    second = t - 5
    t = feed(ev, EAST, ["ok"] * 24, t)  # 2 min stable
    eh = ev.evaluate(at(t)).endpoints[EAST]
    assert eh.state is H.UNHEALTHY
    assert eh.reason.startswith("held out: 2 flaps in ")
    assert "stable for 2 min of the 5 min needed (flap penalty 1.6" in eh.reason
    assert eh.reason.endswith("was: 5 consecutive connect errors")
    # it comes back once the penalty is under 0.75 (~ 9 min after the second flap) and it was stable 5 min
    back = None
    while t < 3600 * 2:
        if any(tr.new is H.HEALTHY for tr in ev.observe(probe_result(EAST, "ok", t))):
            back = t
            break
        t += 5
    assert back is not None
    # penalty 1 x 2^-(135 s / 10 min) + 1 = 1.86 at the second flap: under 0.75 after 10 min x log2(1.86 / 0.75) = 13.1 min
    assert 13 * 60 < back - second < 13.5 * 60


def test_config_problems_raise_an_alert_but_never_drain() -> None:
    ev = HealthEvaluator(make_settings())
    t = warm(ev)
    t = feed(ev, EAST, ["auth_error"] * 20, t, error="401 Unauthorized")
    report = ev.evaluate(at(t))
    eh = report.endpoints[EAST]
    assert eh.state is H.HEALTHY
    assert eh.config_problem is not None and eh.config_problem.startswith("auth_error 401 in 20 of last 20 probes")
    assert any(p.startswith(EAST) for p in report.config_problems)


def test_config_problems_alone_leave_it_unknown() -> None:
    ev = HealthEvaluator(make_settings())
    feed(ev, EAST, ["not_found"] * 5, 0, 30)
    report = ev.evaluate(at(130))
    assert report.endpoints[EAST].state is H.UNKNOWN
    assert report.endpoints[EAST].config_problem


def test_every_endpoint_with_a_config_problem_says_so_first() -> None:
    ev = HealthEvaluator(make_settings())
    for e in (EAST, WEST, JAPAN):
        feed(ev, e, ["auth_error"] * 3, 0, 30)
    problems = ev.evaluate(at(70)).config_problems
    assert problems[0].startswith("every endpoint reports a configuration problem")
    assert len(problems) == 4


def test_which_outcomes_count_is_policy() -> None:
    s = make_settings(probe={"counts_against_health": ["timeout", "connect_error", "server_error"]})
    ev = HealthEvaluator(s)
    t = warm(ev)
    t = feed(ev, EAST, ["throttled"] * 10, t)
    assert ev.evaluate(at(t)).endpoints[EAST].state is H.HEALTHY


def test_one_of_three_vantages_cannot_mark_an_endpoint_unhealthy() -> None:
    ev = HealthEvaluator(make_settings())
    t = 0.0
    for v in ("eu", "us", "asia"):
        warm(ev, vantage=v)
    t = 300.0
    for v in ("eu", "us", "asia"):
        feed(ev, EAST, ["connect_error" if v == "eu" else "ok"] * 5, t, vantage=v)
    report = ev.evaluate(at(t + 20))
    eh = report.endpoints[EAST]
    assert report.vantages[EAST]["eu"] is H.UNHEALTHY
    assert eh.state is H.HEALTHY
    assert "eu sees unhealthy" in eh.reason
    assert eh.score == 1.0


def test_two_of_three_vantages_agreeing_mark_it_unhealthy() -> None:
    ev = HealthEvaluator(make_settings())
    for v in ("eu", "us", "asia"):
        warm(ev, vantage=v)
    for v in ("eu", "us", "asia"):
        feed(ev, EAST, ["connect_error" if v != "asia" else "ok"] * 5, 300, vantage=v)
    eh = ev.evaluate(at(320)).endpoints[EAST]
    assert eh.state is H.UNHEALTHY
    assert eh.reason.startswith("2 of 3 vantages agree")


def test_vantage_quorum_setting_can_demand_more_than_a_majority() -> None:
    ev = HealthEvaluator(make_settings(health={"vantage_quorum": 3}))
    for v in ("eu", "us", "asia"):
        warm(ev, vantage=v)
    for v in ("eu", "us", "asia"):
        feed(ev, EAST, ["connect_error" if v != "asia" else "ok"] * 5, 300, vantage=v)
    assert ev.evaluate(at(320)).endpoints[EAST].state is H.HEALTHY


def test_a_vantage_that_sees_every_endpoint_failing_is_discounted() -> None:
    ev = HealthEvaluator(make_settings())
    for v in ("eu", "us"):
        warm(ev, vantage=v)
    for e in (EAST, WEST, JAPAN):
        feed(ev, e, ["connect_error"] * 4, 300, vantage="eu")
        feed(ev, e, ["ok"] * 4, 300, vantage="us")
    report = ev.evaluate(at(320))
    assert report.suspect_vantages == ("eu",)
    assert all(eh.state is H.HEALTHY for eh in report.endpoints.values())
    assert "discounted vantage eu" in report.endpoints[EAST].reason


def test_when_every_vantage_sees_everything_failing_nothing_is_hidden() -> None:
    ev = HealthEvaluator(make_settings())
    warm(ev)
    for e in (EAST, WEST, JAPAN):
        feed(ev, e, ["connect_error"] * 5, 300)
    report = ev.evaluate(at(320))
    assert report.suspect_vantages == ()
    assert all(rh.state is H.UNHEALTHY for rh in report.regions.values())


def test_stale_results_do_not_vote() -> None:
    s = make_settings()
    ev = HealthEvaluator(s)
    warm(ev)  # last results at t=135
    assert ev.evaluate(at(150)).endpoints[EAST].state is H.HEALTHY
    report = ev.evaluate(at(135 + 2 * s.probe.interval + s.probe.timeout + 1))
    assert report.endpoints[EAST].state is H.UNKNOWN
    assert report.endpoints[EAST].reason.startswith("no fresh probe results")
    assert report.regions["eastus"].state is H.UNKNOWN


def test_region_health_aggregates_its_endpoints() -> None:
    s = make_settings(endpoints_per_region=2)
    eids = endpoint_ids(s)
    ev = HealthEvaluator(s)
    t = warm(ev, eids=eids)
    t = feed(ev, "eastus/gpt-0", ["timeout"] * 5, t)
    rh = ev.evaluate(at(t)).regions["eastus"]
    assert rh.state is H.DEGRADED
    assert rh.score == pytest.approx(0.5)  # an unhealthy endpoint counts as 0
    assert any(r.startswith("gpt-0: 5 consecutive timeouts") for r in rh.reasons)
    t = feed(ev, "eastus/gpt-1", ["timeout"] * 5, t)
    assert ev.evaluate(at(t)).regions["eastus"].state is H.UNHEALTHY


def test_quota_headroom_is_reported_per_endpoint_and_region() -> None:
    ev = HealthEvaluator(make_settings())
    t = warm(ev)
    ev.observe(probe_result(EAST, "ok", t, remaining_tokens=5000, limit_tokens=100000))
    ev.observe(probe_result(WEST, "ok", t, utilization_pct=97.0))
    report = ev.evaluate(at(t))
    assert report.endpoints[EAST].quota_headroom == pytest.approx(0.05)
    assert report.regions["westeurope"].quota_headroom == pytest.approx(0.03)
    assert report.regions["japaneast"].quota_headroom is None


def test_from_results_starts_warm_without_repeating_transitions() -> None:
    s = make_settings(health={"stale_after": "10m"})
    results = [probe_result(e, "ok", t) for t in range(0, 300, 30) for e in (EAST, WEST, JAPAN)]
    results += [probe_result(EAST, "connect_error", 300 + 5 * i) for i in range(5)]
    ev = HealthEvaluator.from_results(s, reversed(results), now=at(330))
    report = ev.evaluate(at(321))
    assert report.endpoints[EAST].state is H.UNHEALTHY
    assert report.endpoints[WEST].state is H.HEALTHY
    assert report.transitions == []
    assert report.regions["eastus"].since == at(320)


def test_results_for_endpoints_not_in_the_config_are_ignored() -> None:
    ev = HealthEvaluator(make_settings())
    assert ev.observe(probe_result("nowhere/gpt-4o", "timeout", 0)) == []
    assert "nowhere/gpt-4o" not in ev.evaluate(at(1)).endpoints


def test_the_report_is_json_ready() -> None:
    ev = HealthEvaluator(make_settings())
    t = warm(ev)
    feed(ev, EAST, ["timeout"] * 5, t)
    data = ev.evaluate(at(t + 20)).to_dict()
    text = json.dumps(data)
    assert data["regions"]["eastus"]["state"] == "unhealthy"
    assert "5 consecutive timeouts" in text


def test_a_transition_is_reported_once() -> None:
    ev = HealthEvaluator(make_settings(health={"stale_after": "10m"}))
    t = warm(ev)
    t = feed(ev, EAST, ["timeout"] * 5, t)
    assert ev.evaluate(at(t)).transitions
    t = feed(ev, EAST, ["timeout"] * 2, t)
    assert ev.evaluate(at(t)).transitions == []


def test_a_region_judged_healthy_is_explained_by_its_healthy_endpoints_not_by_one_still_waiting() -> None:
    from controlplane.domain import EndpointHealth
    from controlplane.engine.health import _region

    ok = EndpointHealth("eastus/gpt-4o", "eastus", H.HEALTHY, 1.0, "3 of 3 successes in a row")
    waiting = EndpointHealth("eastus/gpt-4o-mini", "eastus", H.UNKNOWN, 1.0, "waiting for data: 2 of 3 successes in a row")
    rh = _region("eastus", [ok, waiting])
    assert rh.state is H.HEALTHY
    assert rh.reasons[0] == "gpt-4o: 3 of 3 successes in a row"
    assert rh.reasons[1] == "gpt-4o-mini not judged yet (waiting for data: 2 of 3 successes in a row)"
    assert not any(r.startswith("gpt-4o-mini: waiting") for r in rh.reasons)
