"""Soak: one real worker for hours of simulated time, faults coming and going; what it holds must stay flat.

What runs, all on 127.0.0.1:

- the LLM simulator as its own process (``python -m simulator.llm``): ``--regions`` x ``--deployments``
  (20 x 5 = 100 endpoints by default), zero latency, rate limits lifted. Its fault timeline (what
  ``--timeline`` and ``--time-scale`` run; here ``POST /_sim/timeline``, so that simulated time 0 is the
  moment the worker is up) is seeded: cycles of ``--cycle`` (an hour), each a storm (60 %: a fault starts
  about every ``--fault-every`` and lasts 2 to 15 minutes: a region down, 5xx, 429s, slow answers, wrong
  answers, hung requests, truncated streams, a little noise; on whole regions or single deployments, at
  most two regions at once) and then calm; every cycle runs the same faults at the same moments;
- the fake ARM (in this process), seeded with a weighted and a priority Traffic Manager profile and a
  Front Door Standard/Premium origin group over every region: drains and restores are real SDK writes;
- a webhook receiver (in this process): notifications are on;
- one worker, ``regionguard run --migrate --health-port 0``, a real process, on SQLite (a file) by default
  or on a fresh PostgreSQL database (``--postgres``: REGIONGUARD_TEST_POSTGRES_URL's server, or
  ``--pg-url``, an admin URL; the database is dropped afterwards). Rollups run (every 15 s) and retention
  (``retention.interval``) with a short retention (30 simulated minutes of raw results), so it deletes
  all along.

Simulated time. The worker has no simulated clock: it runs on the wall clock. H simulated hours at time
scale K (simulated seconds per real second) run H * 3600 / K real seconds, and every duration in the
worker's config that stands for time passing is divided by K: ``probe.interval``, ``fast_interval``,
``confirm_gap``, ``liveness_interval``; ``health.min_dwell``, ``flap_half_life``, ``flap_stable``,
``flap_max_hold`` (the defaults; the staleness derives from the interval); ``guardrails.cooldown``, each
target's ``failback_dwell``; ``notifications.group_wait``; ``retention.raw_days``, ``rollup_days`` and
``retention.interval``; ``reconcile.interval`` too, but never under ``MIN_RECONCILE_S`` (0.5 s: a tick
reads every target over HTTPS). ``guardrails.write_budget_per_hour`` is multiplied by K (its bucket refills
per real hour). Latencies keep their ratios to the probe's 10 s deadline (``slow_ttft`` 3/10 of it,
``slow_total`` 8/10, a slow fault's TTFT 9/10), and the deadline is scaled like time but never under
``MIN_TIMEOUT_S`` (0.5 s: loopback on a busy 2-core machine) nor over the real probe interval; the
liveness deadline is the probe's. Not scaled (real I/O, not time passing): the lease (15 s), Azure call
deadlines (``reconcile.deadline``, ``azure.request_timeout``), the rollup job (every 15 s, over the last
3 real minutes: a rollup minute is a real minute), the overrides (5 s) and notification relay (2 s) jobs,
and an idle probe connection's keep-alive (four real probe intervals, at most a minute).

Sampled ``--samples`` times (every few real seconds), from ``/proc/<pid>`` and the worker's health port:
RSS, threads, open descriptors, sockets, open database connections (``pg_stat_activity`` of the soak's own
database on PostgreSQL; descriptors on the database file and its ``-wal``/``-shm`` on SQLite), and the
items in each of the worker's in-memory containers (``/debug/sizes``: every dict, list, set and deque its
objects hold, found by walking them; the scheduler's jobs, the result writer's backlog, the probe pools'
connections, the metric series, the probe loop's tasks, the interpreter's allocated blocks; and, shown but
not judged, what glibc's malloc holds in use and free: it says where RSS goes). Raw and
rollup rows are counted too (they plateau: retention works).

Verdict (see :func:`judge`). The first ``--warmup`` of the run (a third: two cycles) is cut: windows fill,
the first retention passes delete, the pools open what the faults make them open, every fault of a cycle
has run. Every cycle runs the same faults, so what follows the faults peaks in the warm-up and stays under
that peak, give or take chance; what grows per event or with time sets a new peak cycle after cycle. For
each resource and container, the change is how far its peak after the cut rose above its peak before it,
as a share of that peak (at least 5 items for a container, 20 sockets per region for sockets); FAIL when
that is over ``--tolerance`` (10 %) and the peak rose in more than half of the judged cycles. Bounded by
construction (a deque's maxlen, the probe loop's tasks, the result buffer, the metric series' labels from
the config, the database connection pool): PASS while under the bound.

    .venv/bin/python bench/soak.py                       # 6 simulated h, 100 endpoints, K = 12: ~30 min
    .venv/bin/python bench/soak.py --time-scale 20 --interval 15 --liveness 15   # the same in ~18 min
    .venv/bin/python bench/soak.py --postgres

``tests/integration/test_soak.py`` runs the shortened version (2 simulated hours, 8 endpoints, probes
every 120 simulated seconds, 20-minute cycles, time scale 240: about 35 s) and asserts every PASS.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml

from controlplane.config import parse_settings
from controlplane.runtime.sizes import BOUND

if TYPE_CHECKING:
    from simulator.arm import FakeArm

WEBHOOK_ENV = "SOAK_WEBHOOK_URL"
SUBSCRIPTION = "00000000-0000-0000-0000-00000000050a"
MIN_TIMEOUT_S = 0.5
REASONING = ("o3-mini",)  # the simulator's reasoning deployment: probed with max_completion_tokens
PROCESS_RESOURCES = ("rss_mb", "threads", "fds", "sockets", "db_conns", "map:python.allocated_blocks")
IN_FLIGHT = ("map:worker._pending_results", "map:probe_loop.tasks")
LABELLED = "map:metrics.series"
ALLOCATOR = "map:malloc."  # what the C allocator holds, KiB: shown beside RSS (judged), to say where RSS goes; not judged
STORM_SHARE = 0.6  # of a cycle: faults come and go; then calm
MIN_RECONCILE_S = 0.5  # real seconds: a reconcile tick reads every target from the fake ARM over HTTPS
CONTAINER_FLOOR = 5.0  # a container's change is measured against at least this many items
SOCKETS_PER_HOST = 20  # and sockets (descriptors, pooled connections) against at least this many per region
FAULTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("down", {"fault": "down"}),
    ("error", {"fault": "error", "rate": 0.7}),
    ("throttle", {"fault": "throttle", "rate": 0.9, "retry_after_s": 2}),
    ("slow", {"fault": "slow", "ttft_ms": 9000.0}),
    ("bad_content", {"fault": "bad_content"}),
    ("hang", {"fault": "hang", "rate": 0.5}),
    ("truncate", {"fault": "truncate", "rate": 0.8}),
    ("error-light", {"fault": "error", "rate": 0.05}),  # noise: must not move traffic
)


@dataclass(frozen=True)
class Plan:
    """One soak: sizes in simulated time (seconds unless named otherwise), and how fast it runs."""

    hours: float = 6.0
    time_scale: float = 12.0  # simulated seconds per real second
    regions: int = 20
    deployments: int = 5
    interval: float = 10.0  # LLM probe interval per endpoint
    liveness: float = 10.0  # liveness check interval per endpoint (0 = off)
    cycle: float = 3600.0  # a storm of faults, then calm
    fault_every: float = 400.0  # in a storm, a new fault starts about this often
    fault_for: tuple[float, float] = (120.0, 900.0)  # and lasts this long (never past the storm)
    raw_retention: float = 1800.0  # raw probe results kept
    rollup_retention: float = 4 * 3600.0  # per-minute rollups kept
    retention_every: float = 600.0  # the retention pass
    warmup: float = 1 / 3  # share of the run cut before the verdict
    samples: int = 60
    tolerance: float = 0.10
    seed: int = 7
    pg_admin_url: str | None = None  # None: SQLite

    def __post_init__(self) -> None:
        checks = {
            "hours": 0 < self.hours <= 48,
            "time_scale": 1 <= self.time_scale <= 1000,
            "regions": 1 <= self.regions <= 40,
            "deployments": 1 <= self.deployments <= 10,
            "interval": self.interval > 0 and self.real(self.interval) >= 0.05,
            "liveness": self.liveness >= 0,
            "warmup": 0 <= self.warmup < 0.9,
            "samples": 8 <= self.samples <= 10_000,
            "cycle": 600 <= self.cycle and self.hours * 3600 / self.cycle >= 3,
            "tolerance": 0 < self.tolerance < 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"{name}: {getattr(self, name)!r} is out of range")

    def real(self, simulated_s: float) -> float:
        return simulated_s / self.time_scale

    @property
    def real_seconds(self) -> float:
        return self.real(self.hours * 3600.0)

    @property
    def endpoints(self) -> int:
        return self.regions * self.deployments

    @property
    def storm(self) -> float:
        return self.cycle * STORM_SHARE

    @property
    def cycles(self) -> int:
        return max(1, round(self.hours * 3600.0 / self.cycle))

    @property
    def warm_cycles(self) -> int:
        """Whole cycles cut as warm-up: at least one, and at least ``warmup`` of the run; two at least are judged."""
        return min(max(1, math.ceil(self.warmup * self.cycles - 1e-9)), self.cycles - 2)


# ---------------------------------------------------------------- the world


def latency(plan: Plan, simulated_s: float) -> float:
    """A latency (threshold or injected) in real seconds. Latencies keep their ratios to the probe's 10 s
    deadline, which is scaled like time but never under ``MIN_TIMEOUT_S`` (loopback on a busy machine)
    nor over the real probe interval (the config requires it)."""
    timeout = min(plan.real(plan.interval), max(MIN_TIMEOUT_S, plan.real(10.0)))
    return round(simulated_s * timeout / 10.0, 4)


def seconds(value: float) -> str:
    return f"{value:.4f}s"


def worker_config(plan: Plan, region_urls: dict[str, str], deployments: Sequence[str], arm: FakeArm, database_url: str) -> dict[str, Any]:
    """The worker's config: every duration that stands for time passing divided by the time scale."""
    from controlplane.cli.demo import demo_config

    regions = list(region_urls)
    days = 86400.0
    common = {"subscription_id": SUBSCRIPTION, "resource_group": "rg-soak"}
    data = demo_config(region_urls, list(deployments), arm, database_url, 0)  # the demo's regions and endpoints
    for region in data["regions"]:
        for endpoint in region["endpoints"]:
            if endpoint["deployment"] in REASONING:
                endpoint["token_param"] = "max_completion_tokens"
    return {
        **data,
        "probe": {
            "vantage": "soak",
            "interval": seconds(plan.real(plan.interval)),
            "fast_interval": seconds(plan.real(plan.interval / 3)),
            "confirm_gap": seconds(plan.real(min(1.0, plan.interval / 3))),
            "liveness_interval": seconds(plan.real(plan.liveness)) if plan.liveness else 0,
            "liveness_timeout": seconds(latency(plan, 10.0)),  # at most the probe's (a liveness check is as cheap)
            "timeout": seconds(latency(plan, 10.0)),
            "slow_ttft": seconds(latency(plan, 3.0)),
            "slow_total": seconds(latency(plan, 8.0)),
            "concurrency": 64,
        },
        "health": {  # the defaults, scaled
            "min_dwell": seconds(plan.real(60)),
            "flap_half_life": seconds(plan.real(600)),
            "flap_stable": seconds(plan.real(300)),
            "flap_max_hold": seconds(plan.real(1800)),
        },
        "targets": [
            {
                **common,
                "name": "tm-weighted",
                "kind": "traffic_manager",
                "profile": "soak-weighted",
                "routing": "weighted",
                "endpoints": {r: {"name": f"aoai-{r}", "type": "ExternalEndpoints", "weight": 100} for r in regions},
            },
            {
                **common,
                "name": "tm-priority",
                "kind": "traffic_manager",
                "profile": "soak-priority",
                "routing": "priority",
                "failback": "auto",
                "failback_dwell": seconds(plan.real(120)),
                "endpoints": {
                    r: {"name": f"aoai-{r}", "type": "ExternalEndpoints", "weight": 1, "priority": i + 1} for i, r in enumerate(regions)
                },
            },
            {
                **common,
                "name": "afd",
                "kind": "front_door_cdn",
                "profile": "soak-afd",
                "origin_group": "aoai-origins",
                "routing": "weighted",
                "endpoints": {r: {"origin": r, "weight": 500, "priority": 1} for r in regions},
            },
        ],
        "guardrails": {
            **data["guardrails"],
            "cooldown": seconds(plan.real(60)),
            "write_budget_per_hour": int(120 * plan.time_scale),
        },
        "reconcile": {"interval": seconds(max(MIN_RECONCILE_S, plan.real(10))), "deadline": "15s"},
        "retention": {
            "raw_days": plan.real(plan.raw_retention) / days,
            "rollup_days": plan.real(plan.rollup_retention) / days,
            "interval": seconds(plan.real(plan.retention_every)),
        },
        "notifications": {
            "group_wait": seconds(plan.real(5)),
            "channels": [{"kind": "webhook", "name": "soak-sink", "url_env": WEBHOOK_ENV, "retries": 0}],
        },
        "logging": {"level": "WARNING"},
    }  # database, web and azure (the fake ARM) as the demo has them


def fault_timeline(plan: Plan, regions: Sequence[str], deployments: Sequence[str]) -> list[dict[str, Any]]:
    """Seeded faults coming and going, in simulated seconds: one cycle of ``plan.cycle``, repeated.

    A cycle is a storm (its first two thirds: a fault starts about every ``fault_every`` and lasts
    ``fault_for``, every one lifted by the storm's end), then calm (everything recovers). Each cycle
    repeats the same faults at the same moments, so a container that follows the faults goes through the
    same sizes every cycle, while one that grows per event or with time is bigger every cycle.

    A fault lands on a whole region or on one deployment, never on a region already at fault, and at
    most two at once (automation drains; fail-open is not the point here); fault kinds are taken in
    turn, so each cycle holds every kind when it holds enough faults.
    """
    rng = random.Random(plan.seed)
    one: list[tuple[float, dict[str, Any]]] = []
    busy_until: dict[str, float] = {}
    at = rng.uniform(0.1, 0.5) * plan.fault_every
    turn = rng.randrange(len(FAULTS))
    while at < plan.storm - plan.fault_for[0]:
        free = [r for r in regions if busy_until.get(r, 0.0) <= at]
        if sum(1 for until in busy_until.values() if until > at) < 2 and free:
            name, fault = FAULTS[turn % len(FAULTS)]
            turn += 1
            region = rng.choice(free)
            length = min(rng.uniform(*plan.fault_for), plan.storm - at)
            fault = dict(fault)
            if fault["fault"] == "slow":
                fault["ttft_ms"] = round(latency(plan, fault["ttft_ms"] / 1000.0) * 1000.0, 1)
            scope: dict[str, Any] = {"region": region}
            if rng.random() < 0.3 and name != "down":
                scope["deployment"] = rng.choice(list(deployments))
            one.append((at, {**scope, **fault}))
            one.append((at + length, {**scope, "fault": "none"}))
            busy_until[region] = at + length
        at += rng.uniform(0.5, 1.5) * plan.fault_every
    events = [{"at": f"{k * plan.cycle + t:.0f}s", **e} for k in range(plan.cycles) for t, e in sorted(one, key=lambda x: x[0])]
    return [e for e in events if float(e["at"][:-1]) < plan.hours * 3600.0]


def cycle_of(plan: Plan, sim_s: float) -> int:
    """The cycle ``sim_s`` falls in (0 = the first)."""
    return min(int(sim_s // plan.cycle), plan.cycles - 1)


class WebhookSink(ThreadingHTTPServer):
    """Receives the worker's webhook notifications (answers 204) and counts them."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SinkHandler)
        self.received = 0
        self._thread = threading.Thread(target=self.serve_forever, name="soak-webhook", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    def __enter__(self) -> WebhookSink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


class _SinkHandler(BaseHTTPRequestHandler):
    server: WebhookSink

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.received += 1
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def simulator(plan: Plan, workdir: Path) -> Iterator[dict[str, Any]]:
    """The LLM simulator process; yields its ready line (the timeline is started once the worker runs)."""
    cmd = [
        sys.executable, "-m", "simulator.llm",
        "--regions", str(plan.regions), "--deployments", str(plan.deployments),
        "--zero-latency", "--rpm", "100000000", "--tpm", "10000000000", "--admin-port", "0",
        "--seed", str(plan.seed), "--duration", str(plan.real_seconds + 300),
    ]  # fmt: skip
    log = open(workdir / "simulator.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the simulator exited before it was ready: {(workdir / 'simulator.log').read_text()[-2000:]}")
        yield json.loads(line)
    finally:
        _stop(proc)
        log.close()


@contextmanager
def database(plan: Plan, workdir: Path) -> Iterator[tuple[str, str | None]]:
    """(the worker's database URL, the PostgreSQL database's name or None for SQLite)."""
    if plan.pg_admin_url is None:
        yield "sqlite:///" + str(workdir / "soak.db"), None
        return
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from controlplane.store.db import make_engine

    name = f"rg_soak_{uuid.uuid4().hex[:10]}"
    admin = make_engine(plan.pg_admin_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(plan.pg_admin_url).set(database=name).render_as_string(hide_password=False), name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _stop(proc: subprocess.Popen[Any], timeout: float = 15.0) -> int | None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()
    return proc.returncode


# ---------------------------------------------------------------- sampling


@dataclass
class Sample:
    real_s: float
    sim_s: float
    values: dict[str, float]  # rss_mb, threads, fds, db_conns, raw_rows, rollup_rows, and "map:<path>" items


class Sampler:
    """Reads one worker's resources from /proc, its /debug/sizes, and its database."""

    def __init__(self, pid: int, health_url: str, database_url: str, pg_database: str | None, sqlite_path: str | None) -> None:
        self.pid = pid
        self.health_url = health_url
        self.pg_database = pg_database
        self.sqlite_path = sqlite_path
        from controlplane.store.db import make_engine

        self._engine = make_engine(database_url)  # the bench's own single connection, excluded from the count
        self.errors: list[str] = []

    def close(self) -> None:
        self._engine.dispose()

    def _proc_status(self) -> dict[str, str]:
        out = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            out[key] = value.strip()
        return out

    def _fd_targets(self) -> list[str]:
        targets = []
        base = Path(f"/proc/{self.pid}/fd")
        for fd in os.listdir(base):
            try:
                targets.append(os.readlink(base / fd))
            except OSError:  # closed meanwhile
                continue
        return targets

    def sockets_by_peer(self) -> list[tuple[int, str, int]]:
        """(remote port, TCP state, count) of the worker's sockets, most first (what the sockets are)."""
        inodes = {t[8:-1] for t in self._fd_targets() if t.startswith("socket:[")}
        states = {"01": "ESTABLISHED", "06": "TIME_WAIT", "08": "CLOSE_WAIT", "0A": "LISTEN", "04": "FIN_WAIT1", "05": "FIN_WAIT2"}
        counts: dict[tuple[int, str], int] = {}
        for name in ("tcp", "tcp6"):
            for line in Path(f"/proc/{self.pid}/net/{name}").read_text().splitlines()[1:]:
                parts = line.split()
                if parts[9] in inodes:
                    key = (int(parts[2].rsplit(":", 1)[1], 16), states.get(parts[3], parts[3]))
                    counts[key] = counts.get(key, 0) + 1
        return sorted(((port, state, n) for (port, state), n in counts.items()), key=lambda x: -x[2])

    def _sizes(self) -> dict[str, int]:
        with urllib.request.urlopen(self.health_url + "/debug/sizes", timeout=30) as response:
            sizes: dict[str, int] = json.loads(response.read())["sizes"]
            return sizes

    def _db(self) -> dict[str, float]:
        from sqlalchemy import text

        with self._engine.connect() as conn:
            raw = conn.execute(text("SELECT count(*) FROM probe_result")).scalar_one()
            rollups = conn.execute(text("SELECT count(*) FROM probe_rollup")).scalar_one()
            out = {"raw_rows": float(raw), "rollup_rows": float(rollups)}
            if self.pg_database is not None:
                conns = conn.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE datname = :db AND pid <> pg_backend_pid()"), {"db": self.pg_database}
                ).scalar_one()
                out["db_conns"] = float(conns)
        return out

    def reconcile_figures(self) -> dict[str, float]:
        """The worker's reconcile ticks from its /metrics: count, total seconds, and how many took over 1 s."""
        with urllib.request.urlopen(self.health_url + "/metrics", timeout=30) as response:
            text = response.read().decode()
        values = {}
        for name, key in (("_count", "ticks"), ("_sum", "seconds"), ('_bucket{le="1.0"}', "under_1s")):
            found = re.search(r"^regionguard_reconcile_duration_seconds" + re.escape(name) + r" (\S+)$", text, re.M)
            values[key] = float(found.group(1)) if found else 0.0
        return values

    def writes_by_region(self) -> dict[str, int]:
        """Azure writes the worker applied, per region (its change records)."""
        from sqlalchemy import text

        with self._engine.connect() as conn:
            rows = conn.execute(text("SELECT region, count(*) FROM change WHERE status = 'applied' GROUP BY region")).all()
        return {str(region): int(n) for region, n in rows}

    def sample(self, real_s: float, sim_s: float) -> Sample:
        status = self._proc_status()
        fds = self._fd_targets()
        values: dict[str, float] = {
            "rss_mb": int(status["VmRSS"].split()[0]) / 1024.0,
            "threads": float(status["Threads"]),
            "fds": float(len(fds)),
            "sockets": float(sum(1 for t in fds if t.startswith("socket:"))),
            "load1": float(Path("/proc/loadavg").read_text().split()[0]),  # the machine's (not judged): what the worker shared
        }
        values.update(self._db())
        if self.sqlite_path is not None:
            values["db_conns"] = float(sum(1 for t in fds if t.startswith(self.sqlite_path)))
        asked = time.monotonic()
        try:
            values.update({f"map:{path}": float(n) for path, n in self._sizes().items()})
            values["sizes_ms"] = (time.monotonic() - asked) * 1000.0
        except OSError as exc:  # URLError and timeouts too: a worker too busy to answer is a finding, not a crash
            self.errors.append(f"/debug/sizes at {real_s:.0f} s: {exc}")
        return Sample(real_s, sim_s, values)


# ---------------------------------------------------------------- the verdict


def theil_sen(points: Sequence[tuple[float, float]]) -> float:
    """Median of the pairwise slopes (robust to outliers and to a count that goes up and down)."""
    slopes = [(y2 - y1) / (x2 - x1) for i, (x1, y1) in enumerate(points) for x2, y2 in points[i + 1 :] if x2 != x1]
    return statistics.median(slopes) if slopes else 0.0


def trend(points: Sequence[tuple[float, float]], floor: float) -> float:
    """Theil-Sen slope x the time the points span, as a share of their median level (at least ``floor``)."""
    if len(points) < 2:
        return 0.0
    level = max(statistics.median(y for _, y in points), floor)
    return theil_sen(points) * (points[-1][0] - points[0][0]) / level


@dataclass(frozen=True)
class Verdict:
    resource: str
    how: str  # trend | calm | in flight | bounded (see judge)
    at_cut: float
    at_end: float
    change: float  # a share: 0.1 = +10 %
    ok: bool
    note: str = ""


def label_bound(plan: Plan, targets: int = 3) -> int:
    """The metric series the config allows: labels from endpoints, regions, targets, outcomes and states only."""
    from controlplane.domain import HealthStateName, Outcome

    e, r, o, st = plan.endpoints, plan.regions, len(Outcome), len(HealthStateName)
    return e * (o + 6) + e * (st + 2) + r * (st + 2) + targets * r * 8 + 4 * targets * 8 + 2 * (targets + 1) + 110


def judge(plan: Plan, samples: Sequence[Sample]) -> tuple[int, list[Verdict]]:
    """(the first sample after the warm-up cut, a verdict per resource and per container seen).

    The cut falls at a cycle's start (``plan.warm_cycles`` whole cycles are warm-up). Every cycle runs the
    same faults, so whatever follows the faults reaches its peak in the warm-up and stays under it, give or
    take chance (a probe lost to a busy CPU); whatever grows per event or with time sets a new peak cycle
    after cycle. For each resource and container:

    - change: how far its peak after the cut rose over its peak up to the cut, as a share of that peak (at
      least ``CONTAINER_FLOOR`` items for a container, ``SOCKETS_PER_HOST`` per region for sockets);
    - rises: in how many of the judged cycles it set a new peak;
    - FAIL when the change is over the tolerance and the peak rose in more than half of the judged cycles
      (a climb, not a one-off peak).

    In flight (the probe loop's tasks, buffered results and liveness checks) are bounded by construction
    and pass while under that bound; the metric series (labels from the config only) while under
    ``label_bound``. Database connections also pass while within the connection pool's bound (it keeps
    what its busiest moment opened).
    """
    if len(samples) < 4:
        return len(samples), []
    cut = next((i for i, s in enumerate(samples) if cycle_of(plan, s.sim_s) >= plan.warm_cycles), len(samples) - 1)
    before, after = samples[:cut] or samples[:1], samples[cut:]
    head = max(1, len(after) // 6)
    names = [r for r in PROCESS_RESOURCES if any(r in s.values for s in after)]
    names += sorted(
        {
            k
            for s in after
            for k in s.values
            if k.startswith("map:") and k not in PROCESS_RESOURCES and BOUND not in k and not k.startswith(ALLOCATOR)
        }
    )
    verdicts = []
    for name in names:
        values = [s.values.get(name, 0.0) for s in after]
        at_cut, at_end = statistics.median(values[:head]), statistics.median(values[-head:])
        peak_before = max(s.values.get(name, 0.0) for s in before)
        built = max((s.values.get(name + BOUND, 0.0) for s in after), default=0.0)
        if built:  # a deque with a maxlen: bounded by construction
            peak = max(values)
            change = (peak - peak_before) / max(peak_before, floor_of(plan, name))
            verdicts.append(Verdict(name, "maxlen", at_cut, at_end, change, peak <= built, f"peak {peak:.0f} of {built:.0f}"))
            continue
        if name in IN_FLIGHT:
            peak, bound = max(values), in_flight_bound(plan, name)
            change = (peak - peak_before) / max(peak_before, 1.0)
            verdicts.append(Verdict(name, "in flight", at_cut, at_end, change, peak <= bound, f"peak {peak:.0f} of {bound}"))
            continue
        peaks: dict[int, float] = {}
        for s in after:
            k = cycle_of(plan, s.sim_s)
            peaks[k] = max(peaks.get(k, -math.inf), s.values.get(name, 0.0))
        running, rises = peak_before, 0
        for _, peak in sorted(peaks.items()):
            rises += peak > running
            running = max(running, peak)
        change = (running - peak_before) / max(peak_before, floor_of(plan, name))
        ok = change <= plan.tolerance or rises <= len(peaks) / 2
        note = f"peak rose in {rises} of {len(peaks)} cycles"
        if name == LABELLED:
            bound = label_bound(plan)
            verdicts.append(Verdict(name, "bounded", at_cut, at_end, change, max(values) <= bound, f"peak {max(values):.0f} of {bound}"))
        elif name == "db_conns" and not ok and max(values) <= pool_bound(plan):
            verdicts.append(Verdict(name, "pool", at_cut, at_end, change, True, f"{note}; at most {pool_bound(plan)}"))
        else:
            verdicts.append(Verdict(name, "peaks", at_cut, at_end, change, ok, note))
    return cut, verdicts


def floor_of(plan: Plan, name: str) -> float:
    """What a change is measured against at least: a few items for a container, some sockets per region."""
    if name in ("fds", "sockets", "map:probe_pool.connections", "map:probe_pool.idle"):
        return SOCKETS_PER_HOST * plan.regions
    if name.startswith("map:") and name not in PROCESS_RESOURCES:
        return CONTAINER_FLOOR
    return 1.0


def in_flight_bound(plan: Plan, name: str) -> int:
    """What bounds a quantity in flight by construction: the probe loop's tasks (per endpoint an LLM probe,
    its overlapping confirmations and a liveness check, and the loop's own), the result buffer (the worker's
    ``result_buffer_limit``), the liveness checks waiting for the next evaluation (a deque's maxlen)."""
    from controlplane.engine.cadence import MAX_OVERLAPPING

    if name == "map:probe_loop.tasks":
        return plan.endpoints * (2 + MAX_OVERLAPPING) + 10
    return max(10_000, int(plan.endpoints * 20 * 60 / plan.real(plan.interval)))


def pool_bound(plan: Plan) -> int:
    """Database connections (PostgreSQL) or descriptors on the database files (SQLite: two per connection, and
    the shared memory) the worker's connection pool may hold: ``controlplane.store.db`` sizes it."""
    return 10 if plan.pg_admin_url else 2 * 15 + 1


@dataclass
class Report:
    plan: Plan
    samples: list[Sample]
    cut: int  # index of the first sample after the warm-up
    verdicts: list[Verdict]
    worker_exit: int | None = None
    faults: int = 0
    notifications: int = 0
    arm_writes: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.verdicts) and all(v.ok for v in self.verdicts) and self.worker_exit == 0

    def failed(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.ok]


# ---------------------------------------------------------------- the run


def run(plan: Plan, out: Callable[[str], None] = print, workdir: Path | None = None) -> Report:
    """Run one soak and judge it. Every process and server it starts is stopped before it returns."""
    with ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="regionguard-soak-")))
        from simulator.arm import FakeArm

        arm = stack.enter_context(FakeArm())
        hook = stack.enter_context(WebhookSink())
        regions_and_deployments = _sim_layout(plan)
        timeline = fault_timeline(plan, *regions_and_deployments)
        ready = stack.enter_context(simulator(plan, workdir))
        (workdir / "timeline.yaml").write_text(yaml.safe_dump({"events": timeline, "time_scale": 1.0 / plan.time_scale}))
        database_url, pg_name = stack.enter_context(database(plan, workdir))
        urls: dict[str, str] = ready["regions"]
        data = worker_config(plan, urls, regions_and_deployments[1], arm, database_url)
        settings = parse_settings(data, "<soak config>")
        arm.seed_from_config(settings)
        config = workdir / "regionguard.yaml"
        config.write_text(yaml.safe_dump(data))
        out(
            f"soak: {plan.hours:g} simulated h at time scale {plan.time_scale:g} = {plan.real_seconds:.0f} real s;"
            f" {plan.regions} regions x {plan.deployments} deployments = {plan.endpoints} endpoints;"
            f" probe every {plan.interval:g} s (real {plan.real(plan.interval):.3f} s), liveness every {plan.liveness:g} s;"
            f" {sum(1 for e in timeline if e['fault'] != 'none')} faults; raw results kept {plan.raw_retention / 60:g} min;"
            f" {'PostgreSQL' if pg_name else 'SQLite'}"
        )
        report = _soak(plan, workdir, config, database_url, pg_name, hook.url, ready["admin_url"], timeline, out)
        report.notifications = hook.received
        report.arm_writes = sum(1 for e in arm.request_log if e.method in ("PATCH", "PUT") and 200 <= e.status < 300)
    out(format_report(report))
    return report


def _sim_layout(plan: Plan) -> tuple[list[str], list[str]]:
    from simulator.llm import default_regions

    regions = default_regions(plan.regions, plan.deployments)
    return [r.name for r in regions], [d.name for d in regions[0].deployments]


def _soak(
    plan: Plan,
    workdir: Path,
    config: Path,
    database_url: str,
    pg_name: str | None,
    hook_url: str,
    admin_url: str,
    timeline: list[Any],
    out: Callable[[str], None],
) -> Report:
    from controlplane.cli.demo import DEMO_KEY_ENV

    env = dict(os.environ, **{DEMO_KEY_ENV: "sim-key", WEBHOOK_ENV: hook_url})
    log_path = workdir / "worker.log"
    cmd = [sys.executable, "-m", "controlplane.cli", "run", "--config", str(config), "--migrate", "--holder", "soak", "--health-port", "0"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    report = Report(plan, [], 0, [])
    sampler: Sampler | None = None
    try:
        health_url = _health_url(proc, log_path)
        sqlite_path = None if pg_name else database_url.removeprefix("sqlite:///")
        sampler = Sampler(proc.pid, health_url, database_url, pg_name, sqlite_path)
        start_timeline(admin_url, timeline, 1.0 / plan.time_scale)  # simulated time 0 is now: the worker runs
        started = time.monotonic()
        every = plan.real_seconds / plan.samples
        for k in range(plan.samples + 1):
            _sleep_until(started + k * every, proc)
            real_s = time.monotonic() - started
            report.samples.append(sampler.sample(real_s, real_s * plan.time_scale))
        if sampler.errors:
            report.notes.append(f"{len(sampler.errors)} sample(s) without the worker's sizes, e.g. {sampler.errors[0]}")
        report.notes.extend(_time_scale_notes(plan, sampler, report.samples, timeline))
        peers = ", ".join(f"{n} to :{port} {state}" for port, state, n in sampler.sockets_by_peer()[:8])
        report.notes.append(f"the worker's sockets at the end: {peers}")
        report.cut, report.verdicts = judge(plan, report.samples)
    finally:
        if sampler is not None:
            sampler.close()
        report.worker_exit = _stop(proc, timeout=20)
    report.faults = sum(1 for e in timeline if e["fault"] != "none")
    lines = log_path.read_text().splitlines()
    warnings: dict[str, int] = {}
    for line in lines:
        if "WARNING" in line:
            key = re.sub(r"\d+", "N", line.split("WARNING", 1)[1])[:90]
            warnings[key] = warnings.get(key, 0) + 1
    if warnings:
        common = ", ".join(f"{n} x{key}" for key, n in sorted(warnings.items(), key=lambda kv: -kv[1])[:4])
        report.notes.append(f"{sum(warnings.values())} WARNING line(s) in the worker's log; most: {common}")
    skipped = [line for line in lines if "skipped: maximum number of running instances" in line]
    if skipped:
        backstop = sum(1 for line in skipped if 'job \\"reconcile (trigger: interval' in line)
        report.notes.append(
            f"the scheduler skipped {len(skipped)} run(s) while the last still ran: {backstop} of the reconcile backstop"
            f" (every {plan.real(10):.3f} real s here, {MIN_RECONCILE_S} s at least), {len(skipped) - backstop} other(s)"
        )
    errors = [line for line in lines if " ERROR " in line or "Traceback" in line]
    if errors:
        report.notes.append(f"{len(errors)} ERROR line(s) in the worker's log, e.g. {errors[0][:200]}")
    return report


def _time_scale_notes(plan: Plan, sampler: Sampler, samples: Sequence[Sample], timeline: Sequence[dict[str, Any]]) -> list[str]:
    """What the time scale costs, in figures: the machine's load, the reconcile tick's real time against its scaled
    interval, and the Azure writes on regions no fault ever touched (probes that missed a scaled deadline on a
    busy machine: the machine was slow, not the endpoint)."""
    notes = []
    loads = [s.values["load1"] for s in samples if "load1" in s.values]
    if loads:
        notes.append(
            f"machine load (1 min) while sampled: median {statistics.median(loads):.1f}, max {max(loads):.1f}, on {os.cpu_count()} cores"
        )
    try:
        ticks = sampler.reconcile_figures()
        writes = sampler.writes_by_region()
    except Exception as exc:  # a figure, not the verdict
        return [*notes, f"no reconcile or write figures: {type(exc).__name__}: {exc}"]
    if ticks["ticks"]:
        notes.append(
            f"reconcile ticks: {ticks['ticks']:.0f}, mean {ticks['seconds'] / ticks['ticks'] * 1000:.0f} ms,"
            f" {ticks['ticks'] - ticks['under_1s']:.0f} over 1 s; interval {plan.real(10):.3f} real s"
            f" (10 simulated s; the tick's work is real time, not scaled)"
        )
    faulted = {e["region"] for e in timeline if e["fault"] != "none"}
    total = sum(writes.values())
    calm = sum(n for region, n in writes.items() if region not in faulted)
    notes.append(
        f"Azure writes applied: {total}, of them {calm} on {sum(1 for r in writes if r not in faulted)} region(s) no fault touched"
        f" (their probes missed a scaled deadline: slow after {latency(plan, 3.0) * 1000:.0f} ms, timeout after"
        f" {latency(plan, 10.0) * 1000:.0f} ms real)"
    )
    return notes


def start_timeline(admin_url: str, events: list[dict[str, Any]], time_scale: float) -> None:
    """``POST /_sim/timeline``: what ``--timeline`` and ``--time-scale`` do, started when the worker is up."""
    body = json.dumps({"events": events, "time_scale": time_scale}).encode()
    request = urllib.request.Request(admin_url + "/_sim/timeline", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def _health_url(proc: subprocess.Popen[str], log_path: Path, timeout: float = 60.0) -> str:
    """Wait for the worker's 'health on http://...' line (bounded); its health port's URL."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the worker exited (code {proc.poll()}): {log_path.read_text()[-3000:]}")
        if line.startswith("health on "):
            url = line.split(" on ", 1)[1].strip().rstrip("/")
            threading.Thread(target=_drain, args=(proc,), name="soak-worker-output", daemon=True).start()
            return url
    raise RuntimeError(f"the worker did not start its health port within {timeout:g} s")


def _drain(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    try:
        for _ in proc.stdout:
            pass
    except (OSError, ValueError):
        pass


def _sleep_until(at: float, proc: subprocess.Popen[str]) -> None:
    while (left := at - time.monotonic()) > 0:
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited with code {proc.returncode} during the soak")
        time.sleep(min(left, 0.5))


# ---------------------------------------------------------------- printing


def _hms(sim_s: float) -> str:
    return f"{int(sim_s // 3600)}:{int(sim_s % 3600 // 60):02d}"


def format_report(report: Report) -> str:
    lines: list[str] = []
    samples = report.samples
    if not samples:
        return "no samples"
    items = sorted(
        {
            k
            for s in samples
            for k in s.values
            if k.startswith("map:") and k not in PROCESS_RESOURCES and k != LABELLED and not k.startswith(ALLOCATOR)
        }
    )
    lines.append(
        f"{'sim h:mm':>8} {'real s':>7} {'RSS MB':>7} {'threads':>7} {'fds':>5} {'sockets':>7} {'db conns':>8} {'raw rows':>9} {'rollups':>8}"
        f" {'map items':>9} {'py blocks':>10} {'malloc MB':>9} {'free MB':>7}"
    )
    for i, s in enumerate(samples):
        v = s.values
        new_cycle = i > 0 and cycle_of(report.plan, s.sim_s) != cycle_of(report.plan, samples[i - 1].sim_s)
        mark = "  <- warm-up cut" if i == report.cut else "  <- cycle" if new_cycle else ""
        lines.append(
            f"{_hms(s.sim_s):>8} {s.real_s:>7.0f} {v['rss_mb']:>7.1f} {v['threads']:>7.0f} {v['fds']:>5.0f} {v.get('sockets', 0):>7.0f} {v.get('db_conns', 0):>8.0f}"
            f" {v.get('raw_rows', 0):>9.0f} {v.get('rollup_rows', 0):>8.0f} {sum(v.get(k, 0) for k in items):>9.0f}"
            f" {v.get('map:python.allocated_blocks', 0):>10.0f} {v.get(ALLOCATOR + 'in_use_kb', 0) / 1024:>9.1f}"
            f" {v.get(ALLOCATOR + 'free_kb', 0) / 1024:>7.1f}{mark}"
        )
    cut = samples[min(report.cut, len(samples) - 1)]
    lines.append("")
    lines.append(
        f"warm-up cut at sample {report.cut}: {_hms(cut.sim_s)} simulated ({cut.real_s:.0f} real s) of {_hms(samples[-1].sim_s)};"
        f" judged on {len(samples) - report.cut} samples"
    )
    lines.append(f"{'resource':<58} {'judged':>9} {'after cut':>10} {'at end':>10} {'change':>8}  verdict (+-{report.plan.tolerance:.0%})")
    shown = [x for x in report.verdicts if x.resource in PROCESS_RESOURCES or x.at_cut or x.at_end or not x.ok]
    for x in shown:
        name = x.resource.removeprefix("map:")
        note = f"  ({x.note})" if x.note and (x.how != "peaks" or not x.ok or x.change > 0) else ""
        lines.append(
            f"{name[:58]:<58} {x.how:>9} {x.at_cut:>10.1f} {x.at_end:>10.1f} {x.change:>+8.1%}  {'PASS' if x.ok else 'FAIL'}{note}"
        )
    hidden = len(report.verdicts) - len(shown)
    if hidden:
        lines.append(f"({hidden} more container(s) empty all along: PASS)")
    lines.append("")
    lines.append(
        f"faults: {report.faults}; Azure writes landed: {report.arm_writes}; notifications received: {report.notifications};"
        f" worker exit code: {report.worker_exit}"
    )
    lines.extend(report.notes)
    failed = report.failed()
    lines.append(
        "soak: PASS"
        if report.ok
        else f"soak: FAIL ({', '.join(v.resource for v in failed) or 'worker exit code ' + str(report.worker_exit)})"
    )
    return "\n".join(lines)


PLAN_ARGS = (
    "hours",
    "time_scale",
    "regions",
    "deployments",
    "interval",
    "liveness",
    "cycle",
    "fault_every",
    "samples",
    "warmup",
    "tolerance",
    "seed",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = Plan()
    parser.add_argument("--hours", type=float, default=default.hours, help="simulated hours")
    parser.add_argument("--time-scale", type=float, default=default.time_scale, help="simulated seconds per real second")
    parser.add_argument("--regions", type=int, default=default.regions)
    parser.add_argument("--deployments", type=int, default=default.deployments)
    parser.add_argument("--interval", type=float, default=default.interval, help="simulated probe interval, s")
    parser.add_argument("--liveness", type=float, default=default.liveness, help="simulated liveness interval, s (0 = off)")
    parser.add_argument("--cycle", type=float, default=default.cycle, help="simulated seconds of one storm of faults and its calm")
    parser.add_argument("--fault-every", type=float, default=default.fault_every, help="simulated seconds between faults in a storm")
    parser.add_argument("--samples", type=int, default=default.samples)
    parser.add_argument("--warmup", type=float, default=default.warmup, help="share of the run cut before judging")
    parser.add_argument("--tolerance", type=float, default=default.tolerance)
    parser.add_argument("--seed", type=int, default=default.seed)
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL at REGIONGUARD_TEST_POSTGRES_URL (a fresh database)")
    parser.add_argument("--pg-url", default=None, help="PostgreSQL admin URL (a fresh database is made and dropped)")
    args = parser.parse_args(argv)
    pg = args.pg_url or (os.environ.get("REGIONGUARD_TEST_POSTGRES_URL") if args.postgres else None)
    if args.postgres and not pg:
        parser.error("--postgres needs REGIONGUARD_TEST_POSTGRES_URL (or pass --pg-url)")
    try:
        plan = replace(default, **{name: getattr(args, name) for name in PLAN_ARGS}, pg_admin_url=pg)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"machine: {os.cpu_count()} cores; load before: {_load()}", flush=True)
    report = run(plan, out=lambda line: print(line, flush=True))
    print(f"machine load after: {_load()}")
    return 0 if report.ok else 1


def _load() -> str:
    try:
        return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()
    except OSError:
        return "?"


if __name__ == "__main__":
    raise SystemExit(main())
