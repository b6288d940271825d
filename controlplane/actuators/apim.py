"""Azure API Management load-balanced pools through azure-mgmt-apimanagement.

A pool is a backend of ``type: Pool`` whose ``pool.services`` lists member
backends (``BackendPoolItem``: ARM ``id``, ``weight`` 0-100, ``priority``
0-100). Each configured region is one member, matched by backend id.

Reads: ``backend.get`` of the pool (with its ETag) and of each configured
member backend, for its circuit-breaker rules (shown, never changed).

Writes: ``backend.update`` (``Backend_Update``, PATCH) of ``pool`` only, with
``If-Match`` set to the ETag just read -- never ``*``. A PATCH of
``pool.services`` replaces the whole list, so the new list is the one just
read with only the configured members' entries changed: members the config
does not name, their order and every other property of the backend are
carried over untouched. One PATCH per plan and pool.

Units (docs/adr/0008): regionguard's weights are 1-1000 for every kind; an
APIM weight is ``weight / APIM_WEIGHT_SCALE`` (the engine only plans
multiples of it). Priorities are APIM's own (0-100, lower first).

Drain and restore (docs/adr/0008): a drained member is taken out of
``pool.services`` (the only state the spec guarantees takes no traffic:
weight 0 has no documented meaning, and a priority group of weight-0
members may still be picked); a restore puts it back with the plan's weight
and priority, else its configured baseline. A member out of the pool reads as
``enabled=False`` with no weight or priority. A write that would leave the
pool with no member (``minItems: 1``) is refused without being sent.

Concurrency: every change carries the value the plan saw (``Change.actual``).
A member field that no longer has it was changed by someone else meanwhile:
that change is not written over (``ChangedMeanwhile``, transient; the next
tick's drift check decides). A 412 (the pool changed between our GET and
PATCH) means: read again, plan the list again from the fresh read, and send
it once more, within the deadline; a second 412 fails the changes as
transient.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from controlplane.actuators.base import (
    ActuatorError,
    ApplyReport,
    OnResult,
    PermanentError,
    SdkActuator,
    TransientError,
    UnreadableEndpoint,
    checked_int,
    classify,
    desired_fields,
    remaining,
    report_group,
    start_apply,
    target_of_kind,
    verify,
)
from controlplane.config import APIM_WEIGHT_SCALE, APIMBackendPoolTarget, Target
from controlplane.domain import Change, EndpointSetting, Field, Plan, TargetState

log = logging.getLogger(__name__)

NATIVE_RANGE = (0, 100)  # BackendPoolItem.weight and .priority
PRECONDITION_FAILED = "PreconditionFailed"
WRITE_ATTEMPTS_ON_412 = 2  # the first PATCH and one more after a 412


def backend_arm_id(target: APIMBackendPoolTarget, backend: str) -> str:
    return (
        f"/subscriptions/{target.subscription_id}/resourceGroups/{target.resource_group}"
        f"/providers/Microsoft.ApiManagement/service/{target.service}/backends/{backend}"
    )


def _member_key(item_id: str | None) -> str:
    """'.../service/{service}/backends/{backend}' -> 'service/backend' (lower case) for matching."""
    parts = [p for p in str(item_id or "").lower().split("/") if p]
    try:
        i = parts.index("service")
        return f"{parts[i + 1]}/{parts[parts.index('backends', i) + 1]}"
    except (ValueError, IndexError):
        return str(item_id or "").lower()


def to_native_weight(weight: int) -> int:
    return weight // APIM_WEIGHT_SCALE


def from_native_weight(weight: int | None) -> int | None:
    return None if weight is None else weight * APIM_WEIGHT_SCALE


def _duration(value: Any) -> str:
    """An ISO 8601 duration as the SDK gives it (a timedelta) -> '1m', '90s', '1h30m'."""
    if not isinstance(value, timedelta):
        return str(value)
    seconds = int(value.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + (f"{secs}s" if secs else "")
    return text or "0s"


def describe_circuit_breaker(rule: Any) -> str:
    """One circuit-breaker rule, in words, e.g.
    'aoai-throttled: trips after 3 failures (429, 500-599) in 1m for 1m; honours Retry-After'."""
    cond = getattr(rule, "failure_condition", None)
    what = []
    if cond is not None:
        codes = [f"{r.min}" if r.min == r.max else f"{r.min}-{r.max}" for r in (cond.status_code_ranges or [])]
        codes += list(cond.error_reasons or [])
        threshold = (
            f"{cond.count} failures" if cond.count is not None else f"{cond.percentage}% failures" if cond.percentage else "failures"
        )
        what.append(f"trips after {threshold}" + (f" ({', '.join(codes)})" if codes else ""))
        if cond.interval:
            what.append(f"in {_duration(cond.interval)}")
    if getattr(rule, "trip_duration", None):
        what.append(f"for {_duration(rule.trip_duration)}")
    text = f"{rule.name or 'rule'}: " + (" ".join(what) or "no failure condition")
    if getattr(rule, "accept_retry_after", None):
        text += "; honours Retry-After"
    return text


@dataclass
class _Attempt:
    """One planned PATCH: the new list, and per region what it does or why it is refused."""

    services: list[Any]
    changed: bool
    refused: dict[str, ActuatorError] = field(default_factory=dict)


class ApimBackendPoolActuator(SdkActuator):
    kind = "apim_backend_pool"

    def __init__(self, client_for: Any, **kwargs: Any) -> None:
        super().__init__(client_for, **kwargs)
        self._breakers: dict[tuple[str, str, str, str], tuple[str, ...]] = {}  # last rules read per member backend

    # ------------------------------------------------------------ read

    def _get_pool(self, target: APIMBackendPoolTarget, deadline: float) -> tuple[Any, str]:
        client = self._client_for(target.subscription_id)
        pool, etag = self._retrying(
            lambda left: client.backend.get(
                target.resource_group, target.service, target.pool, cls=lambda _r, d, h: (d, h.get("ETag")), **self._opts(left)
            ),
            deadline,
            f"read APIM pool {target.service}/{target.pool}",
        )
        kind = pool.type_properties_type  # properties.type; ``pool.type`` is the ARM resource type
        if (kind or "").lower() != "pool" or pool.pool is None:
            raise PermanentError(
                f"APIM backend {target.service}/{target.pool} is not a load-balanced pool (type {kind!r})", code="NotAPool"
            )
        if not etag:
            raise PermanentError(
                f"APIM backend {target.service}/{target.pool} came without an ETag; refusing to write blindly", code="NoETag"
            )
        return pool, str(etag)

    def read_actual(self, target: Target, *, deadline: float | None = None) -> TargetState:
        target = target_of_kind(target, APIMBackendPoolTarget)
        deadline = self._deadline(deadline)
        pool, _etag = self._get_pool(target, deadline)
        state = self._state(target, list(pool.pool.services or []) if pool.pool else [])
        breakers = self._circuit_breakers(target, deadline)
        return TargetState(
            target=state.target,
            endpoints=state.endpoints,
            unmanaged=state.unmanaged,
            circuit_breakers=breakers,
            read_errors=state.read_errors,
        )

    def _state(self, target: APIMBackendPoolTarget, services: list[Any]) -> TargetState:
        by_key = {_member_key(s.id): s for s in services}
        settings: dict[str, EndpointSetting] = {}
        errors: dict[str, str] = {}
        owned: set[str] = set()
        for region, cfg in target.endpoints.items():
            key = _member_key(backend_arm_id(target, cfg.backend))
            owned.add(key)
            item = by_key.get(key)
            if item is None:  # out of the pool: drained (it has no weight or priority there)
                settings[region] = EndpointSetting(weight=None, priority=None, enabled=False)
                continue
            try:
                weight, priority = checked_int(item.weight, "weight"), checked_int(item.priority, "priority")
            except UnreadableEndpoint as exc:
                errors[region] = f"{cfg.backend}: {exc}"
                log.warning("target %s: pool member %s unreadable: %s", target.name, cfg.backend, exc)
                continue
            settings[region] = EndpointSetting(weight=from_native_weight(weight), priority=priority, enabled=True)
        unmanaged = tuple(sorted(str(s.id).rstrip("/").rsplit("/", 1)[-1] for s in services if _member_key(s.id) not in owned))
        return TargetState(target=target.name, endpoints=settings, unmanaged=unmanaged, read_errors=errors)

    def _circuit_breakers(self, target: APIMBackendPoolTarget, deadline: float) -> dict[str, tuple[str, ...]]:
        """region -> the member backend's circuit-breaker rules, described (read-only).

        One GET per member, not retried (they only inform); a member that cannot be
        read this time keeps the rules last read, marked as such, or says why.
        """
        client = self._client_for(target.subscription_id)
        out: dict[str, tuple[str, ...]] = {}
        for region, cfg in target.endpoints.items():
            key = (target.subscription_id.lower(), target.resource_group.lower(), target.service.lower(), cfg.backend.lower())
            if remaining(deadline) <= 0.05:
                error: ActuatorError = TransientError("no time left in this read", code="DeadlineExceeded")
            else:
                try:
                    backend = client.backend.get(target.resource_group, target.service, cfg.backend, **self._opts(remaining(deadline)))
                except Exception as exc:  # a member we cannot read does not stop the pool's read
                    error = classify(exc)
                else:
                    rules = getattr(getattr(backend, "circuit_breaker", None), "rules", None) or []
                    out[region] = tuple(describe_circuit_breaker(r) for r in rules) or ("none: APIM never trips this member by itself",)
                    self._breakers[key] = out[region]
                    continue
            known = self._breakers.get(key)
            why = f"{error.code}: {error.message}"[:200]
            out[region] = (*known, f"(as last read; this read failed: {why})") if known else (f"unknown: {why}",)
        return out

    # ------------------------------------------------------------ write

    def apply(self, target: Target, plan: Plan, *, deadline: float, on_result: OnResult | None = None) -> ApplyReport:
        target = target_of_kind(target, APIMBackendPoolTarget)
        report, groups = start_apply(target, plan, on_result)
        if not groups:
            return report
        what = f"PATCH APIM pool {target.service}/{target.pool}"
        outcome: dict[str, ActuatorError | None] = {}
        for attempt in range(1, WRITE_ATTEMPTS_ON_412 + 1):
            try:
                pool, etag = self._get_pool(target, deadline)
            except ActuatorError as error:
                outcome = dict.fromkeys(groups, error)
                break
            planned = self._plan_services(target, list(pool.pool.services or []), groups)
            outcome = dict(planned.refused)
            writable = [r for r in groups if r not in planned.refused]
            if not writable:
                break
            if not planned.changed:  # already as wanted
                outcome.update(dict.fromkeys(writable))
                break
            try:
                result = self._patch(target, planned.services, etag, report, deadline, what)
            except ActuatorError as error:
                if error.code == PRECONDITION_FAILED and attempt < WRITE_ATTEMPTS_ON_412:
                    log.info("%s: 412, the pool changed since it was read; reading and planning it again", what)
                    continue
                if error.code == PRECONDITION_FAILED:
                    error = TransientError(
                        f"the pool changed under us twice ({error.message}); the next tick reads it again",
                        code=PRECONDITION_FAILED,
                        status=412,
                    )
                log.warning("%s failed: %s", what, error)
                outcome.update(dict.fromkeys(writable, error))
                break
            observed = self._state(target, list(result.pool.services or []) if result.pool else [])
            for region in writable:
                wanted = desired_fields(groups[region])
                have = observed.endpoints.get(region, EndpointSetting(enabled=False))
                outcome[region] = verify(wanted, {f: have.get(f) for f in Field} if have.enabled else {Field.ENABLED: False})
            break
        for region, changes in groups.items():
            report_group(report, changes, outcome.get(region), on_result)
        return report

    def _patch(self, target: APIMBackendPoolTarget, services: list[Any], etag: str, report: ApplyReport, deadline: float, what: str) -> Any:
        from azure.mgmt.apimanagement.models import BackendBaseParametersPool, BackendUpdateParameters

        client = self._client_for(target.subscription_id)
        body = BackendUpdateParameters(pool=BackendBaseParametersPool(services=services))

        def patch(left: float) -> Any:
            report.writes += 1
            return client.backend.update(
                target.resource_group, target.service, target.pool, if_match=etag, parameters=body, **self._opts(left)
            )

        try:
            return self._retrying(patch, deadline, what)
        except ActuatorError as error:
            if error.status == 412 and error.code != PRECONDITION_FAILED:
                raise PermanentError(error.message, code=PRECONDITION_FAILED, status=412) from None
            raise

    def _plan_services(self, target: APIMBackendPoolTarget, current: list[Any], groups: dict[str, list[Change]]) -> _Attempt:
        """The pool's new ``services``: the current list with the configured members' entries
        changed as the changes ask (out, in, weight, priority), everything else kept."""
        from azure.mgmt.apimanagement.models import BackendPoolItem

        services = list(current)
        state = self._state(target, current)
        refused: dict[str, ActuatorError] = {}
        changed = False
        for region, changes in groups.items():
            cfg = target.endpoints[region]
            key = _member_key(backend_arm_id(target, cfg.backend))
            have = state.endpoints[region]
            moved = [c for c in changes if c.actual is not None and have.get(c.field) != c.actual]
            if moved:
                c = moved[0]
                refused[region] = TransientError(
                    f"{c.field.value} of {cfg.backend} is {have.get(c.field)!r} in APIM, not {c.actual!r} as planned: "
                    "someone changed it meanwhile; not written over (the next tick decides)",
                    code="ChangedMeanwhile",
                )
                continue
            wanted = desired_fields(changes)
            enabled = bool(wanted.get(Field.ENABLED, have.enabled))
            index = next((i for i, s in enumerate(services) if _member_key(s.id) == key), None)
            if not enabled:
                if any(f is not Field.ENABLED for f in wanted):
                    refused[region] = PermanentError(
                        f"{cfg.backend} is out of pool {target.pool}: it has no weight or priority there until it is restored",
                        code="NotInPool",
                    )
                    continue
                if index is not None:
                    services.pop(index)
                    changed = True
                continue
            weight = wanted.get(Field.WEIGHT, have.weight if have.enabled else cfg.weight)
            priority = wanted.get(Field.PRIORITY, have.priority if have.enabled else cfg.priority)
            error = _check_units(cfg.backend, weight, priority)
            if error is not None:
                refused[region] = error
                continue
            item = BackendPoolItem(
                id=services[index].id if index is not None else backend_arm_id(target, cfg.backend),
                weight=None if weight is None else to_native_weight(int(weight)),
                priority=None if priority is None else int(priority),
            )
            if index is None:
                services.append(item)
                changed = True
            elif (services[index].weight, services[index].priority) != (item.weight, item.priority):
                services[index] = item
                changed = True
        if not services:  # the spec's minItems: 1. The last drain of the plan stays out; the others go ahead
            drains = [r for r, cs in groups.items() if r not in refused and desired_fields(cs).get(Field.ENABLED) is False]
            if drains:
                kept = drains[-1]
                again = self._plan_services(target, current, {r: cs for r, cs in groups.items() if r not in refused and r != kept})
                again.refused.update(refused)
                again.refused[kept] = PermanentError(
                    f"draining {target.endpoints[kept].backend} would leave APIM pool {target.pool} with no member; "
                    "a pool needs at least one (not sent)",
                    code="PoolNeedsAMember",
                )
                return again
        return _Attempt(services, changed, refused)


def _check_units(backend: str, weight: Any, priority: Any) -> ActuatorError | None:
    """Only weights APIM can hold exactly are written: a multiple of the scale, its native value 0-100."""
    if weight is not None and int(weight) % APIM_WEIGHT_SCALE:
        return PermanentError(
            f"weight {weight} of {backend} cannot be written exactly: APIM pool weights are regionguard's / {APIM_WEIGHT_SCALE}",
            code="WeightNotRepresentable",
        )
    return None
