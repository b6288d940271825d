"""Decision benchmark: the floors of issue 13, measured through replay (production's
engine, cadence, reconciler and write budget on a simulated clock). Prints figures;
it is not a timed test.

Every scenario runs with the shipped defaults (``examples/regionguard.yaml``), one
vantage unless said, 3 % random probe loss and 30 ms jitter, ``--seeds`` seeds
each (default 200). Times are from the fault (or, for "restore", from its end)
to the first Azure write in the right direction. Columns:

* ``median / p95 / max`` -- time to the first change (s);
* ``false`` -- changes no fault explains (replay's own accounting);
* ``cycles`` -- the most drain/restore cycles of one (target, region);
* ``disables`` -- automated drains of the faulty region(s);
* ``floor`` -- the floor from the issue, and whether it is met.

Also: a Traffic Manager anchor row (its defaults: 30 s interval, 3 tolerated
failures, 60 s DNS TTL; computed, not replayed), the demo's tuned config on
a hard down, and the false-positive rate per hour the ADR predicts against
what 200 quiet hours measured.

Run: ``.venv/bin/python bench/decisions.py [--seeds N] [--only NAME ...]``
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from controlplane.cli.demo import demo_config
from controlplane.config import Settings, load_settings, parse_settings
from controlplane.replay import ReplayResult, run_replay

NOISE = {"loss": 0.03, "jitter_ms": 30}
FAULT_AT = 600.0
REGION = "eastus"


@dataclass
class Row:
    name: str
    floor: str
    times: list[float] = field(default_factory=list)
    missed: int = 0  # runs where the expected change never came
    false: int = 0
    cycles: int = 0
    disables: int = 0
    runs: int = 0
    hours: float = 0.0
    probes: int = 0  # LLM probes sent (quiet: for the false-alarm prediction)
    ok: Callable[[Row], bool] | None = None
    note: str = ""

    def pct(self, q: float) -> float | None:
        if not self.times:
            return None
        values = sorted(self.times)
        return values[min(len(values) - 1, math.ceil(q * len(values)) - 1)]

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None


def timeline(events: list[dict[str, Any]], duration: float, seed: int, **extra: Any) -> dict[str, Any]:
    return {"duration": f"{duration:g}s", "seed": seed, "noise": NOISE, "events": events, **extra}


def first_change(r: ReplayResult, index: int = 0) -> float | None:
    return r.summary["events"][index]["first_change_s"]


def drains(r: ReplayResult, regions: set[str] | None = None) -> list[dict[str, Any]]:
    return [
        c
        for c in r.changes
        if c["field"] == "enabled" and c["to"] is False and not c["manual"] and (regions is None or c["region"] in regions)
    ]


def steps_first(r: ReplayResult, region: str) -> bool:
    """Did the region's first automated change step a weight instead of draining it? (A region-wide hard
    down should drain at once; a step first is an extra Azure write per target and an extra transition.)"""
    mine = [c for c in r.changes if c["region"] == region and not c["manual"]]
    return bool(mine) and any(c["field"] != "enabled" for c in mine if c["at"] == mine[0]["at"])


def cycles(r: ReplayResult) -> int:
    per: Counter[tuple[str, str]] = Counter((c["target"], c["region"]) for c in drains(r))
    return max(per.values(), default=0)


# ---------------------------------------------------------------- scenarios


def hard_down(s: Settings, seeds: int, name: str = "hard down (connection refused)") -> Row:
    row = Row(name, "median <= 10 s, p95 <= 15 s")
    stepped = 0
    for seed in range(seeds):
        r = run_replay(s, timeline([{"at": f"{FAULT_AT + seed % 17:g}s", "region": REGION, "fault": "down"}], FAULT_AT + 300, seed))
        _time(row, r)
        row.disables += len(drains(r, {REGION}))
        stepped += steps_first(r, REGION)
    row.note = f"weight step before the drain in {stepped} of {seeds} runs"
    row.ok = lambda x: x.missed == 0 and (x.median or 1e9) <= 10 and (x.pct(0.95) or 1e9) <= 15
    return row


def two_deployments(s: Settings) -> Settings:
    """The shipped config with a second deployment on each region's Azure OpenAI resource (same base_url)."""
    data = s.model_dump(mode="json", exclude_none=True)
    for region in data["regions"]:
        first = region["endpoints"][0]
        region["endpoints"].append({**first, "name": f"{first['name']}-mini", "deployment": f"{first['deployment']}-mini"})
    return parse_settings(data, "<shipped config, two deployments per resource>")


def hard_down_two(s: Settings, seeds: int) -> Row:
    return hard_down(two_deployments(s), seeds, "hard down, 2 deployments on one resource")


def quiet(s: Settings, seeds: int) -> Row:
    row = Row("quiet, no fault (1 h per seed)", "0 false changes")
    for seed in range(seeds):
        r = run_replay(s, timeline([], 3600, seed))
        row.runs += 1
        row.hours += 1.0
        row.probes += r.summary["probes"]
        row.false += len([c for c in r.changes if not c["manual"]])
    row.ok = lambda x: x.false == 0
    return row


def throttle(s: Settings, seeds: int) -> Row:
    row = Row("70 % throttling (429)", "p95 <= 60 s, never disabled")
    for seed in range(seeds):
        r = run_replay(s, timeline([{"at": f"{FAULT_AT:g}s", "region": REGION, "fault": "throttle", "rate": 0.7}], FAULT_AT + 1200, seed))
        _time(row, r)
        row.disables += len(drains(r, {REGION}))
    row.ok = lambda x: x.missed == 0 and (x.pct(0.95) or 1e9) <= 60 and x.disables == 0
    return row


def brownout(s: Settings, seeds: int) -> Row:
    row = Row("10x TTFT brownout", "p95 <= 60 s")
    for seed in range(seeds):
        r = run_replay(s, timeline([{"at": f"{FAULT_AT:g}s", "region": REGION, "fault": "slow", "multiplier": 10}], FAULT_AT + 600, seed))
        _time(row, r)
        row.disables += len(drains(r, {REGION}))
    row.ok = lambda x: x.missed == 0 and (x.pct(0.95) or 1e9) <= 60
    return row


def bad_content(s: Settings, seeds: int) -> Row:
    row = Row("wrong answers on every probe", "p95 <= 60 s")
    for seed in range(seeds):
        r = run_replay(s, timeline([{"at": f"{FAULT_AT:g}s", "region": REGION, "fault": "bad_content"}], FAULT_AT + 600, seed))
        _time(row, r)
        row.disables += len(drains(r, {REGION}))
    row.ok = lambda x: x.missed == 0 and (x.pct(0.95) or 1e9) <= 60
    return row


def errors_30(s: Settings, seeds: int) -> Row:
    row = Row("30 % server errors (5xx)", "acted on in about a minute (no floor)")
    for seed in range(seeds):
        r = run_replay(s, timeline([{"at": f"{FAULT_AT:g}s", "region": REGION, "fault": "error", "rate": 0.3}], FAULT_AT + 900, seed))
        _time(row, r)
        row.disables += len(drains(r, {REGION}))
    return row


PERIODS = (20.0, 40.0, 60.0, 120.0, 240.0, 600.0)


def flapping(s: Settings, seeds: int) -> Row:
    row = Row("down/up flapping 20 s..10 min, 30 min", "<= 2 drain/restore cycles per target")
    for seed in range(seeds):
        period = PERIODS[seed % len(PERIODS)]
        events = []
        t = FAULT_AT
        while t < FAULT_AT + 1800:
            events.append({"at": f"{t:g}s", "region": REGION, "fault": "down"})
            events.append({"at": f"{t + period / 2:g}s", "region": REGION, "fault": "none"})
            t += period
        r = run_replay(s, timeline(events, FAULT_AT + 1800 + 1200, seed))
        row.runs += 1
        row.cycles = max(row.cycles, cycles(r))
        row.disables += len(drains(r, {REGION}))
    row.ok = lambda x: x.cycles <= 2
    return row


def restore(s: Settings, seeds: int) -> Row:
    limit = s.health.min_dwell + 60
    row = Row("20 min outage, then healthy: restore", f"p95 <= min_dwell + 60 s = {limit:g} s")
    for seed in range(seeds):
        events = [
            {"at": f"{FAULT_AT:g}s", "region": REGION, "fault": "down"},
            {"at": f"{FAULT_AT + 1200:g}s", "region": REGION, "fault": "none"},
        ]
        r = run_replay(s, timeline(events, FAULT_AT + 1200 + 900, seed))
        _time(row, r, index=1)
        row.disables += len(drains(r, {REGION}))
        row.cycles = max(row.cycles, cycles(r))
    row.ok = lambda x: x.missed == 0 and (x.pct(0.95) or 1e9) <= limit
    return row


def one_vantage(s: Settings, seeds: int) -> Row:
    row = Row("fault seen by 1 of 3 vantages", "0 changes")
    for seed in range(seeds):
        events = [{"at": f"{FAULT_AT:g}s", "region": REGION, "fault": "down", "vantages": ["eu"]}]
        r = run_replay(s, timeline(events, FAULT_AT + 900, seed, vantages=["eu", "us", "asia"]))
        row.runs += 1
        row.false += len([c for c in r.changes if not c["manual"]])
    row.ok = lambda x: x.false == 0
    return row


def all_down(s: Settings, seeds: int) -> Row:
    row = Row("every region down", "fail open, panic, nothing drained")
    panicked = 0
    for seed in range(seeds):
        events = [{"at": f"{FAULT_AT:g}s", "fault": "down"}, {"at": f"{FAULT_AT + 600:g}s", "fault": "none"}]
        r = run_replay(s, timeline(events, FAULT_AT + 1200, seed))
        row.runs += 1
        row.disables += len(drains(r))
        panicked += bool(r.panics)
        row.cycles = max(row.cycles, cycles(r))
    row.note = f"panic raised in {panicked} of {seeds} runs"
    row.ok = lambda x: x.disables == 0 and panicked == seeds
    return row


def _time(row: Row, r: ReplayResult, index: int = 0) -> None:
    row.runs += 1
    t = first_change(r, index)
    if t is None:
        row.missed += 1
    else:
        row.times.append(t)
    row.false += r.summary["false_changes"]


def traffic_manager_anchor(seeds: int) -> Row:
    """Azure Traffic Manager's defaults on a hard down, computed: probes every 30 s, the endpoint is
    degraded after more than 3 tolerated failures (the 4th), then clients keep the old answer for up
    to the 60 s DNS TTL (uniform)."""
    rng = random.Random(13)
    row = Row("anchor: Traffic Manager defaults (clients moved)", "30 s interval, 3 tolerated, 60 s TTL")
    for _ in range(seeds):
        first_probe = rng.uniform(0, 30)
        degraded = first_probe + 3 * 30
        row.times.append(degraded + rng.uniform(0, 60))
        row.runs += 1
    return row


def demo_settings() -> Settings:
    """The demo's tuned config (``regionguard demo``), without starting its simulators."""
    urls = {r: f"http://127.0.0.1:{9000 + i}" for i, r in enumerate(("eastus", "westeurope", "japaneast"))}
    arm = SimpleNamespace(base_url="https://127.0.0.1:9443", ca_bundle=None)
    return parse_settings(demo_config(urls, ["gpt-4o", "gpt-4o-mini"], arm, "sqlite://", 0), "<demo config>")  # type: ignore[arg-type]  # a stand-in for FakeArm: only its URL and CA bundle are read


def demo_row(seeds: int) -> Row:
    s = demo_settings()
    row = Row("demo config: hard down", "drain within 5 s")
    stepped = 0
    for seed in range(seeds):
        r = run_replay(s, timeline([{"at": "60s", "region": s.regions[0].name, "fault": "down"}], 120, seed))
        _time(row, r)
        stepped += steps_first(r, s.regions[0].name)
    row.note = f"weight step before the drain in {stepped} of {seeds} runs"
    row.ok = lambda x: x.missed == 0 and (x.pct(1.0) or 1e9) <= 5
    return row


SCENARIOS: dict[str, Callable[[Settings, int], Row]] = {
    "hard_down": hard_down,
    "hard_down_two": hard_down_two,
    "quiet": quiet,
    "throttle": throttle,
    "brownout": brownout,
    "bad_content": bad_content,
    "errors_30": errors_30,
    "flapping": flapping,
    "restore": restore,
    "one_vantage": one_vantage,
    "all_down": all_down,
}


def average_run_length(p: float, p0: float, p1: float, odds: float, grid: int = 600) -> float:
    """Probes between false alarms of the CUSUM when the true failure rate is ``p``: the expected time
    to absorption of the chain S -> max(0, S + llr) on a grid of ``grid`` steps up to ln(odds), solved
    as (I - P) E = 1 by banded Gaussian elimination (I - P is an M-matrix: no pivoting needed)."""
    a, b = math.log(p1 / p0), math.log((1 - p1) / (1 - p0))
    step = math.log(odds) / grid
    ia, ib = round(a / step), round(b / step)
    n = grid
    rows: list[dict[int, float]] = []
    for i in range(n):
        row: dict[int, float] = {i: 1.0}
        if i + ia < n:
            row[i + ia] = row.get(i + ia, 0.0) - p
        j = max(0, i + ib)
        row[j] = row.get(j, 0.0) - (1 - p)
        rows.append(row)
    rhs = [1.0] * n
    for k in range(n):  # forward elimination, touching only the nonzeros
        pivot = rows[k][k]
        for i in range(k + 1, min(n, k + 1 - ib + 1)):
            f = rows[i].get(k)
            if not f:
                continue
            f /= pivot
            for col, v in rows[k].items():
                if col >= k:
                    rows[i][col] = rows[i].get(col, 0.0) - f * v
            rhs[i] -= f * rhs[k]
            rows[i].pop(k, None)
    e = [0.0] * n
    for i in range(n - 1, -1, -1):
        acc = rhs[i] - sum(v * e[col] for col, v in rows[i].items() if col > i)
        e[i] = acc / rows[i][i]
    return e[0]


def predicted_false_per_hour(s: Settings, probes_per_hour: float) -> float:
    """The ADR's prediction: false alarms per endpoint-hour at ``noise_rate`` = probes per hour / ARL."""
    h = s.health
    return probes_per_hour / average_run_length(h.noise_rate, h.noise_rate, h.fault_rate, h.decision_odds)


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), help="run only these scenarios")
    ap.add_argument("--config", default=str(ROOT / "examples" / "regionguard.yaml"))
    args = ap.parse_args()
    s = load_settings(args.config)
    started = time.perf_counter()
    rows = []
    for name, fn in SCENARIOS.items():
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        rows.append(fn(s, args.seeds))
        print(f"  ({name}: {time.perf_counter() - t0:.0f} s wall)", file=sys.stderr, flush=True)
    rows.append(traffic_manager_anchor(args.seeds))
    if not args.only:
        rows.append(demo_row(args.seeds))
    p = s.probe
    print(
        f"regionguard decisions: {args.config}, {args.seeds} seeds per scenario, loss {NOISE['loss']:.0%} + jitter {NOISE['jitter_ms']} ms"
    )
    print(
        f"probe every {p.interval:g} s (confirmations {min(p.confirm_gap, p.fast_interval):g} s apart), liveness every {p.liveness_interval:g} s, "
        f"K={s.health.failures_to_down}, odds {s.health.decision_odds:g}, min_dwell {s.health.min_dwell:g} s, reconcile tick {s.reconcile.interval:g} s"
    )
    print()
    header = f"| {'scenario':50} | median | p95 | max | missed | false | cycles | disables | floor |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for r in rows:
        verdict = "" if r.ok is None else (" OK" if r.ok(r) else " MISSED")
        floor = f"{r.floor}{verdict}" + (f" ({r.note})" if r.note else "")
        print(
            f"| {r.name:50} | {fmt(r.median):>6} | {fmt(r.pct(0.95)):>5} | {fmt(r.pct(1.0)):>5} | {r.missed:>6} | {r.false:>5} | "
            f"{r.cycles:>6} | {r.disables:>8} | {floor} |"
        )
    quiet_row = next((r for r in rows if r.name.startswith("quiet")), None)
    if quiet_row is not None:
        endpoints = sum(len(r.endpoints) for r in s.regions)
        probes_per_hour = quiet_row.probes / max(1e-9, quiet_row.hours * endpoints)
        per_hour = predicted_false_per_hour(s, probes_per_hour)
        print()
        print(
            f"false alarms predicted (ADR 0011): {probes_per_hour:.0f} LLM probes per endpoint-hour measured, "
            f"{per_hour:.2e} false alarms per endpoint-hour -> {per_hour * endpoints * quiet_row.hours:.3f} expected in "
            f"{quiet_row.hours:g} quiet hours x {endpoints} endpoints; measured: {quiet_row.false} false changes"
        )
    print(f"\n{time.perf_counter() - started:.0f} s wall")


if __name__ == "__main__":
    main()
