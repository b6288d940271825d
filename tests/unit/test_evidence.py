"""Verdicts on evidence: the sequential test, probe cadence, liveness checks, bounded flap holds."""

from __future__ import annotations

import random

import pytest

from controlplane.domain import HealthStateName as H
from controlplane.domain import Outcome
from controlplane.engine.health import HealthEvaluator
from tests.fakes import at, make_settings, probe_result

EAST = "eastus/gpt-4o"


def run(ev: HealthEvaluator, fail_rate: float, n: int, seed: int, start: float = 0.0, outcome: str = "server_error") -> list[float]:
    """n results at the cadence the evaluator asks for; returns when EAST left healthy (per-vantage transitions)."""
    rng = random.Random(seed)
    t = start
    left: list[float] = []
    for _ in range(n):
        o = outcome if rng.random() < fail_rate else "ok"
        for tr in ev.observe(probe_result(EAST, o, t)):
            if tr.old is H.HEALTHY:
                left.append(t)
        t += ev.next_probe_in(EAST, "local")
    return left


def test_three_percent_random_loss_never_moves_it() -> None:
    ev = HealthEvaluator(make_settings())
    run(ev, 0.0, 5, seed=0)
    # ~20,000 probes: about 80 hours of one endpoint at the default cadence
    assert run(ev, 0.03, 20_000, seed=1, start=100, outcome="timeout") == []


def test_a_thirty_percent_error_rate_is_acted_on_within_about_a_minute_of_probing() -> None:
    times = []
    for seed in range(100):
        ev = HealthEvaluator(make_settings())
        run(ev, 0.0, 5, seed=0)
        left = run(ev, 0.3, 400, seed=seed, start=100)
        assert left, f"seed {seed}: a 30 % error rate was never acted on"
        times.append(left[0] - 100)
    times.sort()
    # the clock here counts from the first probe after the fault (the bench counts from the fault)
    assert times[len(times) // 2] <= 60, times


def test_undecided_evidence_probes_at_the_confirm_gap_and_decided_goes_back() -> None:
    s = make_settings(probe={"interval": "15s", "fast_interval": "5s", "confirm_gap": "1.5s"})
    ev = HealthEvaluator(s)
    run(ev, 0.0, 5, seed=0)
    assert ev.next_probe_in(EAST, "local") == 15.0
    ev.observe(probe_result(EAST, "timeout", 100))
    assert ev.next_probe_in(EAST, "local") == 1.5  # undecided: confirm now
    t = 101.5
    for _ in range(8):
        ev.observe(probe_result(EAST, "ok", t))
        t += 1.5
    assert ev.next_probe_in(EAST, "local") == 15.0  # the evidence went back to zero


def test_a_hard_down_is_decided_by_k_failures_in_a_row_and_then_probed_at_the_normal_interval() -> None:
    ev = HealthEvaluator(make_settings())
    run(ev, 0.0, 5, seed=0)
    t = 100.0
    states = []
    for _ in range(5):
        ev.observe(probe_result(EAST, "connect_error", t))
        states.append(ev.evaluate(at(t)).endpoints[EAST].state)
        t += ev.next_probe_in(EAST, "local")
    assert states == [H.HEALTHY] * 4 + [H.UNHEALTHY]
    assert t - 100 == pytest.approx(4 * 1.0 + 15)  # four confirmations 1 s apart, then the liveness checks watch it


def test_a_failed_liveness_check_asks_for_an_llm_probe_but_never_changes_a_state() -> None:
    ev = HealthEvaluator(make_settings())
    run(ev, 0.0, 5, seed=0)
    before = ev.evaluate(at(50)).endpoints[EAST].state
    assert before is H.HEALTHY
    for i in range(50):
        assert ev.on_liveness(EAST, "local", False, at(50 + i)) is True
    assert ev.evaluate(at(100)).endpoints[EAST].state is H.HEALTHY
    assert ev.on_liveness(EAST, "local", True, at(101)) is False
    summary = ev.liveness()[EAST]["local"]
    assert summary["checks_failed"] == 50 and summary["checks_ok"] == 1 and summary["ok"] is True


def test_a_good_liveness_check_on_a_down_endpoint_asks_whether_it_is_back() -> None:
    ev = HealthEvaluator(make_settings())
    run(ev, 0.0, 5, seed=0)
    for i in range(5):
        ev.observe(probe_result(EAST, "connect_error", 100 + i))
    assert ev.evaluate(at(105)).endpoints[EAST].state is H.UNHEALTHY
    assert ev.on_liveness(EAST, "local", False, at(106)) is False  # we know: nothing to confirm
    assert ev.on_liveness(EAST, "local", True, at(110)) is True


def test_a_flapping_endpoint_is_held_out_at_most_the_max_hold_once_stable() -> None:
    s = make_settings(health={"min_dwell": 10, "flap_half_life": "10m", "flap_max_hold": "20m", "flap_stable": "1m"})
    ev = HealthEvaluator(s)
    run(ev, 0.0, 5, seed=0)
    t = 100.0
    for _ in range(30):  # 30 flaps: the penalty is capped
        for _ in range(5):
            ev.observe(probe_result(EAST, "connect_error", t))
            t += 1
        for _ in range(20):
            ev.observe(probe_result(EAST, "ok", t))
            t += 1
    stable_from = t - 20
    while t < stable_from + 3 * 3600:
        if any(tr.new is H.HEALTHY for tr in ev.observe(probe_result(EAST, "ok", t))):
            break
        t += 5
    assert t - stable_from <= 20 * 60 + 10


def test_reasons_name_the_evidence_and_the_odds() -> None:
    ev = HealthEvaluator(make_settings())
    run(ev, 0.0, 5, seed=0)
    t = 100.0
    for o in ["slow"] * 6:
        ev.observe(probe_result(EAST, o, t))
        t += 1.5
    eh = ev.evaluate(at(t)).endpoints[EAST]
    assert eh.state is H.DEGRADED
    assert eh.reason.startswith("6 of last 11 probes were slow answers; ")
    assert eh.reason.endswith(":1 odds of a 30% fault over 3% noise")


def test_retry_after_sets_when_to_look_again() -> None:
    ev = HealthEvaluator(make_settings())
    run(ev, 0.0, 5, seed=0)
    ev.observe(probe_result(EAST, Outcome.THROTTLED, 100, retry_after_ms=3000))
    assert ev.next_probe_in(EAST, "local") == 3.0
    ev.observe(probe_result(EAST, Outcome.THROTTLED, 103, retry_after_ms=60_000))
    assert ev.next_probe_in(EAST, "local") == 5.0  # undecided: no later than the fast interval
    t = 108.0
    for _ in range(6):
        ev.observe(probe_result(EAST, Outcome.THROTTLED, t, retry_after_ms=600_000))
        t += 5
    assert ev.evaluate(at(t)).endpoints[EAST].state is H.DEGRADED
    assert ev.next_probe_in(EAST, "local") == 15.0  # decided: no later than the normal interval
