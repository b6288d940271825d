"""Azure Front Door (classic) through azure-mgmt-frontdoor.

Classic Front Door has no PATCH and no per-pool operation: changing a backend
means GET the whole Front Door, modify, PUT it back (``begin_create_or_update``,
long-running). There is no ETag, so:

- one read-modify-write per plan (all the plan's backends in ONE PUT), with
  the GET right before the PUT to keep the window short;
- writes to one Front Door are serialised in this process by a lock;
- only the config-named backends of the config-named pool are modified: the
  rest of the document is sent back exactly as read (the SDK model keeps
  every field it does not know; read-only fields are dropped by the SDK and
  kept by the service), so other pools, rules and endpoints are untouched;
- the result of the operation (the service's final GET) is checked.

Classic Front Door retires in 2027; Standard/Premium is the primary path
(:mod:`controlplane.actuators.frontdoor_cdn`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from controlplane.actuators.base import (
    ActuatorError,
    ApplyReport,
    OnResult,
    PermanentError,
    SdkActuator,
    TransientError,
    UnreadableEndpoint,
    desired_fields,
    observed_fields,
    read_setting,
    remaining,
    report_group,
    sdk_fields,
    start_apply,
    target_of_kind,
    unreadable_error,
    verify,
)
from controlplane.config import FrontDoorTarget, Target
from controlplane.domain import Change, EndpointSetting, Field, Plan, TargetState

log = logging.getLogger(__name__)


_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def front_door_lock(subscription: str, resource_group: str, name: str) -> threading.Lock:
    """The process-wide lock serialising writes to one Front Door."""
    key = f"{subscription}/{resource_group}/{name}".lower()
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def _find(items: list[Any] | None, attr: str, value: str) -> Any | None:
    for item in items or []:
        if str(getattr(item, attr, "") or "").lower() == value.lower():
            return item
    return None


def _observed(backend: Any) -> dict[Field, int | bool | None]:
    return observed_fields(backend.weight, backend.priority, backend.enabled_state, "enabledState")


class FrontDoorClassicActuator(SdkActuator):
    kind = "front_door"

    # ------------------------------------------------------------ read

    def _get(self, target: FrontDoorTarget, deadline: float) -> Any:
        client = self._client_for(target.subscription_id)
        return self._retrying(
            lambda left: client.front_doors.get(target.resource_group, target.front_door, **self._opts(left)),
            deadline,
            f"read Front Door {target.front_door}",
        )

    @staticmethod
    def _pool(target: FrontDoorTarget, front_door: Any) -> Any:
        pool = _find(front_door.properties.backend_pools, "name", target.backend_pool)
        if pool is None:
            raise PermanentError(
                f"Front Door {target.front_door!r} has no backend pool {target.backend_pool!r}", code="BackendPoolNotFound"
            )
        return pool

    def read_actual(self, target: Target, *, deadline: float | None = None) -> TargetState:
        target = target_of_kind(target, FrontDoorTarget)
        deadline = self._deadline(deadline)
        backends = list(self._pool(target, self._get(target, deadline)).properties.backends or [])
        settings: dict[str, EndpointSetting] = {}
        errors: dict[str, str] = {}
        owned: set[str] = set()
        for region, cfg in target.endpoints.items():
            backend = _find(backends, "address", cfg.address)
            if backend is None:
                log.warning("target %s: backend %s not found in pool %s", target.name, cfg.address, target.backend_pool)
                continue
            owned.add(cfg.address.lower())
            try:
                settings[region] = read_setting(backend.weight, backend.priority, backend.enabled_state, "enabledState")
            except UnreadableEndpoint as exc:
                errors[region] = f"{cfg.address}: {exc}"
                log.warning("target %s: backend %s unreadable: %s", target.name, cfg.address, exc)
        unmanaged = tuple(sorted(str(b.address) for b in backends if str(b.address).lower() not in owned))
        return TargetState(target=target.name, endpoints=settings, unmanaged=unmanaged, read_errors=errors)

    # ------------------------------------------------------------ write

    def apply(self, target: Target, plan: Plan, *, deadline: float, on_result: OnResult | None = None) -> ApplyReport:
        target = target_of_kind(target, FrontDoorTarget)
        report, groups = start_apply(target, plan, on_result)
        if not groups:
            return report
        with front_door_lock(target.subscription_id, target.resource_group, target.front_door):
            missing: dict[str, ActuatorError] = {}
            try:
                result = self._retrying(
                    lambda left: self._read_modify_write(target, groups, missing, report, left),
                    deadline,
                    f"PUT Front Door {target.front_door}",
                )
            except ActuatorError as error:
                log.warning("Front Door %s: write failed: %s", target.front_door, error)
                for changes in groups.values():
                    report_group(report, changes, error, on_result)
                return report
        for region, changes in groups.items():
            report_group(report, changes, missing.get(region) or self._check(target, region, changes, result), on_result)
        return report

    def _read_modify_write(
        self, target: FrontDoorTarget, groups: dict[str, list[Change]], missing: dict[str, ActuatorError], report: ApplyReport, left: float
    ) -> Any:
        """One attempt: GET, change the managed backends, PUT, wait for the operation."""
        deadline = time.monotonic() + left
        client = self._client_for(target.subscription_id)
        front_door = client.front_doors.get(target.resource_group, target.front_door, **self._opts(left))
        backends = self._pool(target, front_door).properties.backends or []
        missing.clear()
        changed = False
        for region, changes in groups.items():
            backend = _find(backends, "address", target.endpoints[region].address)
            if backend is None:
                missing[region] = PermanentError(
                    f"backend {target.endpoints[region].address!r} is not in pool {target.backend_pool!r}", code="BackendNotFound"
                )
                continue
            for attribute, value in sdk_fields(desired_fields(changes), "enabled_state").items():
                setattr(backend, attribute, value)
            changed = True
        if not changed:
            return front_door
        report.writes += 1
        poller = client.front_doors.begin_create_or_update(
            target.resource_group, target.front_door, front_door, **self._opts(remaining(deadline))
        )
        result = poller.result(timeout=max(0.0, remaining(deadline)))
        if not poller.done():
            raise TransientError(
                f"Front Door {target.front_door}: the update was accepted but had not finished by the deadline", code="OperationTimeout"
            )
        return result

    def _check(self, target: FrontDoorTarget, region: str, changes: list[Change], result: Any) -> ActuatorError | None:
        try:
            backend = _find(self._pool(target, result).properties.backends, "address", target.endpoints[region].address)
        except ActuatorError as error:
            return error
        if backend is None:
            return TransientError(f"backend {target.endpoints[region].address!r} missing after the write", code="VerifyMismatch")
        try:
            return verify(desired_fields(changes), _observed(backend))
        except UnreadableEndpoint as exc:
            return unreadable_error(exc)
