"""Scoring and reporting: what a replay did (its :class:`Trace`), the summary
per fault (first seen, first transition, first change), false changes and
flaps, and the result as JSON or text.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from controlplane.config import Settings
from controlplane.domain import Field
from controlplane.replay.timeline import OverrideEvent, Timeline
from simulator.faults import TimelineEvent


@dataclass
class Trace:
    """What happened in a run, as the report reads it."""

    settings: Settings
    transitions: list[dict[str, Any]] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)
    panics: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[tuple[float, str, str, str, int]] = field(default_factory=list)  # t, region, endpoint, vantage, counted (1/0)
    held: dict[str, int] = field(default_factory=dict)  # guardrail / budget rule -> changes it held (per tick)
    min_serving: dict[str, int] = field(default_factory=dict)
    final: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    probes: int = 0
    ticks: int = 0
    liveness_checks: int = 0


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
                f"seen after {_secs(e['first_seen_s'])}, first transition after {_secs(e['first_transition_s'])}, {_first_change(e)}"
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


def _first_change(e: dict[str, Any]) -> str:
    if e["first_change_s"] is not None:
        return f"first change after {_secs(e['first_change_s'])}"
    if e.get("credited_until_s") is None:
        return "no change attributed to it"  # changes listed above belong to other faults
    what = "recovery" if e["fault"] == "none" else "fault"
    return f"no change before the next {e['region'] or 'every-region'} {what} at {_clock(e['credited_until_s'])}"


def _secs(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


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


def summarize(run: Trace, tl: Timeline | None, duration_s: float) -> dict[str, Any]:
    events = list(tl.events) if tl else []
    horizon = _recovery_horizon(run.settings)
    target_regions = {t.name: set(t.endpoints) for t in run.settings.targets}
    run.transitions.sort(key=lambda t: t["at"])  # per-vantage ones are stamped with the probe's start
    per_event = []
    delivery_times = [d[0] for d in run.deliveries]
    transition_times = [t["at"] for t in run.transitions]
    change_times = [c["at"] for c in run.changes]
    for i, e in enumerate(events):
        end = _next_event_at(events, i)  # seen: while this event is what the region shows
        # transitions and changes are credited to the last event of their direction before them: a
        # fault that ends before the tick that acts on it still caused that change
        credit_end = _next_event_at(events, i, same_direction=True)
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
        trans = next(
            (t["at"] for t in transitions if e.at_s <= t["at"] < credit_end and _key_region(t["key"]) in regions and _worse(t) == fault_on),
            None,
        )
        change = next(
            (
                c["at"]
                for c in changes
                if e.at_s <= c["at"] < credit_end and c["region"] in regions and not c["manual"] and _reduces(c) == fault_on
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
                "credited_until_s": None if math.isinf(credit_end) else credit_end,
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
        "liveness_checks": run.liveness_checks,
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


def _next_event_at(events: list[TimelineEvent], i: int, same_direction: bool = False) -> float:
    """When the next event on the same region starts (with ``same_direction``: the next fault after a
    fault, the next recovery after a recovery)."""
    e = events[i]
    for later in events[i + 1 :]:
        if later.at_s > e.at_s and (later.region is None or e.region is None or later.region == e.region):
            if not same_direction or (later.fault.kind == "none") == (e.fault.kind == "none"):
                return later.at_s
    return math.inf


_STATE_RANK = {"unknown": 0, "healthy": 0, "degraded": 1, "unhealthy": 2}


def _worse(transition: dict[str, Any]) -> bool:
    """Does the transition go to a worse state?"""
    return _STATE_RANK.get(transition["new"], 0) > _STATE_RANK.get(transition["old"], 0)


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
