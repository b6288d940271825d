"""The probe cadence (controlplane.engine.cadence): one rule for the probe runner and replay."""

from __future__ import annotations

import random

import pytest

from controlplane.domain import LivenessResult, Outcome
from controlplane.engine.cadence import NEWS_SETTLE_S, Cadence, Handover, LivenessGroups, ProberView, ProbeSchedule, ResourceRounds
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


TWO = make_settings(endpoints_per_region=2, probe={"interval": "15s", "confirm_gap": "1s", "jitter": 0.1})
A, B, WEST = "eastus/gpt-0", "eastus/gpt-1", "westeurope/gpt-0"


def two_per_resource() -> tuple[ResourceRounds, dict[str, ProbeSchedule], random.Random]:
    schedules = {eid: ProbeSchedule() for eid in ("eastus/gpt-0", "eastus/gpt-1", "westeurope/gpt-0", "westeurope/gpt-1")}
    rounds = ResourceRounds(Cadence.of(TWO), LivenessGroups.of(TWO), schedules, ProberView(TWO))
    rng = random.Random(7)
    rounds.start(0.0, rng)
    return rounds, schedules, rng


def run(rounds: ResourceRounds, eid: str, outcome: Outcome, round_: float, took: float = 0.01) -> list[str]:
    """One owned probe of ``eid`` in the round ``round_``: launched, then its result ``took`` s later."""
    rng = random.Random(round_ * 1000 + len(eid))
    return rounds.finished(probe_result(eid, outcome, round_), round_, round_ + took, rng).pulled


def test_a_resources_deployments_start_in_one_round_and_draw_one_jitter_per_round() -> None:
    rounds, s, rng = two_per_resource()
    assert s[A].next_due == s[B].next_due != s[WEST].next_due  # the first probes spread per resource
    due = s[A].next_due
    for _ in range(20):  # each result with its own draw before: still one jitter per round
        assert s[A].next_due == s[B].next_due, "the deployments of a resource drifted apart"
        for eid, took in ((B, 0.4), (A, 0.6)):  # either order, any latency
            sch = s[eid]
            rounds.finished(probe_result(eid, Outcome.OK, due), sch.round, due + took, random.Random(rng.random()))
        gap = s[A].next_due - due
        assert 13.5 <= gap <= 16.5  # the jitter still spreads the interval
        due = s[A].next_due


def test_the_first_resource_failure_of_a_run_pulls_the_siblings_into_its_round_and_keeps_them_in_step() -> None:
    rounds, s, _ = two_per_resource()
    west = s[WEST].next_due
    for t in (0.0, 15.0, 30.0):  # healthy, each at its own phase
        run(rounds, A, Outcome.OK, t)
        run(rounds, B, Outcome.OK, t + 7.0)
    assert abs(s[A].next_due - s[B].next_due) > 1.0
    assert run(rounds, A, Outcome.CONNECT_ERROR, 45.0) == [B]  # the first of its run: B now, in A's round
    assert s[B].next_due == 45.01 and s[B].round == 45.0
    assert run(rounds, B, Outcome.CONNECT_ERROR, s[B].round, took=0.02) == []  # A was probed in this round: not again
    for _ in range(4):  # confirmations in lockstep: one draw per round
        assert s[A].next_due == s[B].next_due and 45.0 < s[A].next_due
        r = s[A].round
        assert run(rounds, A, Outcome.CONNECT_ERROR, r) == [] and run(rounds, B, Outcome.CONNECT_ERROR, r) == []
    assert s[A].confirmed_down and s[B].confirmed_down
    assert s[WEST].next_due == west  # another resource: untouched


@pytest.mark.parametrize("outcome", [Outcome.THROTTLED, Outcome.BAD_CONTENT, Outcome.SLOW])
def test_a_deployments_own_fault_pulls_no_sibling(outcome: Outcome) -> None:
    rounds, s, _ = two_per_resource()
    run(rounds, B, Outcome.OK, 3.0)
    before = s[B].next_due
    assert run(rounds, A, outcome, 5.0) == []
    assert s[B].next_due == before


def test_a_sibling_known_down_or_told_to_retry_later_is_not_pulled() -> None:
    rounds2, _, _ = two_per_resource()
    for i in range(5):
        run(rounds2, B, Outcome.CONNECT_ERROR, float(i))
    assert rounds2.view.evaluator.evaluate(at(5.0)).endpoints[B].state.value == "unhealthy"
    run(rounds2, B, Outcome.OK, 6.0)  # one success does not bring it back: still down
    assert run(rounds2, A, Outcome.CONNECT_ERROR, 10.0) == []
    rounds3, _, _ = two_per_resource()
    rounds3.finished(probe_result(B, Outcome.THROTTLED, 1.0, retry_after_ms=20_000), 1.0, 1.05, random.Random(1))
    assert run(rounds3, A, Outcome.CONNECT_ERROR, 2.0) == []  # Retry-After: hold back


def test_a_sibling_whose_probe_of_the_round_is_still_out_is_hedged_once() -> None:
    rounds, s, _ = two_per_resource()
    run(rounds, A, Outcome.CONNECT_ERROR, 0.0)
    run(rounds, B, Outcome.CONNECT_ERROR, 0.0)
    r = s[A].round
    s[B].in_flight = True  # B's probe of round r is lost on the way
    done = rounds.finished(probe_result(A, Outcome.CONNECT_ERROR, r), r, r + 0.01, random.Random(3))
    assert done.hedged == [B] and s[B].hedge_at == pytest.approx(r + 0.01 + NEWS_SETTLE_S / 2)
    assert not s[B].hedge_due(r + 0.05) and s[B].hedge_due(r + 0.2)
    s[B].in_flight = False  # it answered after all: no hedge
    assert not s[B].hedge_due(r + 0.2)


def test_at_the_first_failure_of_a_run_a_sibling_whose_probe_is_out_is_hedged_once_for_that_probe() -> None:
    """Its probe may be lost: without a hedge it was confirmed only when that probe timed out (10 s),
    its sibling that much earlier, and the region passed through degraded (weight stepped, then drained)."""
    rounds, s, _ = two_per_resource()
    for t in (0.0, 15.0):
        run(rounds, A, Outcome.OK, t)
        run(rounds, B, Outcome.OK, t)
    s[B].in_flight, s[B].round = True, 30.0  # B's probe of the round 30 is out (healthy until now)
    done = rounds.finished(probe_result(A, Outcome.CONNECT_ERROR, 30.0), 30.0, 30.01, random.Random(3))
    assert done.hedged == [B] and s[B].hedge_due(30.2)
    s[B].hedge_at = None  # the hedge went out; B's probe is still out
    r = s[A].round
    assert rounds.finished(probe_result(A, Outcome.CONNECT_ERROR, r), r, r + 0.01, random.Random(4)).hedged == []  # once per probe


def test_while_a_deployment_is_confirmed_a_sibling_whose_probe_of_an_older_round_is_still_out_is_hedged() -> None:
    rounds, s, _ = two_per_resource()
    run(rounds, B, Outcome.OK, 0.0)
    assert run(rounds, A, Outcome.CONNECT_ERROR, 15.0) == [B]  # B pulled into A's round, not hedged: its probe was done
    s[B].in_flight = True  # B's probe of that round goes out and is lost
    r = s[A].round
    assert r > s[B].round
    done = rounds.finished(probe_result(A, Outcome.CONNECT_ERROR, r), r, r + 0.01, random.Random(4))
    assert done.hedged == [B] and s[B].hedge_due(r + 0.2)


def test_a_deployment_confirmed_down_hedges_no_healthy_sibling() -> None:
    """One deployment down alone keeps failing at every round; its healthy sibling's probe, out when the
    failure comes back fast, is not doubled every round."""
    rounds, s, _ = two_per_resource()
    for i in range(5):
        run(rounds, A, Outcome.CONNECT_ERROR, float(i))
    assert s[A].confirmed_down
    run(rounds, B, Outcome.OK, 10.0)
    s[B].in_flight, s[B].round = True, 20.0
    assert rounds.finished(probe_result(A, Outcome.CONNECT_ERROR, 30.0), 30.0, 30.01, random.Random(6)).hedged == []


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
