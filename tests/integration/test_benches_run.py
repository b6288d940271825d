"""Every quick bench still runs: at its smallest size, it exits 0 and prints its figures.

The benches are the project's yardsticks (figures quoted in the README and the
ADRs), but nothing ran them between sessions, so they rotted unseen:
`bench/engine.py` stopped at its own config once subscription ids had to be
GUIDs, and `bench/dashboard.py --regions 4` died on an IndexError. These runs
time nothing (figures belong to the benches, not to tests); they only show the
scripts still start, build their world and print what they promise.
`bench/scale.py` and `bench/soak.py` have tests of their own (test_soak.py).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH_TIMEOUT_S = 120  # far over their 1-5 s; a hang fails instead of holding the suite


def bench(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args], capture_output=True, text=True, timeout=BENCH_TIMEOUT_S, cwd=ROOT
    )


def test_the_engine_bench_times_a_tick_and_a_replay() -> None:
    r = bench("engine.py", "--ticks", "1", "--quick")
    assert r.returncode == 0, r.stderr
    assert re.search(r"evaluate \+ desired \+ plan \+ guardrails: median [\d.]+ ms", r.stdout), r.stdout
    assert re.search(r"1 h, 1 vantage: [\d,]+ simulated s per wall s \([\d.]+ s wall, [1-9]\d* probes\)", r.stdout), r.stdout


def test_the_decisions_bench_prints_its_table_and_the_false_alarm_check() -> None:
    r = bench("decisions.py", "--seeds", "1", "--only", "quiet")
    assert r.returncode == 0, r.stderr
    assert "anchor: Traffic Manager defaults" in r.stdout, r.stdout
    assert re.search(r"measured: \d+ false changes", r.stdout), r.stdout


def test_the_dashboard_bench_renders_every_page() -> None:
    r = bench("dashboard.py", "--regions", "6", "--days", "0.01", "--iterations", "2")
    assert r.returncode == 0, r.stderr
    for page in ("overview", "region page 7d, no chart cache", "timeline", "api regions", "incident page"):
        assert re.search(rf"^  {re.escape(page)} +p50 +[\d.]+ ms +p95 +[\d.]+ ms", r.stdout, re.M), (page, r.stdout)


@pytest.mark.parametrize("regions", ["5", "x"])
def test_the_dashboard_bench_refuses_too_few_regions_naming_the_option(regions: str) -> None:
    r = bench("dashboard.py", "--regions", regions)
    assert r.returncode == 2
    assert "--regions" in r.stderr and regions in r.stderr, r.stderr


def test_the_simulator_bench_prints_its_median() -> None:
    r = bench("simulator.py", "--seconds", "0.2", "--runs", "1", "--regions", "2", "--deployments", "1")
    assert r.returncode == 0, r.stderr
    assert re.search(r"lowest median: [\d,]+ completions/s", r.stdout), r.stdout
