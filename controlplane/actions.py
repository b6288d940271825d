"""Manual operator actions: the one place they are validated, previewed and recorded.

The dashboard buttons, the JSON API and the CLI all come here. An action
(drain, restore, failover, pin, freeze, unfreeze) is first *previewed*: a
sentence an on-call engineer can read at 3 a.m. ("this will disable eastus in
tm-weighted and afd-prod; 2 of 3 stay serving") plus the per-target changes
it implies, or a refusal with its reason. Only an explicit confirm turns it
into Overrides and an AuditEvent. Nothing here talks to Azure: the worker's
reconcile loop applies overrides on its next tick.

The preview runs the decision engine itself: the last *actual* state the
worker read from Azure (the config's baseline where nothing was read yet),
the saved health, the active overrides, then ``strategy.desired_states`` and
``planner.plan`` with and without the new override
(``guardrails.project_overrides``, the one preview rule): the changes the
override causes, the automated changes it holds back, and the refusals. The
sentence is the engine's ``describe_preview``.

Guardrails: a change that would leave a target with fewer than
``min_serving`` serving endpoints (the engine's refusal), take away its last
healthy serving endpoints, or fail over to an unhealthy region is refused,
unless an admin forces it and types the region name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from controlplane.config import PRIORITY_RANGE, WEIGHT_RANGE, Settings, Target
from controlplane.domain import (
    AuditEvent,
    EndpointSetting,
    EventKind,
    HealthStateName,
    Override,
    OverrideKind,
    Plan,
    RegionHealth,
    TargetState,
    as_jsonable,
)
from controlplane.durations import parse_duration
from controlplane.engine.guardrails import OverrideProjection, describe_preview, project_overrides
from controlplane.errors import BadInput, Forbidden, Refused
from controlplane.store import Store, TargetEndpointRecord
from controlplane.users import Principal

log = logging.getLogger(__name__)

MAX_REASON = 500
MIN_REASON = 3
MAX_EXPIRY_S = 30 * 86400.0


class Action(StrEnum):
    DRAIN = "drain"
    RESTORE = "restore"
    FAILOVER = "failover"
    PIN = "pin"
    FREEZE = "freeze"
    UNFREEZE = "unfreeze"


class InvalidAction(BadInput):
    """Bad input: names the field and the value (HTTP 400, CLI exit 2)."""

    def __init__(self, field_name: str, value: Any, message: str) -> None:
        self.field = field_name
        self.value = value
        self.message = message
        super().__init__(f"{field_name}: {_short(value)} {message}")

    def to_dict(self) -> dict[str, Any]:
        return {"error": "invalid", "field": self.field, "value": _jsonable(self.value), "reason": str(self)}


class NotAllowed(Forbidden):
    """The actor's role may not do this (HTTP 403)."""


class ActionRefused(Refused):
    """A guardrail forbids it, or there is nothing to do (HTTP 409, CLI exit 3)."""

    def __init__(self, reason: str, preview: Preview | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.preview = preview


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _jsonable(value: Any) -> Any:
    if isinstance(value, str):
        return value if len(value) <= 200 else value[:197] + "..."
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN or Infinity: an error body must stay valid JSON
    return value if isinstance(value, int | float | bool | type(None)) else _short(value)


# ---------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class ActionRequest:
    action: Action
    reason: str
    region: str | None = None
    target: str | None = None
    weight: int | None = None
    priority: int | None = None
    expires_in: float | None = None  # seconds
    force: bool = False
    confirm: str | None = None  # the region name, typed, to force past a guardrail

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action.value,
            "reason": self.reason,
            "region": self.region,
            "target": self.target,
            "weight": self.weight,
            "priority": self.priority,
            "expires_in": self.expires_in,
            "force": self.force,
        }


def _opt_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidAction(key, value, "must be a string")
    value = value.strip()
    return value or None


def _opt_int(data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise InvalidAction(key, value, "must be a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip(), 10)
        except ValueError:
            pass
    raise InvalidAction(key, value, "must be a whole number")


def _bool(data: Mapping[str, Any], key: str) -> bool:
    value = data.get(key)
    if value is None or value is False or value == "":
        return False
    if value is True:
        return True
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise InvalidAction(key, value, "must be true or false")


def parse_request(data: Mapping[str, Any]) -> ActionRequest:
    """Build an ActionRequest from a form or JSON body; InvalidAction names the bad field."""
    raw_action = data.get("action")
    try:
        action = Action(str(raw_action).strip().lower())
    except ValueError:
        raise InvalidAction("action", raw_action, f"is not one of {', '.join(a.value for a in Action)}") from None
    expires_raw = data.get("expires_in")
    expires_in: float | None = None
    if expires_raw not in (None, ""):
        try:
            expires_in = parse_duration(expires_raw)
        except ValueError:
            raise InvalidAction("expires_in", expires_raw, "is not a duration (use e.g. 30m, 2h, 1d)") from None
        if expires_in <= 0 or expires_in > MAX_EXPIRY_S:
            raise InvalidAction("expires_in", expires_raw, "must be more than 0 and at most 30d")
    return ActionRequest(
        action=action,
        reason=_opt_str(data, "reason") or "",
        region=_opt_str(data, "region"),
        target=_opt_str(data, "target"),
        weight=_opt_int(data, "weight"),
        priority=_opt_int(data, "priority"),
        expires_in=expires_in,
        force=_bool(data, "force"),
        confirm=_opt_str(data, "confirm"),
    )


# ---------------------------------------------------------------- previews


@dataclass(frozen=True, slots=True)
class Impact:
    """What the action changes in one target's Azure state, and how many stay serving."""

    target: str
    changes: tuple[tuple[str, str, Any, Any], ...]  # (region, field, actual now, after)
    serving_before: int
    serving_after: int
    healthy_after: int
    total: int
    min_serving: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "changes": [{"region": r, "field": f, "now": a, "after": b} for r, f, a, b in self.changes],
            "serving_before": self.serving_before,
            "serving_after": self.serving_after,
            "healthy_after": self.healthy_after,
            "total": self.total,
            "min_serving": self.min_serving,
        }


@dataclass(frozen=True, slots=True)
class Preview:
    request: ActionRequest
    sentence: str
    impacts: tuple[Impact, ...] = ()
    add: tuple[Override, ...] = ()  # overrides a confirm would store
    lift: tuple[Override, ...] = ()  # active overrides a confirm would lift
    refusal: str | None = None
    forceable: bool = False  # an admin may force past the refusal by typing the region name
    notes: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.refusal is None

    @property
    def digest(self) -> str:
        """Changes when anything the operator reviewed changes (confirm checks it).

        An expiry is reviewed as its duration (the request's ``expires_in``), not as the
        clock time the sentence states to the minute: a confirm a second later, across a
        minute's boundary, is the same action, not a changed situation."""
        sentence = self.sentence
        for o in self.add:
            if o.expires_at is not None:
                sentence = sentence.replace(_expiry_text(o.expires_at), "<expiry>")
        body = json.dumps(
            [sentence, self.request.expires_in, self.refusal, [i.to_dict() for i in self.impacts], [o.id for o in self.lift]],
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(body.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {
            "request": self.request.to_dict(),
            "sentence": self.sentence,
            "allowed": self.allowed,
            "refusal": self.refusal,
            "forceable": self.forceable,
            "impacts": [i.to_dict() for i in self.impacts],
            "lift": [o.id for o in self.lift],
            "notes": list(self.notes),
            "digest": self.digest,
        }


@dataclass(frozen=True, slots=True)
class Result:
    preview: Preview
    added: tuple[Override, ...] = ()
    lifted: tuple[Override, ...] = ()
    event_ids: tuple[int, ...] = ()
    forced: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "preview": self.preview.to_dict(),
            "added": [as_jsonable(o) for o in self.added],
            "lifted": [as_jsonable(o) for o in self.lifted],
            "forced": self.forced,
        }


@dataclass
class _World:
    """What the store says right now, read once per preview."""

    settings: Settings
    actual: dict[str, TargetState]  # last read from Azure (config baseline where never read)
    assumed: list[str]  # "target/region" with no Azure read yet
    active: list[Override]
    regions: dict[str, RegionHealth]
    now: datetime

    def healthy(self, region: str) -> bool:
        rh = self.regions.get(region)
        return rh is None or rh.state is not HealthStateName.UNHEALTHY


def _actual_states(settings: Settings, rows: Mapping[tuple[str, str], TargetEndpointRecord]) -> tuple[dict[str, TargetState], list[str]]:
    states, assumed = {}, []
    for t in settings.targets:
        endpoints: dict[str, EndpointSetting] = {}
        monitor: dict[str, str] = {}
        for region, ep in t.endpoints.items():
            row = rows.get((t.name, region))
            if row is not None and row.actual is not None:
                endpoints[region] = row.actual
                if row.monitor_status:
                    monitor[region] = row.monitor_status
            else:
                endpoints[region] = EndpointSetting(weight=ep.weight, priority=ep.priority, enabled=True)
                assumed.append(f"{t.name}/{region}")
        states[t.name] = TargetState(target=t.name, endpoints=endpoints, monitor_status=monitor)
    return states, assumed


def _load(settings: Settings, store: Store, now: datetime) -> _World:
    rows = {(r.target, r.region): r for r in store.target_endpoints()}
    actual, assumed = _actual_states(settings, rows)
    _, regions = store.health()
    return _World(settings=settings, actual=actual, assumed=assumed, active=store.active_overrides(now), regions=regions, now=now)


def _project(world: _World, before: list[Override], after: list[Override]) -> OverrideProjection:
    return project_overrides(world.settings, world.regions, world.actual, before, after, world.now)


def _serving(world: _World, state: TargetState) -> tuple[int, int]:
    on = [r for r, e in state.endpoints.items() if e.enabled]
    return len(on), sum(1 for r in on if world.healthy(r))


def _impacts(world: _World, proj: OverrideProjection, targets: list[Any]) -> list[Impact]:
    out = []
    for t in targets:
        serving_before, _ = _serving(world, proj.before[t.name])
        serving_after, healthy_after = _serving(world, proj.after[t.name])
        out.append(
            Impact(
                target=t.name,
                changes=tuple((c.region, c.field.value, c.actual, c.desired) for c in proj.caused.changes if c.target == t.name),
                serving_before=serving_before,
                serving_after=serving_after,
                healthy_after=healthy_after,
                total=len(t.endpoints),
                min_serving=world.settings.min_serving(t),
            )
        )
    return out


def _add_preview(
    world: _World, new: Override, targets: list[Any], replaced: Sequence[Override] = ()
) -> tuple[str, list[Impact], list[str], list[str]]:
    """An added override: (the engine's sentence, impacts, refusals, notes)."""
    existing = [o for o in world.active if o not in replaced]
    proj = _project(world, world.active, [*existing, new])
    impacts = _impacts(world, proj, targets)
    sentence = _with_expiry(describe_preview(world.settings, new, proj.caused, [], proj.before).rstrip("."), new.expires_at)
    notes = _notes(world, proj.cancelled, targets) + _unhealthy_notes(world, proj, impacts)
    return sentence, impacts, list(proj.refusals), notes


def _unhealthy_notes(world: _World, proj: OverrideProjection, impacts: list[Impact]) -> list[str]:
    """Say so when some of what 'stays serving' is unhealthy (automation may take it out too)."""
    out = []
    for i in impacts:
        sick = [r for r, e in proj.after[i.target].endpoints.items() if e.enabled and not world.healthy(r)]
        if sick:
            out.append(
                f"in {i.target}, {_join(sick)} still counted as serving but unhealthy: automation drains it unless min_serving holds it"
            )
    return out


def _notes(world: _World, cancelled: Plan, targets: list[Any]) -> list[str]:
    names = {t.name for t in targets}
    notes = [f"no Azure state read yet for {a}: assuming its configured baseline" for a in world.assumed if a.split("/", 1)[0] in names]
    if cancelled.changes:
        notes.append("automation's pending change(s) this holds back: " + "; ".join(c.describe() for c in cancelled.changes))
    return notes


# ---------------------------------------------------------------- validation


def _check_actor(actor: Principal) -> None:
    if not actor.can("operator"):
        raise NotAllowed(f"role {actor.role!r} may not change overrides (operator or admin needed)")


def _check_reason(req: ActionRequest) -> None:
    if len(req.reason) < MIN_REASON:
        raise InvalidAction("reason", req.reason, f"is required: say why (at least {MIN_REASON} characters)")
    if len(req.reason) > MAX_REASON:
        raise InvalidAction("reason", req.reason, f"is longer than {MAX_REASON} characters")


def _region(settings: Settings, req: ActionRequest) -> str:
    if req.region is None:
        raise InvalidAction("region", None, "is required")
    if req.region not in settings.region_names:
        raise InvalidAction("region", req.region, f"is not a configured region ({', '.join(settings.region_names)})")
    return req.region


def _target(settings: Settings, req: ActionRequest, required: bool = False) -> Any:
    if req.target is None:
        if required:
            raise InvalidAction("target", None, "is required")
        return None
    try:
        return settings.target(req.target)
    except KeyError:
        names = ", ".join(t.name for t in settings.targets) or "none configured"
        raise InvalidAction("target", req.target, f"is not a configured target ({names})") from None


def _targets_with(settings: Settings, region: str, target: Target | None) -> list[Target]:
    if target is not None:
        if region not in target.endpoints:
            raise InvalidAction("region", region, f"is not an endpoint of target {target.name!r}")
        return [target]
    return [t for t in settings.targets if region in t.endpoints]


def _expiry(req: ActionRequest, now: datetime) -> datetime | None:
    return None if req.expires_in is None else now + timedelta(seconds=req.expires_in)


def _join(names: list[str]) -> str:
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def _until(expires_at: datetime | None) -> str:
    return "" if expires_at is None else f" until {expires_at:%Y-%m-%d %H:%M} UTC"


def _with_expiry(sentence: str, expires_at: datetime | None) -> str:
    if expires_at is None:
        return sentence
    when = _expiry_text(expires_at)
    if "until it is lifted" in sentence:
        return sentence.replace("until it is lifted", f"until {when} (or until lifted)")
    return f"{sentence} (until {when}, then automation decides again)"


def _expiry_text(expires_at: datetime) -> str:
    return f"{expires_at:%Y-%m-%d %H:%M} UTC"


def _override_ref(o: Override) -> str:
    return f"{o.kind.value} #{o.id} ({o.region or 'all regions'} in {o.target or 'all targets'}, by {o.who})"


def _overrides_by(o: Override) -> str:
    return f"#{o.id} by {o.who}"


# ---------------------------------------------------------------- one builder per action


def _preview_drain(world: _World, req: ActionRequest, actor: Principal) -> Preview:
    region = _region(world.settings, req)
    target = _target(world.settings, req)
    targets = _targets_with(world.settings, region, target)
    if not targets:
        raise InvalidAction("region", region, "is not an endpoint of any target")
    covering = [
        o
        for o in world.active
        if o.kind in (OverrideKind.DRAIN, OverrideKind.MAINTENANCE)
        and o.region in (None, region)
        and (o.target is None or (target is not None and o.target == target.name))
    ]
    if covering:
        msg = f"{region} is already drained in {target.name if target else 'all targets'} by {_override_ref(covering[0])}"
        return Preview(req, msg, refusal=msg)
    new = Override(
        kind=OverrideKind.DRAIN,
        who=actor.name,
        why=req.reason,
        created_at=world.now,
        region=region,
        target=target.name if target else None,
        expires_at=_expiry(req, world.now),
    )
    sentence, impacts, refusals, notes = _add_preview(world, new, targets)
    refusal = "; ".join(refusals) or None
    return Preview(req, sentence, tuple(impacts), add=(new,), refusal=refusal, forceable=refusal is not None, notes=tuple(notes))


def _preview_restore(world: _World, req: ActionRequest, actor: Principal) -> Preview:
    region = _region(world.settings, req)
    target = _target(world.settings, req)
    targets = _targets_with(world.settings, region, target)
    drains = [o for o in world.active if o.kind in (OverrideKind.DRAIN, OverrideKind.MAINTENANCE) and o.region in (None, region)]
    if target is not None:
        liftable = [o for o in drains if o.target == target.name]
        blocking = [o for o in drains if o.target is None]
    else:
        liftable, blocking = drains, []
    if not liftable:
        msg = f"{region} has no active drain {'in ' + target.name if target else 'to lift'}"
        if blocking:
            msg += f"; it is drained in all targets by {_overrides_by(blocking[0])}: restore it without choosing a target"
        return Preview(req, msg, refusal=msg)
    remaining = [o for o in world.active if o not in liftable]
    proj = _project(world, world.active, remaining)
    impacts = _impacts(world, proj, targets)
    back = [t.name for t in targets if not proj.before[t.name].endpoints[region].enabled and proj.after[t.name].endpoints[region].enabled]
    sentence = f"this will lift {_join([_override_ref(o) for o in liftable])}"
    if back:
        sentence += f"; {region} returns to serving in {_join(back)}"
    else:
        sentence += f"; automation decides {region} again (no change to serving right now)"
    notes = _notes(world, proj.cancelled, targets)
    if not world.healthy(region):
        notes.append(f"{region} is unhealthy now: automation keeps it out until it recovers")
    if blocking:
        notes.append(f"{region} stays drained in all targets by {_overrides_by(blocking[0])}")
    return Preview(req, sentence, tuple(impacts), lift=tuple(liftable), notes=tuple(notes))


def _preview_failover(world: _World, req: ActionRequest, actor: Principal) -> Preview:
    region = _region(world.settings, req)
    target = _target(world.settings, req, required=True)
    if target.routing != "priority":
        raise InvalidAction("target", target.name, "routes by weight: fail over only applies to priority targets (drain or pin instead)")
    if region not in target.endpoints:
        raise InvalidAction("region", region, f"is not an endpoint of target {target.name!r}")
    new = Override(
        kind=OverrideKind.FAILOVER,
        who=actor.name,
        why=req.reason,
        created_at=world.now,
        region=region,
        target=target.name,
        expires_at=_expiry(req, world.now),
    )
    superseded = [o for o in world.active if o.kind is OverrideKind.FAILOVER and o.target == target.name]
    sentence, impacts, refusals, notes = _add_preview(world, new, [target], superseded)
    if not world.healthy(region):
        refusals.insert(
            0,
            f"{region} is unhealthy ({'; '.join(world.regions[region].reasons) or 'unhealthy'}): failing over would send {target.name}'s traffic to a failing region",
        )
    drains = [
        o
        for o in world.active
        if o.kind in (OverrideKind.DRAIN, OverrideKind.MAINTENANCE) and o.region in (None, region) and o.target in (None, target.name)
    ]
    notes += [f"overrules {_override_ref(o)} in {target.name} while this failover is active" for o in drains]
    notes += [f"replaces {_override_ref(o)}" for o in superseded]
    refusal = "; ".join(refusals) or None
    sentence = f"{target.name}'s traffic goes to {region}. {sentence}"
    return Preview(
        req,
        sentence,
        tuple(impacts),
        add=(new,),
        lift=tuple(superseded),
        refusal=refusal,
        forceable=refusal is not None,
        notes=tuple(notes),
    )


def _preview_pin(world: _World, req: ActionRequest, actor: Principal) -> Preview:
    region = _region(world.settings, req)
    target = _target(world.settings, req, required=True)
    if region not in target.endpoints:
        raise InvalidAction("region", region, f"is not an endpoint of target {target.name!r}")
    if (req.weight is None) == (req.priority is None):
        raise InvalidAction("weight", req.weight, "and priority: give exactly one of them to pin")
    if req.weight is not None:
        lo, hi = WEIGHT_RANGE[target.kind]
        if not lo <= req.weight <= hi:
            raise InvalidAction("weight", req.weight, f"is not between {lo} and {hi} for a {target.kind} target")
        if target.kind == "traffic_manager" and target.routing == "priority":
            raise InvalidAction(
                "weight", req.weight, f"means nothing in {target.name}, which routes by priority: pin a priority or fail over"
            )
        what = "weight"
    else:
        lo, hi = PRIORITY_RANGE[target.kind]
        assert req.priority is not None
        if not lo <= req.priority <= hi:
            raise InvalidAction("priority", req.priority, f"is not between {lo} and {hi} for a {target.kind} target")
        if target.kind == "traffic_manager" and target.routing == "weighted":
            raise InvalidAction("priority", req.priority, f"means nothing in {target.name}, which routes by weight: pin a weight")
        what = "priority"
    new = Override(
        kind=OverrideKind.PIN,
        who=actor.name,
        why=req.reason,
        created_at=world.now,
        region=region,
        target=target.name,
        weight=req.weight,
        priority=req.priority,
        expires_at=_expiry(req, world.now),
    )
    superseded = [
        o
        for o in world.active
        if o.kind is OverrideKind.PIN and o.target == target.name and o.region == region and getattr(o, what) is not None
    ]
    sentence, impacts, refusals, notes = _add_preview(world, new, [target], superseded)
    notes += [f"replaces {_override_ref(o)}" for o in superseded]
    notes.append(f"automation leaves {region}'s {what} in {target.name} alone until the pin is lifted")
    refusal = "; ".join(refusals) or None
    return Preview(
        req,
        sentence,
        tuple(impacts),
        add=(new,),
        lift=tuple(superseded),
        refusal=refusal,
        forceable=refusal is not None,
        notes=tuple(notes),
    )


def _preview_freeze(world: _World, req: ActionRequest, actor: Principal) -> Preview:
    target = _target(world.settings, req)
    name = target.name if target else None
    existing = [o for o in world.active if o.kind is OverrideKind.FREEZE and o.target == name]
    if existing:
        msg = f"automation is already frozen for {name or 'every target'} by {_overrides_by(existing[0])}"
        return Preview(req, msg, refusal=msg)
    new = Override(
        kind=OverrideKind.FREEZE, who=actor.name, why=req.reason, created_at=world.now, target=name, expires_at=_expiry(req, world.now)
    )
    targets = [target] if target else list(world.settings.targets)
    sentence, impacts, _, notes = _add_preview(world, new, targets)
    notes.append("manual overrides (drain, pin, failover) still apply while frozen")
    notes.append("while frozen, a failing region is NOT drained automatically: watch the dashboard")
    return Preview(req, sentence, tuple(i for i in impacts if i.changes), add=(new,), notes=tuple(notes))


def _preview_unfreeze(world: _World, req: ActionRequest, actor: Principal) -> Preview:
    target = _target(world.settings, req)
    name = target.name if target else None
    freezes = [o for o in world.active if o.kind is OverrideKind.FREEZE and o.target == name]
    if not freezes:
        others = [o for o in world.active if o.kind is OverrideKind.FREEZE]
        msg = f"automation is not frozen for {name or 'every target'}"
        if others:
            msg += "; active freezes: " + ", ".join(f"{o.target or 'global'} ({_overrides_by(o)})" for o in others)
        return Preview(req, msg, refusal=msg)
    remaining = [o for o in world.active if o not in freezes]
    proj = _project(world, world.active, remaining)
    targets = [target] if target else list(world.settings.targets)
    impacts = [i for i in _impacts(world, proj, targets) if i.changes]
    sentence = f"this will lift {_join([_override_ref(o) for o in freezes])}; automation resumes on the worker's next tick"
    if proj.caused.changes:
        sentence += f" with {len(proj.caused.changes)} pending change(s)"
    return Preview(req, sentence, tuple(impacts), lift=tuple(freezes), notes=tuple(_notes(world, proj.cancelled, targets)))


_BUILDERS = {
    Action.DRAIN: _preview_drain,
    Action.RESTORE: _preview_restore,
    Action.FAILOVER: _preview_failover,
    Action.PIN: _preview_pin,
    Action.FREEZE: _preview_freeze,
    Action.UNFREEZE: _preview_unfreeze,
}


def preview(settings: Settings, store: Store, req: ActionRequest, actor: Principal, now: datetime) -> Preview:
    """What ``req`` would do now, or why it is refused. Writes nothing."""
    _check_actor(actor)
    _check_reason(req)
    world = _load(settings, store, now)
    return _BUILDERS[req.action](world, req, actor)


LOCK = "overrides"
"""The lock every change of the override set takes (Store.exclusive): actions never interleave."""


def execute(
    settings: Settings,
    store: Store,
    req: ActionRequest,
    actor: Principal,
    now: datetime,
    expected_digest: str | None = None,
    *,
    require_digest: bool = False,
) -> Result:
    """Preview again, enforce guardrails and role, then store overrides and one audit event.

    All of it is one transaction under the override lock: two operators'
    actions run one after another, each previewed against what the other
    stored, and a failure anywhere (a write, the audit event) leaves nothing
    half done. ``expected_digest``: the digest of the preview the operator
    confirmed; if the situation changed since, refuse so they review the new
    preview. ``require_digest`` (the dashboard and the API): nothing is
    stored without one; a refusal is still answered as a refusal.
    """
    with store.exclusive(LOCK):
        p = preview(settings, store, req, actor, now)
        if expected_digest is not None and expected_digest != p.digest:
            raise ActionRefused("the situation changed since the preview: review the new preview and confirm again", p)
        forced = False
        if not p.allowed:
            if not (p.forceable and req.force):
                raise ActionRefused(
                    f"refused: {p.refusal}" + (" (an admin may force it by typing the region name)" if p.forceable else ""), p
                )
            if not actor.can("admin"):
                raise NotAllowed("forcing past a guardrail needs the admin role")
            if req.confirm != req.region:
                raise InvalidAction("confirm", req.confirm, f"must be the region name {req.region!r}, typed, to force")
            forced = True
        if expected_digest is None and require_digest:
            raise InvalidAction("digest", None, "is required: preview the action first and confirm with the preview's digest")
        lifted = []
        for o in p.lift:
            done = store.lift_override(o.id, actor.name, now) if o.id is not None else None
            if done is None:
                raise ActionRefused(f"{_override_ref(o)} was lifted by someone else just now: review the new preview", p)
            lifted.append(done)
        added = tuple(store.add_override(replace(o, forced=forced)) for o in p.add)
        event = AuditEvent(
            kind=EventKind.OVERRIDE,
            at=now,
            actor=actor.name,
            summary=_summary(req, actor, p, forced),
            region=req.region,
            target=req.target,
            severity="critical" if forced else ("warning" if req.action in (Action.DRAIN, Action.FAILOVER, Action.FREEZE) else "info"),
            data={
                "action": req.action.value,
                "why": req.reason,
                "via": actor.via,
                "preview": p.sentence,
                "impacts": [i.to_dict() for i in p.impacts],
                "override_ids": [o.id for o in added],
                "lifted_ids": [o.id for o in lifted],
                "forced": forced,
                "refusal_overridden": p.refusal if forced else None,
            },
        )
        event_id = store.add_event(event)
    log.info("%s by %s (%s): %s", req.action.value, actor.name, actor.via, p.sentence)
    return Result(preview=p, added=added, lifted=tuple(lifted), event_ids=(event_id,), forced=forced)


def _summary(req: ActionRequest, actor: Principal, p: Preview, forced: bool) -> str:
    scope = " ".join(x for x in (req.region, f"in {req.target}" if req.target else None) if x)
    head = f"{actor.name} {req.action.value}{' (FORCED)' if forced else ''} {scope}".strip()
    return f"{head}: {req.reason} -- {p.sentence}"


def lift(settings: Settings, store: Store, override_id: int, actor: Principal, reason: str, now: datetime) -> Override:
    """Lift one active override by id (the API's DELETE): guarded and audited like any action, in one transaction."""
    _check_actor(actor)
    reason = (reason or "").strip()
    if len(reason) < MIN_REASON:
        raise InvalidAction("reason", reason, f"is required: say why (at least {MIN_REASON} characters)")
    with store.exclusive(LOCK):
        world = _load(settings, store, now)
        active = {o.id: o for o in world.active}
        if override_id not in active:
            raise ActionRefused(f"override #{override_id} is not active (unknown, expired or already lifted)")
        o = active[override_id]
        proj = _project(world, world.active, [x for x in world.active if x.id != override_id])
        if proj.refusals:
            raise ActionRefused(f"refused: lifting {_override_ref(o)} would apply what it holds back: " + "; ".join(proj.refusals))
        done = store.lift_override(override_id, actor.name, now)
        if done is None:
            raise ActionRefused(f"override #{override_id} was lifted by someone else just now")
        store.add_event(
            AuditEvent(
                kind=EventKind.OVERRIDE_LIFTED,
                at=now,
                actor=actor.name,
                summary=f"{actor.name} lifted {_override_ref(o)}: {reason}",
                region=o.region,
                target=o.target,
                data={"override_id": override_id, "why": reason, "via": actor.via, "kind": o.kind.value},
            )
        )
    log.info("override #%s lifted by %s", override_id, actor.name)
    return done


__all__ = [
    "Action",
    "ActionRefused",
    "ActionRequest",
    "Impact",
    "InvalidAction",
    "NotAllowed",
    "Preview",
    "Result",
    "execute",
    "lift",
    "parse_request",
    "preview",
]
