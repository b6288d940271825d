"""The running system as separate processes: one writer, takeover, graceful stop.

Workers are real `regionguard run` subprocesses probing simulated regions
on 127.0.0.1 and writing through the real Azure SDKs to the fake ARM.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.cli.demo import DEMO_KEY_ENV, demo_config
from controlplane.config import parse_settings
from controlplane.domain import ChangeStatus, Field, LeaseName
from controlplane.store import ChangeRecord, Store, open_store
from simulator.arm import FakeArm
from simulator.llm import DEFAULT_API_KEY, LLMSimulator, default_regions
from tests.waiting import PROCESS_START_S, wait_until

LEASE_TTL = 3.0


@dataclass
class World:
    sim: LLMSimulator
    arm: FakeArm
    config: Path
    store: Store
    procs: list[subprocess.Popen[str]]
    output: dict[str, list[str]] = field(default_factory=dict)

    def worker(
        self, holder: str, *, config: Path | None = None, env: dict[str, str] | None = None, extra: tuple[str, ...] = ()
    ) -> subprocess.Popen[str]:
        """A `regionguard run` process; ``config`` and ``env`` (default: the world's, this process's) let one worker differ."""
        env = dict(os.environ if env is None else env, **{DEMO_KEY_ENV: DEFAULT_API_KEY})
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "controlplane.cli",
                "run",
                "--config",
                str(config or self.config),
                "--holder",
                holder,
                "--lease-ttl",
                str(LEASE_TTL),
                *extra,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.procs.append(proc)
        lines = self.output.setdefault(holder, [])
        threading.Thread(target=_collect, args=(proc, lines), name=f"output-{holder}", daemon=True).start()
        return proc

    def started(self, holder: str) -> bool:
        """True once ``holder``'s process printed that it runs (read without blocking by a thread per process)."""
        return any(f"regionguard worker {holder} running" in line for line in self.output.get(holder, []))

    def writes(self) -> list[Any]:
        return [e for e in self.arm.request_log if e.method in ("PATCH", "PUT") and 200 <= e.status < 300]

    def holder(self) -> str | None:
        lease = self.store.lease(LeaseName.LEADER)
        return lease.holder if lease else None


def _collect(proc: subprocess.Popen[str], lines: list[str]) -> None:
    """Keep a worker's output lines as they come (the pipe never fills, the test never blocks reading it)."""
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            lines.append(line)
    except (OSError, ValueError):  # the pipe was closed at teardown
        pass


# tests.waiting's one wait loop, polling every 0.1 s: each poll reads the database or a process
wait_for = functools.partial(wait_until, step=0.1)


def _world(db_url: str, tmp_path: Path, edit: Callable[[dict[str, Any]], None] | None = None) -> Iterator[World]:
    """Simulated regions, the fake ARM seeded from the config, the config file; ``edit`` changes the config first."""
    regions = default_regions(3, 2)
    sim = LLMSimulator(regions, seed=3).start()
    arm = FakeArm().start()
    data = demo_config({r.name: sim.base_url(r.name) for r in regions}, [d.name for d in regions[0].deployments], arm, db_url, 0)
    data["probe"].update(interval="2s", fast_interval="0.5s", timeout="1.5s")
    data["health"].update(min_dwell="2s", successes_to_up=2)
    data["guardrails"].update(cooldown="1s")
    data["reconcile"].update(interval="1s")
    if edit is not None:
        edit(data)
    settings = parse_settings(data)
    arm.seed_from_config(settings)
    config = tmp_path / "regionguard.yaml"
    config.write_text(yaml.safe_dump(data))
    store = open_store(db_url, migrate=True)
    world = World(sim, arm, config, store, [])
    try:
        yield world
    finally:
        for p in world.procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
            if p.stdout:
                p.stdout.close()
        store.close()
        sim.stop()
        arm.stop()


@pytest.fixture
def pg_world(postgres_url: str, tmp_path: Path) -> Iterator[World]:
    yield from _world(postgres_url, tmp_path)


@pytest.fixture
def sqlite_world(sqlite_url: str, tmp_path: Path) -> Iterator[World]:
    yield from _world(sqlite_url, tmp_path)


def _drained_everywhere(world: World, region: str) -> bool:
    bodies = [(e.path, json.dumps(e.body, sort_keys=True)) for e in world.writes()]
    disabled = [p for p, b in bodies if f"/{region}" in p or f"aoai-{region}" in p]
    hits = {"trafficmanagerprofiles/llm-weighted": False, "trafficmanagerprofiles/llm-priority": False, "originGroups/aoai-origins": False}
    for path, body in bodies:
        if ("Disabled" in body) and (f"aoai-{region}" in path or path.endswith(f"/origins/{region}")):
            for key in hits:
                if key in path:
                    hits[key] = True
    return bool(disabled) and all(hits.values())


def _disables(world: World, region: str) -> list[ChangeRecord]:
    return [c for c in world.store.changes(status=ChangeStatus.APPLIED, region=region) if c.field is Field.ENABLED and c.after is False]


def _token(world: World) -> int:
    lease = world.store.lease(LeaseName.LEADER)
    assert lease is not None
    return lease.fencing_token


def test_two_workers_on_postgres_only_the_leader_writes_and_the_other_takes_over(pg_world: World) -> None:
    world = pg_world
    a = world.worker("worker-a")
    wait_for(lambda: world.holder() == "worker-a", PROCESS_START_S, "worker-a to take the lease")
    b = world.worker("worker-b")
    # once worker-b runs (its lease job fires at start, then every LEASE_TTL / 5 s), it must
    # stay a standby: watch the lease over two of its lease ticks, not a guessed 1 s from launch
    wait_for(lambda: world.started("worker-b"), PROCESS_START_S, "worker-b to start")
    watch_until = time.monotonic() + 2 * LEASE_TTL / 5 + 0.2
    while time.monotonic() < watch_until:
        assert world.holder() == "worker-a", "worker-b took the lease from a live leader"
        time.sleep(0.05)
    token_a = _token(world)

    world.sim.set_fault("eastus", "down")
    wait_for(lambda: _drained_everywhere(world, "eastus") and len(_disables(world, "eastus")) >= 3, 30, "eastus drained from every target")
    changes_a = world.store.changes(status=ChangeStatus.APPLIED)
    assert {c.fencing_token for c in changes_a} == {token_a}, "a change was written without the leader's token"

    # The leader dies without releasing its lease; the standby takes over within one lease period.
    a.kill()
    a.wait(timeout=10)
    killed = time.monotonic()
    last = world.store.lease(LeaseName.LEADER)  # worker-a's last renewal: a dead worker renews no more
    assert last is not None and last.holder == "worker-a" and last.expires_at is not None, last
    wait_for(lambda: world.holder() == "worker-b", LEASE_TTL + 5, "worker-b to take over")
    takeover = time.monotonic() - killed
    taken = world.store.lease(LeaseName.LEADER)
    assert taken is not None and taken.acquired_at is not None
    late = (taken.acquired_at - last.expires_at).total_seconds()
    print(f"takeover {takeover:.2f} s after kill -9, {late:.2f} s after the lease ran out (lease period {LEASE_TTL:g} s)")
    # The lease expires at most one period after its last renewal (before the kill); the standby
    # retries at that moment (not at its next poll). Timed by the lease row (worker-b's clock when it
    # took it), not by this test noticing it: 0.5 s covers worker-b's scheduling on 2 busy cores.
    assert late <= 0.5, f"worker-b took the lease {late:.2f} s after it ran out (takeover {takeover:.1f} s after the kill)"
    token_b = _token(world)
    assert token_b > token_a

    world.sim.clear_faults()
    wait_for(
        lambda: any(
            c.fencing_token == token_b and c.after is True and c.field is Field.ENABLED
            for c in world.store.changes(status=ChangeStatus.APPLIED)
        ),
        40,
        "worker-b to restore eastus",
    )

    # No change applied twice: every landed write (path + body) is unique, and
    # no applied change row repeats another.
    writes = Counter((e.path, json.dumps(e.body, sort_keys=True)) for e in world.writes())
    assert [w for w, n in writes.items() if n > 1] == []
    rows = Counter(
        (c.target, c.region, c.field, json.dumps(c.after), c.fencing_token) for c in world.store.changes(status=ChangeStatus.APPLIED)
    )
    assert [r for r, n in rows.items() if n > 1] == []
    assert b.poll() is None, "the standby died"


def test_sigterm_during_an_apply_exits_cleanly_and_the_next_worker_converges(sqlite_world: World) -> None:
    world = sqlite_world
    a = world.worker("worker-a")
    wait_for(lambda: world.holder() == "worker-a", PROCESS_START_S, "worker-a to take the lease")
    world.arm.inject_latency(0.6, count=None, method="PATCH")  # slow, but inside one call's deadline (a third of the 3 s lease: ADR 0012)
    world.sim.set_fault("eastus", "down")
    wait_for(lambda: world.store.changes(status=ChangeStatus.PENDING), 30, "an apply to be in flight", step=0.05)

    a.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    code = a.wait(timeout=15)
    stopped = time.monotonic() - sent
    assert code == 0, "".join(world.output["worker-a"])
    assert stopped <= 10.0, f"worker took {stopped:.1f} s to stop"
    assert world.holder() is None, "the lease was not released"

    # What landed is on record; the next worker settles what was pending and converges.
    world.arm.clear_faults()
    world.worker("worker-b")
    wait_for(lambda: _drained_everywhere(world, "eastus"), 30, "eastus drained from every target by worker-b")
    wait_for(lambda: not world.store.changes(status=ChangeStatus.PENDING), 20, "no change left pending")
    writes = Counter((e.path, json.dumps(e.body, sort_keys=True)) for e in world.writes())
    assert [w for w, n in writes.items() if n > 1] == [], "a change was applied twice"
