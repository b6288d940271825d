"""Replay: what would regionguard have done? The whole decision engine in
simulated time, against a timeline of faults (or against recorded probe
results), in seconds of wall time for hours of simulated time.

Timeline format (YAML or a dict)::

    duration: 3600s
    seed: 7
    vantages: [eu, us]                 # optional; default: the config's probe.vantage
    noise: {loss: 0.02, jitter_ms: 40} # loss: share of probes lost (they time out)
    baseline: {ttft_ms: 400, per_token_ms: 30, headroom: 0.6}   # optional
    events:
      - {at: 600s, region: eastus, fault: down}
      - {at: 900s, region: westeurope, fault: slow, ttft_ms: 9000}
      - {at: 900s, region: japaneast, fault: throttle, rate: 0.7}
      - {at: 1200s, region: eastus, fault: none}
      - {at: 1500s, region: westeurope, fault: down, vantages: [eu]}
    overrides:                         # optional: operator actions
      - {at: 300s, kind: drain, region: japaneast, for: 10m, who: alice, why: test}

Events use the simulator's fault model (``simulator.faults``):
``down, hang, slow, throttle, error, bad_content, truncate, content_filter,
auth, none``; ``region`` may be omitted (every region), ``deployment`` limits
a fault to one deployment. In built-in scenarios a region may be written
``$1``, ``$2`` ... meaning the config's first, second ... region.

The run: every (endpoint, vantage) is probed at ``probe.interval`` (with
``probe.jitter``), at ``probe.fast_interval`` while the health evaluator
calls it suspect; a pure probe model turns the faults in force into a
ProbeResult (classified with the config's slow/timeout limits); every
``reconcile.interval`` the engine evaluates health, computes desired state,
plans, applies guardrails, and an in-memory Azure applies the guarded plan
at once. Same seed, same result.
"""

from __future__ import annotations

import bisect
import functools
import heapq
import logging
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from controlplane.config import Settings
from controlplane.domain import (
    EndpointSetting,
    Field,
    Outcome,
    Override,
    OverrideKind,
    ProbeResult,
    TargetState,
    Transition,
    endpoint_id,
)
from controlplane.durations import parse_duration
from controlplane.engine.guardrails import CooldownMemory, WriteBudget, decide, record_applied
from controlplane.engine.health import HealthEvaluator
from controlplane.engine.planner import apply_to_states
from controlplane.engine.strategy import StrategyMemory
from controlplane.errors import BadInput
from simulator.faults import Fault, FaultBook, TimelineEvent, choose_status, fault_fires

log = logging.getLogger(__name__)

DEFAULT_START = datetime(2024, 1, 1, tzinfo=UTC)
SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
_TOP_KEYS = {"duration", "seed", "vantages", "noise", "baseline", "events", "overrides", "name", "description", "loop"}
_OVERRIDE_KEYS = {"at", "kind", "region", "target", "who", "why", "weight", "priority", "for", "forced"}


class TimelineError(BadInput):
    """A timeline that cannot run; ``problems`` has one line per bad field."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems))


@dataclass(frozen=True)
class Noise:
    loss: float = 0.0  # share of probes that are lost (recorded as timeouts)
    jitter_ms: float = 0.0  # +- uniform jitter on TTFT and per-token time


@dataclass(frozen=True)
class Baseline:
    """What a healthy simulated deployment looks like to a probe."""

    ttft_ms: float = 400.0
    per_token_ms: float = 30.0
    headroom: float = 0.6  # share of the rate limit left (rate-limit headers)
    limit_tokens: int = 100_000


@dataclass(frozen=True)
class OverrideEvent:
    at_s: float
    kind: OverrideKind
    region: str | None = None
    target: str | None = None
    who: str = "replay"
    why: str = "timeline override"
    weight: int | None = None
    priority: int | None = None
    for_s: float | None = None
    forced: bool = False

    def build(self, start: datetime, index: int) -> Override:
        created = start + timedelta(seconds=self.at_s)
        expires = created + timedelta(seconds=self.for_s) if self.for_s else None
        return Override(
            kind=self.kind,
            who=self.who,
            why=self.why,
            created_at=created,
            region=self.region,
            target=self.target,
            weight=self.weight,
            priority=self.priority,
            expires_at=expires,
            forced=self.forced,
            id=index + 1,
        )


@dataclass(frozen=True)
class Timeline:
    duration_s: float
    seed: int = 0
    vantages: tuple[str, ...] | None = None
    noise: Noise = Noise()
    baseline: Baseline = Baseline()
    events: tuple[TimelineEvent, ...] = ()
    overrides: tuple[OverrideEvent, ...] = ()
    name: str | None = None
    description: str | None = None
    loop: bool = False


# ---------------------------------------------------------------- loading


def builtin_scenarios() -> list[str]:
    """Names of the built-in timelines (``controlplane/replay/scenarios/*.yaml``)."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


def scenario_path(name: str) -> Path:
    path = SCENARIO_DIR / f"{name}.yaml"
    if not path.is_file():
        raise TimelineError(name, [f"(scenario): no built-in scenario {name!r} (one of {', '.join(builtin_scenarios())})"])
    return path


def resolve_timeline(name_or_path: str | Path, settings: Settings | None = None) -> Timeline:
    """A built-in scenario by name, or a timeline file by path."""
    text = str(name_or_path)
    if text in builtin_scenarios():
        return load_timeline(scenario_path(text), settings)
    path = Path(text)
    if not path.exists() and not path.suffix:
        raise TimelineError(text, [f"(scenario): no built-in scenario or file named {text!r} (built-in: {', '.join(builtin_scenarios())})"])
    return load_timeline(path, settings)


def load_timeline(source: str | Path | Mapping[str, Any], settings: Settings | None = None) -> Timeline:
    """Parse and validate a timeline (a path to YAML, or a mapping).

    With ``settings``, ``$N`` regions are resolved and every region,
    deployment, target and vantage is checked against the config. Raises
    :class:`TimelineError` naming every bad field.
    """
    where = "<timeline>"
    if isinstance(source, str | Path):
        where = str(source)
        try:
            data = yaml.safe_load(Path(source).read_text(encoding="utf-8"))
        except OSError as exc:
            raise TimelineError(where, [f"(file): cannot read: {exc.strerror or exc}"]) from None
        except yaml.YAMLError as exc:
            raise TimelineError(where, [f"(file): not valid YAML: {getattr(exc, 'problem', exc)}"]) from None
    else:
        data = source
    if not isinstance(data, Mapping):
        raise TimelineError(where, [f"(top level): expected a mapping, got {type(data).__name__}"])
    problems: list[str] = []
    for key in sorted(set(data) - _TOP_KEYS):
        problems.append(f"{key}: unknown key (keys: {', '.join(sorted(_TOP_KEYS))})")
    duration = _field(problems, "duration", lambda: parse_duration(data["duration"], "duration"), required="duration" in data)
    if "duration" not in data:
        problems.append("duration: required (e.g. 3600s)")
    elif duration is not None and duration <= 0:
        problems.append("duration: must be more than 0 s")
    seed = _field(problems, "seed", lambda: _int(data.get("seed", 0), "seed"))
    vantages = _field(problems, "vantages", lambda: _names(data.get("vantages"), "vantages"))
    noise = _field(problems, "noise", lambda: _noise(data.get("noise") or {}))
    baseline = _field(problems, "baseline", lambda: _baseline(data.get("baseline") or {}))
    events = _events(data.get("events") or [], problems)
    overrides = _overrides(data.get("overrides") or [], problems)
    for key in ("name", "description"):
        if data.get(key) is not None and not isinstance(data[key], str):
            problems.append(f"{key}: {data[key]!r} is not text")
    if not isinstance(data.get("loop", False), bool):
        problems.append(f"loop: {data.get('loop')!r} is not true/false")
    timeline = None
    if not problems:
        timeline = Timeline(
            duration_s=duration or 0.0,
            seed=seed or 0,
            vantages=vantages,
            noise=noise or Noise(),
            baseline=baseline or Baseline(),
            events=events,
            overrides=overrides,
            name=data.get("name"),
            description=data.get("description"),
            loop=bool(data.get("loop", False)),
        )
        if settings is not None:
            timeline = _resolve(timeline, settings, problems)
        else:
            _check_times(timeline, problems)
    if problems or timeline is None:
        raise TimelineError(where, problems)
    return timeline


def _field(problems: list[str], name: str, parse: Any, required: bool = True) -> Any:
    if not required:
        return None
    try:
        return parse()
    except (ValueError, TypeError) as exc:
        msg = str(exc)
        problems.append(msg if msg.startswith(name) else f"{name}: {msg}")
        return None


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: {value!r} is not a whole number")
    return value


def _names(value: Any, name: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"{name}: {value!r} is not a non-empty list of names")
    if len(set(value)) != len(value):
        raise ValueError(f"{name}: {value!r} names a vantage twice")
    return tuple(v.strip() for v in value)


def _fraction(data: Mapping[str, Any], key: str, where: str, default: float) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{where}.{key}: {value!r} is not a fraction between 0 and 1")
    return float(value)


def _positive(data: Mapping[str, Any], key: str, where: str, default: float) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or not math.isfinite(value):
        raise ValueError(f"{where}.{key}: {value!r} is not a non-negative number")
    return float(value)


def _noise(data: Any) -> Noise:
    if not isinstance(data, Mapping):
        raise ValueError(f"noise: {data!r} is not a mapping like {{loss: 0.02, jitter_ms: 40}}")
    for key in sorted(set(data) - {"loss", "jitter_ms"}):
        raise ValueError(f"noise.{key}: unknown key (keys: jitter_ms, loss)")
    return Noise(loss=_fraction(data, "loss", "noise", 0.0), jitter_ms=_positive(data, "jitter_ms", "noise", 0.0))


def _baseline(data: Any) -> Baseline:
    if not isinstance(data, Mapping):
        raise ValueError(f"baseline: {data!r} is not a mapping")
    for key in sorted(set(data) - {"ttft_ms", "per_token_ms", "headroom", "limit_tokens"}):
        raise ValueError(f"baseline.{key}: unknown key (keys: headroom, limit_tokens, per_token_ms, ttft_ms)")
    d = Baseline()
    return Baseline(
        ttft_ms=_positive(data, "ttft_ms", "baseline", d.ttft_ms),
        per_token_ms=_positive(data, "per_token_ms", "baseline", d.per_token_ms),
        headroom=_fraction(data, "headroom", "baseline", d.headroom),
        limit_tokens=int(_positive(data, "limit_tokens", "baseline", d.limit_tokens)) or 1,
    )


def _events(items: Any, problems: list[str]) -> tuple[TimelineEvent, ...]:
    if not isinstance(items, list):
        problems.append(f"events: {type(items).__name__} is not a list")
        return ()
    events = []
    for i, item in enumerate(items):
        try:
            events.append(TimelineEvent.from_dict(item))
        except ValueError as exc:
            problems.append(f"events[{i}].{exc}")
    return tuple(sorted(events, key=lambda e: e.at_s))


def _overrides(items: Any, problems: list[str]) -> tuple[OverrideEvent, ...]:
    if not isinstance(items, list):
        problems.append(f"overrides: {type(items).__name__} is not a list")
        return ()
    out = []
    for i, item in enumerate(items):
        where = f"overrides[{i}]"
        if not isinstance(item, Mapping):
            problems.append(f"{where}: expected a mapping")
            continue
        bad = sorted(set(item) - _OVERRIDE_KEYS)
        if bad:
            problems.append(f"{where}.{bad[0]}: unknown key (keys: {', '.join(sorted(_OVERRIDE_KEYS))})")
            continue
        try:
            kind = OverrideKind(str(item.get("kind", "")).strip().lower())
        except ValueError:
            problems.append(f"{where}.kind: {item.get('kind')!r} is not one of {', '.join(k.value for k in OverrideKind)}")
            continue
        try:
            out.append(
                OverrideEvent(
                    at_s=parse_duration(item.get("at", 0), "at"),
                    kind=kind,
                    region=item.get("region"),
                    target=item.get("target"),
                    who=str(item.get("who", "replay")),
                    why=str(item.get("why", "timeline override")),
                    weight=None if item.get("weight") is None else _int(item["weight"], "weight"),
                    priority=None if item.get("priority") is None else _int(item["priority"], "priority"),
                    for_s=None if item.get("for") is None else parse_duration(item["for"], "for"),
                    forced=bool(item.get("forced", False)),
                )
            )
        except ValueError as exc:
            problems.append(f"{where}.{exc}")
    return tuple(sorted(out, key=lambda o: o.at_s))


def _check_times(t: Timeline, problems: list[str]) -> None:
    for i, e in enumerate(t.events):
        if e.at_s > t.duration_s:
            problems.append(f"events[{i}].at: {e.at_s:g}s is after the end of the timeline ({t.duration_s:g}s)")


def _resolve(t: Timeline, settings: Settings, problems: list[str]) -> Timeline:
    """Resolve ``$N`` regions and check names against the config."""
    names = settings.region_names
    targets = {x.name for x in settings.targets}
    vantages = set(t.vantages or (settings.probe.vantage,))

    def region_of(value: str | None, where: str) -> str | None:
        if value is None:
            return None
        if value.startswith("$") and value[1:].isdigit():
            n = int(value[1:])
            if not 1 <= n <= len(names):
                problems.append(f"{where}.region: {value} but the config has {len(names)} region(s)")
                return value
            return names[n - 1]
        if value not in names:
            problems.append(f"{where}.region: no region named {value!r} in the config (regions: {', '.join(names)})")
        return value

    events = []
    for i, e in enumerate(t.events):
        where = f"events[{i}]"
        region = region_of(e.region, where)
        deployment = e.deployment
        if deployment is not None and region in names:
            # the simulator keys faults by deployment name; an endpoint's config name is accepted too
            eps = settings.region(region).endpoints
            match = next((ep.deployment for ep in eps if ep.deployment == deployment), None) or next(
                (ep.deployment for ep in eps if ep.name == deployment), None
            )
            if match is None:
                problems.append(f"{where}.deployment: {region} has no endpoint or deployment named {deployment!r}")
            deployment = match or deployment
        for v in e.fault.vantages or ():
            if v not in vantages:
                problems.append(f"{where}.vantages: {v!r} is not one of the timeline's vantages ({', '.join(sorted(vantages))})")
        if e.at_s > t.duration_s:
            problems.append(f"{where}.at: {e.at_s:g}s is after the end of the timeline ({t.duration_s:g}s)")
        events.append(replace(e, region=region, deployment=deployment))
    overrides = []
    for i, o in enumerate(t.overrides):
        where = f"overrides[{i}]"
        region = region_of(o.region, where)
        if o.target is not None and o.target not in targets:
            problems.append(f"{where}.target: no target named {o.target!r} in the config")
        overrides.append(replace(o, region=region))
    return replace(t, events=tuple(events), overrides=tuple(overrides))


# ---------------------------------------------------------------- probe model


class ProbeModel:
    """What a probe from ``vantage`` sees of an endpoint under the faults in force. Pure but for ``rng``."""

    def __init__(self, settings: Settings, baseline: Baseline, noise: Noise, rng: random.Random) -> None:
        self.s = settings
        self.base = baseline
        self.noise = noise
        self.rng = rng
        self.timeout_ms = settings.probe.timeout * 1000.0
        self.tokens = settings.probe.max_tokens

    def _jitter(self) -> float:
        j = self.noise.jitter_ms
        return self.rng.uniform(-j, j) if j else 0.0

    def probe(self, eid: str, region: str, vantage: str, started: datetime, faults: Mapping[str, Fault]) -> tuple[ProbeResult, float]:
        """(result, seconds until the result is known)."""
        rng = self.rng
        fired = {k: f for k, f in faults.items() if k != "slow" and fault_fires(f, vantage, rng)}
        slow = faults.get("slow")
        if slow is not None and not fault_fires(slow, vantage, rng):
            slow = None
        lost = self.noise.loss > 0 and rng.random() < self.noise.loss
        result_of = functools.partial(ProbeResult, endpoint_id=eid, region=region, vantage=vantage, started_at=started)
        timeout_s = self.timeout_ms / 1000.0
        if lost:
            return result_of(outcome=Outcome.TIMEOUT, total_ms=self.timeout_ms, error="probe lost (replay noise)"), timeout_s
        if "down" in fired:
            return result_of(outcome=Outcome.CONNECT_ERROR, error="connection refused (replay fault: down)"), 0.01
        if "hang" in fired:
            return result_of(outcome=Outcome.TIMEOUT, total_ms=self.timeout_ms, error="no answer (replay fault: hang)"), timeout_s
        if "auth" in fired:
            return result_of(outcome=Outcome.AUTH_ERROR, status_code=401, error="401 (replay fault: auth)"), 0.05
        limit = self.base.limit_tokens
        throttle = faults.get("throttle")
        headroom = (
            self.base.headroom * (1.0 - throttle.rate)
            if throttle is not None and throttle.applies_to_vantage(vantage)
            else self.base.headroom
        )
        if "throttle" in fired:
            f = fired["throttle"]
            return (
                result_of(
                    outcome=Outcome.THROTTLED,
                    status_code=429,
                    retry_after_ms=int(f.retry_after_s * 1000),
                    limit_tokens=limit,
                    remaining_tokens=0,
                    error="429 (replay fault: throttle)",
                ),
                0.05,
            )
        if "error" in fired:
            status = choose_status(fired["error"], rng)
            return result_of(outcome=Outcome.SERVER_ERROR, status_code=status, error=f"{status} (replay fault: error)"), 0.1
        ttft = max(1.0, self.base.ttft_ms + self._jitter())
        per_token = max(0.0, self.base.per_token_ms + self._jitter() / 10.0)
        if slow is not None:
            if slow.ttft_ms is not None:
                ttft = slow.ttft_ms
            elif slow.multiplier is not None:
                ttft *= slow.multiplier
            if slow.multiplier is not None:
                per_token *= slow.multiplier
        total = ttft + per_token * self.tokens
        if ttft >= self.timeout_ms or total >= self.timeout_ms:
            return result_of(
                outcome=Outcome.TIMEOUT, status_code=200, total_ms=self.timeout_ms, error="deadline passed while streaming"
            ), timeout_s
        outcome = Outcome.OK
        if "truncate" in fired:
            outcome = Outcome.TRUNCATED
        elif "bad_content" in fired:
            outcome = Outcome.BAD_CONTENT
        elif "content_filter" in fired:
            outcome = Outcome.CONTENT_FILTERED
        elif ttft > self.s.probe.slow_ttft * 1000.0 or total > self.s.probe.slow_total * 1000.0:
            outcome = Outcome.SLOW
        result = result_of(
            outcome=outcome,
            status_code=200,
            headers_ms=min(ttft, 50.0),
            ttft_ms=round(ttft, 1),
            total_ms=round(total, 1),
            output_chunks=self.tokens,
            completion_tokens=self.tokens,
            finished=outcome is not Outcome.TRUNCATED,
            finish_reason="content_filter" if outcome is Outcome.CONTENT_FILTERED else "stop",
            limit_tokens=limit,
            remaining_tokens=int(limit * headroom),
        )
        return result, total / 1000.0


# ---------------------------------------------------------------- result


@dataclass
class ReplayResult:
    start: datetime
    duration_s: float
    seed: int | None
    vantages: list[str]
    transitions: list[dict[str, Any]] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)
    panics: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    final: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.name,
            "start": self.start.isoformat(),
            "duration_s": self.duration_s,
            "seed": self.seed,
            "vantages": self.vantages,
            "transitions": self.transitions,
            "changes": self.changes,
            "panics": self.panics,
            "summary": self.summary,
            "final": self.final,
        }

    def to_text(self, vantage_transitions: bool = False) -> str:
        s = self.summary
        lines = [
            f"Replay {self.name or ''}".rstrip()
            + f": {self.duration_s:g} s simulated, seed {self.seed}, vantages {', '.join(self.vantages)}",
            f"{s.get('probes', 0)} probes, {s.get('ticks', 0)} ticks, {len(self.changes)} change(s), {len(self.panics)} panic(s)",
            "",
            "Transitions:",
        ]
        shown = [t for t in self.transitions if vantage_transitions or t["vantage"] is None]
        lines += [
            f"  {_clock(t['at'])}  {t['subject']:8} {t['key']:28} {t['old']} -> {t['new']}"
            + (f"  [{t['vantage']}]" if t["vantage"] else "")
            + f"  {t['reason']}"
            for t in shown
        ] or ["  (none)"]
        lines += ["", "Changes:"]
        lines += [
            f"  {_clock(c['at'])}  {c['target']}/{c['endpoint']} ({c['region']}) {c['field']} {c['from']} -> {c['to']}{' [manual]' if c['manual'] else ''}  {c['reason']}"
            for c in self.changes
        ] or ["  (none)"]
        if self.panics:
            lines += ["", "Panics:"] + [f"  {_clock(p['at'])}  {p['reason']}" for p in self.panics]
        lines += ["", "Faults:"]
        for e in s.get("events", []):
            lines.append(
                f"  {_clock(e['at'])}  {e['region'] or 'every region'} {e['fault']}{' (vantages ' + ', '.join(e['vantages']) + ')' if e['vantages'] else ''}: "
                f"seen after {_secs(e['first_seen_s'])}, first transition after {_secs(e['first_transition_s'])}, first change after {_secs(e['first_change_s'])}"
            )
        if not s.get("events"):
            lines.append("  (none)")
        lines += [
            "",
            f"False changes (not explained by a fault): {s.get('false_changes', 0)}; flaps: {s.get('flaps', 0)}",
            "Min serving per target: " + ", ".join(f"{k} {v}" for k, v in s.get("min_serving", {}).items()),
        ]
        if s.get("held"):
            lines.append("Held by guardrails: " + ", ".join(f"{k} {v}" for k, v in sorted(s["held"].items())))
        return "\n".join(lines)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"+{h:d}:{m:02d}:{s:02d}"


def _secs(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


# ---------------------------------------------------------------- the run

_FAULT, _DELIVER, _PROBE, _TICK = 0, 1, 2, 3


@dataclass
class _Run:
    settings: Settings
    start: datetime
    evaluator: HealthEvaluator
    actual: dict[str, TargetState]
    overrides: list[Override]
    cooldown: CooldownMemory = field(default_factory=CooldownMemory)
    memory: StrategyMemory = field(default_factory=StrategyMemory)
    budget: WriteBudget | None = None
    transitions: list[dict[str, Any]] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)
    panics: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[tuple[float, str, str, str, int]] = field(default_factory=list)  # t, region, endpoint, vantage, class
    held: dict[str, int] = field(default_factory=dict)
    min_serving: dict[str, int] = field(default_factory=dict)
    open_panics: dict[str, dict[str, Any]] = field(default_factory=dict)
    probes: int = 0
    ticks: int = 0
    now_s: float = 0.0

    def at(self, seconds: float) -> datetime:
        return self.start + timedelta(seconds=seconds)

    def offset(self, when: datetime) -> float:
        return round((when - self.start).total_seconds(), 3)

    def note_transitions(self, transitions: Iterable[Transition]) -> None:
        for t in transitions:
            self.transitions.append(
                {
                    "at": self.offset(t.at),
                    "subject": t.subject,
                    "key": t.key,
                    "vantage": t.vantage,
                    "old": t.old.value,
                    "new": t.new.value,
                    "reason": t.reason,
                }
            )

    def observe(self, result: ProbeResult, t_s: float) -> None:
        self.probes += 1
        self.note_transitions(self.evaluator.observe(result))
        p = self.settings.probe
        cls = 0 if result.outcome not in p.counts_against_health and result.outcome not in p.config_problems else 1
        self.deliveries.append((t_s, result.region, result.endpoint, result.vantage, cls))

    def tick(self, t_s: float) -> None:
        self.ticks += 1
        now = self.at(t_s)
        report = self.evaluator.evaluate(now)
        self.note_transitions(report.transitions)
        _, guarded = decide(
            self.settings,
            report,
            self.actual,
            self.overrides,
            now=now,
            cooldown=self.cooldown,
            budget=self.budget,
            memory=self.memory,
        )
        for s in guarded.skipped:
            self.held[s.rule] = self.held.get(s.rule, 0) + 1
        if guarded.changes:
            self.actual = apply_to_states(guarded, self.actual)
            record_applied(guarded, now, self.cooldown, self.budget)
            for c in guarded.changes:
                self.changes.append(
                    {
                        "at": round(t_s, 3),
                        "target": c.target,
                        "region": c.region,
                        "endpoint": c.endpoint,
                        "field": c.field.value,
                        "from": c.actual,
                        "to": c.desired,
                        "reason": c.reason,
                        "manual": c.manual,
                    }
                )
        self._panics(t_s, guarded.panics)
        for name, state in self.actual.items():
            serving = sum(1 for e in state.endpoints.values() if e.enabled)
            self.min_serving[name] = min(self.min_serving.get(name, serving), serving)

    def _panics(self, t_s: float, panics: Sequence[str]) -> None:
        current = {p.split(":", 1)[0]: p for p in panics}
        for target, text in current.items():
            if target not in self.open_panics:
                entry = {"at": round(t_s, 3), "target": target, "reason": text, "until": None}
                self.open_panics[target] = entry
                self.panics.append(entry)
        for target in [t for t in self.open_panics if t not in current]:
            self.open_panics.pop(target)["until"] = round(t_s, 3)


def _baseline_actual(settings: Settings) -> dict[str, TargetState]:
    return {
        t.name: TargetState(
            target=t.name,
            endpoints={r: EndpointSetting(weight=ep.weight, priority=ep.priority, enabled=True) for r, ep in t.endpoints.items()},
        )
        for t in settings.targets
    }


def run_replay(
    settings: Settings,
    timeline: Timeline | Mapping[str, Any] | str | Path | None = None,
    *,
    results: Iterable[ProbeResult] | None = None,
    start: datetime | None = None,
    actual: Iterable[TargetState] | None = None,
    write_budget: bool = True,
) -> ReplayResult:
    """Run the decision engine in simulated time.

    Either ``timeline`` (a Timeline, a mapping, a path or a built-in scenario
    name): faults are simulated with the probe model and the adaptive probe
    schedule; or ``results``: recorded ProbeResults (e.g. last week's, from
    the store) are fed in their own time order against ``settings`` -- to try
    new thresholds on an old incident. ``actual`` defaults to every target at
    its configured baseline, all enabled.
    """
    if (timeline is None) == (results is None):
        raise ValueError("run_replay needs exactly one of `timeline` or `results`")
    if results is not None:
        return _run_results(settings, list(results), actual, write_budget)
    assert timeline is not None  # checked above: exactly one of the two
    if isinstance(timeline, str | Path):
        timeline = resolve_timeline(timeline, settings)
    elif not isinstance(timeline, Timeline):
        timeline = load_timeline(timeline, settings)
    else:
        problems: list[str] = []
        timeline = _resolve(timeline, settings, problems)
        if problems:
            raise TimelineError(timeline.name or "<timeline>", problems)
    return _run_timeline(settings, timeline, start or DEFAULT_START, actual, write_budget)


def _new_run(settings: Settings, start: datetime, actual: Iterable[TargetState] | None, write_budget: bool, clock_s: list[float]) -> _Run:
    run = _Run(
        settings=settings,
        start=start,
        evaluator=HealthEvaluator(settings),
        actual={a.target: a for a in actual} if actual is not None else _baseline_actual(settings),
        overrides=[],
    )

    class _SimClock:
        def now(self) -> datetime:
            return start + timedelta(seconds=clock_s[0])

    if write_budget:
        run.budget = WriteBudget(settings.guardrails.write_budget_per_hour, _SimClock())
    return run


def _run_timeline(
    settings: Settings, tl: Timeline, start: datetime, actual: Iterable[TargetState] | None, write_budget: bool
) -> ReplayResult:
    rng = random.Random(tl.seed)
    clock_s = [0.0]
    run = _new_run(settings, start, actual, write_budget, clock_s)
    model = ProbeModel(settings, tl.baseline, tl.noise, rng)
    book = FaultBook()
    vantages = list(tl.vantages or (settings.probe.vantage,))
    endpoints = [(endpoint_id(r.name, e.name), r.name, e) for r in settings.regions for e in r.endpoints]
    interval, fast, jitter = settings.probe.interval, settings.probe.fast_interval, settings.probe.jitter
    tick_every = settings.reconcile.interval
    heap: list[tuple[float, int, int, Any]] = []
    seq = 0

    def push(t: float, kind: int, payload: Any) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(heap, (t, kind, seq, payload))

    for e in tl.events:
        push(e.at_s, _FAULT, e)
    for i, o in enumerate(tl.overrides):
        push(o.at_s, _FAULT, (i, o))
    for eid, region, ep in endpoints:
        for v in vantages:
            push(rng.uniform(0, interval), _PROBE, (eid, region, ep, v))
    t = tick_every
    while t <= tl.duration_s + 1e-9:
        push(t, _TICK, None)
        t += tick_every
    while heap:
        t_s, kind, _, payload = heapq.heappop(heap)
        if t_s > tl.duration_s + 1e-9:
            break
        clock_s[0] = t_s
        run.now_s = t_s
        if kind == _FAULT:
            _apply_event(payload, book, settings, run, start)
        elif kind == _PROBE:
            eid, region, ep, v = payload
            result, took = model.probe(eid, region, v, run.at(t_s), book.for_request(region, ep.deployment))
            push(t_s + took, _DELIVER, (result, t_s, payload))
        elif kind == _DELIVER:
            result, started_s, probe = payload
            run.observe(result, t_s)
            eid, _, _, v = probe
            step = fast if run.evaluator.is_suspect(eid, v) else interval
            nxt = max(started_s + step * (1.0 + rng.uniform(-jitter, jitter)), t_s)
            push(nxt, _PROBE, probe)
        else:
            run.tick(t_s)
    return _result(run, tl, vantages)


def _apply_event(payload: Any, book: FaultBook, settings: Settings, run: _Run, start: datetime) -> None:
    if isinstance(payload, TimelineEvent):
        regions = [payload.region] if payload.region else settings.region_names
        if payload.fault.kind == "none" and payload.region is None:
            book.clear()
            return
        for r in regions:
            if payload.fault.kind == "none":
                book.clear(r, payload.deployment)
            else:
                book.set(r, payload.fault, payload.deployment)
        return
    index, o = payload
    run.overrides.append(o.build(start, index))


def _run_results(settings: Settings, results: list[ProbeResult], actual: Iterable[TargetState] | None, write_budget: bool) -> ReplayResult:
    results.sort(key=lambda r: r.started_at)
    if not results:
        start = DEFAULT_START
        return ReplayResult(
            start=start,
            duration_s=0.0,
            seed=None,
            vantages=[],
            summary=_summary(_new_run(settings, start, actual, write_budget, [0.0]), None, 0.0),
        )
    start = results[0].started_at
    end_s = (results[-1].started_at - start).total_seconds()
    clock_s = [0.0]
    run = _new_run(settings, start, actual, write_budget, clock_s)
    tick_every = settings.reconcile.interval
    next_tick = tick_every
    for r in results:
        t_s = (r.started_at - start).total_seconds()
        while next_tick <= t_s:
            clock_s[0] = next_tick
            run.tick(next_tick)
            next_tick += tick_every
        clock_s[0] = t_s
        run.observe(r, t_s)
    clock_s[0] = next_tick
    run.tick(next_tick)
    vantages = sorted({r.vantage for r in results})
    result = ReplayResult(
        start=start,
        duration_s=round(max(end_s, next_tick), 3),
        seed=None,
        vantages=vantages,
        transitions=run.transitions,
        changes=run.changes,
        panics=run.panics,
        final=_final(run),
        name="recorded results",
    )
    result.summary = _summary(run, None, result.duration_s)
    return result


def _final(run: _Run) -> dict[str, dict[str, dict[str, Any]]]:
    return {
        name: {r: {"enabled": e.enabled, "weight": e.weight, "priority": e.priority} for r, e in state.endpoints.items()}
        for name, state in run.actual.items()
    }


def _result(run: _Run, tl: Timeline, vantages: list[str]) -> ReplayResult:
    result = ReplayResult(
        start=run.start,
        duration_s=tl.duration_s,
        seed=tl.seed,
        vantages=vantages,
        transitions=run.transitions,
        changes=run.changes,
        panics=run.panics,
        final=_final(run),
        name=tl.name,
    )
    result.summary = _summary(run, tl, tl.duration_s)
    return result


# ---------------------------------------------------------------- summary


def _recovery_horizon(s: Settings) -> float:
    """How long after a fault (or its end) changes can still be its consequence."""
    ramps = math.ceil(1000 / s.guardrails.max_weight_step)
    dwell = max((t.failback_dwell for t in s.targets), default=0.0)
    return (
        s.health.successes_to_up * s.probe.interval
        + s.health.min_dwell
        + dwell
        + s.guardrails.cooldown * (ramps + 1)
        + 3 * s.reconcile.interval
        + 2 * s.probe.interval
        + s.probe.timeout
    )


def _summary(run: _Run, tl: Timeline | None, duration_s: float) -> dict[str, Any]:
    events = list(tl.events) if tl else []
    horizon = _recovery_horizon(run.settings)
    target_regions = {t.name: set(t.endpoints) for t in run.settings.targets}
    run.transitions.sort(key=lambda t: t["at"])  # per-vantage ones are stamped with the probe's start
    per_event = []
    delivery_times = [d[0] for d in run.deliveries]
    transition_times = [t["at"] for t in run.transitions]
    change_times = [c["at"] for c in run.changes]
    for i, e in enumerate(events):
        end = _next_event_at(events, i)
        regions = {e.region} if e.region else set(run.settings.region_names)
        fault_on = e.fault.kind != "none"
        deliveries = run.deliveries[bisect.bisect_left(delivery_times, e.at_s) :]
        transitions = run.transitions[bisect.bisect_left(transition_times, e.at_s) :]
        changes = run.changes[bisect.bisect_left(change_times, e.at_s) :]
        seen = next(
            (
                d[0]
                for d in deliveries
                if e.at_s <= d[0] < end
                and d[1] in regions
                and (e.deployment is None or d[2] == e.deployment or _deployment_of(run.settings, d[1], d[2]) == e.deployment)
                and (e.fault.vantages is None or d[3] in e.fault.vantages)
                and (d[4] == 1) == fault_on
            ),
            None,
        )
        trans = next((t["at"] for t in transitions if e.at_s <= t["at"] < end and _key_region(t["key"]) in regions), None)
        change = next(
            (
                c["at"]
                for c in changes
                if e.at_s <= c["at"] < end and c["region"] in regions and not c["manual"] and _reduces(c) == fault_on
            ),
            None,
        )
        per_event.append(
            {
                "at": e.at_s,
                "region": e.region,
                "deployment": e.deployment,
                "fault": e.fault.kind,
                "vantages": list(e.fault.vantages) if e.fault.vantages else None,
                "first_seen_s": None if seen is None else round(seen - e.at_s, 3),
                "first_transition_s": None if trans is None else round(trans - e.at_s, 3),
                "first_change_s": None if change is None else round(change - e.at_s, 3),
                "detect_to_change_s": None if seen is None or change is None else round(change - seen, 3),
            }
        )
    causes = _causes(events, tl.overrides if tl else (), horizon)
    false_changes = [c for c in run.changes if not c["manual"] and not _explained(c, causes, target_regions)]
    return {
        "events": per_event,
        "false_changes": len(false_changes),
        "false_change_list": false_changes,
        "flaps": _flaps(run.changes, events),
        "min_serving": dict(run.min_serving),
        "held": dict(run.held),
        "probes": run.probes,
        "ticks": run.ticks,
        "writes": len(run.changes),
        "duration_s": duration_s,
    }


def _reduces(change: dict[str, Any]) -> bool:
    """Does the change take traffic away from its region (drain, lower weight, worse priority)?"""
    if change["field"] == Field.ENABLED.value:
        return not change["to"]
    if change["field"] == Field.WEIGHT.value:
        return (change["to"] or 0) < (change["from"] or 0)
    return (change["to"] or 0) > (change["from"] or 0)


def _deployment_of(settings: Settings, region: str, endpoint: str) -> str | None:
    try:
        return next(e.deployment for e in settings.region(region).endpoints if e.name == endpoint)
    except (KeyError, StopIteration):
        return None


def _key_region(key: str) -> str:
    return key.split("/", 1)[0]


def _next_event_at(events: list[TimelineEvent], i: int) -> float:
    e = events[i]
    for later in events[i + 1 :]:
        if later.at_s > e.at_s and (later.region is None or e.region is None or later.region == e.region):
            return later.at_s
    return math.inf


def _causes(events: list[TimelineEvent], overrides: Sequence[OverrideEvent], horizon: float) -> list[tuple[float, float, str | None]]:
    """(from, until, region) spans in which a change on ``region`` (None = any) has a cause:
    a fault while in force and a recovery horizon after; a recovery or an operator override
    for its duration plus the horizon."""
    spans = []
    for i, e in enumerate(events):
        until = e.at_s if e.fault.kind == "none" else _next_event_at(events, i)
        spans.append((e.at_s, until + horizon, e.region))
    for o in overrides:
        spans.append((o.at_s, o.at_s + (o.for_s if o.for_s is not None else math.inf) + horizon, o.region))
    return spans


def _explained(change: dict[str, Any], causes: list[tuple[float, float, str | None]], target_regions: dict[str, set[str]]) -> bool:
    """A change is explained by a cause on its region; a weight change also by one on another
    region of the same target (shares move when a neighbour is weighed down or capped)."""
    t = change["at"]
    related = {change["region"]}
    if change["field"] == Field.WEIGHT.value:
        related |= target_regions.get(change["target"], set())
    return any(start <= t <= until and (region is None or region in related) for start, until, region in causes)


def _flaps(changes: list[dict[str, Any]], events: list[TimelineEvent]) -> int:
    """Reversals of automation's direction on a (target, region) with no fault event on that region in between.

    The changes of one tick on one (target, region) count as one move: a drain
    or a restore sets its direction, otherwise the weight/priority change does.
    """
    moves: dict[tuple[str, str, float], int] = {}
    for c in changes:
        if c["manual"]:
            continue
        key = (c["target"], c["region"], c["at"])
        direction = -1 if _reduces(c) else 1
        if c["field"] == Field.ENABLED.value or key not in moves:
            moves[key] = direction
    last: dict[tuple[str, str], tuple[float, int]] = {}
    flaps = 0
    for (target, region, at), direction in moves.items():
        prev = last.get((target, region))
        if prev is not None and prev[1] != direction:
            if not any(prev[0] <= e.at_s <= at and (e.region is None or e.region == region) for e in events):
                flaps += 1
        last[(target, region)] = (at, direction)
    return flaps
