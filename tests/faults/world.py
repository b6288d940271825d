"""What the fault tests share: the fake ARM, a store, targets of every Azure kind, a reconciler factory.

Real Azure SDK clients over HTTPS to the fake ARM, a real SQLite store,
health built by hand, and a fake wall clock for the lease (ARM's latency
and the transport's deadlines are real time).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from controlplane.actuators.credentials import StaticTokenCredential
from controlplane.actuators.factory import build_actuators
from controlplane.config import Settings
from controlplane.domain import HealthStateName, LeaseName, RegionHealth
from controlplane.runtime.reconcile import Reconciler
from controlplane.store import Store
from simulator.arm import FakeArm
from tests.integration.test_actuator_contract import FAST_RETRY, REGIONS, _names, arm_writes, seed_arm, settings_for

H = HealthStateName
TOKEN = "contract-token"


class FakeClock:
    def __init__(self) -> None:
        self.t = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


def health(**states: tuple[HealthStateName, float] | HealthStateName) -> dict[str, RegionHealth]:
    """Region health by hand; regions not named are healthy."""
    out = {}
    for region in REGIONS:
        value = states.get(region, H.HEALTHY)
        state, score = value if isinstance(value, tuple) else (value, 1.0 if value is H.HEALTHY else 0.0)
        out[region] = RegionHealth(region=region, state=state, score=score, reasons=(f"{region} is {state.value} (test)",))
    return out


TWO_WRITES = {"eastus": (H.DEGRADED, 0.5), "westeurope": (H.DEGRADED, 0.5)}  # one plan, two Traffic Manager PATCHes


class World:
    def __init__(self, arm: FakeArm, store: Store) -> None:
        self.arm = arm
        self.store = store
        self.clock = FakeClock()
        self.settings: Settings = settings_for(arm, next(_names), apim=False)
        seed_arm(arm, self.settings)
        arm.clear_log()

    @property
    def tm(self) -> Any:
        return self.settings.targets[0]

    def lease(self, holder: str, ttl_s: float) -> int:
        token = self.store.try_acquire_lease(LeaseName.LEADER, holder, ttl_s, self.clock.now())
        assert token is not None, f"{holder} could not take the lease"
        return token

    def actuators(self, call_s: float = 5.0) -> dict[str, Any]:
        return build_actuators(self.settings, StaticTokenCredential(TOKEN), retry=FAST_RETRY, call_s=call_s)

    def reconciler(self, holder: str, actuators: dict[str, Any] | None = None, **kwargs: Any) -> Reconciler:
        # A tick's reads get a third of its deadline: 4 s here, room for four TLS handshakes and GETs on a
        # loaded machine (at 5 s, reads cut off at 1.67 s failed a test about fencing). Tests of the deadlines pass their own.
        kwargs.setdefault("deadline_s", 12.0)
        kwargs.setdefault("call_s", 2.0)
        kwargs.setdefault("skew_s", 0.5)
        return Reconciler(self.settings, self.store, actuators or self.actuators(kwargs["call_s"]), self.clock, holder, **kwargs)

    def writes(self, target: Any | None = None) -> list[Any]:
        return arm_writes(self.arm, target)

    def tm_patches(self) -> list[str]:
        """Endpoint names of the Traffic Manager PATCHes that reached the fake ARM, in order."""
        return [w.path.rsplit("/", 1)[-1] for w in self.writes(self.tm)]
