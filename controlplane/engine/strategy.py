"""Desired state: what each target should look like, given health and overrides.

Pure: ``desired_state(settings, target, health, actual, overrides, now,
memory)`` returns a :class:`~controlplane.domain.TargetState` with a reason
per region; nothing here talks to Azure or reads a clock.

Weighted targets (active/active)
    A healthy region gets its configured (baseline) weight. A degraded one
    gets ``baseline x score`` (at least 10 % of it), clamped into the target
    kind's weight range (and onto the weights the kind can hold: an APIM pool
    weight is a multiple of 10), so a region at half its usual quality gets about
    half its usual traffic. An unhealthy one is disabled (its weight is left
    alone, so a restore is one write). A region with no fresh data is left as
    it is. Small moves are not worth an Azure write: a degraded region's
    weight only changes when it moves by more than 5 % of its baseline.
    Quota: when a region's quota headroom (rate-limit headers, PTU
    utilisation) is under ``health.near_quota_headroom`` and another enabled
    region without that problem exists, its share of the target's traffic is
    capped at its usual share (at the configured weights) x (1 + headroom):
    traffic taken off a failing region goes to regions that can absorb it,
    not onto one about to throttle. The capped region's weight is lowered
    rather than the others' raised, so regions that did nothing see no
    change; and the cap is a fixed point (it does not creep tick by tick).

Priority targets (active/passive)
    Approach: **disable, never re-order**. The configured priorities stay
    as they are (unique, as Traffic Manager requires); automation moves
    traffic by disabling an unhealthy endpoint, so the service routes to the
    next enabled one by priority. A recovered endpoint that ranks above the
    one currently serving is re-enabled (failback) only after it has been
    healthy for ``failback_dwell`` -- or never by automation with
    ``failback: manual`` (an operator uses ``failover``). A recovered
    endpoint ranking below the active one is re-enabled at once: it is a
    standby and takes no traffic. A degraded primary keeps the traffic: it
    still serves, and failing over is not free.

Overrides (operators win)
    ``drain``/``maintenance`` disable a region; ``pin`` fixes its weight
    and/or priority (a pinned priority another region holds is swapped with
    it, so priorities stay unique); ``failover`` (priority targets) enables
    the named region and disables every region ranked above it; ``freeze``
    (a target, or every target) stops automation: desired = actual, with
    other overrides still applied. Overrides apply oldest first, so the
    newest wins a conflict. Regions an override decides are listed in
    ``TargetState.manual``; their changes are manual (no cooldown or ramp,
    min_serving refusal unless forced).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from controlplane.config import PRIORITY_RANGE, Settings, Target, clamp_weight
from controlplane.domain import EndpointSetting, HealthStateName, Override, OverrideKind, RegionHealth, TargetState

log = logging.getLogger(__name__)

H = HealthStateName
MIN_DEGRADED_FACTOR = 0.1
DEAD_BAND = 0.05  # of the baseline weight


@dataclass
class StrategyMemory:
    """What the strategy remembers between ticks (per process; safe to lose).

    ``healthy_since[region]`` backs up ``RegionHealth.since`` when a health
    report does not carry it (hand-built reports, partial data).
    """

    healthy_since: dict[str, datetime] = field(default_factory=dict)

    def note(self, region: str, state: HealthStateName, now: datetime) -> datetime | None:
        if state is H.HEALTHY:
            return self.healthy_since.setdefault(region, now)
        self.healthy_since.pop(region, None)
        return None


def active_overrides(overrides: Iterable[Override], target: str, now: datetime) -> list[Override]:
    """Overrides in force for ``target`` at ``now``, oldest first (one not stored yet is the newest)."""
    live = [o for o in overrides if o.active(now) and (o.target is None or o.target == target)]
    return sorted(live, key=lambda o: (o.created_at, o.id is None, o.id or 0))


def frozen_by(overrides: Iterable[Override], target: str, now: datetime) -> Override | None:
    """The newest freeze in force for ``target`` (or every target), if any."""
    freezes = [o for o in active_overrides(overrides, target, now) if o.kind is OverrideKind.FREEZE]
    return freezes[-1] if freezes else None


def _region_health(health: Any, region: str) -> RegionHealth | None:
    if health is None:
        return None
    regions = health.regions if hasattr(health, "regions") else health
    found: RegionHealth | None = regions.get(region)
    return found


def _fmt_s(seconds: float) -> str:
    seconds = max(0, round(seconds))
    m, s = divmod(seconds, 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def desired_state(
    settings: Settings,
    target: Target,
    health: Any,
    actual: TargetState | None,
    overrides: Sequence[Override] = (),
    now: datetime | None = None,
    memory: StrategyMemory | None = None,
) -> TargetState:
    """Desired state of one target. ``health`` is a HealthReport (or a dict region -> RegionHealth)."""
    if isinstance(target, str):
        target = settings.target(target)
    if now is None:
        now = getattr(health, "at", None)
        if now is None:
            raise ValueError("desired_state needs `now` (or a HealthReport carrying `at`)")
    memory = memory if memory is not None else StrategyMemory()
    live = active_overrides(overrides, target.name, now)
    freeze = next((o for o in reversed(live) if o.kind is OverrideKind.FREEZE), None)
    for region in target.endpoints:
        rh = _region_health(health, region)
        memory.note(region, rh.state if rh else H.UNKNOWN, now)
    if freeze is not None and actual is not None:
        settings_by_region = {r: actual.endpoints[r] for r in target.endpoints if r in actual.endpoints}
        reasons = {r: f"automation frozen ({freeze.describe()})" for r in settings_by_region}
    elif target.routing == "priority":
        settings_by_region, reasons = _priority(settings, target, health, actual, now, memory)
    else:
        settings_by_region, reasons = _weighted(settings, target, health, actual)
    manual: list[str] = []
    _apply_overrides(target, live, settings_by_region, reasons, manual)
    return TargetState(
        target=target.name,
        endpoints=settings_by_region,
        monitor_status=dict(actual.monitor_status) if actual else {},
        reasons=reasons,
        manual=tuple(r for r in target.endpoints if r in manual),
    )


def desired_states(
    settings: Settings,
    health: Any,
    actual: Iterable[TargetState] | dict[str, TargetState],
    overrides: Sequence[Override] = (),
    now: datetime | None = None,
    memory: StrategyMemory | None = None,
) -> list[TargetState]:
    """``desired_state`` for every configured target, in config order."""
    by_name = actual if isinstance(actual, dict) else {a.target: a for a in actual}
    memory = memory if memory is not None else StrategyMemory()
    return [desired_state(settings, t, health, by_name.get(t.name), overrides, now, memory) for t in settings.targets]


# ---------------------------------------------------------------- weighted


def _health_words(rh: RegionHealth | None) -> str:
    if rh is None:
        return "no health data"
    return "; ".join(rh.reasons) if rh.reasons else rh.state.value


def _weighted(
    settings: Settings, target: Target, health: Any, actual: TargetState | None
) -> tuple[dict[str, EndpointSetting], dict[str, str]]:
    out: dict[str, EndpointSetting] = {}
    reasons: dict[str, str] = {}
    for region, ep in target.endpoints.items():
        rh = _region_health(health, region)
        state = rh.state if rh else H.UNKNOWN
        act = actual.endpoints.get(region) if actual else None
        base = ep.weight
        prio = ep.priority
        if state is H.UNHEALTHY:
            weight = act.weight if act and act.weight is not None else base
            out[region] = EndpointSetting(weight=weight, priority=prio, enabled=False)
            reasons[region] = f"unhealthy: {_health_words(rh)}"
        elif rh is None or state is H.UNKNOWN:
            if act is not None:
                out[region] = EndpointSetting(weight=act.weight if act.weight is not None else base, priority=prio, enabled=act.enabled)
            else:
                out[region] = EndpointSetting(weight=base, priority=prio, enabled=True)
            reasons[region] = f"no fresh health data, left as it is ({_health_words(rh)})"
        elif state is H.HEALTHY:
            out[region] = EndpointSetting(weight=base, priority=prio, enabled=True)
            reasons[region] = f"healthy: {_health_words(rh)}"
        else:
            factor = max(MIN_DEGRADED_FACTOR, min(1.0, rh.score))
            weight = clamp_weight(target.kind, base * factor)
            if act is not None and act.weight is not None and act.enabled and abs(weight - act.weight) <= max(1, DEAD_BAND * base):
                weight = act.weight
            out[region] = EndpointSetting(weight=weight, priority=prio, enabled=True)
            reasons[region] = f"degraded (score {rh.score:.2f}): weight {weight} of {base}: {_health_words(rh)}"
    _cap_near_quota(settings, target, health, actual, out, reasons)
    return out, reasons


def _cap_near_quota(
    settings: Settings,
    target: Target,
    health: Any,
    actual: TargetState | None,
    out: dict[str, EndpointSetting],
    reasons: dict[str, str],
) -> None:
    near_limit = settings.health.near_quota_headroom
    enabled = [r for r, s in out.items() if s.enabled and s.weight]
    near: dict[str, float] = {}
    for r in enabled:
        rh = _region_health(health, r)
        if rh is not None and rh.quota_headroom is not None and rh.quota_headroom < near_limit:
            near[r] = rh.quota_headroom
    others = [r for r in enabled if r not in near]
    if not near or not others:
        return
    usual = _baseline_shares(target)
    total = sum(out[r].weight or 0 for r in enabled)
    capped: dict[str, float] = {}
    for r, headroom in near.items():
        allowed = usual.get(r, 0.0) * (1.0 + headroom)
        if total and (out[r].weight or 0) / total > allowed + 1e-9:
            capped[r] = allowed
    if not capped:
        return
    rest = sum(out[r].weight or 0 for r in enabled if r not in capped)
    share_capped = sum(capped.values())
    if share_capped >= 1.0 or rest <= 0:
        return
    scale = rest / (1.0 - share_capped)
    for r, allowed in capped.items():
        weight = clamp_weight(target.kind, allowed * scale)
        out[r] = EndpointSetting(weight=weight, priority=out[r].priority, enabled=True)
        reasons[r] = (
            f"near its quota ({near[r]:.0%} headroom): kept to {allowed:.0%} of {target.name}'s traffic, "
            f"its usual share plus headroom (weight {weight}); {reasons[r]}"
        )


def _baseline_shares(target: Target) -> dict[str, float]:
    """Each region's share of the target's traffic at the configured weights."""
    total = sum(ep.weight for ep in target.endpoints.values())
    return {r: ep.weight / total for r, ep in target.endpoints.items()} if total else {}


# ---------------------------------------------------------------- priority


def _priority(
    settings: Settings,
    target: Target,
    health: Any,
    actual: TargetState | None,
    now: datetime,
    memory: StrategyMemory,
) -> tuple[dict[str, EndpointSetting], dict[str, str]]:
    order = sorted(target.endpoints, key=lambda r: (target.endpoints[r].priority or 0, r))
    states = {}
    for r in order:
        rh = _region_health(health, r)
        states[r] = rh.state if rh else H.UNKNOWN
    act = {r: actual.endpoints.get(r) for r in order} if actual else {}
    # the region serving now: best priority that is enabled and not unhealthy
    active = next((r for r in order if _may_serve(act.get(r)) and states[r] is not H.UNHEALTHY), None)
    rank = {r: i for i, r in enumerate(order)}
    out: dict[str, EndpointSetting] = {}
    reasons: dict[str, str] = {}
    for r in order:
        ep = target.endpoints[r]
        rh = _region_health(health, r)
        state = states[r]
        a = act.get(r)
        words = _health_words(rh)
        if state is H.UNHEALTHY:
            enabled, why = False, f"unhealthy: {words}"
        elif state is H.UNKNOWN:
            enabled = a.enabled if a is not None else True
            why = f"no fresh health data, left as it is ({words})"
        elif a is not None and not a.enabled and active is not None and rank[r] < rank[active]:
            enabled, why = _failback(target, r, rh, active, now, memory)
        else:
            enabled = True
            why = f"{state.value}: {words}" + (" (serving)" if r == active or active is None else " (standby)")
        out[r] = EndpointSetting(weight=ep.weight, priority=ep.priority, enabled=enabled)
        reasons[r] = why
    return out, reasons


def _may_serve(actual: EndpointSetting | None) -> bool:
    """An endpoint serves unless Azure says it is disabled (unknown counts as serving)."""
    return actual is None or actual.enabled


def _failback(target: Target, region: str, rh: RegionHealth | None, active: str, now: datetime, memory: StrategyMemory) -> tuple[bool, str]:
    if target.failback == "manual":
        return False, f"recovered, but failback is manual: traffic stays on {active} until an operator fails over"
    if rh is None or rh.state is not H.HEALTHY:
        return False, f"recovering ({rh.state.value if rh else 'unknown'}); traffic stays on {active}"
    since = rh.since or memory.healthy_since.get(region) or now
    healthy_for = (now - since).total_seconds()
    if healthy_for >= target.failback_dwell:
        return True, f"failback: healthy for {_fmt_s(healthy_for)} (dwell {_fmt_s(target.failback_dwell)})"
    return (
        False,
        f"recovered; failback from {active} in {_fmt_s(target.failback_dwell - healthy_for)} (healthy for {_fmt_s(healthy_for)} of {_fmt_s(target.failback_dwell)})",
    )


# ---------------------------------------------------------------- overrides


def _apply_overrides(
    target: Target,
    live: list[Override],
    out: dict[str, EndpointSetting],
    reasons: dict[str, str],
    manual: list[str],
) -> None:
    pmin, pmax = PRIORITY_RANGE[target.kind]

    def mark(region: str, setting: EndpointSetting, why: str) -> None:
        out[region] = setting
        reasons[region] = why
        if region not in manual:
            manual.append(region)

    for o in live:
        if o.kind is OverrideKind.FREEZE:
            continue
        if o.kind is OverrideKind.FAILOVER:
            _apply_failover(target, o, out, mark)
            continue
        for region in target.endpoints:
            if region not in out or not o.applies_to(target.name, region):
                continue
            cur = out[region]
            if o.kind in (OverrideKind.DRAIN, OverrideKind.MAINTENANCE):
                mark(region, EndpointSetting(weight=cur.weight, priority=cur.priority, enabled=False), o.describe())
            elif o.kind is OverrideKind.PIN:
                weight = cur.weight if o.weight is None else clamp_weight(target.kind, o.weight)
                priority = cur.priority if o.priority is None else max(pmin, min(pmax, o.priority))
                if priority != cur.priority and priority is not None:
                    _swap_priority(target, region, priority, cur.priority, out, reasons, mark)
                mark(region, EndpointSetting(weight=weight, priority=priority, enabled=cur.enabled), o.describe())


def _apply_failover(target: Target, o: Override, out: dict[str, EndpointSetting], mark: Any) -> None:
    dest = o.region
    if target.routing != "priority" or dest is None or dest not in target.endpoints or dest not in out:
        if o.target == target.name:
            log.warning("failover override %s ignored for %s: needs a priority target and one of its regions", o.describe(), target.name)
        return
    rank = out[dest].priority if out[dest].priority is not None else target.endpoints[dest].priority
    cur = out[dest]
    mark(dest, EndpointSetting(weight=cur.weight, priority=cur.priority, enabled=True), o.describe())
    for region, setting in list(out.items()):
        if region != dest and setting.priority is not None and rank is not None and setting.priority < rank:
            mark(
                region,
                EndpointSetting(weight=setting.weight, priority=setting.priority, enabled=False),
                f"{o.describe()} (ranks above {dest})",
            )


def _swap_priority(
    target: Target, region: str, wanted: int, old: int | None, out: dict[str, EndpointSetting], reasons: dict[str, str], mark: Any
) -> None:
    for other, setting in list(out.items()):
        if other != region and setting.priority == wanted:
            mark(
                other,
                EndpointSetting(weight=setting.weight, priority=old, enabled=setting.enabled),
                f"priority {old} swapped with {region} (pinned to {wanted}); {reasons.get(other, '')}".rstrip("; "),
            )
