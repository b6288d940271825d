"""Replay is production: one timeline, two ways, the same changes.

The timeline: a region down for 60 s, then back. It runs

- through ``run_replay`` (simulated time), and
- through a real ``regionguard run`` worker process probing the LLM simulator
  (the fault played by its timeline at ``TIME_SCALE``) and writing through
  the real Azure SDKs to the fake ARM,

and both must make the same changes (target, region, field, to) -- every field
of every target of the demo's config (Traffic Manager weighted and priority,
Front Door, the APIM pool), with the liveness checks on -- each within one
probe interval of the other's time, measured from the fault's start.

Phases are aligned, not hoped for: the worker is warmed up first, the fault
is started at some moment, and replay puts its fault at the same offset from
its own probe grid as the worker's, read from the worker's stored probe start
times. With the default jitter (0.1) a grid is only a grid within a tenth of
an interval; the liveness checks (every 1 s here) find the fault within a
second in both, and the tolerance is a whole probe interval.

Each region has the demo's two deployments (both URL styles) on one
resource, checked by one liveness check and probed in one round (one jitter
draw per resource and round, a sibling pulled into a failing round:
``cadence.ResourceRounds``), so they are confirmed down and back in the same
moment and the region never passes through degraded on the way, in the worker
and in replay alike.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.cli.demo import DEMO_KEY_ENV, demo_config
from controlplane.config import Settings, parse_settings
from controlplane.domain import AuditEvent, HealthStateName
from controlplane.replay import run_replay
from controlplane.store import Store, open_store
from simulator.arm import FakeArm
from simulator.llm import DEFAULT_API_KEY, LLMSimulator, default_regions
from tests.waiting import wait_until

REGION = "eastus"
DOWN_FOR = 60.0  # timeline seconds
TIME_SCALE = 0.25  # the simulator plays the timeline 4x faster: down for 15 s of wall time
INTERVAL = 2.5  # probe interval (s); the tolerance between the two ways
WARM_UP = 10.0  # replay's seconds before the fault (a multiple of INTERVAL: the grid starts at 0)
AFTER = 20.0  # replay runs this long after the fault clears: every restore is done by then


# tests.waiting's one wait loop, polling every 0.1 s: each poll reads the database or a process
wait_for = functools.partial(wait_until, step=0.1)


def config(sim: LLMSimulator, arm: FakeArm, db_url: str, regions: list[Any]) -> dict[str, Any]:
    data = demo_config({r.name: sim.base_url(r.name) for r in regions}, [d.name for d in regions[0].deployments], arm, db_url, 0)
    # the demo's liveness checks (every 1 s) stay on
    data["probe"].update(interval=f"{INTERVAL:g}s", fast_interval="0.5s", timeout="1.5s")  # the default jitter (0.1)
    # min_dwell off the probe grid (confirmations and the fast interval are 0.5 s apart here): a dwell
    # of a whole number of steps would be met, or missed by a millisecond, at the same probe
    data["health"].update(min_dwell="1.2s", successes_to_up=2)
    data["guardrails"].update(cooldown="1s")
    data["reconcile"].update(interval="0.25s")
    for target in data["targets"]:
        if target.get("failback_dwell"):
            target["failback_dwell"] = "3s"
    return data


@pytest.fixture
def world(sqlite_url: str, tmp_path: Path) -> Iterator[tuple[LLMSimulator, Settings, Path, Store]]:
    regions = default_regions(3, 2)
    sim = LLMSimulator(regions, seed=3).start()
    arm = FakeArm().start()
    data = config(sim, arm, sqlite_url, regions)
    settings = parse_settings(data)
    arm.seed_from_config(settings)
    path = tmp_path / "regionguard.yaml"
    path.write_text(yaml.safe_dump(data))
    store = open_store(sqlite_url, migrate=True)
    try:
        yield sim, settings, path, store
    finally:
        store.close()
        sim.stop()
        arm.stop()


def applied(store: Store) -> list[AuditEvent]:
    events = [e for e in store.events(kinds=["change"], limit=1000) if e.summary.startswith("applied:")]
    return sorted(events, key=lambda e: e.at)


def key(target: str, region: str, field: str, to: Any) -> tuple[str, str, str, Any]:
    return (target, region, field, to)


def replay_of(settings: Settings, offset: float) -> tuple[list[tuple[float, tuple[str, str, str, Any]]], float]:
    """Replay's changes (seconds after the fault, key) with the fault ``offset`` s into a probe interval."""
    fault_s = WARM_UP + offset
    cleared = DOWN_FOR * TIME_SCALE
    timeline = {
        "duration": fault_s + cleared + AFTER,
        "seed": 1,
        "noise": {"loss": 0.0, "jitter_ms": 0.0},
        "events": [{"at": fault_s, "region": REGION, "fault": "down"}, {"at": fault_s + cleared, "region": REGION, "fault": "none"}],
    }
    t0 = time.monotonic()
    result = run_replay(settings, timeline)
    changes = [(round(c["at"] - fault_s, 3), key(c["target"], c["region"], c["field"], c["to"])) for c in result.changes]
    return changes, time.monotonic() - t0


@pytest.mark.serial
def test_replay_and_a_real_worker_make_the_same_changes_at_the_same_times(
    world: tuple[LLMSimulator, Settings, Path, Store],
) -> None:
    sim, settings, path, store = world
    env = dict(os.environ, **{DEMO_KEY_ENV: DEFAULT_API_KEY})
    started = time.monotonic()
    log = (path.parent / "worker.log").open("w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "controlplane.cli", "run", "--config", str(path), "--holder", "w1", "--lease-ttl", "3"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # warm: the leader has saved every region healthy, from a few rounds of probes
        wait_for(
            lambda: len(h := store.health()[1]) == 3 and all(r.state is HealthStateName.HEALTHY for r in h.values()),
            timeout=40,
            what="the worker to see every region healthy",
        )
        warm_s = time.monotonic() - started
        fault_at = datetime.now(UTC)
        sim.run_timeline(
            [{"at": 0, "region": REGION, "fault": "down"}, {"at": DOWN_FOR, "region": REGION, "fault": "none"}], time_scale=TIME_SCALE
        )
        # the worker's probe grid for the region (no jitter: one phase), from probes stored around the fault
        window = timedelta(seconds=3 * INTERVAL)
        probes = wait_for(
            lambda: (
                [r.started_at for r in store.results_between(fault_at - window, fault_at + window) if r.region == REGION]
                if any(r.started_at >= fault_at for r in store.results_between(fault_at, fault_at + window))
                else None
            ),
            timeout=3 * INTERVAL,
            what="the worker's probes around the fault",
        )
        last_before = max(t for t in probes if t < fault_at)
        offset = (fault_at - last_before).total_seconds() % INTERVAL  # how far into its interval the fault began
        expected, replay_wall = replay_of(settings, offset)
        assert expected, "replay made no change"
        want = sorted(k for _, k in expected)

        def worker_changes() -> list[tuple[float, tuple[str, str, str, Any]]]:
            return [
                (round((e.at - fault_at).total_seconds(), 3), key(e.target or "", e.region or "", e.data["field"], e.data["desired"]))
                for e in applied(store)
            ]

        deadline = max(t for t, _ in expected) + 2 * INTERVAL + 5  # the last change replay made, plus slack for a loaded machine
        try:
            wait_for(lambda: sorted(k for _, k in worker_changes()) == want, timeout=deadline, what="the worker's changes")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nworker: {worker_changes()}\nreplay: {expected}") from None
        seen = worker_changes()
        worker_probes = [
            (round((r.started_at - fault_at).total_seconds(), 3), r.endpoint_id, r.outcome.value)
            for r in store.results_between(fault_at, None)
            if r.region == REGION
        ]
    finally:
        worker.send_signal(subprocess.signal.SIGTERM)
        try:
            worker.wait(timeout=15)
        finally:
            if worker.poll() is None:
                worker.kill()
            log.close()
    wall = time.monotonic() - started

    report = (
        f"wall {wall:.1f} s (worker warm after {warm_s:.1f} s; replay {replay_wall:.2f} s)\n"
        f"worker: {seen}\nreplay: {expected}\nworker's probes of {REGION}: {worker_probes}"
    )
    print(report.split("\nworker's probes")[0])
    assert {k[1] for _, k in expected} == {REGION}, report
    drains = [k for _, k in expected if k[2] == "enabled" and k[3] is False]
    restores = [k for _, k in expected if k[2] == "enabled" and k[3] is True]
    assert len(drains) == len(restores) == len(settings.targets), report
    for k in set(want):
        mine = sorted(t for t, kk in seen if kk == k)
        theirs = sorted(t for t, kk in expected if kk == k)
        for a, b in zip(mine, theirs, strict=True):
            assert abs(a - b) <= INTERVAL, f"{k}: worker at {a} s, replay at {b} s after the fault\n{report}"
