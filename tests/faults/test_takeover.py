"""After a takeover, a write the old leader may still have in flight is waited out, read back and settled.

Issue 14, case 4: after kill -9 mid-apply the new leader marked the old
leader's in-flight writes "failed / Interrupted" and wrote them again; then
the old writes landed too (6 PATCHes for 3 changes, and "failed" in the
audit trail for writes that succeeded).
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

from controlplane.domain import ChangeStatus, EventKind
from controlplane.runtime.reconcile import IN_FLIGHT_RULE, NOT_WRITTEN
from tests.faults.world import TWO_WRITES, World, health
from tests.waiting import wait_until


class DiesAfterFirstWrite:
    """The old leader's process dies (kill -9) once its first write is answered: nothing more is recorded or sent."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.kind = inner.kind

    def read_actual(self, target: Any, *, deadline: float | None = None) -> Any:
        return self.inner.read_actual(target, deadline=deadline)

    def apply(self, target: Any, plan: Any, *, deadline: float, on_result: Any = None) -> Any:
        def die(change: Any, status: str, error: Any) -> None:
            raise KeyboardInterrupt("kill -9")

        return self.inner.apply(target, plan, deadline=deadline, on_result=die)


def test_the_new_leader_waits_out_the_old_leaders_write_then_settles_it_by_read_back(world: World) -> None:
    old_actuators = world.actuators(call_s=5.0)
    old_actuators[world.tm.name] = DiesAfterFirstWrite(old_actuators[world.tm.name])
    old = world.reconciler("worker-a", old_actuators, call_s=5.0)
    token = world.lease("worker-a", 8)
    start = world.clock.now()  # the old leader records its plan at this time
    # ARM holds the old leader's first PATCH, unanswered, until the new leader's first tick is over
    world.arm.inject_hold(count=1, max_s=30, method="PATCH", path_contains="/trafficmanagerprofiles/")
    died: list[BaseException] = []

    def old_leader() -> None:
        try:
            old.reconcile_once(health(**TWO_WRITES), fencing_token=token)
        except BaseException as exc:  # the simulated kill
            died.append(exc)

    thread = threading.Thread(target=old_leader, name="old-leader", daemon=True)
    thread.start()
    wait_until(world.arm.held, 10, "the old leader's PATCH to reach ARM")
    world.clock.advance(9)  # the old lease ran out ...
    new_token = world.lease("worker-b", 60)  # ... and worker-b took over
    new = world.reconciler("worker-b", call_s=5.0)
    first = new.reconcile_once(health(**TWO_WRITES), fencing_token=new_token)
    held = {(s.change.region, s.rule) for s in first.plan.skipped if s.change.target == world.tm.name}
    assert held == {("eastus", IN_FLIGHT_RULE), ("westeurope", IN_FLIGHT_RULE)}, held
    assert world.tm_patches() == [], "the new leader wrote while the old leader's write was in flight"
    assert world.arm.release() == 1  # ARM answers the old leader's PATCH: it lands
    thread.join(15)
    assert died and world.tm_patches() == ["aoai-eastus"]  # the old write landed after the takeover
    world.clock.t = new.in_flight_until(start) + timedelta(seconds=1)  # past the old leader's write deadline: surely over
    new.reconcile_once(health(**TWO_WRITES), fencing_token=new_token)
    assert sorted(world.tm_patches()) == ["aoai-eastus", "aoai-westeurope"], "a change was written twice"
    rows = {r.region: r for r in world.store.changes(target=world.tm.name) if r.fencing_token == token}
    assert rows["eastus"].status is ChangeStatus.APPLIED  # settled by read-back: it did land
    assert rows["westeurope"].status is ChangeStatus.SKIPPED and rows["westeurope"].error_code == NOT_WRITTEN
    assert not world.store.changes(target=world.tm.name, status=ChangeStatus.FAILED), "a write that succeeded is audited as failed"
    assert not [e for e in world.store.events(kinds=[EventKind.CHANGE]) if e.summary.startswith("failed")]
    assert not new.reconcile_once(health(**TWO_WRITES), fencing_token=new_token).plan.changes  # converged
