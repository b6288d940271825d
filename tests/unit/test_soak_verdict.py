"""bench/soak.py's verdict on plain samples: a container that climbs cycle after cycle fails, one that
follows the faults (the same peak every cycle, give or take) passes, and so does a one-off peak."""

from __future__ import annotations

import random

from bench.soak import Plan, Sample, judge

PLAN = Plan(hours=2, time_scale=240, regions=4, deployments=2, interval=120, liveness=120, cycle=1200, fault_every=240, warmup=1 / 3)
STEP = 60.0  # simulated seconds between samples


def samples(container: list[float]) -> list[Sample]:
    return [
        Sample(real_s=i * STEP / PLAN.time_scale, sim_s=i * STEP, values={"rss_mb": 100.0, "threads": 14.0, "fds": 40.0, "map:m": v})
        for i, v in enumerate(container)
    ]


def verdict_of(container: list[float]) -> bool:
    _, verdicts = judge(PLAN, samples(container))
    [v] = [v for v in verdicts if v.resource == "map:m"]
    return v.ok


def per_sample(cycle_shape: list[float], noise: float = 0.0, leak_per_cycle: float = 0.0, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    per_cycle = int(PLAN.cycle / STEP)
    return [
        max(0.0, cycle_shape[i % len(cycle_shape)] + rng.uniform(-noise, noise) + leak_per_cycle * (i // per_cycle))
        for i in range(int(PLAN.hours * 3600 / STEP))
    ]


SHAPE: list[float] = [8, 8, 12, 20, 26, 30, 24, 16, 12, 10, 9, 8, 8, 8, 8, 8, 8, 8, 8, 8]  # a storm, then calm


def test_a_container_that_follows_the_faults_passes_even_with_noise() -> None:
    for seed in range(20):
        assert verdict_of(per_sample(SHAPE, noise=2.0, seed=seed)), f"seed {seed}"


def test_a_container_that_gains_items_every_cycle_fails() -> None:
    for seed in range(20):
        assert not verdict_of(per_sample(SHAPE, noise=2.0, leak_per_cycle=4.0, seed=seed)), f"seed {seed}"


def test_a_small_map_that_only_ever_grows_fails() -> None:
    assert not verdict_of([float(i // 10) for i in range(120)])  # one entry per ten samples: 0 -> 11 over two hours


def test_a_one_off_peak_after_the_warm_up_passes() -> None:
    container = per_sample(SHAPE)
    container[70] = 60.0  # one sample in the fourth cycle, never again
    assert verdict_of(container)
