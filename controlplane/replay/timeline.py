"""Timelines: the model and its parsing (YAML or a mapping), checked against a config.

Format (backward compatible)::

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
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from controlplane.config import Settings
from controlplane.domain import Override, OverrideKind
from controlplane.durations import parse_duration
from controlplane.errors import BadInput
from simulator.faults import TimelineEvent

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
            timeline = resolve_names(timeline, settings, problems)
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


def resolve_names(t: Timeline, settings: Settings, problems: list[str]) -> Timeline:
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
