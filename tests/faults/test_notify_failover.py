"""Two real `regionguard run` workers on PostgreSQL with a webhook: every event arrives once, across a leader's death.

Issue 14, case 7: each worker relayed every stored event from an in-memory
cursor, so with two workers each page went out twice, and the events written
while leadership moved were never sent. Then the relay claimed each event
before sending it: a worker killed between the claim and the receiver's
answer lost the events it held.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from sqlalchemy import bindparam, text

from controlplane.cli.demo import demo_config
from controlplane.config import parse_settings
from controlplane.domain import AuditEvent, EventKind
from controlplane.store import open_store
from simulator.arm import FakeArm
from simulator.llm import LLMSimulator, default_regions
from tests.faults.hook import Hook
from tests.integration.test_worker_ha import World, wait_for
from tests.waiting import PROCESS_START_S

HOOK_ENV = "REGIONGUARD_TEST_HOOK_URL"


@pytest.fixture
def world(postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[World, Hook]]:
    hook = Hook()
    monkeypatch.setenv(HOOK_ENV, hook.url)
    regions = default_regions(3, 2)
    sim = LLMSimulator(regions, seed=5).start()
    arm = FakeArm().start()
    data = demo_config({r.name: sim.base_url(r.name) for r in regions}, [d.name for d in regions[0].deployments], arm, postgres_url, 0)
    data["probe"].update(interval="2s", fast_interval="0.5s", timeout="1.5s")
    data["health"].update(min_dwell="2s", successes_to_up=2)
    data["guardrails"].update(cooldown="1s")
    data["reconcile"].update(interval="1s")
    channel = {"kind": "webhook", "name": "hook", "url_env": HOOK_ENV, "timeout": "1s", "retries": 0}
    data["notifications"] = {"group_wait": "0s", "channels": [channel]}
    settings = parse_settings(data)
    arm.seed_from_config(settings)
    config = tmp_path / "regionguard.yaml"
    config.write_text(yaml.safe_dump(data))
    store = open_store(postgres_url, migrate=True)
    w = World(sim, arm, config, store, [])
    try:
        yield w, hook
    finally:
        for p in w.procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
            if p.stdout:
                p.stdout.close()
        store.close()
        sim.stop()
        arm.stop()
        hook.close()


def worker_a_with_three_events_held(w: World, hook: Hook) -> tuple[subprocess.Popen[str], set[int]]:
    """worker-a leads and has sent three new events to a receiver that does not answer (claimed, not delivered)."""
    hook.holding.set()
    a = w.worker("worker-a")
    wait_for(lambda: w.holder() == "worker-a", PROCESS_START_S, "worker-a to take the lease")
    at = datetime.now(UTC)
    ours = {
        w.store.add_event(AuditEvent(EventKind.OVERRIDE, at, "alice", f"alice drained eastus ({i})", region="eastus", severity="warning"))
        for i in range(3)
    }
    wait_for(lambda: ours <= hook.holds(), 20, "worker-a to send the events (held by the receiver)")
    return a, ours


def test_each_event_reaches_the_webhook_exactly_once_across_two_workers_and_a_killed_leader(world: tuple[World, Hook]) -> None:
    w, hook = world
    a = w.worker("worker-a")
    wait_for(lambda: w.holder() == "worker-a", PROCESS_START_S, "worker-a to take the lease")
    w.worker("worker-b")
    wait_for(lambda: w.started("worker-b"), PROCESS_START_S, "worker-b to start")
    w.sim.set_fault("eastus", "down")
    wait_for(lambda: w.store.events(kinds=[EventKind.CHANGE]), 40, "the leader to drain eastus")
    a.send_signal(signal.SIGKILL)  # mid-incident: the leader dies without a word
    a.wait(10)
    wait_for(lambda: w.holder() == "worker-b", 30, "worker-b to take over")
    w.sim.clear_faults("eastus")  # the incident ends under the new leader: more events
    wait_for(
        lambda: any(e.actor.startswith("worker:worker-b") or "worker-b" in e.summary for e in w.store.events(kinds=[EventKind.LEASE])),
        20,
        "worker-b's lease event",
    )
    stored = {e.id for e in w.store.events(limit=10_000) if e.id is not None}

    def all_arrived() -> bool:
        return stored <= set(hook.received())

    wait_for(all_arrived, 30, "every stored event to reach the webhook")
    got = hook.received()
    assert [i for i, n in got.items() if n > 1] == [], "an event was sent twice"
    assert stored - set(got) == set(), "an event was never sent"


def test_events_a_killed_worker_claimed_but_had_not_delivered_reach_the_webhook_from_the_other_worker(
    world: tuple[World, Hook],
) -> None:
    w, hook = world
    a, _ = worker_a_with_three_events_held(w, hook)
    a.send_signal(signal.SIGKILL)  # between the claim and the receiver's answer
    a.wait(10)
    claimed = hook.holds()
    hook.release()  # the receiver answers again; worker-a's requests died with it
    w.worker("worker-b")  # a process to start, then its claims of worker-a's events once they are stale
    wait_for(lambda: claimed <= set(hook.received()), PROCESS_START_S + 30, "the events worker-a claimed to reach the webhook")
    got = hook.received()
    assert [i for i, n in got.items() if n > 1] == [], "an event was sent twice"


def test_a_worker_stopped_by_sigterm_releases_the_events_its_channels_did_not_deliver(world: tuple[World, Hook]) -> None:
    """A rolling restart: the worker stops gracefully while the receiver is not answering. The events it
    claimed and could not deliver are released as it exits, so the next worker sends them on its next
    relay tick, not a claim timeout later (group window + the channel's send deadline + two ticks)."""
    w, hook = world
    a, ours = worker_a_with_three_events_held(w, hook)
    a.send_signal(signal.SIGTERM)
    assert a.wait(30) == 0
    with w.store.engine.connect() as c:
        rows = c.execute(
            text(
                "SELECT e.id, d.claimed_by, d.delivered_at FROM audit_event e JOIN event_delivery d ON d.event_id = e.id"
                " AND d.channel = 'hook' WHERE e.id IN :ids AND e.relayed_at IS NULL"
            ).bindparams(bindparam("ids", expanding=True)),
            {"ids": sorted(ours)},
        ).all()
    assert {(i, by, done) for i, by, done in rows} == {(i, None, None) for i in ours}, "worker-a exited holding claims"
    hook.release()
    w.worker("worker-b")  # a process to start, then its relay tick
    wait_for(lambda: ours <= set(hook.received()), PROCESS_START_S + 30, "the released events to reach the webhook from worker-b")
    assert [i for i, n in hook.received().items() if n > 1] == [], "an event was sent twice"
