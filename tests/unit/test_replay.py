"""Replay: the whole engine in simulated time -- the acceptance figures of the decision engine."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from controlplane.domain import Outcome
from controlplane.replay import (
    DEFAULT_START,
    ReplayResult,
    TimelineError,
    Trace,
    builtin_scenarios,
    load_timeline,
    resolve_timeline,
    run_replay,
)
from controlplane.replay.report import summarize
from tests.fakes import endpoint_ids, make_settings, probe_result

# the default-ish config: 3 regions, probe every 15 s (1 s apart while undecided), K = 5, reconcile every 10 s
S = make_settings(targets=("tm-weighted", "afd-prod"))
K, FAST, TICK, INTERVAL = S.health.failures_to_down, S.probe.fast_interval, S.reconcile.interval, S.probe.interval
JITTER = 1 + S.probe.jitter


def timeline(*events: dict, duration: str = "3600s", seed: int = 7, **extra) -> dict:
    return {"duration": duration, "seed": seed, "noise": {"loss": 0.02, "jitter_ms": 40}, "events": list(events), **extra}


def event_summary(result, index: int = 0) -> dict:
    return result.summary["events"][index]


@pytest.mark.parametrize("seed", [7, 11, 23])
def test_an_hour_of_two_percent_probe_loss_and_no_fault_changes_nothing(seed: int) -> None:
    r = run_replay(S, timeline(seed=seed))
    assert r.changes == []
    assert r.panics == []
    assert r.summary["probes"] > 3 * 3600 / INTERVAL  # lost probes were re-probed at the fast interval
    assert r.summary["min_serving"] == {"tm-weighted": 3, "afd-prod": 3}


def test_a_hard_down_is_drained_within_fast_interval_times_k_plus_one_tick() -> None:
    r = run_replay(S, timeline({"at": "600s", "region": "eastus", "fault": "down"}, duration="1200s"))
    ev = event_summary(r)
    assert ev["first_seen_s"] is not None and ev["first_seen_s"] <= INTERVAL * JITTER
    assert ev["detect_to_change_s"] <= FAST * K + TICK
    drains = [c for c in r.changes if c["field"] == "enabled" and c["to"] is False]
    assert {(c["target"], c["region"]) for c in drains} == {("tm-weighted", "eastus"), ("afd-prod", "eastus")}
    assert all(c["reason"].startswith(f"unhealthy: {K} consecutive") and "connect error" in c["reason"] for c in drains)
    assert r.summary["false_changes"] == 0


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_a_hard_down_is_drained_in_time_whatever_the_probe_phase(seed: int) -> None:
    r = run_replay(S, timeline({"at": "617s", "region": "westeurope", "fault": "down"}, duration="900s", seed=seed))
    assert event_summary(r)["detect_to_change_s"] <= FAST * K + TICK


def test_a_ten_times_ttft_brownout_is_acted_on_within_60_seconds_of_the_fault() -> None:
    r = run_replay(S, timeline({"at": "900s", "region": "westeurope", "fault": "slow", "multiplier": 10}, duration="1500s"))
    ev = event_summary(r)
    assert ev["first_change_s"] is not None and ev["first_change_s"] <= 60
    first = next(c for c in r.changes if c["region"] == "westeurope")
    assert first["field"] == "weight" and first["to"] < first["from"]
    assert first["reason"].startswith("degraded")
    assert not any(c["field"] == "enabled" for c in r.changes)  # serving but bad: weighed down, not drained


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_a_seventy_percent_throttle_is_acted_on_within_60_seconds_of_being_seen(seed: int) -> None:
    r = run_replay(
        S,
        timeline({"at": "900s", "region": "japaneast", "fault": "throttle", "rate": 0.7, "retry_after_s": 12}, duration="1500s", seed=seed),
    )
    ev = event_summary(r)
    assert ev["detect_to_change_s"] is not None and ev["detect_to_change_s"] <= 60
    assert any("throttled: " in c["reason"] and " 429 (serves about " in c["reason"] for c in r.changes)


def test_a_fault_seen_by_one_of_three_vantages_changes_nothing() -> None:
    tl = timeline(
        {"at": "600s", "region": "eastus", "fault": "down", "vantages": ["eu"]},
        {"at": "1800s", "region": "eastus", "fault": "none"},
        vantages=["eu", "us", "asia"],
    )
    r = run_replay(S, tl)
    assert r.changes == []
    seen_by_eu = [t for t in r.transitions if t["vantage"] == "eu" and t["new"] == "unhealthy"]
    assert seen_by_eu and all(t["key"] == "eastus/gpt-4o" for t in seen_by_eu)
    assert not [t for t in r.transitions if t["vantage"] is None and t["new"] == "unhealthy"]


def test_two_of_three_vantages_seeing_it_is_enough() -> None:
    tl = timeline(
        {"at": "600s", "region": "eastus", "fault": "down", "vantages": ["eu", "us"]}, duration="900s", vantages=["eu", "us", "asia"]
    )
    r = run_replay(S, tl)
    assert {(c["target"], c["region"], c["to"]) for c in r.changes} == {("tm-weighted", "eastus", False), ("afd-prod", "eastus", False)}


def test_a_region_is_restored_once_after_it_recovers_without_flapping() -> None:
    tl = timeline(
        {"at": "600s", "region": "eastus", "fault": "down"}, {"at": "1200s", "region": "eastus", "fault": "none"}, duration="2400s"
    )
    r = run_replay(S, tl)
    eastus = [(c["target"], c["to"]) for c in r.changes if c["region"] == "eastus" and c["field"] == "enabled"]
    assert eastus == [("tm-weighted", False), ("afd-prod", False), ("tm-weighted", True), ("afd-prod", True)]
    drained_at = next(c["at"] for c in r.changes if c["region"] == "eastus" and c["field"] == "enabled")
    # the first failures may weigh it down (two failures and an earlier lost probe: degraded) before K drain it
    weights = [c for c in r.changes if c["region"] == "eastus" and c["field"] == "weight" and c["at"] < drained_at]
    assert all(c["to"] < c["from"] and c["at"] >= 600 for c in weights)
    recovery = event_summary(r, 1)
    assert (
        recovery["first_change_s"] is not None and recovery["first_change_s"] >= S.health.min_dwell - INTERVAL
    )  # the dwell counts from the last failure
    assert r.summary["flaps"] == 0 and r.summary["false_changes"] == 0
    assert r.final["tm-weighted"]["eastus"]["enabled"] is True and r.final["tm-weighted"]["eastus"]["weight"] == 500


def test_when_every_region_fails_it_fails_open_and_says_so() -> None:
    tl = timeline({"at": "300s", "fault": "down"}, {"at": "900s", "fault": "none"}, duration="1500s")
    r = run_replay(S, tl)
    # a drain waits for another region to answer since this one began failing: none does, none is drained
    assert [c for c in r.changes if c["field"] == "enabled" and c["to"] is False] == []
    assert r.summary["min_serving"]["tm-weighted"] == 3
    assert r.panics and r.panics[0]["reason"].startswith(
        ("tm-weighted: every endpoint looks unhealthy", "afd-prod: every endpoint looks unhealthy")
    )
    assert all(p["until"] is not None for p in r.panics)
    assert all(all(ep["enabled"] for ep in t.values()) for t in r.final.values())


def test_a_timeline_override_is_applied_as_a_manual_change() -> None:
    tl = timeline(
        duration="900s", overrides=[{"at": "300s", "kind": "drain", "region": "japaneast", "for": "5m", "who": "bob", "why": "maintenance"}]
    )
    r = run_replay(S, tl)
    manual = [c for c in r.changes if c["manual"]]
    assert [(c["at"], c["region"], c["to"]) for c in manual if c["target"] == "tm-weighted"] == [(300.0, "japaneast", False)]
    assert manual[0]["reason"] == "drain japaneast in all targets by bob: maintenance"
    assert r.final["tm-weighted"]["japaneast"]["enabled"] is True  # lifted after 5 min, restored by automation
    assert r.summary["false_changes"] == 0


def test_the_same_seed_gives_the_same_replay() -> None:
    tl = timeline({"at": "600s", "region": "eastus", "fault": "error", "rate": 0.5}, duration="1800s")
    a, b = run_replay(S, tl), run_replay(S, tl)
    assert a.to_dict() == b.to_dict()
    c = run_replay(S, {**tl, "seed": 8})
    assert c.to_dict() != a.to_dict()


def test_output_as_json_and_text() -> None:
    r = run_replay(S, timeline({"at": "600s", "region": "eastus", "fault": "down"}, duration="1200s"))
    data = json.loads(json.dumps(r.to_dict()))
    assert set(data) >= {"transitions", "changes", "panics", "summary"}
    change = data["changes"][0]
    assert set(change) >= {"at", "target", "endpoint", "field", "from", "to", "reason"}
    assert set(data["summary"]) >= {"events", "false_changes", "flaps", "min_serving"}
    assert set(data["summary"]["events"][0]) >= {"first_transition_s", "first_change_s"}
    text = r.to_text()
    assert "tm-weighted/aoai-eastus (eastus) enabled True -> False" in text
    assert "eastus down: seen after" in text


def test_recorded_results_can_be_replayed_against_a_new_config() -> None:
    eids = endpoint_ids(S)
    results = [probe_result(e, "ok", t) for t in range(0, 600, 30) for e in eids]
    results += [probe_result(e, "ok", t) for t in range(600, 690, 15) for e in eids if not e.startswith("eastus/")]
    results += [probe_result("eastus/gpt-4o", "timeout", 600 + 5 * i) for i in range(7)]
    r = run_replay(S, results=results)
    assert [(c["target"], c["region"], c["to"]) for c in r.changes] == [("tm-weighted", "eastus", False), ("afd-prod", "eastus", False)]
    stricter = make_settings(targets=("tm-weighted", "afd-prod"), health={"failures_to_down": 8, "decision_odds": 1e9})
    assert run_replay(stricter, results=results).changes == []


def test_a_fault_on_one_deployment_weighs_its_region_down_without_draining_it() -> None:
    s = make_settings(targets=("tm-weighted",), endpoints_per_region=2)
    r = run_replay(s, timeline({"at": "300s", "region": "eastus", "deployment": "gpt-1", "fault": "down"}, duration="900s"))
    assert [(c["region"], c["field"], c["to"]) for c in r.changes] == [("eastus", "weight", 250)]
    assert re.search(r"gpt-1: \d+ consecutive connect errors", r.changes[0]["reason"])  # as many as the tick had seen


def test_a_region_whose_deployments_go_down_and_come_back_together_is_drained_and_restored_without_a_weight_step() -> None:
    """Both deployments of one resource fail and recover together, with the default jitter: they are
    probed in one round (one jitter draw per resource and round), a failure the resource shares on one
    pulls the other into its round, so both reach failures_to_down in the same moment. With a jitter
    draw per deployment their LLM probes drifted a phase apart and 47 seeds in 50 halved the region's
    weight on the way down or back (one deployment confirmed, its sibling not yet: degraded at 0.5)."""
    s = make_settings(targets=("tm-weighted",), endpoints_per_region=2)
    assert s.probe.jitter == 0.1
    for seed in range(20):
        events = [{"at": "120s", "region": "eastus", "fault": "down"}, {"at": "180s", "region": "eastus", "fault": "none"}]
        r = run_replay(s, timeline(*events, duration="300s", seed=seed, noise={"loss": 0.0, "jitter_ms": 40}))
        assert [(c["field"], c["to"]) for c in r.changes] == [("enabled", False), ("enabled", True)], (seed, r.changes)


def test_a_region_down_while_one_deployments_probe_hangs_is_drained_in_one_step() -> None:
    """A region-wide hard down that finds one deployment's probe hung (lost: it ends only at the 10 s
    timeout) while its sibling's comes back refused. The hung one was confirmed only when that probe
    ended, its sibling up to 10 s earlier: the region passed through degraded, its weight stepped, then
    drained (26 of 200 seeded runs of bench/decisions.py's two-deployment hard down, 9 s apart in half of
    them). Its sibling's first failure hedges it, and its confirmations go on while its probe is out."""
    s = make_settings(targets=("tm-weighted",), endpoints_per_region=2, probe={"jitter": 0.0})
    assert s.probe.interval == 15 and s.probe.timeout == 10  # a round at 120 s; gpt-1's probe of it hangs
    events = [
        {"at": "119.9s", "region": "eastus", "deployment": "gpt-0", "fault": "down"},
        {"at": "119.9s", "region": "eastus", "deployment": "gpt-1", "fault": "hang"},
        {"at": "120.05s", "region": "eastus", "fault": "down"},
    ]
    r = run_replay(s, timeline(*events, duration="300s", seed=1, noise={"loss": 0.0, "jitter_ms": 0}))
    assert [(c["region"], c["field"], c["to"]) for c in r.changes] == [("eastus", "enabled", False)], r.changes
    assert r.changes[0]["at"] <= 120 + K * S.probe.confirm_gap + 1


def test_run_replay_wants_a_timeline_or_results() -> None:
    with pytest.raises(ValueError):
        run_replay(S)
    with pytest.raises(ValueError):
        run_replay(S, timeline(), results=[])


# ---------------------------------------------------------------- timeline validation


def test_a_bad_timeline_names_every_bad_field() -> None:
    bad = {
        "duration": "an hour",
        "seed": "x",
        "colour": "blue",
        "noise": {"loss": 2},
        "events": [
            {"at": "10s", "region": "eastus", "fault": "throttle", "rate": 1.5},
            {"at": "soon", "region": "eastus", "fault": "down"},
            {"at": "20s", "region": "eastus", "fault": "meteor"},
        ],
        "overrides": [{"at": "1s", "kind": "nap"}],
    }
    with pytest.raises(TimelineError) as info:
        load_timeline(bad)
    problems = info.value.problems
    for prefix in (
        "colour: unknown key",
        "duration:",
        "seed:",
        "noise.loss:",
        "events[0].rate:",
        "events[1].at:",
        "events[2].fault:",
        "overrides[0].kind:",
    ):
        assert any(p.startswith(prefix) for p in problems), (prefix, problems)


def test_a_timeline_is_checked_against_the_config() -> None:
    tl = timeline(
        {"at": "10s", "region": "eastus2", "fault": "down"},
        {"at": "10s", "region": "eastus", "deployment": "gpt-5", "fault": "down"},
        {"at": "10s", "region": "eastus", "fault": "down", "vantages": ["mars"]},
        {"at": "9999s", "region": "$7", "fault": "down"},
        duration="100s",
    )
    with pytest.raises(TimelineError) as info:
        run_replay(S, tl)
    text = "\n".join(info.value.problems)
    assert "events[0].region: no region named 'eastus2'" in text
    assert "events[1].deployment: eastus has no endpoint or deployment named 'gpt-5'" in text
    assert "events[2].vantages: 'mars' is not one of the timeline's vantages" in text
    assert "events[3].region: $7 but the config has 3 region(s)" in text
    assert "events[3].at: 9999s is after the end" in text


def test_a_timeline_file_that_is_not_yaml_or_missing_says_so(tmp_path: Path) -> None:
    broken = tmp_path / "t.yaml"
    broken.write_text("duration: [1,\n")
    with pytest.raises(TimelineError, match="not valid YAML"):
        load_timeline(broken)
    with pytest.raises(TimelineError, match="cannot read"):
        load_timeline(tmp_path / "missing.yaml")


def test_an_unknown_scenario_name_lists_the_builtin_ones() -> None:
    with pytest.raises(TimelineError, match=r"no built-in scenario or file named 'outage'.*region-outage"):
        run_replay(S, "outage")


def test_dollar_regions_resolve_to_the_config_order() -> None:
    tl = load_timeline({"duration": "60s", "events": [{"at": "1s", "region": "$2", "fault": "down"}]}, S)
    assert tl.events[0].region == "westeurope"


# ---------------------------------------------------------------- built-in scenarios

DEMO_LIKE = make_settings(
    targets=("tm-weighted", "tm-priority", "afd-prod"),
    endpoints_per_region=2,
    probe={"interval": "5s", "fast_interval": "1s", "timeout": "5s"},
    health={"min_dwell": "10s", "flap_half_life": "30s", "flap_stable": "20s", "flap_max_hold": "2m", "throttled_to_down": 8},
    reconcile={"interval": "2s"},
    guardrails={"cooldown": "10s"},
    target_options={"failback_dwell": "20s"},
)


def test_the_builtin_scenarios_are_all_there_and_valid() -> None:
    names = builtin_scenarios()
    assert {"region-outage", "brownout", "quota-exhaustion", "flapping", "partition", "tour"} <= set(names)
    for name in names:
        tl = resolve_timeline(name, DEMO_LIKE)
        assert tl.name == name and tl.duration_s > 0 and tl.events


def test_region_outage_scenario_drains_then_restores_the_first_region_everywhere() -> None:
    r = run_replay(DEMO_LIKE, "region-outage")
    drains = {c["target"] for c in r.changes if c["region"] == "eastus" and c["field"] == "enabled" and c["to"] is False}
    restores = {c["target"] for c in r.changes if c["region"] == "eastus" and c["field"] == "enabled" and c["to"] is True}
    assert drains == restores == {"tm-weighted", "tm-priority", "afd-prod"}
    assert not [c for c in r.changes if c["at"] < 15]
    assert event_summary(r)["first_change_s"] <= 20
    assert r.summary["flaps"] == 0


def test_partition_scenario_changes_nothing() -> None:
    r = run_replay(DEMO_LIKE, "partition")
    assert r.changes == []
    assert any(t["vantage"] == "eu" for t in r.transitions)


def test_quota_exhaustion_scenario_weighs_down_then_drains_the_third_region() -> None:
    r = run_replay(DEMO_LIKE, "quota-exhaustion")
    japan = [c for c in r.changes if c["region"] == "japaneast" and c["target"] == "tm-weighted"]
    assert japan[0]["field"] == "weight" and japan[0]["to"] < japan[0]["from"]
    assert any(c["field"] == "enabled" and c["to"] is False for c in japan)
    assert r.final["tm-weighted"]["japaneast"]["enabled"] is True


def test_flapping_scenario_is_damped() -> None:
    r = run_replay(DEMO_LIKE, "flapping")
    restores = [c for c in r.changes if c["target"] == "tm-priority" and c["field"] == "enabled" and c["to"] is True]
    assert len(restores) == 1  # the priority target fails back once, after it is stable
    drains = [c for c in r.changes if c["target"] == "tm-weighted" and c["field"] == "enabled" and c["to"] is False]
    assert len(drains) < 4  # four outages, fewer drains: flap damping holds it out
    assert r.final["tm-weighted"]["eastus"]["enabled"] is True


def test_recorded_outcomes_drive_replay_the_same_as_live_ones() -> None:
    # a config problem everywhere is an alert, never a drain
    eids = endpoint_ids(S)
    results = [probe_result(e, Outcome.AUTH_ERROR, t) for t in range(0, 600, 30) for e in eids]
    r = run_replay(S, results=results)
    assert r.changes == [] and r.panics == []


def scored(tl: dict, *changes: tuple[float, str, str, object, object]) -> ReplayResult:
    """The report of a run that made ``changes`` (at, region, field, from, to) in tm-weighted: scoring alone."""
    timeline_ = load_timeline(tl, S)
    trace = Trace(S)
    trace.changes = [
        {
            "at": at,
            "target": "tm-weighted",
            "region": region,
            "endpoint": f"aoai-{region}",
            "field": field,
            "from": a,
            "to": b,
            "reason": "test",
            "manual": False,
        }
        for at, region, field, a, b in changes
    ]
    result = ReplayResult(start=DEFAULT_START, duration_s=timeline_.duration_s, seed=0, vantages=["local"], changes=trace.changes)
    result.summary = summarize(trace, timeline_, timeline_.duration_s)
    return result


def test_a_fault_that_ends_before_its_change_is_still_credited_with_it() -> None:
    # a 25 s brownout, over before the tick that weighs the region down: the summary must not say
    # "first change after never" while it lists that change
    tl = timeline(
        {"at": "600s", "region": "westeurope", "fault": "slow", "multiplier": 10},
        {"at": "625s", "region": "westeurope", "fault": "none"},
        duration="1200s",
    )
    r = scored(tl, (630.0, "westeurope", "weight", 300, 264), (730.0, "westeurope", "weight", 264, 300))
    brownout, back = event_summary(r, 0), event_summary(r, 1)
    assert brownout["first_change_s"] == 30.0
    assert back["first_change_s"] == 105.0
    assert "first change after never" not in r.to_text()


def test_the_text_says_why_an_event_has_no_change_of_its_own() -> None:
    tl = timeline(
        {"at": "600s", "region": "eastus", "fault": "throttle", "rate": 0.05},
        {"at": "700s", "region": "eastus", "fault": "down"},
        duration="1200s",
    )
    r = scored(tl, (720.0, "eastus", "enabled", True, False))
    throttle, down = event_summary(r, 0), event_summary(r, 1)
    assert (throttle["first_change_s"], down["first_change_s"]) == (None, 20.0)
    assert "no change before the next eastus fault at +0:11:40" in r.to_text()
    quiet = scored(timeline({"at": "600s", "region": "eastus", "fault": "down"}, duration="1200s"))
    assert "no change attributed to it" in quiet.to_text() and "first change after never" not in quiet.to_text()
