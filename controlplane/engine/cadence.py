"""Probe cadence: when an endpoint is probed next. The one home of the rule,
used by the production probe runner (``probes.runner``) and by replay.

- After every probe the next one is ``step * (1 ± jitter)`` after the one
  that just ran was *due* (so the cadence holds), but never in the past:
  after a stall, or a probe that ran to its deadline, the next one is due
  at once, once.
- The first probes are spread over ``jitter * interval`` (liveness checks
  over ``liveness_interval``) so endpoints do not synchronise.
- **The step follows the evidence.** Each prober keeps a :class:`ProberView`:
  a :class:`~controlplane.engine.health.HealthEvaluator` fed with its own
  results only, so it never waits for the leader. The step is
  :meth:`HealthEvaluator.next_probe_in` of that view (the evidence lives
  there): confirmations ``confirm_gap`` apart while the sequential test is
  undecided or a recovery is short of ``successes_to_up``; no sooner than a
  429's Retry-After; ``fast_interval`` while degraded; ``interval``
  otherwise, also while confirmed down, when the liveness checks watch it.
- **Liveness checks** (zero tokens) every ``liveness_interval``, one per
  Azure OpenAI resource (:class:`LivenessGroups`): the models list is the
  resource's, so its result counts for every deployment on it, and each one
  it disagrees with (failed while
  not known down, good while down) gets its LLM probe at once
  (:meth:`ProberView.on_liveness`): the deployments of a resource that went
  down or came back are confirmed in the same moment, not a liveness phase
  apart (the region degraded in between). It never changes a state by itself.
- **A resource's deployments are probed together** (:class:`ResourceRounds`):
  a round is the set of deployments of one Azure OpenAI resource due at one
  time; the jitter is drawn once per round (:class:`Rounds`), so deployments
  with the same step stay in one round instead of drifting a phase apart, and
  the first probes are spread per resource, not per deployment. A failure the
  resource shares (connect error, timeout, 5xx: what the liveness check sees
  too) on one deployment, the first of its run, pulls each sibling not yet
  probed in that round into it at once, so a resource that went down is
  confirmed on all its deployments in lockstep and they reach
  ``failures_to_down`` in the same moment (one jitter phase apart, the region
  passed through degraded: its weight halved, then drained). Each probe stays
  a real probe with its own outcome; a sibling known down, or under a 429's
  Retry-After, is never pulled; 429s, wrong answers and slowness are the
  deployment's own and pull no one. A sibling whose probe is still out when
  such a failure comes (at the first of a run, or while the failing one is
  being confirmed and the probe out is of an older round) gets one
  overlapping confirmation (a hedge) for that probe: a lost one would hold
  it a whole timeout behind.
- **News**: :meth:`ProberView.observe` says whether a result changed the
  view of its endpoint; the leader evaluates and reconciles as soon as the
  batch holding it is handed on, without waiting for its tick.
- **Hand-over** (:class:`Handover`): when finished results go to the leader
  (the store): a batch holding news exactly ``NEWS_SETTLE_S`` after the news,
  whatever ``batch_wait`` or ``batch_max`` say, so the results of that moment
  travel together; other batches when ``batch_max`` have gathered or the
  oldest has waited ``batch_wait``.
- The ``suspect`` override (endpoint id -> bool) of the runner still
  replaces the step by "fast interval or normal interval" when given.

Pure: times are plain seconds on whatever clock the caller runs (monotonic
in the runner, simulated in replay); randomness comes from the caller's
``random.Random``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace
from datetime import datetime

from controlplane.config import Settings
from controlplane.domain import LivenessResult, Outcome, ProbeResult, endpoint_id
from controlplane.engine.health import HealthEvaluator

RESOURCE_FAILURES = frozenset({Outcome.CONNECT_ERROR, Outcome.TIMEOUT, Outcome.SERVER_ERROR})
"""LLM probe failures the deployments of a resource share (its front end or its network, what a liveness
check sees too): the first one of a run confirms every deployment of the resource in the same round."""

NEWS_SETTLE_S = 0.25
"""A reconcile on news waits this long, so results of one moment (the endpoints of a region, probed
together) land in one evaluation instead of acting on the first endpoint's verdict alone."""


BATCH_MAX = 200
"""Results handed on at once when this many have gathered (no news pending)."""

BATCH_WAIT_S = 1.0
"""A result without news waits at most this long to be handed on, with the others of its batch."""

MAX_OVERLAPPING = 4
"""While the evidence is undecided, confirmations go out ``confirm_gap`` apart even when an earlier one
has not answered yet (a hung probe must not hold the verdict for a whole probe timeout), at most this
many beyond the one that owns the schedule."""


@dataclass(frozen=True, slots=True)
class Cadence:
    """The cadence settings, flattened for the hot path."""

    interval: float
    fast_interval: float
    jitter: float
    failures_to_down: int
    successes_to_up: int
    counted: frozenset[Outcome]
    confirm_gap: float = 1.0
    liveness_interval: float = 0.0

    @classmethod
    def of(cls, settings: Settings) -> Cadence:
        p, h = settings.probe, settings.health
        return cls(
            interval=p.interval,
            fast_interval=p.fast_interval,
            jitter=p.jitter,
            failures_to_down=h.failures_to_down,
            successes_to_up=h.successes_to_up,
            counted=frozenset(p.counts_against_health),
            confirm_gap=min(p.confirm_gap, p.fast_interval),
            liveness_interval=p.liveness_interval,
        )

    def first_due(self, now: float, rng: random.Random) -> float:
        """When a newly started prober first probes an endpoint."""
        return now + rng.uniform(0.0, self.jitter * self.interval)

    def first_liveness(self, now: float, rng: random.Random) -> float:
        """When a newly started prober first checks an endpoint's liveness."""
        return now + rng.uniform(0.0, self.liveness_interval)

    def next_liveness(self, now: float, rng: random.Random) -> float:
        return now + self.liveness_interval * (1.0 + rng.uniform(-self.jitter, self.jitter))


class Rounds:
    """The probe rounds of one Azure OpenAI resource from one vantage: one jitter draw per round.

    Every deployment scheduling its next probe from the same round (due time) with the same step gets
    the same next time; a step of its own (a 429's Retry-After, a confirmation while its sibling is
    healthy) draws a round of its own."""

    def __init__(self, keep: int = 16) -> None:
        self._next: dict[tuple[float, float], float] = {}  # (round, step) -> the next round
        self._keep = keep  # rounds remembered: more than a resource's deployments can have open at once

    def next_after(self, at: float, step: float, jitter: float, rng: random.Random) -> float:
        key = (round(at, 6), round(step, 6))
        nxt = self._next.get(key)
        if nxt is None:
            nxt = self._next[key] = at + step * (1.0 + rng.uniform(-jitter, jitter))
            while len(self._next) > self._keep:
                del self._next[next(iter(self._next))]
        return nxt


class LivenessGroups(dict[str, tuple[str, ...]]):
    """The endpoint that runs the liveness checks of each Azure OpenAI resource (the first one the
    config names on that ``base_url``) -> every endpoint on that resource, itself first."""

    @classmethod
    def of(cls, settings: Settings) -> LivenessGroups:
        groups: dict[tuple[str, str], list[str]] = {}
        for region in settings.regions:
            for ep in region.endpoints:
                groups.setdefault((region.name, ep.base_url.rstrip("/").lower()), []).append(endpoint_id(region.name, ep.name))
        return cls({ids[0]: tuple(ids) for ids in groups.values()})

    def results(self, check: LivenessResult) -> list[LivenessResult]:
        """A resource's liveness check as the result of each endpoint on it."""
        group = self.get(check.endpoint_id, (check.endpoint_id,))
        return [check if eid == check.endpoint_id else replace(check, endpoint_id=eid) for eid in group]


class ProberView:
    """One prober's own view of its endpoints (one vantage): it sets that prober's cadence."""

    def __init__(self, settings: Settings, vantage: str | None = None) -> None:
        self.vantage = vantage or settings.probe.vantage
        self.evaluator = HealthEvaluator(settings)

    def observe(self, result: ProbeResult) -> bool:
        """Add one of this prober's results; True when it changed the view of its endpoint (news)."""
        return bool(self.evaluator.observe(result))

    def step(self, endpoint_id: str, vantage: str | None = None) -> float:
        """Seconds from this endpoint's last probe to its next one (before jitter)."""
        return self.evaluator.next_probe_in(endpoint_id, vantage or self.vantage)

    def on_liveness(self, result: LivenessResult) -> bool:
        """Note a liveness check; True when an LLM probe should run at once."""
        return self.evaluator.on_liveness(result.endpoint_id, result.vantage, result.ok, result.started_at)

    def may_pull(self, endpoint_id: str) -> bool:
        """May a sibling's failure pull this endpoint's probe forward (not known down, no Retry-After)?"""
        return self.evaluator.may_pull(endpoint_id, self.vantage)

    def note_liveness(self, endpoint_id: str, vantage: str, ok: bool, at: datetime) -> bool:
        return self.evaluator.on_liveness(endpoint_id, vantage, ok, at)


@dataclass(slots=True)
class ProbeSchedule:
    """When one endpoint is due next (from one vantage), and the streaks shown to on-call."""

    next_due: float = 0.0
    fail_streak: int = 0  # consecutive results counted against health
    good_streak: int = 0  # consecutive results not counted against health
    confirmed_down: bool = False
    suspect: bool = False  # a result disagreed with the confirmed state; not yet settled
    probes: int = 0
    liveness_due: float = 0.0
    liveness_checks: int = 0
    in_flight: bool = False  # the probe that owns the schedule is out
    round: float = 0.0  # the round the next probe belongs to: its due time, or the round it was pulled into
    last_round: float = -math.inf  # the round of the last result
    failing_round: float | None = None  # the round of the first of the resource failures in a row, if the last was one
    hedge_at: float | None = None  # a sibling failed this round while this probe is still out: a confirmation then
    pull_into: float | None = None  # pulled into this round while its probe of an older one was out: joins it after
    hedge_round: float = -math.inf  # the round of the probe hedged last

    def hedge_due(self, now: float) -> bool:
        """Is the hedge due: its round's probe still out at ``hedge_at``? (An overlapping confirmation.)"""
        return self.hedge_at is not None and now >= self.hedge_at - 1e-9 and self.in_flight and self.round == self.hedge_round

    def record(self, counted: bool, failures_to_down: int, successes_to_up: int) -> None:
        """One result: ``counted`` against health or not."""
        self.probes += 1
        if counted:
            self.fail_streak, self.good_streak = self.fail_streak + 1, 0
        else:
            self.fail_streak, self.good_streak = 0, self.good_streak + 1
        if counted != self.confirmed_down:  # disagrees with what we believe
            self.suspect = True
        if self.fail_streak >= failures_to_down:
            self.confirmed_down, self.suspect = True, False
        elif self.good_streak >= successes_to_up:
            self.confirmed_down, self.suspect = False, False

    def observe(self, outcome: Outcome, cadence: Cadence) -> None:
        """One result's outcome: it counts against health when ``probe.counts_against_health`` says so."""
        self.record(outcome in cadence.counted, cadence.failures_to_down, cadence.successes_to_up)

    def interval(self, cadence: Cadence, suspect: bool | None = None, step: float | None = None) -> float:
        """The step to the next probe: the view's ``step``, or fast/normal by ``suspect`` (an override)."""
        if suspect is not None:
            return cadence.fast_interval if suspect else cadence.interval
        if step is not None:
            return step
        return cadence.fast_interval if self.suspect else cadence.interval

    def schedule_next(
        self,
        cadence: Cadence,
        due: float,
        now: float,
        rng: random.Random,
        suspect: bool | None = None,
        step: float | None = None,
        rounds: Rounds | None = None,
    ) -> float:
        """Set and return the next due time after a probe of the round ``due`` that ended at ``now``
        (with ``rounds``, the jitter is the resource's draw for that round)."""
        gap = self.interval(cadence, suspect, step)
        if rounds is not None:
            nxt = rounds.next_after(due, gap, cadence.jitter, rng)
        else:
            nxt = due + gap * (1.0 + rng.uniform(-cadence.jitter, cadence.jitter))
        self.next_due = self.round = max(nxt, now)
        return self.next_due

    def confirm_now(self, now: float, round_: float | None = None) -> None:
        """The LLM probe is due at once (a liveness check disagreed with the view, or a sibling failed),
        as part of the round ``round_`` (default: a round of its own, now)."""
        self.next_due = min(self.next_due, now)
        self.round = now if round_ is None else round_


@dataclass(frozen=True, slots=True)
class Finished:
    """What a finished probe asks of its prober."""

    news: bool  # it changed the prober's view: hand the batch on NEWS_SETTLE_S later
    pulled: list[str]  # siblings whose LLM probe is now due, in this round
    hedged: list[str]  # siblings whose probe of this round is still out: a confirmation at their ``hedge_at``


class ResourceRounds:
    """One prober's endpoints, grouped by Azure OpenAI resource and probed together: the one rule the
    runner and replay run for when each deployment's next probe is, and who is pulled into a round.

    ``schedules`` are the prober's own (endpoint id -> :class:`ProbeSchedule`), ``view`` its evidence."""

    def __init__(self, cadence: Cadence, groups: LivenessGroups, schedules: dict[str, ProbeSchedule], view: ProberView) -> None:
        self.cadence, self.groups, self.schedules, self.view = cadence, groups, schedules, view
        self._siblings: dict[str, tuple[str, ...]] = {}
        self._rounds: dict[str, Rounds] = {}
        for group in groups.values():
            rounds = Rounds(keep=max(16, 4 * len(group)))
            for eid in group:
                self._siblings[eid], self._rounds[eid] = group, rounds

    def start(self, now: float, rng: random.Random) -> None:
        """The first probes: one round per resource, spread over ``jitter * interval``; its liveness checks
        spread over ``liveness_interval``."""
        for checker, group in self.groups.items():
            first = self.cadence.first_due(now, rng)
            for eid in group:
                if eid in self.schedules:
                    self.schedules[eid].next_due = self.schedules[eid].round = first
            if checker in self.schedules:
                self.schedules[checker].liveness_due = self.cadence.first_liveness(now, rng)

    def finished(
        self, result: ProbeResult, round_: float, now: float, rng: random.Random, *, owner: bool = True, suspect: bool | None = None
    ) -> Finished:
        """A probe of the round ``round_`` ended at ``now`` with ``result``: note it, schedule the endpoint's
        next probe (unless it was an overlapping confirmation, ``owner=False``), pull its siblings into
        the round when it is the first resource failure of a run, and hedge the siblings whose probe is
        still out half a confirmation gap later, once per probe: of this round when they were failing too or
        at the first failure of a run, of an older round while this one is being confirmed (a lost probe
        must not leave one deployment a confirmation -- or a 10 s timeout -- behind the others: the
        region would pass through degraded)."""
        eid = result.endpoint_id
        s = self.schedules[eid]
        s.observe(result.outcome, self.cadence)
        news = self.view.observe(result)
        failed = result.outcome in RESOURCE_FAILURES
        if owner:
            s.hedge_at = None
            into, s.pull_into = s.pull_into, None
            joins = into is not None and failed  # it failed the way its siblings did: their round's grid from now on
            s.schedule_next(
                self.cadence, into if joins and into is not None else round_, now, rng, suspect, self.view.step(eid), self._rounds.get(eid)
            )
            if into is not None and not failed and self.view.may_pull(eid):
                s.confirm_now(now, into)  # its probe predates the round its siblings failed in: once more, in it
        s.last_round = max(s.last_round, round_)
        if not failed:
            s.failing_round = None
            return Finished(news, [], [])
        first = s.failing_round is None  # the first resource failure of its run
        hedged = []
        for other in self._siblings.get(eid, ()):
            o = self.schedules.get(other)
            if o is None or other == eid or not o.in_flight or o.hedge_at is not None:
                continue
            if o.round == round_ and o.failing_round is not None:
                pass  # its probe of this round is out while it was failing too: that probe is likely lost
            elif o.hedge_round == o.round or not self.view.may_pull(other):
                continue  # hedged once for the probe that is out; or known down, or told to retry later
            elif not (o.round == round_ and first) and not (o.round < round_ and not s.confirmed_down):
                continue
            # else: at the first failure of a run its probe of this round is out, or, while this one is being
            # confirmed, its probe of an older round still is (likely lost): confirm it now rather than when
            # that probe ends -- a lost probe held it a whole timeout, its sibling was confirmed down up to
            # 10 s earlier and the region passed through degraded (weight stepped, then drained)
            o.hedge_at, o.hedge_round = now + min(self.cadence.confirm_gap, NEWS_SETTLE_S) / 2, o.round
            hedged.append(other)
        if not first:
            return Finished(news, [], hedged)  # not the first of its run: the siblings were asked already
        s.failing_round = round_
        pulled = []
        for other in self._siblings.get(eid, ()):
            o = self.schedules.get(other)
            if (
                o is None
                or other == eid
                or o.failing_round is not None  # failing the same way: confirmed already
                or o.last_round >= round_  # probed in this round (or a later one)
                or not self.view.may_pull(other)
            ):
                continue
            if o.in_flight:
                if o.round < round_ and o.pull_into is None:
                    o.pull_into = round_  # its probe started before this round: it joins when that one ends
                continue
            o.confirm_now(now, round_)
            pulled.append(other)
        return Finished(news, pulled, hedged)

    def checked(self, check: LivenessResult, now: float, rng: random.Random) -> tuple[list[LivenessResult], list[str]]:
        """A resource's liveness check ended at ``now``: its next one, the check as each endpoint's result,
        and the endpoints whose LLM probe it made due at once (in one round): each it disagrees with,
        unless its last LLM result already failed the way the resource does (it is being confirmed)."""
        checker = self.schedules[check.endpoint_id]
        checker.liveness_checks += 1
        checker.liveness_due = self.cadence.next_liveness(now, rng)
        results = self.groups.results(check)
        pulled = []
        for each in results:
            o = self.schedules[each.endpoint_id]
            if self.view.on_liveness(each) and (each.ok or o.failing_round is None):
                if o.in_flight:
                    o.pull_into = o.pull_into if o.pull_into is not None else now  # joins when its probe ends
                    continue
                o.confirm_now(now)
                pulled.append(each.endpoint_id)
        return results, pulled


@dataclass(slots=True)
class Handover:
    """The results a prober has finished, until they are handed on to the leader (through the store).

    The one rule, run by the probe runner and by replay. A batch holding news (a result that changed
    the prober's view) goes ``NEWS_SETTLE_S`` after the news came in: not later (the leader acts on it
    at once), and not sooner either, whatever ``batch_wait`` or ``batch_max`` say (a quarter second of
    results at most), so the other endpoints of the region, probed in the same moment, come with it.
    Cut short, the leader judged a region on half of a moment: one endpoint back, its sibling still down,
    so the region was degraded at score 0.5 and its weight halved for one tick. Other batches go when
    ``batch_max`` results have gathered or the oldest has waited ``batch_wait``.
    """

    batch_max: int = BATCH_MAX
    batch_wait: float = BATCH_WAIT_S
    results: list[ProbeResult] = field(default_factory=list)
    since: float = 0.0  # when the oldest result of the batch came in
    news_since: float | None = None  # when the first news of the batch came in

    def add(self, results: list[ProbeResult], now: float, news: bool = False) -> None:
        """Results that finished by ``now``; ``news`` when one of them changed the prober's view."""
        if results and not self.results:
            self.since = now
        self.results.extend(results)
        if news and self.news_since is None:
            self.news_since = now

    def due_at(self) -> float | None:
        """When the batch is to be handed on (None: nothing to hand on)."""
        if self.news_since is not None:
            return self.news_since + NEWS_SETTLE_S
        if not self.results:
            return None
        return self.since if len(self.results) >= self.batch_max else self.since + self.batch_wait

    def take(self, now: float) -> tuple[list[ProbeResult], bool] | None:
        """The batch and whether it holds news, when it is due at ``now``; else None (it stays)."""
        due = self.due_at()
        if due is None or now < due - 1e-9:
            return None
        return self.take_all()

    def take_all(self) -> tuple[list[ProbeResult], bool]:
        """Everything gathered, due or not (on stop)."""
        out, news = self.results, self.news_since is not None
        self.results, self.news_since = [], None
        return out, news
