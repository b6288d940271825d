"""Plan: the pure diff of desired against actual, over the fields each target manages.

``plan(settings, desired, actual)`` lists one :class:`~controlplane.domain.Change`
per (target, region, field) that differs, with the reason from
``desired.reasons`` and ``manual`` set for regions an operator override
decides. Only regions named in the config are looked at (ownership); a region
Azure does not report is not planned (the reconciler reports it missing). The
order is deterministic: targets in config order, regions in the order the
target lists them, fields enabled -> priority -> weight.

Managed fields:

* Traffic Manager, weighted: ``enabled``, ``weight``.
* Traffic Manager, priority: ``enabled``, ``priority``.
* Front Door (classic and Standard/Premium): ``enabled``, ``priority``,
  ``weight`` -- Front Door uses both in either routing style.
* APIM backend pools: ``enabled`` (in the pool or not), ``priority``, ``weight``.

A weight or priority Azure does not report (``None``) on an endpoint that is
disabled and stays disabled is not planned: a member drained out of an APIM
pool has neither; they are written when it comes back (docs/adr/0008).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from controlplane.config import Settings, Target, azure_name
from controlplane.domain import Change, ChangeOrigin, Field, Plan, TargetState

FIELD_ORDER = (Field.ENABLED, Field.PRIORITY, Field.WEIGHT)


def managed_fields(target: Target) -> tuple[Field, ...]:
    """The fields regionguard writes on ``target``'s endpoints."""
    if target.kind == "traffic_manager":
        return (Field.ENABLED, Field.PRIORITY) if target.routing == "priority" else (Field.ENABLED, Field.WEIGHT)
    return FIELD_ORDER


def _by_name(states: Iterable[TargetState] | Mapping[str, TargetState]) -> dict[str, TargetState]:
    if isinstance(states, Mapping):
        return dict(states)
    return {s.target: s for s in states}


def plan_target(target: Target, desired: TargetState, actual: TargetState) -> list[Change]:
    """Changes for one target (both states of that target)."""
    fields = managed_fields(target)
    manual = set(desired.manual)
    changes: list[Change] = []
    for region in target.endpoints:
        want = desired.endpoints.get(region)
        have = actual.endpoints.get(region)
        if want is None or have is None:
            continue
        for f in fields:
            d, a = want.get(f), have.get(f)
            if d is None or d == a:
                continue
            if a is None and f is not Field.ENABLED and not have.enabled and not want.enabled:
                continue  # Azure holds no such value for it (a member out of an APIM pool): set when it comes back
            changes.append(
                Change(
                    target=target.name,
                    region=region,
                    endpoint=azure_name(target, region),
                    field=f,
                    actual=a,
                    desired=d,
                    reason=desired.reasons.get(region, ""),
                    origin=ChangeOrigin.MANUAL if region in manual else ChangeOrigin.AUTOMATION,
                )
            )
    return changes


def plan(
    settings: Settings,
    desired: Iterable[TargetState] | Mapping[str, TargetState],
    actual: Iterable[TargetState] | Mapping[str, TargetState],
) -> Plan:
    """Pure diff. Empty when nothing differs; the same inputs give the same Plan."""
    want, have = _by_name(desired), _by_name(actual)
    changes: list[Change] = []
    for target in settings.targets:
        if target.name in want and target.name in have:
            changes += plan_target(target, want[target.name], have[target.name])
    return Plan(changes=tuple(changes))


def apply_to_states(
    plan_: Plan,
    actual: Iterable[TargetState] | Mapping[str, TargetState],
) -> dict[str, TargetState]:
    """What ``actual`` becomes once every change of the plan is written (an in-memory actuator)."""
    have = _by_name(actual)
    out: dict[str, TargetState] = {}
    by_target: dict[str, list[Change]] = {}
    for c in plan_.changes:
        by_target.setdefault(c.target, []).append(c)
    for name, state in have.items():
        changes = by_target.get(name)
        if not changes:
            out[name] = state
            continue
        endpoints = dict(state.endpoints)
        for c in changes:
            cur = endpoints.get(c.region)
            if cur is None:
                continue
            endpoints[c.region] = _with(cur, c.field, c.desired)
        out[name] = TargetState(
            target=state.target,
            endpoints=endpoints,
            monitor_status=dict(state.monitor_status),
            reasons=dict(state.reasons),
            unmanaged=state.unmanaged,
            manual=state.manual,
        )
    return out


def _with(setting: Any, f: Field, value: Any) -> Any:
    return replace(setting, **{f.value: value})
