"""ARM answers that do not have the types Azure documents are read errors for that endpoint.

The fake ARM is edited past its own validation (a hostile proxy, a buggy API
version): an unknown ``endpointStatus`` / ``enabledState``, a weight that is
not an integer. The actuator must never read such an endpoint as enabled,
the reconciler must not store it as actual state nor write to it, and the
other endpoints carry on.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from controlplane.actuators.base import ActuatorError
from controlplane.domain import HealthStateName
from controlplane.store import Store
from simulator.arm import FakeArm
from tests.integration.test_actuator_contract import resource_id
from tests.integration.test_reconcile import World, health

H = HealthStateName


@pytest.fixture(scope="module")
def fake_arm() -> Iterator[FakeArm]:
    with FakeArm(token="contract-token") as fake:
        yield fake


@pytest.fixture
def world(fake_arm: FakeArm, store: Store) -> Iterator[World]:
    fake_arm.clear_faults()
    yield World(fake_arm, store)
    fake_arm.clear_faults()


def state_field(target: Any) -> str:
    return "endpointStatus" if target.kind == "traffic_manager" else "enabledState"


@pytest.mark.parametrize("which", ["tm", "fd", "afd"])
@pytest.mark.parametrize("status", ["Paused", "enabled ", "", 1])
def test_an_unknown_enabled_state_is_a_read_error_for_that_endpoint_never_enabled(world: World, which: str, status: Any) -> None:
    target = getattr(world, which)
    world.arm.mutate(resource_id(target, "eastus"), {state_field(target): status}, validate=False)
    actual = world.actual(target)
    assert "eastus" not in actual.endpoints
    assert state_field(target) in actual.read_errors["eastus"]
    assert {"westeurope", "japaneast"} <= set(actual.endpoints)


@pytest.mark.parametrize("fields", [{"weight": "heavy"}, {"weight": 1.5}, {"priority": "1"}, {"weight": True}])
def test_a_weight_or_priority_that_is_not_an_integer_is_a_read_error_never_a_value(world: World, fields: dict[str, Any]) -> None:
    for which in ("tm", "fd", "afd"):
        target = getattr(world, which)
        world.arm.mutate(resource_id(target, "eastus"), fields, validate=False)
        try:
            actual = world.actual(target)
        except ActuatorError:
            continue  # the SDK refused the whole answer: a read error for the target, which is fine too
        setting = actual.endpoints.get("eastus")
        if setting is not None:  # an SDK that coerces (msrest's int("1") / int(1.5)) hands us an int
            assert isinstance(setting.weight, int) and not isinstance(setting.weight, bool), (which, setting)
            assert isinstance(setting.priority, int | None) and not isinstance(setting.priority, bool), (which, setting)
        else:
            assert "eastus" in actual.read_errors, (which, actual)


def test_the_reconciler_leaves_an_unreadable_endpoint_alone_stores_no_actual_for_it_and_says_so(world: World) -> None:
    r = world.reconciler()
    world.tick(r, health())  # a first, readable tick stores eastus as actual
    for target in world.settings.targets:
        world.arm.mutate(resource_id(target, "eastus"), {state_field(target): "Paused"}, validate=False)
    report = world.tick(r, health(westeurope=H.UNHEALTHY))
    assert all(c.region != "eastus" for c in report.applied), report.applied
    rows = {(row.target, row.region): row for row in world.store.target_endpoints()}
    for target in world.settings.targets:
        east = rows[(target.name, "eastus")]
        assert east.actual is None, east
        assert rows[(target.name, "westeurope")].actual is not None
    events = [e for e in world.store.events(kinds=["read_error"]) if e.region == "eastus"]
    assert len(events) == len(world.settings.targets)
    assert all("Paused" in e.summary and e.severity == "warning" for e in events)
    world.tick(r, health(westeurope=H.UNHEALTHY))  # the same error again: no new event
    assert len([e for e in world.store.events(kinds=["read_error"]) if e.region == "eastus"]) == len(world.settings.targets)
