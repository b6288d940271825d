"""What a long-running worker keeps in memory stays bounded: no map keyed by time or by event grows
with every change, flap or outcome (bench/soak.py watches the same maps in a real worker for hours).

In memory only: the reconciler on the in-memory store and actuator, the health engine on plain results.
"""

from __future__ import annotations

from controlplane.actuators.memory import MemoryActuator
from controlplane.domain import HealthStateName
from controlplane.runtime.reconcile import Reconciler
from controlplane.store.memory import MemoryStore
from tests.fakes import REGIONS, FakeClock, make_settings, region_health

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
