"""`regionguard demo`: the whole product in one process, on this machine only.

Simulated Azure OpenAI regions (three, two deployments each), the fake ARM
seeded with a weighted Traffic Manager profile, a priority Traffic Manager
profile, a Front Door Standard/Premium origin group and an API Management
load-balanced pool (the APIM tier between the edge and the regions), the worker on a
temporary SQLite file, and the dashboard. Then it plays a scenario (the
replay timeline format) against the simulator so a newcomer watches traffic
move; with ``--duration`` it stops by itself and can write a report.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controlplane.actuators.credentials import StaticTokenCredential
from controlplane.config import Settings, azure_name, parse_settings
from controlplane.domain import ChangeStatus, Field
from controlplane.replay import Timeline, resolve_timeline
from controlplane.store import ChangeRecord, Store, open_store
from simulator.arm import FakeArm
from simulator.llm import DEFAULT_API_KEY, LLMSimulator, default_regions

if TYPE_CHECKING:
    from waitress.server import BaseWSGIServer

log = logging.getLogger(__name__)

DEMO_KEY_ENV = "REGIONGUARD_DEMO_API_KEY"
DEMO_SUBSCRIPTION = "00000000-0000-0000-0000-0000000de770"  # a GUID, as Azure names subscriptions
DEMO_USER = "demo"
UNTIL_END = "end"  # play for --duration (or until Ctrl-C)
UNTIL_RECOVERED = "recovered"  # ... or stop once the scenario is over and everything serves again
SETTLE_S = 4.0  # how long "everything serves, nothing to do" must hold (and two reconcile ticks) before --until recovered stops


def demo_config(region_urls: dict[str, str], deployments: list[str], arm: FakeArm, database_url: str, web_port: int) -> dict[str, Any]:
    """The demo's regionguard config (a plain dict, validated like any file)."""
    regions = list(region_urls)
    weights = [500, 300, 200]
    return {
        "regions": [
            {
                "name": r,
                "azure_region": r,
                "endpoints": [
                    {
                        "name": d,
                        "base_url": region_urls[r],
                        "deployment": d,
                        "api_style": "deployments" if i == 0 else "v1",
                        "auth": {"kind": "api_key", "env": DEMO_KEY_ENV},
                        "pricing": {"input_per_1m": 2.5, "output_per_1m": 10.0},
                    }
                    for i, d in enumerate(deployments)
                ],
            }
            for r in regions
        ],
        "probe": {
            "vantage": "demo",
            "interval": "4s",
            "fast_interval": "1s",
            # just over the simulator's 0.55 s answer: at 0.5 s confirmations overlapped and random
            # loss made false weight steps (42 in 1,000 seeded replays of bench/decisions.py, 0 at 0.6 s)
            "confirm_gap": "0.6s",
            "liveness_interval": "1s",
            "liveness_timeout": "1s",
            "timeout": "2.5s",
            "slow_ttft": "1.5s",
            "slow_total": "3s",
            "concurrency": 16,
        },
        "health": {
            "window": 10,
            "failures_to_down": 3,
            "successes_to_up": 3,
            "min_dwell": "10s",
            "flap_half_life": "30s",
            "flap_stable": "20s",
            "flap_max_hold": "2m",
            "throttled_to_down": 8,
        },
        "targets": [
            {
                "name": "tm-weighted",
                "kind": "traffic_manager",
                "subscription_id": DEMO_SUBSCRIPTION,
                "resource_group": "rg-llm",
                "profile": "llm-weighted",
                "routing": "weighted",
                "endpoints": {
                    r: {"name": f"aoai-{r}", "type": "ExternalEndpoints", "weight": w} for r, w in zip(regions, weights, strict=False)
                },
            },
            {
                "name": "tm-priority",
                "kind": "traffic_manager",
                "subscription_id": DEMO_SUBSCRIPTION,
                "resource_group": "rg-llm",
                "profile": "llm-priority",
                "routing": "priority",
                "failback": "auto",
                "failback_dwell": "10s",
                "endpoints": {
                    r: {"name": f"aoai-{r}", "type": "ExternalEndpoints", "weight": 1, "priority": i + 1} for i, r in enumerate(regions)
                },
            },
            {
                "name": "afd-prod",
                "kind": "front_door_cdn",
                "subscription_id": DEMO_SUBSCRIPTION,
                "resource_group": "rg-edge",
                "profile": "afd-llm",
                "origin_group": "aoai-origins",
                "routing": "weighted",
                "endpoints": {r: {"origin": r, "weight": w, "priority": 1} for r, w in zip(regions, weights, strict=False)},
            },
            {
                "name": "apim-pool",
                "kind": "apim_backend_pool",
                "subscription_id": DEMO_SUBSCRIPTION,
                "resource_group": "rg-apim",
                "service": "apim-llm",
                "pool": "aoai-pool",
                "routing": "weighted",
                "endpoints": {r: {"backend": f"aoai-{r}", "weight": w, "priority": 1} for r, w in zip(regions, weights, strict=False)},
            },
        ],
        "guardrails": {
            "min_serving": 1,
            "max_drain_fraction": 0.5,
            "max_weight_step": 250,
            "cooldown": "5s",
            "write_budget_per_hour": 600,
            "fail_open": True,
        },
        "database": {"url": database_url},
        "web": {"host": "127.0.0.1", "port": web_port},
        "azure": {
            "arm_base_url": arm.base_url,
            "credential": "static_token",
            "ca_bundle": arm.ca_bundle,
            "polling_interval": 0,
            "request_timeout": "10s",
        },
        "reconcile": {"interval": "2s", "deadline": "15s"},
    }


@dataclass
class Demo:
    """Everything the demo runs; start() brings it up, stop() takes it down."""

    web_port: int = 8080
    workdir: Path | None = None
    seed: int = 7
    with_web: bool = True
    password: str = field(default_factory=lambda: secrets.token_urlsafe(9))
    sim: LLMSimulator | None = None
    arm: FakeArm | None = None
    settings: Settings | None = None
    store: Store | None = None
    worker: Any = None
    metrics: Any = None
    web_server: BaseWSGIServer | None = None
    started_at: float = 0.0
    settle_s: float = SETTLE_S
    stopped_because: str = ""
    _tmp: Any = None
    _web_thread: threading.Thread | None = None

    def start(self) -> Demo:
        from controlplane.runtime.worker import Worker
        from controlplane.users import add_user

        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="regionguard-demo-")
            self.workdir = Path(self._tmp.name)
        regions = default_regions(3, 2)
        self.sim = LLMSimulator(regions, seed=self.seed).start()
        self.arm = FakeArm(state_file=None).start()
        urls = {r.name: self.sim.base_url(r.name) for r in regions}
        data = demo_config(
            urls,
            [d.name for d in regions[0].deployments],
            self.arm,
            "sqlite:///" + str(self.workdir / "regionguard-demo.db"),
            self.web_port,
        )
        self.settings = parse_settings(data, "<demo config>")
        self.arm.seed_from_config(self.settings)
        self.store = open_store(self.settings.database.url, migrate=True)
        add_user(self.store, DEMO_USER, "admin", self.password, datetime.now(UTC))
        environ = {DEMO_KEY_ENV: DEFAULT_API_KEY}
        from controlplane.metrics import Metrics

        self.metrics = Metrics()
        self.worker = Worker(
            self.settings, self.store, credential=StaticTokenCredential(), environ=environ, lease_ttl_s=6.0, metrics=self.metrics
        )
        self.worker.start()
        if self.with_web:
            self._start_web()
        self.started_at = time.monotonic()
        return self

    def _start_web(self) -> None:
        from controlplane.cli.common import wsgi_server
        from web.app import create_app

        assert self.settings is not None
        # one process, one throwaway session key: set it so the app does not warn
        os.environ.setdefault(self.settings.web.secret_key_env, secrets.token_hex(32))
        app = create_app(self.settings, self.store, metrics=self.metrics)
        self.web_server = wsgi_server(app, self.settings.web.host, self.settings.web.port, threads=4)
        self._web_thread = threading.Thread(target=self.web_server.run, name="regionguard-web", daemon=True)
        self._web_thread.start()

    @property
    def url(self) -> str:
        if self.web_server is None or self.settings is None:
            return ""
        return f"http://{self.settings.web.host}:{self.web_server.getsockname()[1]}/"

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        if self.web_server is not None:
            self.web_server.close()
        if self.sim is not None:
            self.sim.stop()
        if self.arm is not None:
            self.arm.stop()
        if self.store is not None:
            self.store.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    # ------------------------------------------------------------ scenario

    def timeline(self, scenario: str) -> Timeline:
        """The scenario with its $1, $2, ... placeholders (events and description) bound to the demo's regions."""
        from dataclasses import replace

        timeline = resolve_timeline(scenario, self.settings)
        description = timeline.description or ""
        assert self.settings is not None
        for i, name in reversed(list(enumerate(self.settings.region_names, start=1))):
            description = description.replace(f"${i}", name)
        return replace(timeline, description=description)

    def settled(self) -> bool:
        """The leader's last tick found every endpoint of every target serving and nothing to do.

        Read from the worker's last reconcile (what it read from Azure and planned),
        so checking costs no Azure request.
        """
        tick = self.worker.last_tick if self.worker is not None else None
        if tick is None or tick.plan.changes or tick.plan.skipped or tick.plan.panics or tick.refused or tick.fenced:
            return False
        if self.settings is None or set(tick.targets) != {t.name for t in self.settings.targets}:
            return False
        for result in tick.targets.values():
            if result.actual is None or result.read_error or result.drift:
                return False
            if not all(setting.enabled for setting in result.actual.endpoints.values()):
                return False
        return True

    def play(self, timeline: Timeline, stop: threading.Event, duration_s: float | None, until: str = UNTIL_END) -> list[dict[str, Any]]:
        """Play the timeline (looping if it says so) until ``duration_s`` or ``stop``.

        With ``until="recovered"`` it plays the timeline once, even one that loops, and
        stops once every event has been injected and the system has stayed :meth:`settled`
        for ``settle_s`` seconds and at least two reconcile ticks. Sets
        :attr:`stopped_because` ("recovered", "duration" or "stop"). Returns the
        injected events with their wall-clock offsets from the start.
        """
        assert self.sim is not None
        injected: list[dict[str, Any]] = []
        t0 = time.monotonic()
        end = t0 + duration_s if duration_s else None
        watch = until == UNTIL_RECOVERED
        loops = timeline.loop and not watch  # "until recovered" means after one pass of the scenario
        last_event_at = t0 + max((ev.at_s for ev in timeline.events), default=0.0)
        settled_since: tuple[float, int] | None = None  # (monotonic time, worker ticks) when it last became settled

        def recovered(run: Any) -> bool:
            nonlocal settled_since
            now = time.monotonic()
            if not watch or now < last_event_at or not run.done:
                return False
            ticks = self.worker.ticks if self.worker is not None else 0
            if not self.settled():
                settled_since = None
            elif settled_since is None:
                settled_since = (now, ticks)
            elif now - settled_since[0] >= self.settle_s and ticks - settled_since[1] >= 2:
                return True
            return False

        self.stopped_because = "stop"
        while not stop.is_set():
            round_start = time.monotonic() - t0
            run = self.sim.run_timeline(timeline.events)
            for ev in timeline.events:
                injected.append({"at_s": round(round_start + ev.at_s, 3), "region": ev.region, "fault": ev.fault.to_dict()})
            # a timeline that does not loop ends; the system keeps running until told to stop
            round_end: float | None = t0 + round_start + timeline.duration_s if loops else end
            while not stop.is_set():
                if recovered(run):
                    self.stopped_because = UNTIL_RECOVERED
                    return injected
                now = time.monotonic()
                limit = min((x for x in (round_end, end) if x is not None), default=None)
                if limit is not None and now >= limit:
                    break
                stop.wait(0.5 if limit is None else min(0.5, limit - now))
            run.cancel()
            if end is not None and time.monotonic() >= end:
                self.stopped_because = "duration"
                break
            if not loops:
                break
            self.sim.clear_faults()
        return [e for e in injected if end is None or e["at_s"] <= (duration_s or 0)]


# ---------------------------------------------------------------- the report


def build_report(demo: Demo, scenario: Timeline, injected: list[dict[str, Any]], wall_start: datetime, duration_s: float) -> dict[str, Any]:
    """What happened, from the store, the fake ARM's request log and a final read through the SDK."""
    assert demo.settings is not None and demo.store is not None and demo.arm is not None
    settings, store = demo.settings, demo.store
    log_entries = demo.arm.request_log
    writes = [e for e in log_entries if e.method in ("PUT", "PATCH") and 200 <= e.status < 300]
    arm_t0 = wall_start.timestamp()  # the fake ARM stamps entries with time.time()
    transitions = sorted((t for t in store.transitions(since=wall_start, limit=10000) if t.subject == "region"), key=lambda t: t.at)
    changes = sorted((c for c in store.changes(since=wall_start, status=ChangeStatus.APPLIED, limit=10000)), key=lambda c: c.created_at)

    def secs(at: datetime) -> float:
        return round((at - wall_start).total_seconds(), 3)

    faults = []
    for i, ev in enumerate(injected):
        region, kind = ev["region"], ev["fault"]["fault"]
        at = ev["at_s"]
        nxt = next((e["at_s"] for e in injected[i + 1 :] if e["region"] == region), duration_s)
        first_t = next((secs(t.at) for t in transitions if t.key == region and at <= secs(t.at) < nxt), None)
        names = {azure_name(t, region) for t in settings.targets if region in t.endpoints}
        region_writes = [w for w in writes if at <= (w.time - arm_t0) < nxt and any(f"/{n}" in w.path for n in names)]
        first_w = round(region_writes[0].time - arm_t0, 3) if region_writes else None
        entry: dict[str, Any] = {
            "region": region,
            "fault": kind,
            "injected_at_s": at,
            "first_transition_at_s": first_t,
            "seconds_to_first_transition": None if first_t is None else round(first_t - at, 3),
            "first_azure_write_at_s": first_w,
            "seconds_to_first_azure_write": None if first_w is None else round(first_w - at, 3),
        }
        # a fault should drain the region from every target; its end should restore it
        key, wanted = ("seconds_to_drain_per_target", False) if kind != "none" else ("seconds_to_restore_per_target", True)
        entry[key] = {
            t.name: _seconds_to_enabled(changes, t.name, region, wanted, at, nxt, secs) for t in settings.targets if region in t.endpoints
        }
        faults.append(entry)

    first_fault = min((e["at_s"] for e in injected if e["fault"]["fault"] != "none"), default=None)
    before_fault = [c for c in changes if first_fault is None or secs(c.created_at) < first_fault]
    unexplained = [c for c in changes if not _explained(c, injected, secs(c.created_at))]
    flaps = _flaps(changes)
    final = _final_state(demo)
    return {
        "scenario": scenario.name,
        "description": scenario.description,
        "duration_s": duration_s,
        "faults": faults,
        "azure_writes": len(writes),
        "azure_requests": len(log_entries),
        "changes_applied": len(changes),
        "changes_before_first_fault": len(before_fault),
        "changes_not_explained_by_a_fault": [_brief(c, secs) for c in unexplained],
        "flaps": flaps,
        "final_state": final,
        "changes": [_brief(c, secs) for c in changes],
    }


def _seconds_to_enabled(
    changes: list[ChangeRecord], target: str, region: str, enabled: bool, at: float, until: float, secs: Any
) -> float | None:
    """Seconds from ``at`` to the first applied change setting ``enabled`` for the region in the target."""
    for c in changes:
        when = secs(c.created_at)
        if c.target == target and c.region == region and c.field is Field.ENABLED and c.after is enabled and at <= when < until:
            return round(when - at, 3)
    return None


def _brief(c: ChangeRecord, secs: Any) -> dict[str, Any]:
    return {
        "at_s": secs(c.created_at),
        "target": c.target,
        "region": c.region,
        "endpoint": c.endpoint,
        "field": c.field.value,
        "from": c.before,
        "to": c.after,
        "reason": c.reason,
        "fencing_token": c.fencing_token,
    }


EXPLAIN_HORIZON_S = 90.0


def _explained(change: ChangeRecord, injected: list[dict[str, Any]], at: float) -> bool:
    """A change is explained by a fault (or its end) shortly before it.

    In its own region; or, for a change to another region of a target, in any
    region (a weighted target rebalances, a priority target promotes the next).
    """
    for e in injected:
        if not 0 <= at - e["at_s"] <= EXPLAIN_HORIZON_S:
            continue
        if e["region"] in (None, "*", change.region):
            return True
        if change.field is not Field.ENABLED or change.after is True:
            return True
    return False


def _flaps(changes: list[ChangeRecord]) -> int:
    """Times an endpoint's enabled state flipped back within 30 s of the previous flip."""
    last: dict[tuple[str, str], tuple[Any, datetime]] = {}
    flaps = 0
    for c in changes:
        if c.field is not Field.ENABLED:
            continue
        key = (c.target, c.region)
        prev = last.get(key)
        if prev is not None and prev[0] != c.after and (c.created_at - prev[1]).total_seconds() < 30:
            flaps += 1
        last[key] = (c.after, c.created_at)
    return flaps


def _final_state(demo: Demo) -> dict[str, Any]:
    from controlplane.actuators.factory import build_actuators

    assert demo.settings is not None
    out: dict[str, Any] = {}
    actuators = build_actuators(demo.settings, StaticTokenCredential())
    for t in demo.settings.targets:
        try:
            state = actuators[t.name].read_actual(t)
        except Exception as exc:
            out[t.name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            continue
        out[t.name] = {r: {"weight": s.weight, "priority": s.priority, "enabled": s.enabled} for r, s in sorted(state.endpoints.items())}
    return out


def run_demo(
    scenario: str = "tour",
    duration_s: float | None = None,
    report_path: str | None = None,
    web_port: int = 8080,
    headless: bool = False,
    out: Any = None,
    until: str = UNTIL_END,
) -> int:
    """Entry point for the CLI. Returns an exit code."""
    import signal

    write = out or (lambda s: print(s, flush=True))
    demo = Demo(web_port=web_port, with_web=not headless or web_port != 0)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()

    previous = (
        {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        if threading.current_thread() is threading.main_thread()
        else {}
    )
    from controlplane.replay import builtin_scenarios

    if scenario not in builtin_scenarios():
        resolve_timeline(scenario)  # a missing or bad file fails here, before anything starts
    try:
        demo.start()
        timeline = demo.timeline(scenario)
        wall_start = datetime.now(UTC)
        demo.started_at = time.monotonic()
        if demo.web_server is not None:
            write(f"regionguard demo: dashboard at {demo.url}  (login: {DEMO_USER} / {demo.password})")
        write(f"scenario {timeline.name}: {timeline.description or ''}".rstrip())
        write(
            "fake ARM at "
            + str(demo.arm.base_url if demo.arm else "")
            + "; simulated regions: "
            + ", ".join(demo.settings.region_names if demo.settings else [])
        )
        write("Ctrl-C to stop." if duration_s is None else f"running for {duration_s:.0f} s")
        if until == UNTIL_RECOVERED:
            write(
                f"stopping early once the scenario is over{' (played once, not looped)' if timeline.loop else ''}"
                f" and every region serves again for {demo.settle_s:g} s"
            )
        injected = demo.play(timeline, stop, duration_s, until=until)
        elapsed = time.monotonic() - demo.started_at
        if demo.stopped_because == UNTIL_RECOVERED:
            write(f"recovered: every region serving in every target, nothing left to do; stopped after {elapsed:.0f} s")
        if report_path:
            report = build_report(demo, timeline, injected, wall_start, round(elapsed, 3))
            report["stopped_because"] = demo.stopped_because
            Path(report_path).write_text(json.dumps(report, indent=2, default=str))
            write(
                f"report written to {report_path}: {len(report['faults'])} fault event(s), {report['azure_writes']} Azure write(s), {report['changes_applied']} change(s)"
            )
        return 0
    finally:
        demo.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
        os.environ.pop(DEMO_KEY_ENV, None)
