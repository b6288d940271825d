"""Probe cadence: when an endpoint is probed next. The one home of the rule,
used by the production probe runner (``probes.runner``) and by replay.

- After every probe the next one is ``interval * (1 ± jitter)`` after the one
  that just ran was *due* (so the cadence holds), but never in the past:
  after a stall, or a probe that ran to its deadline, the next one is due
  at once, once.
- The first probes are spread over ``jitter * interval`` so endpoints do
  not synchronise.
- **Adaptive interval.** An endpoint is *suspect* from the first result that
  disagrees with its confirmed state (confirmed up and a result that counts
  against health per ``probe.counts_against_health``; or confirmed down and
  a good one) until the state is settled either way: ``health.failures_to_down``
  counted failures in a row (confirmed down) or ``health.successes_to_up``
  good results in a row (confirmed up). While suspect it is probed at
  ``fast_interval``, so detection does not wait K normal intervals, and a
  flapping endpoint stays on the fast interval.

  Once confirmed down, an endpoint goes back to the normal interval:
  probing a dead region fast buys nothing, and the first good result makes
  it suspect again, so recovery is still detected at the fast interval.

The state is per (endpoint, vantage): every prober keeps its own, from its
own results, so it never waits for the leader. Pure: times are plain
seconds on whatever clock the caller runs (monotonic in the runner,
simulated in replay); randomness comes from the caller's ``random.Random``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from controlplane.config import Settings
from controlplane.domain import Outcome


@dataclass(frozen=True, slots=True)
class Cadence:
    """The cadence settings, flattened for the hot path."""

    interval: float
    fast_interval: float
    jitter: float
    failures_to_down: int
    successes_to_up: int
    counted: frozenset[Outcome]

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
        )

    def first_due(self, now: float, rng: random.Random) -> float:
        """When a newly started prober first probes an endpoint."""
        return now + rng.uniform(0.0, self.jitter * self.interval)


@dataclass(slots=True)
class ProbeSchedule:
    """When one endpoint is due next (from one vantage), and the streaks the adaptive interval reads."""

    next_due: float = 0.0
    fail_streak: int = 0  # consecutive results counted against health
    good_streak: int = 0  # consecutive results not counted against health
    confirmed_down: bool = False
    suspect: bool = False  # a result disagreed with the confirmed state; not yet settled
    probes: int = 0

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

    def interval(self, cadence: Cadence, suspect: bool | None = None) -> float:
        """The interval to the next probe (``suspect`` overrides the built-in rule when given)."""
        fast = self.suspect if suspect is None else suspect
        return cadence.fast_interval if fast else cadence.interval

    def schedule_next(self, cadence: Cadence, due: float, now: float, rng: random.Random, suspect: bool | None = None) -> float:
        """Set and return the next due time after a probe that was due at ``due`` and ended at ``now``."""
        step = self.interval(cadence, suspect) * (1.0 + rng.uniform(-cadence.jitter, cadence.jitter))
        self.next_due = max(due + step, now)
        return self.next_due
