"""What a long-running worker keeps in memory stays bounded: no map keyed by time or by event grows
with every change, flap or outcome (bench/soak.py watches the same maps in a real worker for hours).

In memory only: the reconciler on the in-memory store and actuator, the health engine on plain results.
"""

from __future__ import annotations

from controlplane.actuators.memory import MemoryActuator
from controlplane.domain import HealthStateName, Outcome
from controlplane.engine.health import HealthEvaluator
from controlplane.runtime.reconcile import Reconciler
from controlplane.store.memory import MemoryStore
from probes.llm import keepalive_s
from tests.fakes import REGIONS, FakeClock, at, make_settings, probe_result, region_health

H = HealthStateName


def test_the_reconciler_forgets_its_own_changes_once_they_are_finished() -> None:
    settings = make_settings(targets=("tm-weighted",), guardrails={"cooldown": "1s"})
    target = settings.targets[0]
    store, clock = MemoryStore(), FakeClock()
    actuator = MemoryActuator()
    actuator.seed(target)
    r = Reconciler(settings, store, {target.name: actuator}, clock, "w", lease_name=None)  # no lease: replay's way
    written = 0
    for i in range(30):  # eastus drained and restored 15 times: 30 changes applied and finished
        state = H.UNHEALTHY if i % 2 == 0 else H.HEALTHY
        health = {name: region_health(name, state if name == "eastus" else H.HEALTHY) for name in REGIONS}
        tick = r.reconcile_once(health, fencing_token=None)
        written += len(tick.applied)
        clock.advance(600)
    assert written >= 20, f"only {written} changes were applied: the test does not exercise the reconciler"
    assert len(r._mine) == 0, f"{len(r._mine)} finished change ids still held"


def _fault_cycles(evaluator: HealthEvaluator, eid: str, cycles: int, outcomes: tuple[Outcome, ...], period: float = 600.0) -> None:
    """``cycles`` times: an outage of ``eid`` (each cycle one of ``outcomes``), then long enough healthy to come back."""
    t = 0.0
    for i in range(cycles):
        for k in range(20):
            evaluator.observe(probe_result(eid, outcomes[i % len(outcomes)], t + k))
        t += 20
        while (t % period) != 0:
            evaluator.observe(probe_result(eid, Outcome.OK, t))
            t += 10
        evaluator.evaluate(at(t))


def test_flap_times_older_than_the_text_shows_are_dropped() -> None:
    settings = make_settings(health={"flap_half_life": "30s", "flap_stable": "10s", "flap_max_hold": "60s", "min_dwell": "10s"})
    ev = HealthEvaluator(settings)
    _fault_cycles(ev, "eastus/gpt-4o", 60, (Outcome.CONNECT_ERROR,))
    window = ev._windows[("eastus/gpt-4o", "local")]
    assert window.state is H.HEALTHY, "the endpoint did not come back between outages: the test does not flap it"
    # the reason text counts flaps within 4 half-lives (2 min here); outages are 10 min apart
    assert len(window.flaps) <= 1, f"{len(window.flaps)} flap times kept for hours"


def test_a_window_keeps_no_outcome_it_no_longer_holds() -> None:
    ev = HealthEvaluator(make_settings(health={"min_dwell": "10s"}))
    kinds = (Outcome.CONNECT_ERROR, Outcome.SERVER_ERROR, Outcome.TIMEOUT, Outcome.THROTTLED, Outcome.BAD_CONTENT, Outcome.TRUNCATED)
    _fault_cycles(ev, "eastus/gpt-4o", len(kinds), kinds)
    window = ev._windows[("eastus/gpt-4o", "local")]
    assert {o for o, n in window.by_outcome.items() if n} == {Outcome.OK}
    assert set(window.by_outcome) == {Outcome.OK}, f"outcomes counted zero times kept: {sorted(o.value for o in window.by_outcome)}"


def test_a_burst_of_probe_connections_is_given_back_within_a_few_intervals() -> None:
    assert keepalive_s(15.0) == 60.0  # the default interval: a minute, as before
    assert keepalive_s(60.0) == 120.0  # two intervals: the next probe still finds it
    assert keepalive_s(0.5) == 2.0  # not a minute whatever the interval: a burst does not linger
