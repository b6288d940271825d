"""Azure's answers, bad ones included: classified right, bounded in time and size.

Issue 14, case 5: a malformed 200 to a write was classed as permanent and
blocked the write for 15 minutes, even when an operator issued the drain
again. Case 2: an answer trickling one byte a second froze reconcile, and a
500 MB body was read into memory whole.
"""

from __future__ import annotations

import time

from controlplane.domain import ChangeStatus, Override, OverrideKind
from controlplane.runtime.reconcile import FAILED_RULE
from tests.faults.world import H, World, health


def test_a_malformed_success_answer_to_a_write_is_transient_and_retried(world: World) -> None:
    world.arm.inject_garbage(method="PATCH", path_contains="/trafficmanagerprofiles/")
    r = world.reconciler("worker-a")
    report = r.reconcile_once(health(westeurope=(H.DEGRADED, 0.5)), fencing_token=world.lease("worker-a", 60))
    tm_failed = [f for f in report.failed if f[0].target == world.tm.name]
    assert not tm_failed, f"the garbage answer was not retried: {tm_failed}"
    assert [c.region for c in report.applied if c.target == world.tm.name] == ["westeurope"]
    assert world.tm_patches() == ["aoai-westeurope", "aoai-westeurope"]  # the garbage one, then the retry


def test_an_operators_new_drain_is_not_swallowed_by_an_old_permanent_failure(world: World) -> None:
    r = world.reconciler("worker-a")
    token = world.lease("worker-a", 3600)
    drain = world.store.add_override(
        Override(kind=OverrideKind.DRAIN, who="alice", why="test", created_at=world.clock.now(), region="eastus", target=world.tm.name)
    )
    world.arm.inject_error(400, code="BadRequest", method="PATCH", path_contains="/trafficmanagerprofiles/")
    first = r.reconcile_once(health(), fencing_token=token)
    assert [(c.region, code) for c, code, _ in first.failed if c.target == world.tm.name] == [("eastus", "BadRequest")]
    world.clock.advance(60)
    again = r.reconcile_once(health(), fencing_token=token)  # the same write is held: it failed permanently
    assert [(s.change.region, s.rule) for s in again.plan.skipped if s.change.target == world.tm.name] == [("eastus", FAILED_RULE)]
    assert drain.id is not None
    world.store.lift_override(drain.id, "alice", world.clock.now())
    world.clock.advance(1)
    world.store.add_override(
        Override(kind=OverrideKind.DRAIN, who="alice", why="again", created_at=world.clock.now(), region="eastus", target=world.tm.name)
    )
    report = r.reconcile_once(health(), fencing_token=token)
    assert [c.region for c in report.applied if c.target == world.tm.name] == ["eastus"], "the operator's new drain was swallowed"
    rows = world.store.changes(target=world.tm.name, status=ChangeStatus.APPLIED)
    assert [r.region for r in rows] == ["eastus"]


def test_an_answer_that_trickles_in_is_cut_off_at_the_calls_hard_deadline(world: World) -> None:
    world.arm.inject_trickle(count=None, every_s=0.05, method="GET", path_contains="/trafficmanagerprofiles/")
    r = world.reconciler("worker-a", call_s=1.0, deadline_s=3.0)
    started = time.monotonic()
    report = r.reconcile_once(health(), fencing_token=world.lease("worker-a", 60))
    took = time.monotonic() - started
    error = report.targets[world.tm.name].read_error
    assert error is not None and error.startswith("Timeout") and "hard deadline" in error, error
    assert took < 3.0 + 1.5, f"a trickling answer held the tick for {took:.1f} s"
    assert report.targets[world.settings.targets[1].name].read_error is None  # the others were read


def test_an_answer_over_the_size_cap_is_refused_with_a_clear_error(world: World) -> None:
    world.arm.inject_huge(count=None, body_bytes=64 * 1024 * 1024, method="GET", path_contains="/trafficmanagerprofiles/")
    r = world.reconciler("worker-a")
    report = r.reconcile_once(health(), fencing_token=world.lease("worker-a", 60))
    error = report.targets[world.tm.name].read_error
    assert error is not None and error.startswith("ResponseTooLarge") and "byte cap" in error, error
