"""Incidents: one region's bad spell, from its first bad verdict until it is healthy and restored everywhere.

Built from what the store already records (no table of its own): region and
endpoint health transitions, recorded changes (the writes to Azure, with
their fencing tokens), operator overrides and fail-open (panic) audit events.
An incident opens at the region's first transition to degraded or unhealthy
and closes when the region is healthy again and every target it was taken
out of (disabled, or demoted in priority) has it back; a new bad verdict
before that keeps the same incident open.

The timings on-call asks about, each measured from the region's verdict
(``detected_at``) unless said otherwise:

- time to detect: from the first failed probe the evidence shows to the verdict;
- time to act: to the first write to Azure for the region;
- time to drain: until the region is out of every target it serves in;
- time to restore: from the region's healthy verdict until it is back everywhere.

Pure: lists in, incidents out (the store's query layer feeds it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from controlplane.domain import AuditEvent, ChangeStatus, Field, HealthStateName, Override, Transition
from controlplane.stats import percentile
from controlplane.store.records import ChangeRecord

BAD = frozenset({HealthStateName.DEGRADED, HealthStateName.UNHEALTHY})
EVIDENCE_LOOKBACK = timedelta(minutes=15)  # endpoint verdicts this long before the region's count as its first signs
_SAMPLE = re.compile(r"^(?:(?P<vantage>\S+) )?(?P<hms>\d\d:\d\d:\d\d) (?P<outcome>[a-z_]+)")


@dataclass
class Write:
    at: datetime
    target: str
    endpoint: str
    field: str
    before: Any
    after: Any
    status: str
    fencing_token: int | None
    actor: str
    manual: bool
    reason: str
    error: str | None = None


@dataclass
class Incident:
    region: str
    started_at: datetime  # the region's first bad verdict (= detected_at)
    ended_at: datetime | None = None  # None: still open
    worst: HealthStateName = HealthStateName.DEGRADED
    first_failure_at: datetime | None = None  # the earliest failed probe the evidence shows
    first_write_at: datetime | None = None
    drained_everywhere_at: datetime | None = None
    healthy_at: datetime | None = None
    outcomes: set[str] = field(default_factory=set)
    vantages: set[str] = field(default_factory=set)
    verdicts: list[Transition] = field(default_factory=list)  # the region's transitions
    evidence: list[Transition] = field(default_factory=list)  # endpoint (per-vantage and quorum) transitions
    writes: list[Write] = field(default_factory=list)
    manual: list[Override] = field(default_factory=list)
    panics: list[AuditEvent] = field(default_factory=list)
    _out: set[str] = field(default_factory=set, repr=False)  # targets the region is out of now

    @property
    def id(self) -> str:
        return f"{self.region}-{self.started_at:%Y%m%dT%H%M%SZ}"

    @property
    def open(self) -> bool:
        return self.ended_at is None

    @property
    def detected_at(self) -> datetime:
        return self.started_at

    def duration_s(self, now: datetime) -> float:
        return ((self.ended_at or now) - self.started_at).total_seconds()

    @property
    def time_to_detect_s(self) -> float | None:
        return None if self.first_failure_at is None else max(0.0, (self.started_at - self.first_failure_at).total_seconds())

    @property
    def time_to_act_s(self) -> float | None:
        return None if self.first_write_at is None else (self.first_write_at - self.started_at).total_seconds()

    @property
    def time_to_drain_s(self) -> float | None:
        return None if self.drained_everywhere_at is None else (self.drained_everywhere_at - self.started_at).total_seconds()

    @property
    def time_to_restore_s(self) -> float | None:
        if self.ended_at is None or self.healthy_at is None:
            return None
        return (self.ended_at - self.healthy_at).total_seconds()

    @property
    def fail_open(self) -> bool:
        return bool(self.panics)

    @property
    def fencing_tokens(self) -> list[int]:
        return sorted({w.fencing_token for w in self.writes if w.fencing_token is not None})

    def to_dict(self, now: datetime) -> dict[str, Any]:
        def iso(at: datetime | None) -> str | None:
            return at.isoformat() if at else None

        return {
            "id": self.id,
            "region": self.region,
            "open": self.open,
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "duration_s": round(self.duration_s(now), 1),
            "worst": self.worst.value,
            "outcomes": sorted(self.outcomes),
            "vantages": sorted(self.vantages),
            "first_failure_at": iso(self.first_failure_at),
            "first_write_at": iso(self.first_write_at),
            "drained_everywhere_at": iso(self.drained_everywhere_at),
            "healthy_at": iso(self.healthy_at),
            "time_to_detect_s": self.time_to_detect_s,
            "time_to_act_s": self.time_to_act_s,
            "time_to_drain_s": self.time_to_drain_s,
            "time_to_restore_s": self.time_to_restore_s,
            "fail_open": self.fail_open,
            "writes": [
                {
                    "at": iso(w.at),
                    "target": w.target,
                    "endpoint": w.endpoint,
                    "field": w.field,
                    "before": w.before,
                    "after": w.after,
                    "status": w.status,
                    "fencing_token": w.fencing_token,
                    "actor": w.actor,
                    "manual": w.manual,
                }
                for w in self.writes
            ],
            "manual_actions": [
                {"id": o.id, "kind": o.kind.value, "who": o.who, "why": o.why, "at": iso(o.created_at), "target": o.target}
                for o in self.manual
            ],
            "panics": [{"at": iso(e.at), "target": e.target, "summary": e.summary} for e in self.panics],
        }


def _takes_out(c: ChangeRecord) -> bool | None:
    """True: the write takes the region out of the target; False: puts it back; None: neither."""
    if c.field is Field.ENABLED:
        return c.after is False
    if c.field is Field.PRIORITY and isinstance(c.before, int) and isinstance(c.after, int) and c.before != c.after:
        return c.after > c.before  # a higher number is a later standby
    return None


def _sample_time(hms: str, near: datetime) -> datetime | None:
    try:
        h, m, s = (int(x) for x in hms.split(":"))
        at = near.replace(hour=h, minute=m, second=s, microsecond=0)
    except ValueError:
        return None
    if at > near + timedelta(minutes=1):
        at -= timedelta(days=1)  # the sample was before midnight
    return at


def _note_evidence(inc: Incident, t: Transition) -> None:
    inc.evidence.append(t)
    if t.vantage:
        inc.vantages.add(t.vantage)
    for line in t.evidence:
        m = _SAMPLE.match(line)
        if not m:
            continue
        outcome = m.group("outcome")
        if m.group("vantage"):
            inc.vantages.add(m.group("vantage"))
        if outcome == "ok":
            continue
        inc.outcomes.add(outcome)
        at = _sample_time(m.group("hms"), t.at)
        if at is not None and at >= inc.started_at - EVIDENCE_LOOKBACK and (inc.first_failure_at is None or at < inc.first_failure_at):
            inc.first_failure_at = at


def build(
    region_transitions: Iterable[Transition],
    endpoint_transitions: Iterable[Transition],
    changes: Iterable[ChangeRecord],
    overrides: Iterable[Override],
    panics: Iterable[AuditEvent],
    targets_of: Mapping[str, set[str]],
) -> list[Incident]:
    """Every incident the records show, newest first. ``targets_of``: region -> the targets it serves in."""
    timeline: dict[str, list[tuple[datetime, int, Any]]] = {}
    for t in region_transitions:
        timeline.setdefault(t.key, []).append((t.at, 0, t))
    for c in changes:
        if c.status is not ChangeStatus.SKIPPED:
            timeline.setdefault(c.region, []).append((c.created_at, 1, c))
    done: list[Incident] = []
    for region, items in timeline.items():
        items.sort(key=lambda x: (x[0], x[1]))
        inc: Incident | None = None
        for at, _, item in items:
            if isinstance(item, Transition):
                if item.new in BAD:
                    if inc is None:
                        inc = Incident(region=region, started_at=at, worst=item.new)
                        done.append(inc)
                    inc.healthy_at = None
                    if item.new is HealthStateName.UNHEALTHY:
                        inc.worst = item.new
                    inc.verdicts.append(item)
                elif inc is not None:
                    inc.verdicts.append(item)
                    if item.new is HealthStateName.HEALTHY:
                        inc.healthy_at = at
                        if not inc._out:
                            inc.ended_at, inc = at, None
                continue
            change: ChangeRecord = item
            if inc is None:
                continue
            inc.writes.append(
                Write(
                    at=at,
                    target=change.target,
                    endpoint=change.endpoint,
                    field=change.field.value,
                    before=change.before,
                    after=change.after,
                    status=change.status.value,
                    fencing_token=change.fencing_token,
                    actor=change.actor,
                    manual=change.manual,
                    reason=change.reason,
                    error=" ".join(x for x in (change.error_code, change.error_message) if x) or None,
                )
            )
            if inc.first_write_at is None:
                inc.first_write_at = at
            if change.status is not ChangeStatus.APPLIED:
                continue
            out = _takes_out(change)
            if out is True:
                inc._out.add(change.target)
                serving_in = targets_of.get(region, set())
                if inc.drained_everywhere_at is None and serving_in and serving_in <= inc._out:
                    inc.drained_everywhere_at = at
            elif out is False:
                inc._out.discard(change.target)
                if inc.healthy_at is not None and not inc._out:
                    inc.ended_at, inc = at, None
    _attach(done, endpoint_transitions, overrides, panics, targets_of)
    done.sort(key=lambda i: i.started_at, reverse=True)
    return done


def _within(inc: Incident, at: datetime, before: timedelta = timedelta(0)) -> bool:
    return inc.started_at - before <= at and (inc.ended_at is None or at <= inc.ended_at)


def _attach(
    incidents: list[Incident],
    endpoint_transitions: Iterable[Transition],
    overrides: Iterable[Override],
    panics: Iterable[AuditEvent],
    targets_of: Mapping[str, set[str]],
) -> None:
    by_region: dict[str, list[Incident]] = {}
    for inc in incidents:
        by_region.setdefault(inc.region, []).append(inc)
    for t in sorted(endpoint_transitions, key=lambda t: t.at):
        region = t.key.split("/", 1)[0]
        for inc in by_region.get(region, ()):
            if _within(inc, t.at, EVIDENCE_LOOKBACK) and (t.new in BAD or t.at >= inc.started_at):
                _note_evidence(inc, t)
    for o in overrides:
        for inc in incidents:
            if o.region in (None, inc.region) and _within(inc, o.created_at):
                inc.manual.append(o)
    for e in panics:
        for inc in incidents:
            if (e.target is None or e.target in targets_of.get(inc.region, set())) and _within(inc, e.at):
                inc.panics.append(e)


@dataclass(frozen=True, slots=True)
class Figures:
    count: int
    open: int
    detect_mean_s: float | None
    detect_p95_s: float | None
    act_mean_s: float | None
    act_p95_s: float | None


def figures(incidents: list[Incident]) -> Figures:
    """Mean and p95 time to detect and to act over a list of incidents."""

    def mean_p95(values: list[float]) -> tuple[float | None, float | None]:
        if not values:
            return None, None
        values.sort()
        return sum(values) / len(values), percentile(values, 0.95)

    dm, dp = mean_p95([v for i in incidents if (v := i.time_to_detect_s) is not None])
    am, ap = mean_p95([v for i in incidents if (v := i.time_to_act_s) is not None])
    return Figures(len(incidents), sum(1 for i in incidents if i.open), dm, dp, am, ap)


__all__ = ["BAD", "Figures", "Incident", "Write", "build", "figures"]
