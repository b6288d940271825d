"""Guardrails: each policy on its own, then composed; previews. (The write budget: test_writebudget.)"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from controlplane.config import Settings
from controlplane.domain import Change, ChangeOrigin, Field, HealthStateName, Override, Plan, TargetState
from controlplane.engine.guardrails import (
    CooldownMemory,
    GuardrailContext,
    apply_cooldown,
    apply_guardrails,
    decide,
    describe_preview,
    fail_open,
    hold_uncorroborated_drains,
    keep_min_serving,
    limit_drain_fraction,
    project_overrides,
    ramp_weights,
    record_applied,
    refuse_unsafe_manual_drains,
    weigh_down_held_drains,
)
from controlplane.engine.health import HealthEvaluator
from controlplane.engine.planner import apply_to_states
from tests.fakes import at, endpoint_ids, make_settings, override, probe_result, region_health, target_state

NOW = at(1000)
REGIONS = ("eastus", "westeurope", "japaneast")


def health(default: str = "healthy", **states: str):
    return {r: region_health(r, states.get(r, default)) for r in REGIONS}


def _origin(manual: bool) -> ChangeOrigin:
    return ChangeOrigin.MANUAL if manual else ChangeOrigin.AUTOMATION


def drain(region: str, target: str = "tm-weighted", manual: bool = False) -> Change:
    return Change(
        target, region, f"aoai-{region}", Field.ENABLED, True, False, "unhealthy" if not manual else "drain by alice", _origin(manual)
    )


def restore(region: str, target: str = "tm-weighted") -> Change:
    return Change(target, region, f"aoai-{region}", Field.ENABLED, False, True, "healthy")


def weight(region: str, actual: int, desired: int, manual: bool = False) -> Change:
    return Change("tm-weighted", region, f"aoai-{region}", Field.WEIGHT, actual, desired, "degraded", _origin(manual))


def ctx(settings=None, actual=None, h=None, **kw) -> GuardrailContext:
    s = settings or make_settings()
    actual = actual if actual is not None else [target_state(s, t.name) for t in s.targets]
    return GuardrailContext(s, actual, h if h is not None else health(), kw.pop("now", NOW), **kw)


# ---------------------------------------------------------------- min_serving


def test_automation_never_drains_below_min_serving() -> None:
    s = make_settings(guardrails={"min_serving": 2, "max_drain_fraction": 1.0})
    c = ctx(s, h=health("unhealthy"))
    out = keep_min_serving(Plan((drain("eastus"), drain("westeurope"), drain("japaneast"))), c)
    assert len(out.changes) == 1
    assert {sk.rule for sk in out.skipped} == {"min_serving"}
    assert "min_serving is 2" in out.skipped[0].reason


def test_min_serving_drains_the_worst_region_first() -> None:
    s = make_settings(guardrails={"min_serving": 2, "max_drain_fraction": 1.0})
    h = {
        "eastus": region_health("eastus", "unhealthy", 0.3),
        "westeurope": region_health("westeurope", "unhealthy", 0.0),
        "japaneast": region_health("japaneast", "healthy"),
    }
    out = keep_min_serving(Plan((drain("eastus"), drain("westeurope"))), ctx(s, h=h))
    assert [c.region for c in out.changes] == ["westeurope"]


def test_min_serving_does_not_count_restores_that_may_still_fail() -> None:
    s = make_settings()
    actual = [target_state(s, "tm-weighted", enabled={"westeurope": False, "japaneast": False})]
    out = keep_min_serving(Plan((restore("westeurope"), drain("eastus"))), ctx(s, actual))
    assert [c.region for c in out.changes] == ["westeurope"]
    assert out.skipped[0].change.region == "eastus"


def test_an_operator_drain_that_breaks_min_serving_is_refused_with_the_reason() -> None:
    s = make_settings()
    actual = [target_state(s, "tm-weighted", enabled={"westeurope": False, "japaneast": False})]
    o = override("drain", "eastus")
    out = refuse_unsafe_manual_drains(Plan((drain("eastus", manual=True),)), ctx(s, actual, overrides=[o]))
    assert out.changes == ()
    (sk,) = out.skipped
    assert sk.rule == "min_serving"
    assert sk.reason.startswith("refused: draining eastus from tm-weighted would leave 0 of 3 endpoints serving (min_serving is 1)")
    assert "forced" in sk.reason


def test_a_forced_operator_drain_goes_through() -> None:
    s = make_settings()
    actual = [target_state(s, "tm-weighted", enabled={"westeurope": False, "japaneast": False})]
    o = override("drain", "eastus", forced=True)
    out = refuse_unsafe_manual_drains(Plan((drain("eastus", manual=True),)), ctx(s, actual, overrides=[o]))
    assert len(out.changes) == 1 and out.skipped == ()


# ---------------------------------------------------------------- drain fraction


def test_automation_drains_at_most_the_max_fraction() -> None:
    s = make_settings(guardrails={"max_drain_fraction": 0.5})
    out = limit_drain_fraction(Plan((drain("eastus"), drain("westeurope"))), ctx(s, h=health("unhealthy")))
    assert len(out.changes) == 1
    assert out.skipped[0].rule == "max_drain_fraction"
    assert "at most 1 of 3 endpoints of tm-weighted drained" in out.skipped[0].reason


def test_regions_drained_already_count_but_operator_drains_do_not() -> None:
    s = make_settings(guardrails={"max_drain_fraction": 0.5})
    actual = [target_state(s, "tm-weighted", enabled={"japaneast": False})]
    out = limit_drain_fraction(Plan((drain("eastus"),)), ctx(s, actual))
    assert out.changes == ()
    out = limit_drain_fraction(Plan((drain("eastus"),)), ctx(s, actual, overrides=[override("maintenance", "japaneast")]))
    assert len(out.changes) == 1


def test_operator_drains_are_not_limited_by_the_fraction() -> None:
    s = make_settings(guardrails={"max_drain_fraction": 0.0})
    out = limit_drain_fraction(Plan((drain("eastus", manual=True),)), ctx(s))
    assert len(out.changes) == 1


def test_an_unhealthy_region_that_may_not_be_drained_is_weighed_down_instead() -> None:
    s = make_settings(guardrails={"max_drain_fraction": 0.34})
    actual = [target_state(s, "tm-weighted", enabled={"eastus": False})]
    c = ctx(s, actual, h=health(eastus="unhealthy", japaneast="unhealthy"))
    out = weigh_down_held_drains(limit_drain_fraction(Plan((drain("japaneast"),)), c), c)
    (w,) = out.changes
    assert (w.region, w.field, w.actual, w.desired) == ("japaneast", Field.WEIGHT, 200, 1)
    assert w.reason.endswith("not drained (max_drain_fraction), so weighed down to the minimum instead")
    # not for an operator's region, nor a target whose weights regionguard does not manage
    c2 = ctx(s, actual, h=health(eastus="unhealthy", japaneast="unhealthy"), overrides=[override("pin", "japaneast", weight=300)])
    assert weigh_down_held_drains(limit_drain_fraction(Plan((drain("japaneast"),)), c2), c2).changes == ()
    p = make_settings(targets=("tm-priority",), guardrails={"max_drain_fraction": 0.0})
    cp = ctx(p, h=health(eastus="unhealthy"))
    held = limit_drain_fraction(Plan((drain("eastus", "tm-priority"),)), cp)
    assert weigh_down_held_drains(held, cp).changes == ()


# ---------------------------------------------------------------- ramp


def test_weight_changes_ramp_by_max_step_per_tick() -> None:
    s = make_settings(guardrails={"max_weight_step": 100})
    out = ramp_weights(Plan((weight("eastus", 500, 50), weight("westeurope", 300, 350))), ctx(s))
    assert [c.desired for c in out.changes] == [400, 350]
    assert "ramping by at most 100 per tick toward 50" in out.changes[0].reason


def test_hard_down_drains_at_once_and_manual_weights_are_not_ramped() -> None:
    s = make_settings(guardrails={"max_weight_step": 10})
    p = Plan((drain("eastus"), weight("westeurope", 300, 1, manual=True)))
    assert ramp_weights(p, ctx(s)).changes == p.changes


# ---------------------------------------------------------------- cooldown


def test_cooldown_holds_automated_changes_to_a_region_recently_changed() -> None:
    s = make_settings(guardrails={"cooldown": 60})
    memory = CooldownMemory()
    memory.record("tm-weighted", "eastus", at(970))
    out = apply_cooldown(Plan((weight("eastus", 500, 400), weight("westeurope", 300, 200))), ctx(s, cooldown=memory))
    assert [c.region for c in out.changes] == ["westeurope"]
    assert out.skipped[0].rule == "cooldown"
    assert "30 s ago; cooldown is 60 s" in out.skipped[0].reason
    later = apply_cooldown(Plan((weight("eastus", 500, 400),)), ctx(s, cooldown=memory, now=at(1030)))
    assert len(later.changes) == 1


def test_cooldown_never_keeps_traffic_on_an_unhealthy_region_or_holds_an_operator() -> None:
    memory = CooldownMemory()
    memory.record("tm-weighted", "eastus", at(999))
    p = Plan((drain("eastus"), weight("eastus", 500, 1, manual=True)))
    out = apply_cooldown(p, ctx(h=health(eastus="unhealthy"), cooldown=memory))
    assert out.changes == p.changes


# ---------------------------------------------------------------- fail open


def test_every_region_unhealthy_fails_open_with_a_panic() -> None:
    s = make_settings()
    actual = [target_state(s, "tm-weighted", enabled={"eastus": False}, weights={"westeurope": 30})]
    p = Plan((drain("westeurope"), drain("japaneast")))
    out = fail_open(p, ctx(s, actual, h=health("unhealthy")))
    after = apply_to_states(out, actual)["tm-weighted"]
    assert all(e.enabled for e in after.endpoints.values())
    assert {r: e.weight for r, e in after.endpoints.items()} == {"eastus": 500, "westeurope": 300, "japaneast": 200}
    assert len(out.panics) == 1 and out.panics[0].startswith("tm-weighted: every endpoint looks unhealthy")
    assert "the prober is the likelier fault" in out.panics[0]
    assert {sk.rule for sk in out.skipped} == {"fail_open"}
    assert {c.origin for c in out.changes} == {ChangeOrigin.FAIL_OPEN}


def test_fail_open_leaves_targets_with_a_healthy_region_alone() -> None:
    p = Plan((drain("eastus"),))
    out = fail_open(p, ctx(h=health("unhealthy", japaneast="degraded")))
    assert out == p


def test_fail_open_respects_operator_drains_and_freezes() -> None:
    s = make_settings()
    actual = [target_state(s, "tm-weighted", enabled={"eastus": False, "westeurope": False})]
    out = fail_open(Plan(()), ctx(s, actual, h=health("unhealthy"), overrides=[override("drain", "eastus")]))
    assert [(c.region, c.desired) for c in out.changes] == [("westeurope", True)]
    frozen = fail_open(Plan(()), ctx(s, actual, h=health("unhealthy"), overrides=[override("freeze")]))
    assert frozen.changes == () and "automation is frozen" in frozen.panics[0]


def test_with_fail_open_off_it_only_raises_the_alarm() -> None:
    s = make_settings(guardrails={"fail_open": False})
    out = fail_open(Plan((drain("eastus"),)), ctx(s, h=health("unhealthy")))
    assert out.changes == (drain("eastus"),)
    assert "fail_open is off" in out.panics[0]


# ---------------------------------------------------------------- memory


def test_record_applied_starts_cooldowns_for_automation_only() -> None:
    memory = CooldownMemory()
    record_applied(Plan((drain("eastus"), weight("westeurope", 1, 2, manual=True))), NOW, memory)
    assert memory.last_change("tm-weighted", "eastus") == NOW
    assert memory.last_change("tm-weighted", "westeurope") is None


# ---------------------------------------------------------------- composed


def test_decide_runs_strategy_planner_and_guardrails_in_one_go() -> None:
    s = make_settings(targets=("tm-weighted", "afd-prod"))
    actual = [target_state(s, "tm-weighted"), target_state(s, "afd-prod")]
    desired, guarded = decide(s, health(eastus="unhealthy"), actual, now=NOW)
    assert [d.target for d in desired] == ["tm-weighted", "afd-prod"]
    assert [(c.target, c.region, c.field.value, c.desired) for c in guarded.changes] == [
        ("tm-weighted", "eastus", "enabled", False),
        ("afd-prod", "eastus", "enabled", False),
    ]


def test_apply_guardrails_composes_the_policies_in_order() -> None:
    s = make_settings(guardrails={"max_weight_step": 100, "max_drain_fraction": 0.5})
    p = Plan((drain("eastus"), drain("westeurope"), weight("japaneast", 200, 20)))
    out = apply_guardrails(p, ctx(s, h=health("unhealthy", japaneast="degraded")))
    # westeurope may not be drained too (fraction): weighed down instead, ramped like any weight
    assert [(c.region, c.field.value, c.desired) for c in out.changes] == [
        ("eastus", "enabled", False),
        ("japaneast", "weight", 100),
        ("westeurope", "weight", 200),
    ]
    assert [sk.rule for sk in out.skipped] == ["max_drain_fraction"]


# ---------------------------------------------------------------- a region going down deployment by deployment


TWO = make_settings(targets=("tm-weighted",), endpoints_per_region=2)


def two_deployments_failing(gpt1: list[str], *, then: float = 0.0):
    """Health of TWO at 100 s (+ ``then``): eastus/gpt-0 refused 5 times in a row from 95 s (down),
    gpt-1's results from 95 s are ``gpt1``; every other endpoint answers."""
    ev = HealthEvaluator(TWO)
    for t in (80.0, 85.0, 90.0):
        for eid in endpoint_ids(TWO):
            ev.observe(probe_result(eid, "ok", t))
    for i in range(5):
        ev.observe(probe_result("eastus/gpt-0", "connect_error", 95.0 + i))
    for i, outcome in enumerate(gpt1):
        ev.observe(probe_result("eastus/gpt-1", outcome, 95.0 + i))
    for eid in endpoint_ids(TWO):
        if not eid.startswith("eastus/"):
            ev.observe(probe_result(eid, "ok", 99.0))
    return ev.evaluate(at(100.0 + then))


def test_a_region_whose_other_deployment_is_failing_too_is_not_weighed_down_while_it_is_confirmed() -> None:
    """gpt-0 is confirmed down, gpt-1 (same region) has failed 4 times in a row: one confirmation short. Today
    the region was degraded at score 0.5 and its weight stepped, drained a second later; now the step
    waits (bounded) for gpt-1's verdict."""
    h = two_deployments_failing(["connect_error"] * 4)
    assert h.region_state("eastus") is HealthStateName.DEGRADED
    _, plan = decide(TWO, h, [target_state(TWO, "tm-weighted")], now=h.at)
    assert [c for c in plan.changes if c.region == "eastus"] == []
    (held,) = plan.skipped
    assert (held.change.field, held.rule) == (Field.WEIGHT, "corroboration")  # looked at again confirm_gap later
    assert "gpt-1 failing too" in held.reason
    drained = two_deployments_failing(["connect_error"] * 5)  # its verdict: drained, in one step
    _, plan = decide(TWO, drained, [target_state(TWO, "tm-weighted")], now=drained.at)
    assert [(c.region, c.field, c.desired) for c in plan.changes] == [("eastus", Field.ENABLED, False)]


def test_a_fault_of_one_deployment_is_still_weighed_down_and_the_hold_is_bounded() -> None:
    answered = two_deployments_failing(["connect_error", "ok"])  # gpt-1 answers: gpt-0's own fault
    _, plan = decide(TWO, answered, [target_state(TWO, "tm-weighted")], now=answered.at)
    assert [(c.region, c.field) for c in plan.changes] == [("eastus", Field.WEIGHT)]
    throttled = two_deployments_failing(["throttled"] * 4)  # 429s are gpt-1's capacity, not the resource failing
    _, plan = decide(TWO, throttled, [target_state(TWO, "tm-weighted")], now=throttled.at)
    assert [(c.region, c.field) for c in plan.changes] == [("eastus", Field.WEIGHT)]
    limit = TWO.health.failures_to_down * TWO.probe.confirm_gap
    late = two_deployments_failing(["connect_error"] * 4, then=limit)  # gpt-0 down since 99 s: bound passed
    _, plan = decide(TWO, late, [target_state(TWO, "tm-weighted")], now=late.at)
    assert [(c.region, c.field) for c in plan.changes] == [("eastus", Field.WEIGHT)]


# ---------------------------------------------------------------- previews


def preview_of(s: Settings, o: Override, actual: list[TargetState], h: Any) -> tuple[Plan, list[str]]:
    """The plan an added override causes, and the refusals: through the one projection."""
    proj = project_overrides(s, h, actual, [], [o], o.created_at)
    return proj.caused, list(proj.refusals)


def test_preview_of_a_drain_says_what_changes_and_how_many_stay_serving() -> None:
    s = make_settings(targets=("tm-weighted", "afd-prod"))
    actual = [target_state(s, "tm-weighted"), target_state(s, "afd-prod")]
    o = override("drain", "eastus", created=1000)
    p, refusals = preview_of(s, o, actual, health())
    assert refusals == []
    assert [(c.target, c.region, c.manual) for c in p.changes] == [("tm-weighted", "eastus", True), ("afd-prod", "eastus", True)]
    assert (
        describe_preview(s, o, p, refusals, actual) == "This will disable eastus in tm-weighted and afd-prod; 2 of 3 stay serving in each."
    )


def test_preview_refuses_a_drain_that_breaks_min_serving() -> None:
    s = make_settings()
    actual = [target_state(s, "tm-weighted", enabled={"westeurope": False, "japaneast": False})]
    o = override("drain", "eastus", created=1000)
    p, refusals = preview_of(s, o, actual, health())
    assert [(c.region, c.desired) for c in p.changes] == [("eastus", False)]  # what it would do, if forced
    assert len(refusals) == 1 and "would leave 0 of 3 endpoints serving" in refusals[0]
    text = describe_preview(s, o, p, refusals, actual)
    assert text == (
        "This will disable eastus in tm-weighted; 0 of 3 stay serving. Refused: draining eastus from tm-weighted would leave "
        "0 of 3 endpoints serving (min_serving is 1); only a forced override (admin role) may do that."
    )


def test_preview_ignores_what_automation_would_do_anyway() -> None:
    s = make_settings()
    actual = [target_state(s, "tm-weighted")]
    o = override("pin", "japaneast", weight=50, created=1000)
    p, refusals = preview_of(s, o, actual, health(eastus="unhealthy"))
    assert [(c.region, c.field, c.desired) for c in p.changes] == [("japaneast", Field.WEIGHT, 50)]
    assert "set japaneast's weight to 50 (now 200) in tm-weighted" in describe_preview(s, o, p, refusals, actual)


def test_preview_of_a_region_already_out_and_of_a_freeze() -> None:
    s = make_settings()
    actual = [target_state(s, "tm-weighted", enabled={"eastus": False})]
    o = override("drain", "eastus", created=1000)
    p, refusals = preview_of(s, o, actual, health(eastus="unhealthy"))
    assert p.changes == () and refusals == []
    assert describe_preview(s, o, p, refusals, actual).startswith("No change to Azure now: eastus is already as this drain wants")
    f = override("freeze", target="tm-weighted", created=1000)
    assert describe_preview(s, f, *preview_of(s, f, actual, health()), actual).startswith("This will freeze automation for tm-weighted")


def test_guardrail_context_reads_health_from_a_report_too() -> None:
    from controlplane.engine.health import HealthEvaluator

    s = make_settings()
    c = ctx(s, h=HealthEvaluator(s).evaluate(NOW))
    assert c.region_state("eastus") is HealthStateName.UNKNOWN


# ---------------------------------------------------------------- corroboration


def report(last_ok: dict[str, float], failing: dict[str, float], down_now: set[str], **states: str) -> SimpleNamespace:
    """A health report with the corroboration fields (seconds after EPOCH)."""
    return SimpleNamespace(
        regions=health(**states),
        last_ok={r: at(t) for r, t in last_ok.items()},
        failing_since={r: at(t) for r, t in failing.items()},
        down_now=frozenset(down_now),
    )


def test_a_drain_waits_until_another_region_answered_since_it_began_failing() -> None:
    h = report({"eastus": 990, "westeurope": 995, "japaneast": 996}, {"eastus": 997}, {"eastus"}, eastus="unhealthy")
    out = hold_uncorroborated_drains(Plan((drain("eastus"),)), ctx(h=h))
    assert out.changes == () and out.skipped[0].rule == "corroboration"
    assert "no other region of tm-weighted has answered since eastus began failing" in out.skipped[0].reason
    h.last_ok["japaneast"] = at(999)  # a neighbour answers: it is eastus, not the prober
    assert hold_uncorroborated_drains(Plan((drain("eastus"),)), ctx(h=h)).changes == (drain("eastus"),)


def test_the_wait_is_bounded_and_a_recovering_region_is_not_drained() -> None:
    h = report({"westeurope": 900}, {"eastus": 950}, {"eastus"}, eastus="unhealthy")
    assert hold_uncorroborated_drains(Plan((drain("eastus"),)), ctx(h=h)).changes == (drain("eastus"),)  # 50 s: gone ahead
    recovering = report({"westeurope": 999}, {}, set(), eastus="unhealthy")
    out = hold_uncorroborated_drains(Plan((drain("eastus"),)), ctx(h=recovering))
    assert out.changes == () and out.skipped[0].rule == "recovering"
    manual = hold_uncorroborated_drains(Plan((drain("eastus", manual=True),)), ctx(h=report({}, {"eastus": 999}, {"eastus"})))
    assert len(manual.changes) == 1  # operators are never held by it
