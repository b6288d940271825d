"""A real leader process paused (SIGSTOP) with a PATCH in flight writes nothing once the standby holds the lease.

Issue 14, case 1, as it was found: two `regionguard run` workers on
PostgreSQL; the leader was paused after its first PATCH of a two-write plan;
the standby took the lease and an operator drained a region; the old leader
resumed (SIGCONT) and its stale "Enabled" PATCH landed after the new leader's
"Disabled". tests/faults/test_fencing.py covers the same in one process with
a fake clock; this runs the processes for real.

What is injected: a ``hold`` fault on the fake ARM keeps the leader's first
Traffic Manager PATCH unhandled until the test has stopped the leader, so the
pause happens exactly while that PATCH is in flight (no sleep decides it).
The tick's deadline (``reconcile.deadline``) is longer than the pause, so
when the old leader resumes, its tick still has time for the second write:
only the fence right before each write can stop it. Each worker's requests
carry ``regionguard-worker/<holder>`` in their User-Agent, so the fake ARM's
request log says who wrote and when the request arrived.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from controlplane.actions import Action, ActionRequest, Result, execute
from controlplane.config import load_settings
from controlplane.domain import ChangeStatus, HealthStateName, LeaseName
from controlplane.runtime.leader import LeaseTiming
from controlplane.users import Principal
from simulator.arm_state import tm_endpoint_id
from tests.faults.stopper import process_state, sessions_idle_in_transaction
from tests.integration.test_worker_ha import LEASE_TTL, World, _world, wait_for
from tests.waiting import PROCESS_START_S, wait_until

DEADLINE_S = 6.0  # the tick's deadline: longer than the pause, so the paused tick is not over when it resumes
TARGET = "tm-weighted"
REGIONS = ("eastus", "westeurope")  # disabled in Azure at start: the leader's plan enables both, two PATCHes
DRAINED = "westeurope"  # the operator drains the region of the old leader's second PATCH
OPERATOR = Principal("oncall", "operator", "cli")


def _edit(data: dict[str, Any]) -> None:
    data["targets"] = [t for t in data["targets"] if t["name"] == TARGET]
    data["reconcile"].update(interval="0.5s", deadline=f"{DEADLINE_S:g}s")


@pytest.fixture
def world(postgres_url: str, tmp_path: Path) -> Iterator[World]:
    yield from _world(postgres_url, tmp_path, _edit)


def _endpoint(w: World, region: str) -> str:
    t = next(t for t in load_settings(w.config).targets if t.name == TARGET)
    return tm_endpoint_id(t.subscription_id, t.resource_group, t.profile, t.endpoints[region].type, t.endpoints[region].name)


def _writes_by(w: World, holder: str) -> list[Any]:
    return [
        e for e in w.arm.request_log if e.method in ("PATCH", "PUT") and f"regionguard-worker/{holder}" in e.headers.get("User-Agent", "")
    ]


def _pause(w: World, proc: subprocess.Popen[str]) -> float:
    """SIGSTOP, and wait until the kernel shows it stopped. If it was caught inside a database transaction, let
    it run a moment and stop it again (its held PATCH keeps its reconcile thread waiting): PostgreSQL would end
    that session after idle_in_transaction_s (tests/faults/test_stopped_in_transaction.py), and this test is
    about the stale PATCH, not about a worker whose session was cut off. Returns the wall-clock time by which
    it was stopped for good (seen stopped; the query that follows does not count)."""
    for _ in range(20):
        proc.send_signal(signal.SIGSTOP)
        wait_until(lambda: process_state(proc.pid) == "T", 5, "the leader to stop", step=0.002)
        stopped_at = time.time()
        if not sessions_idle_in_transaction(w.store):
            return stopped_at
        proc.send_signal(signal.SIGCONT)
        wait_until(lambda: process_state(proc.pid) != "T", 5, "the leader to run again", step=0.002)
    raise AssertionError("the leader was inside a database transaction at every one of 20 stops")


def _act(w: World, action: Action, reason: str, region: str | None = None) -> Result:
    """An operator's action, the way the CLI and the dashboard take it."""
    return execute(load_settings(w.config), w.store, ActionRequest(action, reason, region=region), OPERATOR, datetime.now(UTC))


def _all_healthy(w: World) -> bool:
    regions = w.store.health()[1]
    return len(regions) == 3 and all(r.state is HealthStateName.HEALTHY for r in regions.values())


def _story(w: World, since: float) -> str:
    """The fake ARM's log (seconds from ``since``, who, what), for a failure message."""
    return "\n".join(
        f"{e.received - since:+6.2f} s {e.method} {e.path.rsplit('/', 1)[-1]} {e.status} {e.body or ''} by"
        f" {e.headers.get('User-Agent', '').split(' ')[0]}"
        for e in w.arm.request_log
    )


def _reads_by(w: World, holder: str, after: float) -> list[Any]:
    return [
        e
        for e in w.arm.request_log
        if e.method == "GET" and f"regionguard-worker/{holder}" in e.headers.get("User-Agent", "") and e.received > after
    ]


def test_a_leader_paused_with_a_patch_in_flight_writes_nothing_after_the_standby_takes_over(world: World) -> None:
    w = world
    for region in REGIONS:
        w.arm.mutate(_endpoint(w, region), {"endpointStatus": "Disabled"})
    # frozen until every region is known healthy, so that the leader's first plan enables both at once
    _act(w, Action.FREEZE, "fault test: hold automation until every region is known")
    a = w.worker("worker-a")
    wait_for(lambda: w.holder() == "worker-a", PROCESS_START_S, "worker-a to take the lease")
    w.worker("worker-b")
    wait_for(lambda: w.started("worker-b"), PROCESS_START_S, "worker-b to start")
    wait_for(lambda: _all_healthy(w), 30, "every region to be healthy")
    w.arm.inject_hold(count=1, max_s=30, method="PATCH", path_contains="/trafficmanagerprofiles/")
    unfrozen_at = datetime.now(UTC)
    _act(w, Action.UNFREEZE, "fault test: let the leader enable both")

    held = wait_until(w.arm.held, 30, "worker-a's first PATCH to reach ARM", step=0.002)[0]
    assert "regionguard-worker/worker-a" in (held.user_agent or ""), held
    stopped_at = _pause(w, a)  # its first PATCH is in flight: received by ARM, not yet answered
    call_s = LeaseTiming.for_lease(LEASE_TTL, load_settings(w.config).azure.request_timeout).call_s
    assert stopped_at - held.received < call_s, "the leader was stopped only after its PATCH's deadline (machine too busy?)"
    lease = w.store.lease(LeaseName.LEADER)
    assert lease is not None and lease.holder == "worker-a" and lease.expires_at is not None
    token_a, lease_ends = lease.fencing_token, lease.expires_at.timestamp()  # a stopped worker-a renews no more
    assert w.arm.release() == 1  # ARM handles it and answers a process that sleeps
    wait_for(lambda: _writes_by(w, "worker-a"), 5, "the held PATCH to be answered")

    wait_for(lambda: w.holder() == "worker-b", LEASE_TTL + 10, "worker-b to take the lease from the paused leader")
    assert _act(w, Action.DRAIN, "fault test: drain while the old leader sleeps", region=DRAINED).added
    a.send_signal(signal.SIGCONT)

    def old_plan() -> dict[str, Any]:
        return {r.region: r for r in w.store.changes(target=TARGET) if r.fencing_token == token_a and r.created_at >= unfrozen_at}

    wait_for(
        lambda: set(old_plan()) == set(REGIONS) and all(r.status is not ChangeStatus.PENDING for r in old_plan().values()),
        DEADLINE_S + 10,
        "the old leader's plan to be finished (by itself) or settled (by worker-b)",
    )
    settled_at = time.time()  # two of worker-b's reads after that: the tick that began with the first one is over
    wait_for(lambda: len(_reads_by(w, "worker-b", settled_at)) >= 2, 10, "worker-b to finish a tick after that")

    story = _story(w, lease_ends)
    late = [e for e in _writes_by(w, "worker-a") if e.received >= lease_ends]
    assert late == [], f"the old leader wrote after its lease passed:\n{story}"
    assert len(_writes_by(w, "worker-a")) == 1, story  # only the PATCH that was in flight when it paused
    assert w.arm.get_resource(_endpoint(w, DRAINED))["properties"]["endpointStatus"] == "Disabled", f"the drain was undone:\n{story}"
    assert old_plan()[DRAINED].status is ChangeStatus.SKIPPED, old_plan()[DRAINED]  # fenced: never sent
    assert a.poll() is None, "the old leader died"
