"""Benchmark the probe runner against the LLM simulator (run in a subprocess).

Prints, for this machine:

- the sustained probes/second the runner keeps up with (offered load stepped
  up 100, 200, 300 ... probes/s until it falls behind), and the most it does
  flat out (offered far more than it can do);
- CPU seconds per 1,000 probes (this process only; the simulator is apart);
- the TTFT measurement error (measured minus injected TTFT) at p50 and p99
  at each of those rates.

The simulator runs in its own process so it doesn't share the GIL with the
runner; every deployment answers with a fixed, jitter-free TTFT (a ``slow``
fault with ``ttft_ms``) and no per-token time, so what is measured beyond
the injected TTFT is the measurement error (runner plus loopback plus the
simulator's own scheduling).

Floors: >= 200 probes/s sustained, p99 error <= 10 ms at 100 probes/s.
Bounded: under 45 s. Usage: ``python bench/probes.py [--quick]`` (or ``python -m bench.probes``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):
    # Run as ``python bench/probes.py``: this file's folder is sys.path[0], and
    # this file's name would shadow the ``probes`` package. Use the repo root.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import httpx

from controlplane.config import Settings
from controlplane.domain import Outcome, ProbeResult
from controlplane.runtime import loops
from probes.runner import ProbeRunner

# 100 endpoints: 50 simulated Azure OpenAI resources (hosts) with 2 deployments
# each, the usual shape (a resource per region, a few deployments in it). The
# runner pools one client per host; httpcore's pool bookkeeping grows with the
# square of a host's open connections, so piling many endpoints on one host
# costs more CPU per probe (about 1.4x with 10 concurrent on one host).
REGIONS = 50
ENDPOINTS_PER_REGION = 2
INJECTED_TTFT_MS = 100.0
API_KEY = "bench-sim-key"
KEY_ENV = "RG_BENCH_SIM_KEY"
FLOOR_RATE = 200.0
FLOOR_P99_MS = 10.0


@dataclass
class Phase:
    name: str
    offered: float  # probes/s asked for
    achieved: float
    probes: int
    cpu_per_1000: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    not_ok: int


def start_simulator() -> tuple[subprocess.Popen[str], dict[str, str], str]:
    cmd = [
        sys.executable, "-m", "simulator.llm",
        "--regions", str(REGIONS), "--deployments", "2", "--zero-latency",
        "--rpm", "10000000", "--tpm", "1000000000", "--api-key", API_KEY, "--seed", "1",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise SystemExit("the simulator did not start")
    ready = json.loads(line)
    return proc, ready["regions"], ready["admin_url"]


def inject_ttft(admin_url: str, ttft_ms: float) -> None:
    response = httpx.post(f"{admin_url}/_sim/faults", json={"fault": "slow", "ttft_ms": ttft_ms}, timeout=10)
    response.raise_for_status()


def bench_settings(urls: dict[str, str], rate: float, concurrency: int) -> Settings:
    n = len(urls) * ENDPOINTS_PER_REGION
    interval = n / rate
    regions = [
        {
            "name": name,
            "azure_region": name,
            "endpoints": [
                {
                    "name": f"ep{i}",
                    "base_url": url,
                    "deployment": "gpt-4o" if i % 2 else "gpt-4o-mini",
                    "auth": {"kind": "api_key", "env": KEY_ENV},
                }
                for i in range(ENDPOINTS_PER_REGION)
            ],
        }
        for name, url in urls.items()
    ]
    probe = {"vantage": "bench", "interval": interval, "fast_interval": interval, "timeout": 5.0, "jitter": 0.1, "concurrency": concurrency}
    # Sub-second intervals with a 5 s deadline: parse_settings would refuse a timeout
    # longer than the interval, which is right for production and beside the point here.
    return Settings.model_validate({"regions": regions, "probe": probe})


async def run_phase(name: str, settings: Settings, warmup: float, window: float) -> Phase:
    collected: list[ProbeResult] = []
    runner = ProbeRunner(settings, sink=collected.extend, environ={KEY_ENV: API_KEY}, batch_wait=0.5)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run_forever(stop))
    await asyncio.sleep(warmup)
    window_start = datetime.now(UTC)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(window)
    cpu1, wall1 = time.process_time(), time.perf_counter()
    window_end = datetime.now(UTC)
    stop.set()
    await task
    await runner.aclose()
    inside = [r for r in collected if window_start <= r.started_at < window_end]
    ok = [r for r in inside if r.outcome is Outcome.OK and r.ttft_ms is not None]
    errors = sorted((r.ttft_ms or 0.0) - INJECTED_TTFT_MS for r in ok)
    offered = len(runner.endpoint_ids) / settings.probe.interval
    return Phase(
        name=name,
        offered=offered,
        achieved=len(inside) / (wall1 - wall0),
        probes=len(inside),
        cpu_per_1000=(cpu1 - cpu0) / max(1, len(inside)) * 1000,
        p50_ms=_quantile(errors, 0.50),
        p99_ms=_quantile(errors, 0.99),
        max_ms=errors[-1] if errors else float("nan"),
        not_ok=len(inside) - len(ok),
    )


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1] if q < 1 else values[-1]


def report(phases: list[Phase], load_before: tuple[float, float, float]) -> tuple[str, bool]:
    lines = [
        f"probe runner vs simulator subprocess: {REGIONS * ENDPOINTS_PER_REGION} endpoints on {REGIONS} hosts, "
        f"injected TTFT {INJECTED_TTFT_MS:.0f} ms, {os.cpu_count()} CPU(s), Python {sys.version.split()[0]}, "
        f"load average before {load_before[0]:.2f}",
        f"{'phase':<10} {'offered/s':>9} {'achieved/s':>10} {'probes':>7} {'CPU s/1000':>10} {'err p50':>9} {'err p99':>9} {'err max':>9} {'not ok':>6}",
    ]
    for p in phases:
        lines.append(
            f"{p.name:<10} {p.offered:>9.0f} {p.achieved:>10.1f} {p.probes:>7} {p.cpu_per_1000:>10.3f} "
            f"{p.p50_ms:>7.2f}ms {p.p99_ms:>7.2f}ms {p.max_ms:>7.2f}ms {p.not_ok:>6}"
        )
    kept_up = [p for p in phases if p.name != "flat-out" and keeps_up(p)]
    sustained = max(kept_up, key=lambda p: p.offered) if kept_up else None
    flat_out = next(p for p in phases if p.name == "flat-out")
    at_100 = next(p for p in phases if p.name == "100/s")
    rate = sustained.achieved if sustained else 0.0
    rate_ok = rate >= FLOOR_RATE * 0.99
    error_ok = at_100.p99_ms <= FLOOR_P99_MS
    if sustained:
        lines.append(
            f"sustained: {sustained.achieved:.0f} probes/s kept up with (offered {sustained.offered:.0f}/s), "
            f"CPU {sustained.cpu_per_1000:.2f} s per 1,000 probes, TTFT error p50 {sustained.p50_ms:.2f} ms / p99 {sustained.p99_ms:.2f} ms"
        )
    lines.append(f"flat out: {flat_out.achieved:.0f} probes/s, CPU {flat_out.cpu_per_1000:.2f} s per 1,000 probes")
    lines.append(f"floor >= {FLOOR_RATE:.0f} probes/s sustained: {'PASS' if rate_ok else 'FAIL'} ({rate:.0f}/s)")
    lines.append(
        f"floor TTFT error p99 <= {FLOOR_P99_MS:.0f} ms at 100 probes/s: {'PASS' if error_ok else 'FAIL'} ({at_100.p99_ms:.2f} ms)"
    )
    return "\n".join(lines), rate_ok and error_ok


def keeps_up(p: Phase) -> bool:
    """Achieved at least 97% of the offered rate with every probe answered ok."""
    return p.achieved >= 0.97 * p.offered and p.not_ok == 0


async def main_async(quick: bool) -> list[Phase]:
    proc, urls, admin_url = start_simulator()
    try:
        inject_ttft(admin_url, INJECTED_TTFT_MS)
        warmup, window = (1.0, 2.5) if quick else (1.5, 4.0)
        phases: list[Phase] = []
        for rate in (100.0, 200.0, 300.0, 400.0, 500.0):  # step up until the runner falls behind
            # the p99 the floor is about needs samples: 15 s at 100/s is 1,500 probes
            # (a 6 s window made the p99 the 6th-worst sample, and it swung by 3 ms run to run)
            longer = (15.0 if not quick else 6.0) / window if rate == 100.0 else 1.0
            phase = await run_phase(f"{rate:.0f}/s", bench_settings(urls, rate, 200), warmup * (2 if rate == 100.0 else 1), window * longer)
            phases.append(phase)
            if not keeps_up(phase):
                break
        phases.append(await run_phase("flat-out", bench_settings(urls, 2000.0, 200), warmup, window))
        return phases
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter windows (about 15 s in all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    load = os.getloadavg()
    phases = loops.run(main_async(args.quick))
    text, passed = report(phases, load)
    print(text)
    print(f"bench took {time.perf_counter() - started:.1f} s")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
