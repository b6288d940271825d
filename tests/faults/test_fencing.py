"""One writer for real: the lease is checked right before each write, and must outlive it.

Issue 14, case 1: a leader paused after the first PATCH of a two-write plan
resumed after another took the lease, and its second PATCH landed over the
new leader's. Case 2: a stuck tick kept the lease renewed, so no standby
took over.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from controlplane.actuators.base import FencedError
from controlplane.actuators.transport import write_fence
from controlplane.config import Reconcile
from controlplane.domain import ChangeStatus, EventKind, LeaseName, Plan, TargetState
from controlplane.runtime.leader import LeaderElector, LeaseTiming
from controlplane.runtime.reconcile import FENCED_RULE
from controlplane.runtime.worker import Worker
from tests.faults.world import TWO_WRITES, World, health
from tests.waiting import wait_until


def test_a_leader_paused_between_two_writes_sends_nothing_once_another_holds_the_lease(world: World) -> None:
    a = world.reconciler("worker-a")
    token = world.lease("worker-a", 60)
    paused: list[str] = []

    def pause_and_take_over(method: str, path: str) -> None:
        # the old leader "pauses" while its first PATCH is being handled: its lease runs out, worker-b takes it
        if "/trafficmanagerprofiles/" in path.lower() and not paused:
            paused.append(path)
            world.clock.advance(120)
            world.lease("worker-b", 60)

    world.arm.before_write.append(pause_and_take_over)
    report = a.reconcile_once(health(**TWO_WRITES), fencing_token=token)
    assert paused, "the plan wrote nothing to Traffic Manager"
    assert len(world.tm_patches()) == 1, f"the old leader wrote after losing the lease: {world.tm_patches()}"
    assert report.fenced
    rows = world.store.changes(target=world.tm.name)
    assert sorted((r.status, r.error_code) for r in rows) == [(ChangeStatus.APPLIED, None), (ChangeStatus.SKIPPED, FENCED_RULE)]
    assert not [e for e in world.store.events(kinds=[EventKind.CHANGE]) if e.severity == "critical"], "a fenced write was audited as failed"


def test_a_write_starts_only_if_the_lease_outlives_its_deadline(world: World) -> None:
    a = world.reconciler("worker-a", call_s=2.0, skew_s=0.5)
    token = world.lease("worker-a", 2.0)  # valid, but for less than one call's deadline plus the skew allowance
    report = a.reconcile_once(health(**TWO_WRITES), fencing_token=token)
    assert world.writes() == [], "a write was sent on a lease that could run out while it is in flight"
    assert report.fenced and not report.applied and not report.failed
    world.clock.advance(3)
    token = world.lease("worker-a", 60)
    report = a.reconcile_once(health(**TWO_WRITES), fencing_token=token)
    assert report.applied and not report.fenced
    assert sorted(world.tm_patches()) == ["aoai-eastus", "aoai-westeurope"]


def test_every_azure_call_deadline_is_shorter_than_the_lease() -> None:
    timing = LeaseTiming.for_lease(15.0, request_timeout=30.0)
    assert timing.call_s + timing.skew_s < timing.ttl_s - timing.renew_s
    try:
        LeaseTiming(ttl_s=15.0, call_s=30.0, skew_s=1.0)
    except ValueError as exc:
        assert "must be shorter than the lease" in str(exc)
    else:
        raise AssertionError("a call deadline longer than the lease was accepted")


class StuckReads:
    """An actuator whose reads never return (until released): a tick stuck outside any Azure deadline."""

    kind = "traffic_manager"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()

    def read_actual(self, target: Any, *, deadline: float | None = None) -> TargetState:
        self.entered.set()
        self.release.wait(30)
        return TargetState(target=target.name, endpoints={})

    def apply(self, target: Any, plan: Plan, *, deadline: float, on_result: Any = None) -> Any:
        raise AssertionError("a stuck worker must not write")


def test_a_stuck_tick_lets_the_lease_lapse_and_a_standby_takes_over(world: World) -> None:
    settings = world.settings.model_copy(update={"reconcile": Reconcile(interval=0.3, deadline=1.0)})
    stuck = StuckReads()
    worker = Worker(
        settings, world.store, holder="worker-a", actuators={t.name: stuck for t in settings.targets}, probe=False, lease_ttl_s=2.0
    )
    standby = LeaderElector(world.store, "worker-b", ttl_s=2.0)
    worker.start()
    try:
        wait_until(stuck.entered.is_set, 10, "the worker to reach its (stuck) read")
        wait_until(lambda: standby.tick().leader, 15, "the standby to take the lease (the stuck leader kept renewing it?)", step=0.2)
        assert not worker.elector.is_leader
        lease = world.store.lease(LeaseName.LEADER)
        assert lease is not None and lease.holder == "worker-b"
        wait_until(
            lambda: any("reconcile tick has been running" in e.summary for e in world.store.events(kinds=[EventKind.LEASE])),
            5,
            "the lapse recorded with its reason",
        )
    finally:
        stuck.release.set()
        worker.stop(timeout=5)
        standby.release()


def test_the_fence_is_asked_again_right_before_the_bytes_go_out(world: World) -> None:
    """A pause between the first check and the send (SIGSTOP, a stalled thread) must not let the write out."""
    asked: list[float] = []

    def lost_in_between(seconds: float) -> None:
        asked.append(seconds)
        if len(asked) > 1:  # the lease was lost while connecting
            raise FencedError("lease lost while connecting", code="Fenced")

    actuator = world.actuators()[world.tm.name]
    plan = world.reconciler("worker-a").plan_only(health(**TWO_WRITES)).for_target(world.tm.name)
    assert plan.changes
    with write_fence(lost_in_between):
        report = actuator.apply(world.tm, plan, deadline=time.monotonic() + 5)
    assert len(asked) >= 2 and asked[1] <= asked[0]
    assert world.writes() == [], "a write went out after the fence said no"
    assert report.failed and all(isinstance(error, FencedError) for _, error in report.failed)
