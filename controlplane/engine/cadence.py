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

import random
from dataclasses import dataclass, field, replace
from datetime import datetime

from controlplane.config import Settings
from controlplane.domain import LivenessResult, Outcome, ProbeResult, endpoint_id
from controlplane.engine.health import HealthEvaluator

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
        self, cadence: Cadence, due: float, now: float, rng: random.Random, suspect: bool | None = None, step: float | None = None
    ) -> float:
        """Set and return the next due time after a probe that was due at ``due`` and ended at ``now``."""
        jittered = self.interval(cadence, suspect, step) * (1.0 + rng.uniform(-cadence.jitter, cadence.jitter))
        self.next_due = max(due + jittered, now)
        return self.next_due

    def confirm_now(self, now: float) -> None:
        """A liveness check disagreed with the view: the LLM probe is due at once."""
        self.next_due = min(self.next_due, now)


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
