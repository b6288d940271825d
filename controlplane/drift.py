"""Drift that on-call decides on: ``adopt`` Azure's value (through an override) or ``revert`` to desired state.

Shared by the reconciler (which finds drift and, under ``drift: adopt``,
adopts it itself), the CLI (``regionguard drift``) and the dashboard (admin
controls on the target page). Nothing here talks to Azure: adopting stores
overrides, reverting sets a flag the worker's next tick acts on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controlplane.config import Settings
from controlplane.domain import AuditEvent, EndpointSetting, EventKind, Field, FlagKind, Override, OverrideKind
from controlplane.engine.planner import managed_fields
from controlplane.store import Store


@dataclass(frozen=True)
class DriftFinding:
    target: str
    region: str
    fields: dict[Field, tuple[Any, Any]]  # field -> (last applied, actual)
    actual: EndpointSetting

    def describe(self) -> str:
        parts = ", ".join(f"{f.value} {ref!r} -> {now!r}" for f, (ref, now) in self.fields.items())
        return f"changed outside regionguard: {parts}"


def drift_preview(settings: Settings, store: Store, target: str, region: str, action: str, who: str, now: datetime) -> str:
    """What :func:`resolve_drift` would do, in one sentence (nothing is written). ``KeyError``/``ValueError`` as it."""
    t = settings.target(target)
    row = next((r for r in store.target_endpoints(target) if r.region == region), None)
    if row is None or region not in t.endpoints:
        raise KeyError(f"{target}/{region}: not a configured endpoint regionguard has read")
    if row.drift is None:
        raise ValueError(f"{target}/{region}: no unresolved drift (regionguard drift list shows what has)")
    actual = row.actual or EndpointSetting(enabled=False)
    if action == "adopt":
        applied = store.applied_settings(target).get(region, actual)
        finding = DriftFinding(
            target, region, {f: (applied.get(f), actual.get(f)) for f in managed_fields(t) if applied.get(f) != actual.get(f)}, actual
        )
        kept = [o.describe() for o in adopt_overrides(finding, who, now, why="")] or ["no override (nothing managed differs)"]
        return f"this will keep {region} in {target} as Azure has it ({row.drift}) through {'; '.join(kept)}; automation then decides around it"
    if action == "revert":
        want = row.desired or row.applied
        what = _setting_words(want) if want is not None else "the desired state"
        return f"the worker will write {what} over the outside change to {region} in {target} ({row.drift}) on its next tick"
    raise ValueError(f"drift action must be 'adopt' or 'revert', not {action!r}")


def _setting_words(s: EndpointSetting) -> str:
    parts = ["enabled" if s.enabled else "disabled"]
    parts += [f"weight {s.weight}"] if s.weight is not None else []
    parts += [f"priority {s.priority}"] if s.priority is not None else []
    return ", ".join(parts)


def resolve_drift(
    settings: Settings, store: Store, target: str, region: str, action: str, who: str, now: datetime, why: str = ""
) -> AuditEvent:
    """An operator's decision on reported drift: ``adopt`` it or ``revert`` it.

    ``adopt``: the outside change becomes an override (pin / drain, see
    :func:`adopt_overrides`) and the drift is cleared. ``revert``: the next
    tick lets desired state win for that endpoint and writes it.
    """
    t = settings.target(target)
    rows = {r.region: r for r in store.target_endpoints(target)}
    row = rows.get(region)
    if row is None or region not in t.endpoints:
        raise KeyError(f"{target}/{region}: not a configured endpoint regionguard has read")
    if action == "adopt":
        actual = row.actual or EndpointSetting(enabled=False)
        applied = store.applied_settings(target).get(region, actual)
        finding = DriftFinding(
            target, region, {f: (applied.get(f), actual.get(f)) for f in managed_fields(t) if applied.get(f) != actual.get(f)}, actual
        )
        for o in adopt_overrides(finding, who, now, why=f"drift adopted by {who}: {finding.describe()}"):
            store.add_override(o)
        store.set_applied(target, region, actual, now)
        store.set_drift(target, region, None)
        summary = f"{who} adopted the outside change to {region} in {target}"
    elif action == "revert":
        store.set_flag(FlagKind.DRIFT_REVERT, f"{target}/{region}", {"who": who, "at": now.isoformat()}, now)
        summary = f"{who} asked to revert the outside change to {region} in {target}"
    else:
        raise ValueError(f"drift action must be 'adopt' or 'revert', not {action!r}")
    event = AuditEvent(
        kind=EventKind.DRIFT,
        at=now,
        actor=who,
        summary=f"{summary}: {why}" if why else summary,
        region=region,
        target=target,
        data={"action": action, "was": row.drift, "why": why},
    )
    store.add_event(event)
    return event


def adopt_overrides(finding: DriftFinding, who: str, now: datetime, why: str) -> list[Override]:
    """Overrides that keep an adopted outside change in place (a disable -> drain; weight/priority -> pin)."""
    out: list[Override] = []
    if Field.ENABLED in finding.fields and finding.actual.enabled is False:
        out.append(Override(kind=OverrideKind.DRAIN, who=who, why=why, created_at=now, region=finding.region, target=finding.target))
    pin_weight = finding.actual.weight if Field.WEIGHT in finding.fields else None
    pin_priority = finding.actual.priority if Field.PRIORITY in finding.fields else None
    if pin_weight is not None or pin_priority is not None:
        out.append(
            Override(
                kind=OverrideKind.PIN,
                who=who,
                why=why,
                created_at=now,
                region=finding.region,
                target=finding.target,
                weight=pin_weight,
                priority=pin_priority,
            )
        )
    return out
