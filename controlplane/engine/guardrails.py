"""Guardrails: small ``Plan -> Plan`` policies that keep automation from making
an outage worse. Each is a function ``(plan, ctx) -> plan`` tested on its own;
:func:`apply_guardrails` runs them in order. A change a policy holds back
becomes a :class:`~controlplane.domain.Skipped` naming the rule and why.

Order (:data:`POLICIES`):

1. ``refuse_unsafe_manual_drains`` -- an operator drain that would leave a
   target with fewer than ``min_serving`` enabled endpoints is refused unless
   its override is ``forced``; the refusal says why.
1b. ``hold_uncorroborated_drains`` -- an automated drain waits (bounded)
   until another region of the target has answered since the drained one
   began failing, so when every region fails at once none is drained on
   the way to ``fail_open``.
1c. ``hold_half_down_steps`` -- a region with one deployment confirmed down
   while its others are failing too, not judged yet, is not weighed down:
   the step waits (bounded) for their verdicts, so a region-wide fault
   drains it in one step.
2. ``keep_min_serving`` -- automation never takes a target below
   ``min_serving`` enabled endpoints (worst-scored drains go first).
3. ``limit_drain_fraction`` -- automation keeps at most
   ``floor(max_drain_fraction x endpoints)`` of a target disabled (regions an
   operator drained do not count against it).
4. ``weigh_down_held_drains`` -- an unhealthy region that rule 2 or 3 kept
   enabled gets the minimum weight instead (weighted targets), so it takes
   as little traffic as the rules allow.
5. ``ramp_weights`` -- an automated weight change moves at most
   ``max_weight_step`` per tick (a hard down is an ``enabled`` change and
   drains at once).
6. ``apply_cooldown`` -- no automated change to a (target, region) within
   ``cooldown`` of the last one; a change taking traffic away from an
   unhealthy region is never held (that would keep traffic on a dead region).
7. ``fail_open`` -- every region of a target unhealthy: automation keeps or
   restores all at baseline and raises a panic (the prober is the likelier
   fault). Operator overrides and freezes are still respected.

The Azure write budget is not a policy here: it is spent per subscription,
one token per endpoint write, by the reconciler after these policies
(:mod:`controlplane.engine.writebudget`).

Serving counts are conservative: enabled now, minus every drain in the plan,
ignoring restores (a restore may still be held or fail), so whatever later
policies drop, a target never ends below ``min_serving`` by automation.

Manual changes (``Change.manual``) skip cooldown, ramp and drain fraction.
Guardrails never write cooldown memory: call :func:`record_applied` with
what was actually written.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from controlplane.config import WEIGHT_QUANTUM, WEIGHT_RANGE, Settings, Target, azure_name
from controlplane.domain import (
    Change,
    ChangeOrigin,
    EndpointSetting,
    Field,
    HealthStateName,
    Override,
    OverrideKind,
    Plan,
    Skipped,
    TargetState,
)
from controlplane.engine.planner import apply_to_states, managed_fields, plan
from controlplane.engine.strategy import StrategyMemory, active_overrides, desired_states, frozen_by

log = logging.getLogger(__name__)

H = HealthStateName
FAIL_OPEN_REASON = "fail open"  # reasons of fail-open restores start with this (their origin is ChangeOrigin.FAIL_OPEN)
_HOLDING_KINDS = (OverrideKind.DRAIN, OverrideKind.MAINTENANCE, OverrideKind.FAILOVER, OverrideKind.PIN)


# ---------------------------------------------------------------- memory


@dataclass
class CooldownMemory:
    """When automation last changed each (target, region)."""

    last: dict[tuple[str, str], datetime] = field(default_factory=dict)

    def last_change(self, target: str, region: str) -> datetime | None:
        return self.last.get((target, region))

    def record(self, target: str, region: str, at: datetime) -> None:
        self.last[(target, region)] = at


# ---------------------------------------------------------------- context


@dataclass
class GuardrailContext:
    settings: Settings
    actual: dict[str, TargetState]
    health: Any  # HealthReport, or a dict region -> RegionHealth, or None
    now: datetime
    cooldown: CooldownMemory = field(default_factory=CooldownMemory)
    overrides: Sequence[Override] = ()
    fail_open: bool | None = None  # None = settings.guardrails.fail_open

    def __post_init__(self) -> None:
        if not isinstance(self.actual, Mapping):
            self.actual = {a.target: a for a in self.actual}

    # -- helpers shared by the policies
    def region_state(self, region: str) -> HealthStateName:
        rh = self._rh(region)
        return rh.state if rh else H.UNKNOWN

    def region_score(self, region: str) -> float:
        rh = self._rh(region)
        return rh.score if rh else 1.0

    def region_reason(self, region: str) -> str:
        rh = self._rh(region)
        return "; ".join(rh.reasons) if rh and rh.reasons else self.region_state(region).value

    def _rh(self, region: str) -> Any:
        if self.health is None:
            return None
        regions = self.health.regions if hasattr(self.health, "regions") else self.health
        return regions.get(region)

    def min_serving(self, target: str) -> int:
        return self.settings.min_serving(self.settings.target(target))

    def enabled_now(self, target: str) -> dict[str, bool]:
        t = self.settings.target(target)
        state = self.actual.get(target)
        if state is None:
            return {}
        return {r: state.endpoints[r].enabled for r in t.endpoints if r in state.endpoints}

    def held_by_operator(self, target: str) -> set[str]:
        """Regions an active drain/maintenance/failover/pin override decides in ``target``."""
        t = self.settings.target(target)
        out: set[str] = set()
        for o in active_overrides(self.overrides, target, self.now):
            if o.kind not in _HOLDING_KINDS:
                continue
            if o.kind is OverrideKind.FAILOVER:
                out |= set(t.endpoints)
            else:
                out |= {r for r in t.endpoints if o.applies_to(target, r)}
        return out

    def forced(self, target: str, region: str) -> bool:
        return any(
            o.forced and o.kind in _HOLDING_KINDS and (o.kind is OverrideKind.FAILOVER or o.applies_to(target, region))
            for o in active_overrides(self.overrides, target, self.now)
        )

    def target_order(self) -> dict[str, int]:
        return {t.name: i for i, t in enumerate(self.settings.targets)}


Policy = Callable[[Plan, GuardrailContext], Plan]


def _is_drain(c: Change) -> bool:
    return c.field is Field.ENABLED and c.desired is False


def _takes_traffic_away(c: Change) -> bool:
    if c.field is Field.ENABLED:
        return c.desired is False
    if c.field is Field.WEIGHT:
        return isinstance(c.desired, int) and isinstance(c.actual, int) and c.desired < c.actual
    return False


def _manual_enables(plan_: Plan, target: str) -> int:
    """Endpoints an operator's override enables in this same plan: they serve once it is applied.

    Only manual enables count: an automated enable may still be held by a
    later policy (cooldown, write budget), a manual one is what the operator
    asked for together with the drain (a failover enables one region and
    disables another in one plan).
    """
    return sum(
        1 for c in plan_.changes if c.target == target and c.manual and c.field is Field.ENABLED and c.desired is True and c.actual is False
    )


def _targets(plan_: Plan) -> list[str]:
    return list(dict.fromkeys(c.target for c in plan_.changes))


def _hold(plan_: Plan, held: dict[Change, tuple[str, str]]) -> Plan:
    if not held:
        return plan_
    keep = [c for c in plan_.changes if c not in held]
    skipped = [Skipped(c, rule, reason) for c, (rule, reason) in held.items()]
    return plan_.with_changes(keep, skipped)


# ---------------------------------------------------------------- policies


def refuse_unsafe_manual_drains(plan_: Plan, ctx: GuardrailContext) -> Plan:
    """An operator drain that breaks min_serving is refused unless forced."""
    held: dict[Change, tuple[str, str]] = {}
    for target in _targets(plan_):
        drains = [c for c in plan_.changes if c.target == target and c.manual and _is_drain(c)]
        if not drains:
            continue
        enabled = ctx.enabled_now(target)
        serving = sum(enabled.values()) + _manual_enables(plan_, target)
        total, minimum = len(enabled), ctx.min_serving(target)
        for c in drains:
            if ctx.forced(target, c.region):
                serving -= 1
                continue
            if serving - 1 >= minimum:
                serving -= 1
                continue
            held[c] = (
                "min_serving",
                f"refused: draining {c.region} from {target} would leave {serving - 1} of {total} endpoints serving "
                f"(min_serving is {minimum}); only a forced override (admin role) may do that",
            )
    return _hold(plan_, held)


def keep_min_serving(plan_: Plan, ctx: GuardrailContext) -> Plan:
    """Automation never leaves a target with fewer than min_serving enabled endpoints."""
    held: dict[Change, tuple[str, str]] = {}
    for target in _targets(plan_):
        mine = [c for c in plan_.changes if c.target == target and _is_drain(c)]
        auto = sorted((c for c in mine if not c.manual), key=lambda c: (ctx.region_score(c.region), c.region))
        if not auto:
            continue
        enabled = ctx.enabled_now(target)
        serving = sum(enabled.values()) - sum(1 for c in mine if c.manual) + _manual_enables(plan_, target)
        minimum = ctx.min_serving(target)
        for c in auto:
            if serving - 1 >= minimum:
                serving -= 1
            else:
                held[c] = (
                    "min_serving",
                    f"draining {c.region} would leave {target} with {serving - 1} of {len(enabled)} endpoints serving; "
                    f"min_serving is {minimum}",
                )
    return _hold(plan_, held)


def limit_drain_fraction(plan_: Plan, ctx: GuardrailContext) -> Plan:
    """Automation keeps at most max_drain_fraction of a target's endpoints disabled."""
    fraction = ctx.settings.guardrails.max_drain_fraction
    held: dict[Change, tuple[str, str]] = {}
    for target in _targets(plan_):
        auto = sorted(
            (c for c in plan_.changes if c.target == target and _is_drain(c) and not c.manual),
            key=lambda c: (ctx.region_score(c.region), c.region),
        )
        if not auto:
            continue
        enabled = ctx.enabled_now(target)
        total = len(ctx.settings.target(target).endpoints)
        allowed = math.floor(fraction * total + 1e-9)
        operator = ctx.held_by_operator(target)
        disabled = sum(1 for r, on in enabled.items() if not on and r not in operator)
        for c in auto:
            if disabled + 1 <= allowed:
                disabled += 1
            else:
                held[c] = (
                    "max_drain_fraction",
                    f"automation may keep at most {allowed} of {total} endpoints of {target} drained "
                    f"(max_drain_fraction {fraction:g}); {disabled} already are",
                )
    return _hold(plan_, held)


def weigh_down_held_drains(plan_: Plan, ctx: GuardrailContext) -> Plan:
    """An unhealthy region automation may not drain (min_serving, max_drain_fraction) gets the
    minimum weight instead, in targets whose weights regionguard manages."""
    planned = {(c.target, c.region) for c in plan_.changes if c.field is Field.WEIGHT}
    extra = []
    for sk in plan_.skipped:
        c = sk.change
        if sk.rule not in ("min_serving", "max_drain_fraction") or c.manual or not _is_drain(c) or (c.target, c.region) in planned:
            continue
        target = ctx.settings.target(c.target)
        actual = ctx.actual.get(c.target)
        have = actual.endpoints.get(c.region) if actual else None
        if Field.WEIGHT not in managed_fields(target) or have is None or have.weight is None or c.region in ctx.held_by_operator(c.target):
            continue
        floor = WEIGHT_RANGE[target.kind][0]
        if have.weight > floor:
            extra.append(
                replace(
                    c,
                    field=Field.WEIGHT,
                    actual=have.weight,
                    desired=floor,
                    reason=f"{c.reason}; not drained ({sk.rule}), so weighed down to the minimum instead",
                )
            )
            planned.add((c.target, c.region))
    return replace(plan_, changes=plan_.changes + tuple(extra)) if extra else plan_


def _step_for(ctx: GuardrailContext, target: str, step: int) -> int:
    """max_weight_step as a whole number of the kind's weight quantum (an APIM pool weight
    moves in tens), never less than one quantum, so every ramped weight is one it can hold."""
    try:
        quantum = WEIGHT_QUANTUM.get(ctx.settings.target(target).kind, 1)
    except KeyError:
        return step
    return max(quantum, step // quantum * quantum)


def ramp_weights(plan_: Plan, ctx: GuardrailContext) -> Plan:
    """Automated weight changes move at most max_weight_step per tick."""
    step = ctx.settings.guardrails.max_weight_step
    changes = []
    for c in plan_.changes:
        if (
            c.field is Field.WEIGHT
            and not c.manual
            and isinstance(c.actual, int)
            and isinstance(c.desired, int)
            and abs(c.desired - c.actual) > _step_for(ctx, c.target, step)
        ):
            kind_step = _step_for(ctx, c.target, step)
            nxt = c.actual + kind_step if c.desired > c.actual else c.actual - kind_step
            c = replace(c, desired=nxt, reason=f"{c.reason} (ramping by at most {step} per tick toward {c.desired})")
        changes.append(c)
    return replace(plan_, changes=tuple(changes))


def apply_cooldown(plan_: Plan, ctx: GuardrailContext) -> Plan:
    """No automated change to a region within cooldown of the last one (drains of unhealthy regions excepted)."""
    cooldown = ctx.settings.guardrails.cooldown
    held: dict[Change, tuple[str, str]] = {}
    for c in plan_.changes:
        if c.manual or cooldown <= 0:
            continue
        last = ctx.cooldown.last_change(c.target, c.region)
        if last is None:
            continue
        ago = (ctx.now - last).total_seconds()
        if ago >= cooldown:
            continue
        if _takes_traffic_away(c) and ctx.region_state(c.region) is H.UNHEALTHY:
            continue
        held[c] = ("cooldown", f"last automated change to {c.region} in {c.target} was {ago:.0f} s ago; cooldown is {cooldown:.0f} s")
    return _hold(plan_, held)


def fail_open(plan_: Plan, ctx: GuardrailContext) -> Plan:
    """Every region of a target unhealthy -> keep/restore all at baseline and raise a panic."""
    if ctx.health is None:
        return plan_
    enabled_flag = ctx.settings.guardrails.fail_open if ctx.fail_open is None else ctx.fail_open
    panics = list(plan_.panics)
    changes = list(plan_.changes)
    skipped: list[Skipped] = []
    for t in ctx.settings.targets:
        regions = list(t.endpoints)
        if not regions or any(ctx.region_state(r) is not H.UNHEALTHY for r in regions):
            continue
        why = "; ".join(f"{r}: {ctx.region_reason(r)}" for r in regions)
        freeze = frozen_by(ctx.overrides, t.name, ctx.now)
        if not enabled_flag:
            panics.append(
                f"{t.name}: every endpoint looks unhealthy ({why}); fail_open is off, min_serving still keeps {ctx.min_serving(t.name)} enabled"
            )
            continue
        if freeze is not None:
            panics.append(f"{t.name}: every endpoint looks unhealthy ({why}); automation is frozen ({freeze.describe()}), nothing restored")
            continue
        panics.append(
            f"{t.name}: every endpoint looks unhealthy ({why}); failing open: all kept enabled at baseline -- the prober is the likelier fault"
        )
        actual = ctx.actual.get(t.name)
        if actual is None:
            continue
        operator = ctx.held_by_operator(t.name)
        dropped = [c for c in changes if c.target == t.name and not c.manual]
        skipped += [Skipped(c, "fail_open", "every endpoint of the target looks unhealthy: failing open") for c in dropped]
        changes = [c for c in changes if c not in dropped]
        changes += _baseline_changes(t, actual, operator, f"{FAIL_OPEN_REASON}: every endpoint of {t.name} looks unhealthy")
    return Plan(changes=tuple(changes), skipped=plan_.skipped + tuple(skipped), panics=tuple(panics))


def _baseline_changes(target: Target, actual: TargetState, skip: set[str], reason: str) -> list[Change]:
    out = []
    fields = managed_fields(target)
    for region, ep in target.endpoints.items():
        have = actual.endpoints.get(region)
        if have is None or region in skip:
            continue
        base = EndpointSetting(weight=ep.weight, priority=ep.priority, enabled=True)
        for f in fields:
            d, a = base.get(f), have.get(f)
            if d is not None and d != a:
                out.append(Change(target.name, region, azure_name(target, region), f, a, d, reason, ChangeOrigin.FAIL_OPEN))
    return out


RECHECK_RULE = "corroboration"  # a drain held by this rule is looked at again soon, not at the next tick


def recheck_after(settings: Settings) -> float:
    """Seconds after which a tick that held a drain for corroboration runs again."""
    return min(settings.probe.confirm_gap, settings.probe.fast_interval)


def hold_uncorroborated_drains(plan_: Plan, ctx: GuardrailContext) -> Plan:
    """An automated drain waits until another region of the target has answered since the drained one
    began failing, and within the last half liveness interval (so an answer from just before a fault that
    hit every region does not count; another region's next check settles it within a few seconds) --
    within the last probe interval when liveness checks are off. When every region fails at once that never happens: they are all confirmed down in
    turn and ``fail_open`` keeps them all, instead of the first one confirmed being drained on the way.
    Bounded: after two liveness intervals (else probe intervals) and a probe timeout it goes ahead.
    A region that answers again (recovering, still in its dwell) is not drained either: after every
    region failed, the first to recover ends the fail-open and the others must not be drained then."""
    health = ctx.health
    last_ok = getattr(health, "last_ok", None)
    failing = getattr(health, "failing_since", None)
    down_now = getattr(health, "down_now", None)
    if not last_ok or failing is None:
        return plan_
    p = ctx.settings.probe
    limit = 2 * (p.liveness_interval or p.interval) + p.timeout
    held: dict[Change, tuple[str, str]] = {}
    for c in plan_.changes:
        if c.manual or not _is_drain(c):
            continue
        if down_now is not None and c.region not in down_now and ctx.region_state(c.region) is H.UNHEALTHY:
            held[c] = ("recovering", f"{c.region} is recovering (its down rule no longer holds): not drained on the way back")
            continue
        since = failing.get(c.region)
        if since is None:
            continue
        rh = ctx._rh(c.region)
        verdict_at = max(since, rh.since) if rh is not None and rh.since is not None else since
        if (ctx.now - verdict_at).total_seconds() >= limit:
            continue
        others = [r for r in ctx.settings.target(c.target).endpoints if r != c.region]
        # since it began failing, and recently: a failing run can start with a lost probe before the fault
        recent = max(since, ctx.now - timedelta(seconds=p.liveness_interval / 2 if p.liveness_interval else p.interval))
        if not others or any(last_ok.get(r) is not None and last_ok[r] >= recent for r in others):
            continue
        held[c] = (
            RECHECK_RULE,
            f"no other region of {c.target} has answered since {c.region} began failing at {since:%H:%M:%S}: "
            f"if they are all down the prober is the likelier fault (fail open); waiting up to {limit:.0f} s",
        )
    return _hold(plan_, held)


def hold_half_down_steps(plan_: Plan, ctx: GuardrailContext) -> Plan:
    """A region with a deployment confirmed down while every other one it has is failing too (a run of hard
    failures, 429s aside, that has not reached a verdict yet) is not weighed down: its weight step waits
    (bounded) for the siblings' verdicts, so a region-wide fault drains it in one step instead of stepping
    its weight first -- an extra Azure write per target, and traffic still sent to a dead region. Their
    confirmations are ``confirm_gap`` apart, but one lost probe or one extra confirmation leaves a sibling a
    confirmation behind. Bounded: ``failures_to_down`` confirmation gaps after the first deployment was
    confirmed down the step goes ahead; a sibling that answers ends the hold at once (a fault of one
    deployment is weighed down as before)."""
    failing = getattr(ctx.health, "failing_endpoints", None)
    if failing is None:
        return plan_
    p = ctx.settings.probe
    limit = ctx.settings.health.failures_to_down * min(p.confirm_gap, p.fast_interval)
    held: dict[Change, tuple[str, str]] = {}
    for c in plan_.changes:
        if c.manual or c.field is not Field.WEIGHT or not _takes_traffic_away(c) or ctx.region_state(c.region) is not H.DEGRADED:
            continue
        rh = ctx._rh(c.region)
        eps = getattr(rh, "endpoints", ())
        down = [e for e in eps if e.state is H.UNHEALTHY]
        others = [e for e in eps if e.state is not H.UNHEALTHY]
        if not down or not others or any(e.endpoint_id not in failing for e in others):
            continue
        known = [e.since for e in down if e.since is not None]
        if not known or (ctx.now - min(known)).total_seconds() >= limit:
            continue
        names = ", ".join(e.endpoint_id.split("/", 1)[-1] for e in others)
        held[c] = (
            RECHECK_RULE,
            f"{', '.join(e.endpoint_id.split('/', 1)[-1] for e in down)} of {c.region} is down and {names} failing too, "
            f"not judged yet: waiting up to {limit:g} s for its verdict, so a region-wide fault drains {c.region} in one step",
        )
    return _hold(plan_, held)


POLICIES: tuple[Policy, ...] = (
    refuse_unsafe_manual_drains,
    hold_uncorroborated_drains,
    hold_half_down_steps,
    keep_min_serving,
    limit_drain_fraction,
    weigh_down_held_drains,
    ramp_weights,
    apply_cooldown,
    fail_open,
)


def apply_guardrails(plan_: Plan, ctx: GuardrailContext, policies: Iterable[Policy] = POLICIES) -> Plan:
    for policy in policies:
        plan_ = policy(plan_, ctx)
    for s in plan_.skipped:
        log.info("held by %s: %s -- %s", s.rule, s.change.describe(), s.reason)
    for p in plan_.panics:
        log.warning("panic: %s", p)
    return plan_


def record_applied(applied: Plan | Iterable[Change], now: datetime, cooldown: CooldownMemory) -> None:
    """After writing: note automated changes for cooldown."""
    changes = list(applied.changes if isinstance(applied, Plan) else applied)
    for c in changes:
        if not c.manual:
            cooldown.record(c.target, c.region, now)


# ---------------------------------------------------------------- one tick


def decide(
    settings: Settings,
    health: Any,
    actual: Iterable[TargetState] | Mapping[str, TargetState],
    overrides: Sequence[Override] = (),
    *,
    now: datetime,
    cooldown: CooldownMemory | None = None,
    memory: StrategyMemory | None = None,
) -> tuple[list[TargetState], Plan]:
    """The whole decision for one tick: desired states, then the guarded plan."""
    actual_by = dict(actual) if isinstance(actual, Mapping) else {a.target: a for a in actual}
    desired = desired_states(settings, health, actual_by, overrides, now, memory)
    raw = plan(settings, desired, actual_by)
    ctx = GuardrailContext(settings, actual_by, health, now, cooldown or CooldownMemory(), overrides)
    return desired, apply_guardrails(raw, ctx)


# ---------------------------------------------------------------- previews


@dataclass(frozen=True)
class OverrideProjection:
    """What going from one set of active overrides to another does, through the decision engine.

    The one preview rule: the dashboard, the API, the CLI and lifting an
    override all ask this, so a preview cannot disagree with itself.
    """

    caused: Plan  # changes to Azure the new override set causes (what it would do if allowed)
    cancelled: Plan  # automated changes pending now that the new set holds back
    before: dict[str, TargetState]  # actual + the manual changes already pending (counted as done)
    after: dict[str, TargetState]  # ... + what the new set causes
    refusals: tuple[str, ...]  # why (part of) it is refused, in words for on-call


def project_overrides(
    settings: Settings,
    health: Any,
    actual: Iterable[TargetState] | Mapping[str, TargetState],
    before: Sequence[Override],
    after: Sequence[Override],
    now: datetime,
) -> OverrideProjection:
    """Project a change of the active overrides (an override added, replaced or lifted).

    Pending manual changes (overrides the worker has not applied yet) count
    as done, so two drains in a row are judged as two drains; the enables and
    disables of the same plan are counted together (a failover to a region
    that is disabled now is not a drain of the last one).
    """
    actual_by = dict(actual) if isinstance(actual, Mapping) else {a.target: a for a in actual}
    planned_before = plan(settings, desired_states(settings, health, actual_by, list(before), now), actual_by)
    planned_after = plan(settings, desired_states(settings, health, actual_by, list(after), now), actual_by)
    seen_before = {_change_key(c) for c in planned_before.changes}
    seen_after = {_change_key(c) for c in planned_after.changes}
    caused = Plan(changes=tuple(c for c in planned_after.changes if _change_key(c) not in seen_before))
    cancelled = Plan(changes=tuple(c for c in planned_before.changes if _change_key(c) not in seen_after and not c.manual))
    pending = tuple(c for c in planned_after.changes if c.manual and _change_key(c) in seen_before)
    new_manual = tuple(c for c in caused.changes if c.manual)
    # The tick's own rule, over everything manual once this is applied: what is pending goes
    # first, so a refusal lands on what the new override set adds.
    ctx = GuardrailContext(settings, actual_by, health, now, overrides=list(after))
    checked = refuse_unsafe_manual_drains(Plan(changes=pending + new_manual), ctx)
    refusals = [s.reason.removeprefix("refused: ") for s in checked.skipped if s.change in new_manual]
    state_before = apply_to_states(Plan(changes=tuple(c for c in planned_before.changes if c.manual)), actual_by)
    state_after = apply_to_states(Plan(changes=pending + caused.changes), actual_by)
    refusals += _last_healthy_refusals(settings, ctx, state_before, state_after, {c.target for c in new_manual}, refusals)
    return OverrideProjection(caused, cancelled, state_before, state_after, tuple(refusals))


def _change_key(c: Change) -> tuple[str, str, str, Any]:
    return (c.target, c.region, c.field.value, c.desired)


def _last_healthy_refusals(
    settings: Settings,
    ctx: GuardrailContext,
    before: Mapping[str, TargetState],
    after: Mapping[str, TargetState],
    targets: set[str],
    already: Sequence[str],
) -> list[str]:
    """A manual change must not leave a target fewer than min_serving *healthy* serving endpoints."""
    out = []
    for t in settings.targets:
        if t.name not in targets or any(f" {t.name} " in f" {r} " for r in already):
            continue
        minimum = settings.min_serving(t)
        healthy_before = _healthy_serving(ctx, before[t.name])
        healthy_after = _healthy_serving(ctx, after[t.name])
        if healthy_after < minimum and healthy_after < healthy_before:
            out.append(
                f"{t.name} would keep only {healthy_after} healthy serving endpoint(s) (min_serving is {minimum}); "
                "the others still serving are unhealthy"
            )
    return out


def _healthy_serving(ctx: GuardrailContext, state: TargetState) -> int:
    return sum(1 for r, e in state.endpoints.items() if e.enabled and ctx.region_state(r) is not H.UNHEALTHY)


def describe_preview(
    settings: Settings,
    override: Override,
    preview: Plan,
    refusals: Sequence[str],
    actual: Iterable[TargetState] | Mapping[str, TargetState],
) -> str:
    """One or two sentences for the confirm dialog, e.g.
    'This will disable eastus in tm-weighted (2 of 3 stay serving) and afd-prod (2 of 3 stay serving).'"""
    actual_by = dict(actual) if isinstance(actual, Mapping) else {a.target: a for a in actual}
    scope = [t.name for t in settings.targets if override.target is None or t.name == override.target]
    if override.kind is OverrideKind.FREEZE:
        text = f"This will freeze automation for {_join(scope) if override.target else 'every target'}: no automated Azure writes until it is lifted."
        return _with_refusals(text, refusals)
    after = apply_to_states(preview, actual_by)
    groups: dict[tuple[tuple[str, ...], int, int], list[str]] = {}
    for target in dict.fromkeys(c.target for c in preview.changes):
        state = after.get(target)
        serving = sum(1 for e in state.endpoints.values() if e.enabled) if state else 0
        total = len(settings.target(target).endpoints)
        words = tuple(
            f"{'enable' if c.desired else 'disable'} {c.region}"
            if c.field is Field.ENABLED
            else f"set {c.region}'s {c.field.value} to {c.desired} (now {c.actual})"
            for c in preview.changes
            if c.target == target
        )
        groups.setdefault((words, serving, total), []).append(target)
    sentences = []
    for (words, serving, total), targets in groups.items():
        each = " in each" if len(targets) > 1 else ""
        sentences.append(f"{_join(list(words))} in {_join(targets)}; {serving} of {total} stay serving{each}")
    if sentences:
        text = "This will " + ". It will also ".join(sentences) + "."
    else:
        where = override.region or "every region"
        text = f"No change to Azure now: {where} is already as this {override.kind.value} wants in {_join(scope) or 'no target'}; it is held there until the override is lifted."
    return _with_refusals(text, refusals)


def _join(names: Sequence[str]) -> str:
    names = list(names)
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def _with_refusals(text: str, refusals: Sequence[str]) -> str:
    if not refusals:
        return text
    reasons = [r.removeprefix("refused: ") for r in refusals]
    return text + " Refused: " + "; ".join(reasons) + "."


__all__ = [
    "POLICIES",
    "CooldownMemory",
    "GuardrailContext",
    "OverrideProjection",
    "apply_cooldown",
    "apply_guardrails",
    "decide",
    "describe_preview",
    "fail_open",
    "hold_half_down_steps",
    "keep_min_serving",
    "limit_drain_fraction",
    "project_overrides",
    "ramp_weights",
    "record_applied",
    "refuse_unsafe_manual_drains",
    "weigh_down_held_drains",
]
