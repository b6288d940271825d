"""The probe cadence (controlplane.engine.cadence): one rule for the probe runner and replay."""

from __future__ import annotations

import random

import pytest

from controlplane.domain import LivenessResult, Outcome
from controlplane.engine.cadence import NEWS_SETTLE_S, Cadence, Handover, ProberView, ProbeSchedule
from tests.fakes import at, make_settings, probe_result

SETTINGS = make_settings(probe={"interval": "30s", "fast_interval": "5s", "confirm_gap": "1s", "jitter": 0.0})


def cadence(jitter: float = 0.0) -> Cadence:
    return Cadence.of(make_settings(probe={"interval": "30s", "fast_interval": "5s", "jitter": jitter}))


def test_the_cadence_reads_the_probe_and_health_settings() -> None:
    c = cadence(0.1)
    assert (c.interval, c.fast_interval, c.jitter, c.failures_to_down, c.successes_to_up) == (30.0, 5.0, 0.1, 5, 3)
    assert (c.confirm_gap, c.liveness_interval) == (1.0, 5.0)


def test_a_counted_failure_brings_confirmations_back_to_back_until_the_evidence_decides() -> None:
    c, s, rng, view = Cadence.of(SETTINGS), ProbeSchedule(), random.Random(1), ProberView(SETTINGS)
    eid = "eastus/gpt-4o"
    due = 0.0
    gaps, news = [], []
    for outcome in [Outcome.OK] * 3 + [Outcome.CONNECT_ERROR] * 6:
        result = probe_result(eid, outcome, due)
        s.observe(outcome, c)
        news.append(view.observe(result))
        nxt = s.schedule_next(c, due, due + 0.05, rng, step=view.step(eid))
        gaps.append(nxt - due)
        due = nxt
    # healthy at the third ok; the first failure is undecided: 1 s apart; the fifth decides (down): back to
    # the normal interval, the liveness checks watch a down endpoint
    assert gaps == pytest.approx([30, 30, 30, 1, 1, 1, 1, 30, 30])
    assert news == [False, False, True, False, False, False, False, True, False]
    assert s.confirmed_down


def test_a_liveness_check_that_disagrees_asks_for_a_probe_now() -> None:
    view, s = ProberView(SETTINGS), ProbeSchedule(next_due=100.0)
    eid = "eastus/gpt-4o"
    for i in range(3):
        view.observe(probe_result(eid, Outcome.OK, i * 30.0))
    assert not view.on_liveness(LivenessResult(eid, "eastus", "local", at(95.0), ok=True, status_code=200))
    assert view.on_liveness(LivenessResult(eid, "eastus", "local", at(96.0), ok=False, error="connection refused"))
    s.confirm_now(96.0)
    assert s.next_due == 96.0


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


def test_a_batch_goes_after_batch_wait_but_one_holding_news_goes_exactly_the_settle_time_after_it() -> None:
    ho = Handover(batch_max=3, batch_wait=1.0)
    assert ho.due_at() is None and ho.take(5.0) is None
    ho.add([probe_result()], 10.0)
    assert ho.due_at() == 11.0 and ho.take(10.9) is None
    assert ho.take(11.0) == ([probe_result()], False)
    # news just before the batch_wait deadline: the batch waits for the rest of that moment
    ho.add([probe_result()], 20.0)
    ho.add([probe_result()], 20.95, news=True)
    assert ho.take(21.0) is None and ho.due_at() == 20.95 + NEWS_SETTLE_S
    ho.add([probe_result(), probe_result()], 21.1)  # past batch_max too: still waits
    assert ho.take(21.1) is None
    results, news = ho.take(20.95 + NEWS_SETTLE_S) or ([], False)
    assert (len(results), news) == (4, True)
    ho.add([probe_result()] * 3, 30.0)  # batch_max without news: at once
    assert ho.take(30.0) is not None and ho.take_all() == ([], False)
