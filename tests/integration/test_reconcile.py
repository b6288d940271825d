"""The reconciler end to end: real Azure SDK clients over HTTPS against the fake ARM, a real SQLite store.

Health is built by hand (the decision engine has its own tests); what is
checked here is what reaches Azure (the ARM request log), what is recorded
(store rows and audit events) and that the next tick converges.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controlplane.actuators.credentials import StaticTokenCredential
from controlplane.actuators.factory import build_actuators
from controlplane.config import Settings
from controlplane.domain import ChangeStatus, EventKind, Field, HealthStateName, LeaseName, RegionHealth, WriteStatus
from controlplane.drift import resolve_drift
from controlplane.engine.writebudget import RULE as BUDGET_RULE
from controlplane.engine.writebudget import SubscriptionWriteBudget
from controlplane.runtime.reconcile import DRIFT_RULE, FAILED_RULE, FENCED_RULE, NOT_WRITTEN, Reconciler
from controlplane.store import Store
from simulator.arm import FakeArm
from simulator.arm_faults import FaultRule
from tests.integration.test_actuator_contract import (
    FAST_RETRY,
    REGIONS,
    _names,
    arm_writes,
    portal_fields,
    resource_id,
    seed_arm,
    settings_for,
)

H = HealthStateName
HOLDER = "worker-1"


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


@pytest.fixture(scope="module")
def arm() -> Iterator[FakeArm]:
    with FakeArm(token="contract-token") as fake:
        yield fake


class World:
    """One fresh set of targets in the fake ARM, a store with a lease, and a reconciler factory."""

    def __init__(self, arm: FakeArm, store: Store, *, apim: bool = False, **target_options: Any) -> None:
        self.arm = arm
        self.store = store
        self.clock = FakeClock()
        self.settings: Settings = settings_for(arm, next(_names), apim=apim, **target_options)
        seed_arm(arm, self.settings)
        arm.clear_log()
        self.token = store.try_acquire_lease(LeaseName.LEADER, HOLDER, 3600, self.clock.now())
        assert self.token is not None

    @property
    def tm(self) -> Any:
        return self.settings.targets[0]

    @property
    def fd(self) -> Any:
        return self.settings.targets[1]

    @property
    def afd(self) -> Any:
        return self.settings.targets[2]

    def reconciler(self, actuators: dict[str, Any] | None = None, **kwargs: Any) -> Reconciler:
        actuators = actuators or build_actuators(self.settings, StaticTokenCredential("contract-token"), retry=FAST_RETRY)
        # reads get a third of the deadline: 4 s for three targets read side by side over TLS on a loaded
        # machine (tests/faults/world.py says why 1.67 s was too short); tests of the deadline pass their own
        kwargs.setdefault("deadline_s", 12.0)
        return Reconciler(self.settings, self.store, actuators, self.clock, HOLDER, **kwargs)

    def tick(self, r: Reconciler, h: Any, **kwargs: Any) -> Any:
        report = r.reconcile_once(h, fencing_token=self.token, **kwargs)
        self.clock.advance(120)  # past the cooldown
        return report

    def writes(self, target: Any | None = None) -> list[Any]:
        return arm_writes(self.arm, target)

    def actual(self, target: Any) -> Any:
        return build_actuators(self.settings, StaticTokenCredential("contract-token"))[target.name].read_actual(target)


@pytest.fixture
def world(arm: FakeArm, store: Store) -> Iterator[World]:
    arm.clear_faults()
    yield World(arm, store)
    arm.clear_faults()


# ---------------------------------------------------------------- the happy path


def test_a_drain_is_written_once_per_target_recorded_and_confirmed_by_read_back(world: World) -> None:
    r = world.reconciler()
    report = world.tick(r, health(eastus=H.UNHEALTHY))
    assert report.ok, report
    assert sorted((c.target, c.region, c.field) for c in report.applied) == sorted(
        (t.name, "eastus", Field.ENABLED) for t in world.settings.targets
    )
    assert all(t.confirmed for t in report.targets.values())
    tm_patch = world.writes(world.tm)
    assert [(w.method, w.body) for w in tm_patch] == [("PATCH", {"properties": {"endpointStatus": "Disabled"}})]
    assert len(world.writes(world.fd)) == 1 and len(world.writes(world.afd)) == 1
    rows = world.store.changes(status=ChangeStatus.APPLIED)
    assert len(rows) == 3 and all(row.fencing_token == world.token and row.plan_id == report.plan_id for row in rows)
    assert {e.target for e in world.store.events(kinds=[EventKind.CHANGE])} == {t.name for t in world.settings.targets}
    eastus_rows = [row for row in world.store.target_endpoints() if row.region == "eastus"]
    assert all(
        row.applied is not None and row.applied.enabled is False and row.actual is not None and row.actual.enabled is False
        for row in eastus_rows
    )
    assert all(row.write_status is None for row in eastus_rows)
    again = world.tick(r, health(eastus=H.UNHEALTHY))
    assert not again.plan.changes
    assert len(world.writes()) == 3  # nothing applied twice


def test_plan_only_reads_and_writes_nothing_anywhere(world: World) -> None:
    plan = world.reconciler().plan_only(health(eastus=H.UNHEALTHY))
    assert {(c.target, c.region, c.field, c.desired) for c in plan.changes} == {
        (t.name, "eastus", Field.ENABLED, False) for t in world.settings.targets
    }
    assert world.arm.request_log and {e.method for e in world.arm.request_log} == {"GET"}
    assert world.store.plans() == [] and world.store.changes() == []


def test_dry_run_records_the_plan_and_writes_nothing(world: World) -> None:
    r = world.reconciler()
    report = world.tick(r, health(eastus=H.UNHEALTHY), dry_run=True)
    assert report.dry_run and len(report.plan.changes) == 3
    assert world.writes() == []
    (plan_row,) = world.store.plans()
    assert plan_row.dry_run is True
    assert {row.status for row in world.store.changes()} == {ChangeStatus.SKIPPED}
    assert {row.error_code for row in world.store.changes()} == {"dry_run"}


def test_a_reviewed_plan_is_applied_only_if_it_is_still_the_same(world: World) -> None:
    r = world.reconciler()
    reviewed = r.plan_only(health(eastus=H.UNHEALTHY))
    refused = world.tick(r, health(westeurope=H.UNHEALTHY), manual_plan_checksum=reviewed.checksum)
    assert refused.refused and world.writes() == []
    applied = world.tick(r, health(eastus=H.UNHEALTHY), manual_plan_checksum=reviewed.checksum)
    assert applied.refused is None and len(applied.applied) == 3


# ---------------------------------------------------------------- Azure misbehaving


def test_throttling_with_and_without_retry_after_mid_plan_is_retried_and_lands(world: World) -> None:
    world.arm.inject_throttle(1, retry_after=0.05, path_contains=f"/frontDoors/{world.fd.front_door}", method="PUT")
    world.arm.inject_throttle(2, retry_after=None, path_contains=f"/profiles/{world.afd.profile}/", method="PATCH")
    report = world.tick(world.reconciler(), health(eastus=H.UNHEALTHY))
    assert report.ok and len(report.applied) == 3
    assert [w.status for w in world.writes(world.fd)] == [429, 200]
    assert [w.status for w in world.writes(world.afd)] == [429, 429, 202]
    assert world.writes(world.fd)[0].fault == "throttle"


def test_server_errors_are_retried_with_backoff(world: World) -> None:
    world.arm.inject_error(500, 1, method="PATCH", path_contains="/trafficmanagerprofiles/")
    world.arm.inject_error(503, 1, method="PATCH", path_contains="/trafficmanagerprofiles/")
    report = world.tick(world.reconciler(), health(eastus=H.UNHEALTHY))
    assert report.ok
    assert [w.status for w in world.writes(world.tm)] == [500, 503, 200]


@pytest.mark.serial
def test_a_hanging_azure_costs_no_more_than_the_deadline_and_the_next_tick_converges(world: World) -> None:
    world.arm.inject_hang(10, max_s=20, method="PATCH", path_contains="/trafficmanagerprofiles/")
    r = world.reconciler(deadline_s=1.0)
    started = time.monotonic()
    report = world.tick(r, health(eastus=H.UNHEALTHY))
    took = time.monotonic() - started
    assert took < 1.0 + 1.5, f"tick took {took:.2f}s with a 1s deadline"
    (failed,) = report.failed
    assert failed[0].target == world.tm.name and failed[1] in ("Timeout", "DeadlineExceeded")
    row = next(row for row in world.store.changes(target=world.tm.name))
    assert row.status is ChangeStatus.FAILED and row.error_code == failed[1]
    world.arm.clear_faults()
    again = world.tick(r, health(eastus=H.UNHEALTHY))
    assert [(c.target, c.field) for c in again.applied] == [(world.tm.name, Field.ENABLED)]
    assert world.actual(world.tm).endpoints["eastus"].enabled is False


def test_a_hanging_read_of_one_target_does_not_stop_the_others(world: World) -> None:
    world.arm.inject_hang(5, max_s=20, method="GET", path_contains=f"/frontDoors/{world.fd.front_door}")
    started = time.monotonic()
    # the deadline leaves the healthy targets' writes room on a loaded machine; the hang (20 s) is far past it
    report = world.tick(world.reconciler(deadline_s=4.0), health(eastus=H.UNHEALTHY))
    assert time.monotonic() - started < 4.0 + 2.0
    assert report.targets[world.fd.name].read_error is not None
    assert {c.target for c in report.applied} == {world.tm.name, world.afd.name}


@pytest.mark.serial
def test_a_write_that_lands_after_the_deadline_is_confirmed_next_tick_not_redone_nor_taken_for_drift(world: World) -> None:
    world.arm.inject_latency(2.0, count=2, method="GET", path_contains="operationresults")  # the LROs' status polls
    r = world.reconciler(deadline_s=1.0)
    first = world.tick(r, health(eastus=H.UNHEALTHY))
    slow = {world.fd.name, world.afd.name}  # both long-running; Traffic Manager's PATCH is not
    assert sorted((c.target, code) for c, code, _ in first.failed) == sorted((name, "OperationTimeout") for name in slow)
    world.arm.clear_faults()
    second = world.tick(r, health(eastus=H.UNHEALTHY))
    assert not second.plan.changes
    for target in (world.fd, world.afd):
        assert len(second.targets[target.name].settled) == 1
        assert [row.status for row in world.store.changes(target=target.name)] == [ChangeStatus.APPLIED]
        assert len(world.writes(target)) == 1
    assert not world.store.events(kinds=[EventKind.DRIFT])


def test_a_validation_error_is_recorded_with_arms_code_and_message_and_not_retried(world: World) -> None:
    message = "Invalid value 'Disabled' for property 'endpointStatus' (test)."
    world.arm.inject(
        FaultRule(
            "error", count=None, status=400, code="BadRequest", message=message, method="PATCH", path_contains="/trafficmanagerprofiles/"
        )
    )
    r = world.reconciler()
    report = world.tick(r, health(eastus=H.UNHEALTHY))
    assert [(c.target, code, msg) for c, code, msg in report.failed] == [(world.tm.name, "BadRequest", message)]
    row = world.store.changes(target=world.tm.name)[0]
    assert (row.status, row.error_code, row.error_message) == (ChangeStatus.FAILED, "BadRequest", message)
    assert any(e.severity == "critical" and "BadRequest" in e.summary for e in world.store.events(kinds=[EventKind.CHANGE]))
    tm_row = next(row for row in world.store.target_endpoints(world.tm.name) if row.region == "eastus")
    assert tm_row.write_status is WriteStatus.FAILED and "BadRequest" in (tm_row.write_error or "")
    for _ in range(3):
        later = world.tick(r, health(eastus=H.UNHEALTHY))
        assert [s.rule for s in later.plan.skipped if s.change.target == world.tm.name] == [FAILED_RULE]
    assert len(world.writes(world.tm)) == 1  # one attempt, not a loop


def test_an_unreadable_target_sits_the_tick_out_and_the_others_go_on(world: World) -> None:
    world.arm.inject_error(500, None, method="GET", path_contains=f"/frontDoors/{world.fd.front_door}")
    report = world.tick(world.reconciler(), health(eastus=H.UNHEALTHY))
    assert report.targets[world.fd.name].read_error is not None
    assert {c.target for c in report.applied} == {world.tm.name, world.afd.name}
    assert world.writes(world.fd) == []
    assert any(e.kind == "read_error" and e.target == world.fd.name for e in world.store.events())


# ---------------------------------------------------------------- drift


def _portal_edit(world: World, target: Any, region: str, **fields: Any) -> None:
    world.arm.mutate(resource_id(target, region), portal_fields(target, **fields))


def test_a_portal_edit_is_reported_and_not_overwritten_under_report(world: World) -> None:
    r = world.reconciler()
    assert not world.tick(r, health()).plan.changes
    _portal_edit(world, world.tm, "westeurope", weight=450)
    report = world.tick(r, health())
    assert report.targets[world.tm.name].drift == {"westeurope": "changed outside regionguard: weight 300 -> 450"}
    assert [(s.change.region, s.rule) for s in report.plan.skipped] == [("westeurope", DRIFT_RULE)]
    assert world.writes() == []
    assert world.actual(world.tm).endpoints["westeurope"].weight == 450
    row = next(row for row in world.store.target_endpoints(world.tm.name) if row.region == "westeurope")
    assert row.drift == "changed outside regionguard: weight 300 -> 450"
    world.tick(r, health())
    drift_events = world.store.events(kinds=[EventKind.DRIFT])
    assert len(drift_events) == 1 and drift_events[0].severity == "warning"  # reported once, not per tick
    # The operator decides: revert. The next tick writes desired state and the drift clears.
    resolve_drift(world.settings, world.store, world.tm.name, "westeurope", "revert", "alice", world.clock.now())
    reverted = world.tick(r, health())
    assert [(c.region, c.desired) for c in reverted.applied] == [("westeurope", 300)]
    world.tick(r, health())
    assert next(row for row in world.store.target_endpoints(world.tm.name) if row.region == "westeurope").drift is None


def test_an_operator_can_adopt_reported_drift_and_it_sticks(world: World) -> None:
    r = world.reconciler()
    world.tick(r, health())
    _portal_edit(world, world.fd, "eastus", enabled=False)
    assert world.tick(r, health()).targets[world.fd.name].drift
    resolve_drift(world.settings, world.store, world.fd.name, "eastus", "adopt", "alice", world.clock.now())
    (drain,) = world.store.active_overrides(world.clock.now())
    assert (drain.kind.value, drain.who, drain.target, drain.region) == ("drain", "alice", world.fd.name, "eastus")
    report = world.tick(r, health())
    assert not report.plan.changes and not report.targets[world.fd.name].drift
    assert world.writes() == []
    assert next(row for row in world.store.target_endpoints(world.fd.name) if row.region == "eastus").drift is None


def test_a_portal_edit_is_reverted_under_revert(arm: FakeArm, store: Store) -> None:
    world = World(arm, store, drift="revert")
    r = world.reconciler()
    world.tick(r, health())
    _portal_edit(world, world.afd, "japaneast", enabled=False)
    report = world.tick(r, health())
    assert [(c.target, c.region, c.field, c.desired) for c in report.applied] == [(world.afd.name, "japaneast", Field.ENABLED, True)]
    assert world.actual(world.afd).endpoints["japaneast"].enabled is True
    assert any("reverting" in e.summary for e in store.events(kinds=[EventKind.DRIFT]))


def test_a_portal_edit_is_adopted_as_an_override_under_adopt(arm: FakeArm, store: Store) -> None:
    world = World(arm, store, drift="adopt")
    r = world.reconciler()
    world.tick(r, health())
    _portal_edit(world, world.tm, "japaneast", weight=420)
    report = world.tick(r, health())
    assert not report.plan.changes and world.writes() == []
    (pin,) = store.active_overrides(world.clock.now())
    assert (pin.kind.value, pin.target, pin.region, pin.weight) == ("pin", world.tm.name, "japaneast", 420)
    assert not world.tick(r, health()).plan.changes  # it sticks
    assert world.actual(world.tm).endpoints["japaneast"].weight == 420


# ---------------------------------------------------------------- budget, crash, fencing, panic


def test_when_the_write_budget_runs_short_drains_go_first(world: World) -> None:
    budget = SubscriptionWriteBudget(3, world.clock)
    r = world.reconciler(budget=budget)
    report = world.tick(r, health(eastus=H.UNHEALTHY, westeurope=(H.DEGRADED, 0.5)))
    assert sorted((c.target, c.field) for c in report.applied) == sorted((t.name, Field.ENABLED) for t in world.settings.targets)
    held = [s for s in report.plan.skipped if s.rule == BUDGET_RULE]
    assert sorted((s.change.target, s.change.region, s.change.field) for s in held) == sorted(
        (t.name, "westeurope", Field.WEIGHT) for t in world.settings.targets
    )
    assert len(world.writes()) == 3
    assert {row.error_code for row in world.store.changes(status=ChangeStatus.SKIPPED)} == {BUDGET_RULE}


class CrashAfterFirstWrite:
    """Wraps an actuator: the process 'dies' right after the first write lands, before it is recorded."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.kind = inner.kind

    def read_actual(self, target: Any, *, deadline: float | None = None) -> Any:
        return self.inner.read_actual(target, deadline=deadline)

    def apply(self, target: Any, plan: Any, *, deadline: float, on_result: Any = None) -> Any:
        def die(change: Any, status: str, error: Any) -> None:
            raise KeyboardInterrupt("simulated crash between two writes")

        return self.inner.apply(target, plan, deadline=deadline, on_result=die)


def test_a_crash_between_two_writes_of_one_plan_leaves_a_trail_and_the_next_tick_converges(world: World) -> None:
    actuators = build_actuators(world.settings, StaticTokenCredential("contract-token"), retry=FAST_RETRY)
    actuators[world.tm.name] = CrashAfterFirstWrite(actuators[world.tm.name])
    sick = health(eastus=(H.DEGRADED, 0.5), westeurope=(H.DEGRADED, 0.5))
    with pytest.raises(KeyboardInterrupt):
        world.reconciler(actuators).reconcile_once(sick, fencing_token=world.token)
    pending = world.store.changes(target=world.tm.name, status=ChangeStatus.PENDING)
    assert sorted(row.region for row in pending) == ["eastus", "westeurope"]  # the trail the crash left
    assert len(world.writes(world.tm)) == 1  # eastus landed, westeurope was never sent
    world.clock.advance(120)
    # A new process (fresh memory, same store) takes over.
    report = world.tick(world.reconciler(), sick)
    assert [(c.target, c.region) for c in report.applied if c.target == world.tm.name] == [(world.tm.name, "westeurope")]
    tm_rows = {row.region: row for row in world.store.changes(target=world.tm.name) if row.plan_id == pending[0].plan_id}
    assert tm_rows["eastus"].status is ChangeStatus.APPLIED  # confirmed by read-back
    # never sent: settled as still to do (and done this tick), not as a failure of a write
    assert tm_rows["westeurope"].status is ChangeStatus.SKIPPED and tm_rows["westeurope"].error_code == NOT_WRITTEN
    patched = [w.path.rsplit("/", 1)[-1] for w in world.writes(world.tm)]
    assert sorted(patched) == ["aoai-eastus", "aoai-westeurope"]  # each exactly once: nothing applied twice
    assert not world.store.events(kinds=[EventKind.DRIFT])  # our own write is not mistaken for drift
    assert not world.tick(world.reconciler(), sick).plan.changes


def test_a_worker_that_lost_the_lease_writes_nothing(world: World) -> None:
    r = world.reconciler()
    world.clock.advance(7200)  # the lease expired ...
    assert world.store.try_acquire_lease(LeaseName.LEADER, "worker-2", 60, world.clock.now()) is not None  # ... and someone else took it
    report = r.reconcile_once(health(eastus=H.UNHEALTHY), fencing_token=world.token)
    assert report.fenced and not report.applied
    assert world.writes() == []
    assert {(row.status, row.error_code) for row in world.store.changes()} == {(ChangeStatus.SKIPPED, FENCED_RULE)}


def test_every_region_unhealthy_raises_a_panic_flag_that_clears_when_health_returns(world: World) -> None:
    r = world.reconciler()
    everything_down = health(eastus=H.UNHEALTHY, westeurope=H.UNHEALTHY, japaneast=H.UNHEALTHY)
    report = world.tick(r, everything_down)
    assert not report.applied and world.writes() == []  # fail open: nothing drained
    assert set(world.store.panics()) == {t.name for t in world.settings.targets}
    world.tick(r, everything_down)
    assert len(world.store.events(kinds=[EventKind.PANIC])) == 3  # raised once per target, not per tick
    world.tick(r, health())
    assert world.store.panics() == {}
    assert len(world.store.events(kinds=["panic"])) == 6
