"""The run: production's own components on a simulated clock.

What runs is what the worker runs:

- the probe cadence of every prober (:mod:`controlplane.engine.cadence`:
  the step from that prober's own view of the evidence -- confirmations
  ``confirm_gap`` apart while undecided, Retry-After, fast while degraded,
  normal otherwise --, jitter, the first probes spread out), one schedule
  per (endpoint, vantage), and its zero-token liveness checks, one per
  resource counting for each of its deployments, each deployment it
  disagrees with getting its LLM probe at once; a resource's deployments
  probed in one round (:class:`~controlplane.engine.cadence.ResourceRounds`);
- the hand-over of results to the leader in batches
  (:class:`~controlplane.engine.cadence.Handover`: ``batch_wait``, or
  ``NEWS_SETTLE_S`` after news, so the results of one moment arrive together),
  one per vantage, as each prober's runner does;
- evaluate on news: a batch holding a result that changed its prober's view
  makes the leader evaluate and reconcile at once (the worker's
  ``reconcile-now``), the ``reconcile.interval`` tick staying as the
  backstop; the leader's own
  prober's liveness checks reach its evaluator in-process, and a drain held
  for corroboration is looked at again ``confirm_gap`` later;
- :class:`~controlplane.engine.health.HealthEvaluator`, fed at every tick
  with the results handed over since the last one (as the leader reads them
  from the store), then evaluated at the tick's time;
- the :class:`~controlplane.runtime.reconcile.Reconciler`, every
  ``reconcile.interval``: read actual, drift, strategy with overrides,
  plan, guardrails and cooldowns, the per-subscription write budget, apply
  through the in-memory actuator (:class:`~controlplane.actuators.memory.MemoryActuator`,
  which validates like ARM), read back, record -- on an in-memory store
  (:class:`~controlplane.store.memory.MemoryStore`); timeline overrides are
  added to that store at their time, like an operator's.

Only two things are simulated: the network (:mod:`controlplane.replay.network`
turns the faults in force into probe results) and time (a :class:`SimClock`
every component reads). Same seed, same result.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from controlplane.actuators.base import RetryPolicy
from controlplane.actuators.memory import MemoryActuator
from controlplane.config import Settings
from controlplane.domain import LivenessResult, ProbeResult, TargetState, Transition, endpoint_id
from controlplane.engine.cadence import MAX_OVERLAPPING, Cadence, Handover, LivenessGroups, ProberView, ProbeSchedule, ResourceRounds
from controlplane.engine.guardrails import RECHECK_RULE, recheck_after
from controlplane.engine.health import HealthEvaluator
from controlplane.engine.writebudget import SubscriptionWriteBudget
from controlplane.replay.network import ProbeModel
from controlplane.replay.report import ReplayResult, Trace, summarize
from controlplane.replay.timeline import Timeline, TimelineError, load_timeline, resolve_names, resolve_timeline
from controlplane.runtime.reconcile import Reconciler, TickReport
from controlplane.store.memory import MemoryStore
from simulator.faults import FaultBook, TimelineEvent

DEFAULT_START = datetime(2024, 1, 1, tzinfo=UTC)
HOLDER = "replay"
UNLIMITED_WRITES_PER_HOUR = 10**9  # run_replay(write_budget=False)

# at equal times: faults/overrides first, then results in, then their hand-over, the tick last
_FAULT, _DELIVER, _LIVE_DONE, _PROBE, _LIVE, _HANDOVER, _TICK = 0, 1, 2, 3, 4, 5, 6
_HEDGE = -2  # a probe event's generation: a hedge (an overlapping confirmation a sibling's failure asked for)


class SimClock:
    """The injected clock: ``start`` plus the simulated seconds so far."""

    def __init__(self, start: datetime) -> None:
        self.start = start
        self.t = 0.0

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.t)

    def at(self, seconds: float) -> datetime:
        return self.start + timedelta(seconds=seconds)

    def offset(self, when: datetime) -> float:
        return round((when - self.start).total_seconds(), 3)


class Leader:
    """The leader's half of the worker -- health, then one reconcile tick -- on a simulated clock."""

    def __init__(self, settings: Settings, start: datetime, actual: Iterable[TargetState] | None, write_budget: bool) -> None:
        if settings.azure.dry_run:  # replay applies to its in-memory Azure; a dry-run config still decides the same
            settings = settings.model_copy(update={"azure": settings.azure.model_copy(update={"dry_run": False})})
        self.settings = settings
        self.clock = SimClock(start)
        self.trace = Trace(settings)
        self.store = MemoryStore()
        self.actuator = MemoryActuator(retry=RetryPolicy(attempts=1))
        seeded = {a.target: a for a in actual} if actual is not None else {}
        for t in settings.targets:
            state = seeded.get(t.name)
            fields: dict[str, dict[str, Any]] = (
                {r: {"weight": e.weight, "priority": e.priority, "enabled": e.enabled} for r, e in state.endpoints.items()}
                if state is not None
                else {}
            )
            self.actuator.seed(t, **fields)
        per_hour = settings.guardrails.write_budget_per_hour if write_budget else UNLIMITED_WRITES_PER_HOUR
        self.reconciler = Reconciler(
            settings,
            self.store,
            {t.name: self.actuator for t in settings.targets},
            self.clock,
            HOLDER,
            lease_name=None,  # the only writer: no lease to fence with
            budget=SubscriptionWriteBudget(per_hour, self.clock),
            max_parallel=1,  # one target after another: deterministic, and no thread per tick
        )
        self.evaluator = HealthEvaluator(settings)
        self._pending: list[ProbeResult] = []
        self._liveness: list[LivenessResult] = []
        self._open_panics: dict[str, dict[str, Any]] = {}
        counted = frozenset(settings.probe.counts_against_health) | frozenset(settings.probe.config_problems)
        self._counted = counted

    # ------------------------------------------------------------ inputs

    def seen(self, result: ProbeResult, t_s: float) -> None:
        """A probe ended with ``result``: its prober knows it (the report's ``first_seen_s``)."""
        self.trace.probes += 1
        self.trace.deliveries.append((t_s, result.region, result.endpoint, result.vantage, 1 if result.outcome in self._counted else 0))

    def hand_over(self, results: list[ProbeResult]) -> None:
        """A prober's batch reaches the store (the leader reads it at its next evaluation)."""
        self._pending.extend(results)

    def deliver(self, result: ProbeResult, t_s: float) -> None:
        """A recorded probe result reaches the store when its probe ends."""
        self.seen(result, t_s)
        self.hand_over([result])

    def deliver_liveness(self, result: LivenessResult) -> None:
        """A liveness check of the leader's own prober (the worker hands these over in-process)."""
        self._liveness.append(result)

    def add_override(self, event: Any, index: int) -> None:
        self.store.add_override(event.build(self.clock.start, index))

    # ------------------------------------------------------------ the tick

    def tick(self, t_s: float) -> TickReport:
        """What ``Worker.reconcile_tick`` does: feed the new results, evaluate, reconcile."""
        self.clock.t = t_s
        trace = self.trace
        trace.ticks += 1
        now = self.clock.now()
        self._note(self.evaluator.observe_with_liveness(self._pending, self._liveness))
        self._pending.clear()
        self._liveness.clear()
        health = self.evaluator.evaluate(now)
        self._note(health.transitions)
        report = self.reconciler.reconcile_once(health, fencing_token=None)
        for s in report.plan.skipped:
            trace.held[s.rule] = trace.held.get(s.rule, 0) + 1
        applied = set(report.applied)
        for c in report.plan.changes:
            if c in applied:
                trace.changes.append(
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
        self._panics(t_s, report.plan.panics)
        for name, result in report.targets.items():
            state = result.read_back or result.actual
            if state is not None:
                serving = sum(1 for e in state.endpoints.values() if e.enabled)
                trace.min_serving[name] = min(trace.min_serving.get(name, serving), serving)
        return report

    def finish(self) -> Trace:
        self.trace.final = {
            t.name: {
                r: {"enabled": e.enabled, "weight": e.weight, "priority": e.priority}
                for r, e in self.actuator.read_actual(t).endpoints.items()
            }
            for t in self.settings.targets
        }
        return self.trace

    # ------------------------------------------------------------ records

    def _note(self, transitions: Iterable[Transition]) -> None:
        for t in transitions:
            self.trace.transitions.append(
                {
                    "at": self.clock.offset(t.at),
                    "subject": t.subject,
                    "key": t.key,
                    "vantage": t.vantage,
                    "old": t.old.value,
                    "new": t.new.value,
                    "reason": t.reason,
                }
            )

    def _panics(self, t_s: float, panics: Iterable[str]) -> None:
        current = {p.split(":", 1)[0]: p for p in panics}
        for target, text in current.items():
            if target not in self._open_panics:
                entry = {"at": round(t_s, 3), "target": target, "reason": text, "until": None}
                self._open_panics[target] = entry
                self.trace.panics.append(entry)
        for target in [t for t in self._open_panics if t not in current]:
            self._open_panics.pop(target)["until"] = round(t_s, 3)


# ---------------------------------------------------------------- entry point


def run_replay(
    settings: Settings,
    timeline: Timeline | Mapping[str, Any] | str | Path | None = None,
    *,
    results: Iterable[ProbeResult] | None = None,
    start: datetime | None = None,
    actual: Iterable[TargetState] | None = None,
    write_budget: bool = True,
) -> ReplayResult:
    """Run production's engine and reconciler in simulated time.

    Either ``timeline`` (a Timeline, a mapping, a path or a built-in scenario
    name): faults are simulated with the probe model and the production probe
    cadence; or ``results``: recorded ProbeResults (e.g. last week's, from
    the store) are fed in their own time order against ``settings`` -- to try
    new thresholds on an old incident. ``actual`` defaults to every target at
    its configured baseline, all enabled. ``write_budget=False`` lifts the
    Azure write budget.
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
        timeline = resolve_names(timeline, settings, problems)
        if problems:
            raise TimelineError(timeline.name or "<timeline>", problems)
    return _run_timeline(settings, timeline, start or DEFAULT_START, actual, write_budget)


def _run_timeline(
    settings: Settings, tl: Timeline, start: datetime, actual: Iterable[TargetState] | None, write_budget: bool
) -> ReplayResult:
    rng = random.Random(tl.seed)
    leader = Leader(settings, start, actual, write_budget)
    settings = leader.settings
    model = ProbeModel(settings, tl.baseline, tl.noise, rng)
    cadence = Cadence.of(settings)
    book = FaultBook()
    vantages = list(tl.vantages or (settings.probe.vantage,))
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
    views = {v: ProberView(settings, v) for v in vantages}
    handovers = {v: Handover() for v in vantages}  # each prober's runner hands its results on in batches
    gen: dict[tuple[str, str], int] = {}  # a probe brought forward (liveness check, sibling's failure) voids the old due event
    probe_keys: dict[tuple[str, str], tuple[Any, ...]] = {}  # (endpoint, vantage) -> its probe's payload
    groups = LivenessGroups.of(settings)  # the endpoint that checks a resource -> every endpoint on it
    overlaps: Counter[tuple[str, str]] = Counter()
    launched: dict[tuple[str, str], float] = {}  # the last probe launched that owns or chains the schedule (the runner's last_launch)
    chained: set[tuple[str, str]] = set()  # an overlapping confirmation is pending
    rounds: dict[str, ResourceRounds] = {}  # per vantage: its prober's schedules, a resource's deployments together
    for v in vantages:
        schedules: dict[str, ProbeSchedule] = {}
        for r in settings.regions:
            for ep in r.endpoints:
                eid = endpoint_id(r.name, ep.name)
                schedules[eid] = ProbeSchedule()
                gen[(eid, v)] = 0
                probe_keys[(eid, v)] = (eid, r.name, ep, v, schedules[eid])
        rounds[v] = ResourceRounds(cadence, groups, schedules, views[v])
        rounds[v].start(0.0, rng)
        for eid, schedule in schedules.items():
            push(schedule.next_due, _PROBE, (*probe_keys[(eid, v)], 0))
            if cadence.liveness_interval > 0 and eid in groups:
                push(schedule.liveness_due, _LIVE, probe_keys[(eid, v)])

    def pull(v: str, pulled: list[str], t_s: float) -> None:
        """Probes brought forward to now (into a round) void their old due events."""
        for other in pulled:
            gen[(other, v)] += 1
            push(t_s, _PROBE, (*probe_keys[(other, v)], gen[(other, v)]))

    tick_every = settings.reconcile.interval
    k = 1
    while k * tick_every <= tl.duration_s + 1e-9:
        push(k * tick_every, _TICK, None)
        k += 1
    end = tl.duration_s + 1e-9
    clock = leader.clock
    news_tick = -1.0
    while heap:
        t_s, kind, _, payload = heapq.heappop(heap)
        if t_s > end:
            break
        clock.t = t_s
        if kind == _PROBE:
            eid, region, ep, v, schedule, g = payload
            overlap = g < 0  # an overlapping confirmation (below): it does not own the schedule
            if not overlap and g != gen[(eid, v)]:
                continue  # replaced by a probe a liveness check asked for
            hedge = g == _HEDGE
            if hedge:
                if not schedule.hedge_due(t_s) or overlaps[(eid, v)] >= MAX_OVERLAPPING:
                    continue  # its probe of that round answered meanwhile
                schedule.hedge_at = None
            elif overlap:
                chained.discard((eid, v))
                if not schedule.in_flight or overlaps[(eid, v)] >= MAX_OVERLAPPING or views[v].step(eid) > cadence.confirm_gap + 1e-9:
                    continue  # the probe it would overlap has ended, or the evidence is decided
            if not hedge:
                launched[(eid, v)] = t_s
            if overlap:
                overlaps[(eid, v)] += 1
            else:
                schedule.in_flight = True
            seen, took = model.probe(eid, region, v, clock.at(t_s), book.for_request(region, ep.deployment))
            push(t_s + took, _DELIVER, (seen, t_s if overlap else schedule.round, payload))
            if (
                not hedge and views[v].step(eid) <= cadence.confirm_gap + 1e-9
            ):  # undecided: the next confirmation does not wait for this one
                push(t_s + cadence.confirm_gap, _PROBE, (*payload[:5], -1))
                chained.add((eid, v))
        elif kind == _DELIVER:
            seen, round_, probe = payload
            eid, region, ep, v, schedule, g = probe
            leader.seen(seen, t_s)
            if g >= 0:
                schedule.in_flight = False
            done = rounds[v].finished(seen, round_, t_s, rng, owner=g >= 0)
            news = done.news
            handover = handovers[v]
            was_due = handover.due_at()
            handover.add([seen], t_s, news)
            if handover.due_at() != was_due:
                push(max(t_s, handover.due_at() or t_s), _HANDOVER, v)
            if g < 0:
                overlaps[(eid, v)] -= 1
                if (
                    g == _HEDGE and schedule.in_flight and (eid, v) not in chained and views[v].step(eid) <= cadence.confirm_gap + 1e-9
                ):  # the hedge left it undecided while its own probe is still out: confirmations go on, as the runner's
                    push(max(t_s, launched[(eid, v)] + cadence.confirm_gap), _PROBE, (*probe[:5], -1))
                    chained.add((eid, v))
            else:
                gen[(eid, v)] += 1
                push(schedule.next_due, _PROBE, (*probe[:5], gen[(eid, v)]))
            pull(v, done.pulled, t_s)
            for other in done.hedged:
                push(probe_keys[(other, v)][4].hedge_at, _PROBE, (*probe_keys[(other, v)], _HEDGE))
        elif kind == _HANDOVER:
            batch = handovers[payload].take(t_s)
            if batch is None:
                continue  # the batch went earlier, or its time moved (news came in)
            results, news = batch
            leader.hand_over(results)
            if news and t_s > news_tick:
                news_tick = t_s
                push(t_s, _TICK, None)  # the worker's reconcile-now, once the batch is stored
        elif kind == _LIVE:
            eid, region, ep, v, schedule = payload
            if schedule.in_flight:  # as the runner: no check while the LLM probe is out
                push(t_s + cadence.confirm_gap, _LIVE, payload)
                continue
            check, took = model.liveness(eid, region, v, clock.at(t_s), book.for_request(region, None))
            push(t_s + took, _LIVE_DONE, (check, payload))
        elif kind == _LIVE_DONE:
            check, probe = payload
            eid, region, ep, v, schedule = probe
            leader.trace.liveness_checks += 1
            checks, pulled = rounds[v].checked(check, t_s, rng)  # the resource's check: each deployment's result
            push(schedule.liveness_due, _LIVE, probe)
            if v == settings.probe.vantage:
                for each in checks:
                    leader.deliver_liveness(each)
            pull(v, pulled, t_s)
        elif kind == _TICK:
            _tick(leader, t_s, push)
        else:
            _apply_event(payload, book, settings, leader)
    trace = leader.finish()
    result = ReplayResult(
        start=start,
        duration_s=tl.duration_s,
        seed=tl.seed,
        vantages=vantages,
        transitions=trace.transitions,
        changes=trace.changes,
        panics=trace.panics,
        final=trace.final,
        name=tl.name,
    )
    result.summary = summarize(trace, tl, tl.duration_s)
    return result


def _tick(leader: Leader, t_s: float, push: Any) -> None:
    """One leader tick; a drain held for corroboration is looked at again ``confirm_gap`` later, as the worker does."""
    report = leader.tick(t_s)
    if any(s.rule == RECHECK_RULE for s in report.plan.skipped):
        push(t_s + recheck_after(leader.settings), _TICK, None)


def _apply_event(payload: Any, book: FaultBook, settings: Settings, leader: Leader) -> None:
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
    leader.add_override(o, index)


def _run_results(settings: Settings, results: list[ProbeResult], actual: Iterable[TargetState] | None, write_budget: bool) -> ReplayResult:
    results.sort(key=lambda r: r.started_at)
    start = results[0].started_at if results else DEFAULT_START
    leader = Leader(settings, start, actual, write_budget)
    if not results:
        return ReplayResult(start=start, duration_s=0.0, seed=None, vantages=[], summary=summarize(leader.finish(), None, 0.0))
    end_s = (results[-1].started_at - start).total_seconds()
    tick_every = leader.settings.reconcile.interval
    next_tick = tick_every
    for r in results:
        t_s = (r.started_at - start).total_seconds()
        while next_tick <= t_s:
            leader.tick(next_tick)
            next_tick += tick_every
        leader.clock.t = t_s
        leader.deliver(r, t_s)
    leader.tick(next_tick)
    trace = leader.finish()
    result = ReplayResult(
        start=start,
        duration_s=round(max(end_s, next_tick), 3),
        seed=None,
        vantages=sorted({r.vantage for r in results}),
        transitions=trace.transitions,
        changes=trace.changes,
        panics=trace.panics,
        final=trace.final,
        name="recorded results",
    )
    result.summary = summarize(trace, None, result.duration_s)
    return result
