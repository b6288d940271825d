"""Decision-engine benchmark: prints its figures (not a timed test).

1. One tick -- evaluate health, desired state, plan and guardrails -- for
   1,000 endpoints x 3 vantages x a 60-result window (floor: < 50 ms), after
   a tick's worth of fresh results (so the evaluator has real work, not a
   cache hit). Also the cost of ``observe`` per result.
2. Replay speed: simulated seconds per wall second, for a 1-hour timeline
   against the example config (3 regions) and a 24-hour one.

Run: ``.venv/bin/python bench/engine.py [--ticks N] [--quick]``
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from controlplane.config import load_settings, parse_settings
from controlplane.domain import EndpointSetting, Outcome, ProbeResult, TargetState, endpoint_id
from controlplane.engine.guardrails import CooldownMemory, decide
from controlplane.engine.health import HealthEvaluator
from controlplane.replay import run_replay

START = datetime(2024, 1, 1, tzinfo=UTC)
VANTAGES = ("eu", "us", "asia")


def big_settings(regions: int = 250, per_region: int = 4) -> Any:
    regs = [
        {
            "name": f"r{i:03d}",
            "azure_region": f"r{i:03d}",
            "endpoints": [
                {"name": f"d{j}", "base_url": f"https://r{i:03d}.example.com", "deployment": f"d{j}", "auth": {"kind": "entra_id"}}
                for j in range(per_region)
            ],
        }
        for i in range(regions)
    ]
    common = {"subscription_id": "00000000-0000-0000-0000-000000000001", "resource_group": "rg", "routing": "weighted"}
    targets = [
        {
            "name": "tm",
            "kind": "traffic_manager",
            "profile": "p",
            **common,
            "endpoints": {r["name"]: {"name": f"tm-{r['name']}", "weight": 100} for r in regs},
        },
        {
            "name": "afd",
            "kind": "front_door_cdn",
            "profile": "p",
            "origin_group": "g",
            **common,
            "endpoints": {r["name"]: {"origin": f"o-{r['name']}", "weight": 500} for r in regs},
        },
    ]
    return parse_settings(
        {
            "regions": regs,
            "targets": targets,
            "health": {"window": 60, "failures_to_down": 3, "vantage_quorum": 2},
            "guardrails": {"max_drain_fraction": 0.2},
        }
    )


def result(eid: str, vantage: str, at: datetime, rng: random.Random, bad: bool) -> ProbeResult:
    region = eid.split("/", 1)[0]
    if bad:
        return ProbeResult(eid, region, vantage, at, Outcome.TIMEOUT, total_ms=10000.0)
    ttft = 400 + rng.uniform(-40, 40)
    return ProbeResult(
        eid,
        region,
        vantage,
        at,
        Outcome.OK,
        status_code=200,
        ttft_ms=ttft,
        total_ms=ttft + 150,
        remaining_tokens=60000,
        limit_tokens=100000,
    )


def bench_tick(ticks: int) -> dict[str, float]:
    settings = big_settings()
    eids = [endpoint_id(r.name, e.name) for r in settings.regions for e in r.endpoints]
    rng = random.Random(1)
    ev = HealthEvaluator(settings)
    t = START
    # fill every window: 60 results per (endpoint, vantage), one every 30 s
    t0 = time.perf_counter()
    n = 0
    for k in range(60):
        at = START + timedelta(seconds=30 * k)
        for eid in eids:
            for v in VANTAGES:
                ev.observe(result(eid, v, at, rng, bad=False))
                n += 1
    fill = time.perf_counter() - t0
    t = START + timedelta(seconds=30 * 60)
    actual = {
        tg.name: TargetState(
            tg.name, {r: EndpointSetting(weight=ep.weight, priority=ep.priority, enabled=True) for r, ep in tg.endpoints.items()}
        )
        for tg in settings.targets
    }
    cooldown = CooldownMemory()
    ev.evaluate(t)
    tick_ms, observe_us = [], []
    for k in range(ticks):
        # a tick's worth of new results: 1/3 of the (endpoint, vantage) pairs (10 s of a 30 s interval),
        # with a few regions failing so there is something to plan
        t += timedelta(seconds=10)
        batch = []
        for i, eid in enumerate(eids):
            if (i + k) % 3:
                continue
            bad = eid.startswith(("r007/", "r100/")) and k >= 2
            batch += [result(eid, v, t, rng, bad) for v in VANTAGES]
        o0 = time.perf_counter()
        for r in batch:
            ev.observe(r)
        observe_us.append((time.perf_counter() - o0) / len(batch) * 1e6)
        s0 = time.perf_counter()
        report = ev.evaluate(t)
        _, guarded = decide(settings, report, actual, (), now=t, cooldown=cooldown)
        tick_ms.append((time.perf_counter() - s0) * 1000)
    # worst case: every endpoint got news from every vantage since the last tick
    worst_ms = []
    for _ in range(5):
        t += timedelta(seconds=10)
        for eid in eids:
            for v in VANTAGES:
                ev.observe(result(eid, v, t, rng, bad=eid.startswith(("r007/", "r100/"))))
        s0 = time.perf_counter()
        report = ev.evaluate(t)
        decide(settings, report, actual, (), now=t, cooldown=cooldown)
        worst_ms.append((time.perf_counter() - s0) * 1000)
    return {
        "worst_ms_median": statistics.median(worst_ms),
        "endpoints": len(eids),
        "windows": len(eids) * len(VANTAGES),
        "fill_results_per_s": n / fill,
        "tick_ms_median": statistics.median(tick_ms),
        "tick_ms_max": max(tick_ms),
        "observe_us_median": statistics.median(observe_us),
        "last_plan_changes": len(guarded.changes),
    }


def bench_replay(quick: bool = False) -> list[tuple[str, float, float, int]]:
    settings = load_settings(ROOT / "examples" / "regionguard.yaml")
    out = []
    runs = (("1 h, 1 vantage", 1, None), ("24 h, 3 vantages", 24, ["eu", "us", "asia"]))
    for label, hours, vantages in runs[:1] if quick else runs:
        duration = hours * 3600
        events = []
        for h in range(hours):
            base = h * 3600
            events += [
                {"at": base + 600, "region": "eastus", "fault": "down"},
                {"at": base + 1200, "region": "eastus", "fault": "none"},
                {"at": base + 1800, "region": "westeurope", "fault": "slow", "multiplier": 10},
                {"at": base + 2400, "region": "westeurope", "fault": "none"},
            ]
        timeline = {"duration": duration, "seed": 1, "noise": {"loss": 0.02, "jitter_ms": 40}, "events": events}
        if vantages:
            timeline["vantages"] = vantages
        t0 = time.perf_counter()
        r = run_replay(settings, timeline)
        wall = time.perf_counter() - t0
        out.append((label, duration / wall, wall, r.summary["probes"]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="replay only the 1-hour timeline (the test that keeps this script running)")
    args = parser.parse_args()
    if args.ticks < 1:
        parser.error(f"--ticks: {args.ticks} is not a count of ticks (at least 1)")
    tick = bench_tick(args.ticks)
    print(f"one tick, {tick['endpoints']} endpoints x {len(VANTAGES)} vantages x 60-result window ({tick['windows']} windows):")
    print(
        f"  evaluate + desired + plan + guardrails: median {tick['tick_ms_median']:.1f} ms, max {tick['tick_ms_max']:.1f} ms (floor < 50 ms)"
    )
    print(f"  same, when every endpoint got news since the last tick: median {tick['worst_ms_median']:.1f} ms")
    print(f"  observe: {tick['observe_us_median']:.1f} us per result; window fill {tick['fill_results_per_s']:,.0f} results/s")
    print(f"  last plan: {tick['last_plan_changes']} change(s)")
    print("replay speed:")
    for label, speed, wall, probes in bench_replay(args.quick):
        print(f"  {label}: {speed:,.0f} simulated s per wall s ({wall:.2f} s wall, {probes} probes)")


if __name__ == "__main__":
    main()
