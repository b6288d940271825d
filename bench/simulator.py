"""Benchmark: chat completions per second from ONE simulator process.

Starts ``python -m simulator.llm`` as a subprocess (10 regions x
3 deployments by default, rate limits lifted so quota does not cap the
figure) and drives it from this process with an aiohttp client, so the load
generator does not share the simulator's event loop or GIL. Every answer is
checked (status 200, the right number, ``[DONE]`` at the end of a stream).

For each latency profile (zero: TTFT/per-token/jitter all 0; realistic: the
default deployments, TTFT 200-600 ms +/- jitter) and each mode (JSON,
streamed), it runs ``--runs`` timed runs of ``--seconds`` and prints the
median completions/s, plus the simulator's CPU use (share of one core).

    .venv/bin/python bench/simulator.py            # about 30 s
    .venv/bin/python bench/simulator.py --seconds 2 --runs 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
API_VERSION = "2024-10-21"
API_KEY = "sim-key"
PROFILES = {"zero": ["--zero-latency"], "realistic": []}
CONCURRENCY = {"zero": 64, "realistic": 384}


@dataclass
class RunResult:
    ok: int
    failed: int
    seconds: float
    server_cpu_s: float

    @property
    def rate(self) -> float:
        return self.ok / self.seconds


class Simulator:
    """The simulator subprocess; always stopped (and bounded by --duration) even if the bench fails."""

    def __init__(self, regions: int, deployments: int, extra: list[str], max_seconds: float) -> None:
        cmd = [
            sys.executable, "-m", "simulator.llm",
            "--regions", str(regions), "--deployments", str(deployments),
            "--rpm", "100000000", "--tpm", "10000000000", "--admin-port", "0",
            "--seed", "1", "--duration", str(max_seconds), *extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError("simulator exited before it was ready")
        ready = json.loads(line)
        self.urls: dict[str, str] = ready["regions"]
        self.admin_url: str = ready["admin_url"]

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


async def _targets(session: aiohttp.ClientSession, sim: Simulator) -> list[str]:
    async with session.get(sim.admin_url + "/_sim/state") as response:
        state = await response.json()
    return [
        f"{sim.urls[r['name']]}/openai/deployments/{d['name']}/chat/completions?api-version={API_VERSION}"
        for r in state["regions"]
        for d in r["deployments"]
    ]


async def _worker(session: aiohttp.ClientSession, targets: list[str], start: int, stream: bool, deadline: float, counts: list[int]) -> None:
    i = start
    while time.monotonic() < deadline:
        url = targets[i % len(targets)]
        body = {"messages": [{"role": "user", "content": f"Reply with only the number {i}"}], "max_completion_tokens": 5}
        if stream:
            body["stream"] = True
        try:
            async with session.post(url, json=body, headers={"api-key": API_KEY}) as response:
                data = await response.read()
            good = response.status == 200 and f'"content":"{i}"'.encode() in data
            if stream:
                good = good and data.endswith(b"data: [DONE]\n\n")
        except aiohttp.ClientError:
            good = False
        counts[0 if good else 1] += 1
        i += 1


async def _run_once(sim: Simulator, stream: bool, seconds: float, concurrency: int) -> RunResult:
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        targets = await _targets(session, sim)
        warm = [0, 0]
        await asyncio.gather(*(_worker(session, targets, k * 7919, stream, time.monotonic() + 0.5, warm) for k in range(concurrency)))
        counts = [0, 0]
        cpu_before, started = sim.cpu_seconds(), time.monotonic()
        deadline = started + seconds
        await asyncio.gather(*(_worker(session, targets, k * 7919, stream, deadline, counts) for k in range(concurrency)))
        elapsed = time.monotonic() - started
        return RunResult(counts[0], counts[1], elapsed, sim.cpu_seconds() - cpu_before)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regions", type=int, default=10)
    parser.add_argument("--deployments", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one timed run")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per case (the median is printed)")
    parser.add_argument("--profiles", default="zero,realistic")
    args = parser.parse_args(argv)
    if not (0 < args.seconds <= 60 and 1 <= args.runs <= 9):
        parser.error("--seconds must be in (0, 60] and --runs in [1, 9]")
    profiles = [p for p in args.profiles.split(",") if p]
    print(f"simulator: {args.regions} regions x {args.deployments} deployments, one process; "
          f"{args.runs} runs of {args.seconds:g} s per case, median shown")  # fmt: skip
    print(f"{'latency':<10} {'mode':<9} {'clients':>7} {'completions/s':>14} {'failed':>7} {'sim CPU':>8}")
    worst = float("inf")
    for profile in profiles:
        budget = 2 * args.runs * (args.seconds + 3) + 30
        sim = Simulator(args.regions, args.deployments, PROFILES[profile], max_seconds=budget)
        try:
            for stream in (False, True):
                results = [asyncio.run(_run_once(sim, stream, args.seconds, CONCURRENCY[profile])) for _ in range(args.runs)]
                median = sorted(results, key=lambda r: r.rate)[len(results) // 2]
                worst = min(worst, median.rate)
                failed = sum(r.failed for r in results)
                cpu = statistics.median(r.server_cpu_s / r.seconds for r in results)
                mode = "stream" if stream else "json"
                print(
                    f"{profile:<10} {mode:<9} {CONCURRENCY[profile]:>7} {median.rate:>14.0f} {failed:>7} {cpu:>7.0%}",
                    flush=True,
                )
        finally:
            sim.stop()
    print(f"lowest median: {worst:.0f} completions/s (target >= 500)")
    return 0 if worst >= 500 else 1


if __name__ == "__main__":
    sys.exit(main())
