"""The probe cadence (controlplane.engine.cadence): one rule for the probe runner and replay."""

from __future__ import annotations

import random

import pytest

from controlplane.domain import Outcome
from controlplane.engine.cadence import Cadence, ProbeSchedule
from tests.fakes import make_settings


def cadence(jitter: float = 0.0) -> Cadence:
    return Cadence.of(make_settings(probe={"interval": "30s", "fast_interval": "5s", "jitter": jitter}))


def test_the_cadence_reads_the_probe_and_health_settings() -> None:
    c = cadence(0.1)
    assert (c.interval, c.fast_interval, c.jitter, c.failures_to_down, c.successes_to_up) == (30.0, 5.0, 0.1, 3, 3)


def test_a_counted_failure_moves_the_next_probe_to_the_fast_interval_until_k_confirm_it() -> None:
    c, s, rng = cadence(), ProbeSchedule(), random.Random(1)
    due = 0.0
    gaps = []
    for outcome in (Outcome.OK, Outcome.TIMEOUT, Outcome.TIMEOUT, Outcome.TIMEOUT, Outcome.TIMEOUT):
        s.observe(outcome, c)
        nxt = s.schedule_next(c, due, due + 0.2, rng)
        gaps.append(nxt - due)
        due = nxt
    assert gaps == pytest.approx([30, 5, 5, 30, 30])
    assert s.confirmed_down


def test_the_next_probe_is_never_in_the_past_after_a_stall() -> None:
    c, s = cadence(), ProbeSchedule()
    s.observe(Outcome.OK, c)
    assert s.schedule_next(c, due=0.0, now=95.0, rng=random.Random(1)) == 95.0


def test_jitter_keeps_each_interval_within_its_bounds_and_spreads_the_first_probes() -> None:
    c, rng = cadence(0.2), random.Random(3)
    firsts = [c.first_due(100.0, rng) for _ in range(200)]
    assert all(100.0 <= f <= 106.0 for f in firsts) and max(firsts) - min(firsts) > 3
    s = ProbeSchedule()
    s.observe(Outcome.OK, c)
    gaps = [s.schedule_next(c, 0.0, 0.0, rng) for _ in range(200)]
    assert all(24.0 <= g <= 36.0 for g in gaps) and max(gaps) - min(gaps) > 6


def test_a_caller_may_decide_suspect_itself() -> None:
    c, s = cadence(), ProbeSchedule()
    s.observe(Outcome.OK, c)
    assert s.interval(c) == 30.0
    assert s.interval(c, suspect=True) == 5.0
