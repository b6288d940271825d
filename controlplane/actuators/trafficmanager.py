"""Azure Traffic Manager through azure-mgmt-trafficmanager.

Reads: ``profiles.get`` (every endpoint inline, with Traffic Manager's own
``endpointMonitorStatus``). Writes: ``endpoints.update``, a partial PATCH
(not long-running) carrying only the fields that differ, one per endpoint.
Draining is ``endpointStatus: Disabled`` (the minimum weight is 1).

Traffic Manager requires unique priorities in a profile (stated in the spec
text, not its schema): writes are ordered so no single PATCH ever collides,
and a swap is done through a free, temporary priority.
"""

from __future__ import annotations

import logging
from typing import Any

from controlplane.actuators.base import (
    ActuatorError,
    ApplyReport,
    OnResult,
    SdkActuator,
    Step,
    UnreadableEndpoint,
    desired_fields,
    malformed,
    observed_fields,
    order_for_unique_priorities,
    read_setting,
    report_group,
    sdk_fields,
    start_apply,
    target_of_kind,
    unreadable_error,
    verify,
)
from controlplane.config import PRIORITY_RANGE, Target, TrafficManagerTarget, azure_name
from controlplane.domain import Change, EndpointSetting, Field, Plan, TargetState

log = logging.getLogger(__name__)


def _type_suffix(value: str | None) -> str:
    """'Microsoft.Network/trafficManagerProfiles/externalEndpoints' -> 'externalendpoints'."""
    return (value or "").rsplit("/", 1)[-1].lower()


class TrafficManagerActuator(SdkActuator):
    kind = "traffic_manager"

    # ------------------------------------------------------------ read

    def _profile(self, target: TrafficManagerTarget, deadline: float) -> Any:
        client = self._client_for(target.subscription_id)
        return self._retrying(
            lambda left: client.profiles.get(target.resource_group, target.profile, **self._opts(left)),
            deadline,
            f"read Traffic Manager profile {target.profile}",
        )

    def read_actual(self, target: Target, *, deadline: float | None = None) -> TargetState:
        target = target_of_kind(target, TrafficManagerTarget)
        deadline = self._deadline(deadline)
        endpoints = list((self._profile(target, deadline).properties or {}).get("endpoints") or [])
        return self._state(target, endpoints)

    def _state(self, target: TrafficManagerTarget, endpoints: list[Any]) -> TargetState:
        by_name = {str(ep.name).lower(): ep for ep in endpoints}
        settings: dict[str, EndpointSetting] = {}
        errors: dict[str, str] = {}
        monitor: dict[str, str] = {}
        owned: set[str] = set()
        for region, cfg in target.endpoints.items():
            ep = by_name.get(cfg.name.lower())
            if ep is None or _type_suffix(ep.type) != cfg.type.lower():
                log.warning("target %s: endpoint %s (%s) not found in profile %s", target.name, cfg.name, cfg.type, target.profile)
                continue
            owned.add(cfg.name.lower())
            props = ep.properties
            try:
                settings[region] = read_setting(props.weight, props.priority, props.endpoint_status, "endpointStatus")
            except UnreadableEndpoint as exc:
                errors[region] = f"{cfg.name}: {exc}"
                log.warning("target %s: endpoint %s unreadable: %s", target.name, cfg.name, exc)
                continue
            if props.endpoint_monitor_status:
                monitor[region] = str(getattr(props.endpoint_monitor_status, "value", props.endpoint_monitor_status))
        unmanaged = tuple(sorted(str(ep.name) for ep in endpoints if str(ep.name).lower() not in owned))
        return TargetState(target=target.name, endpoints=settings, monitor_status=monitor, unmanaged=unmanaged, read_errors=errors)

    # ------------------------------------------------------------ write

    def apply(self, target: Target, plan: Plan, *, deadline: float, on_result: OnResult | None = None) -> ApplyReport:
        target = target_of_kind(target, TrafficManagerTarget)
        report, groups = start_apply(target, plan, on_result)
        if not groups:
            return report
        names = {region: azure_name(target, region) for region in groups}
        steps, conflicts = self._ordered_steps(target, groups, names, deadline)
        for region, conflict in conflicts.items():
            report_group(report, groups.pop(region), conflict, on_result)
        for step in steps:
            if step.region not in groups:
                continue  # an earlier step of this endpoint failed
            error = self._write(target, step, report, deadline)
            if step.park and error is None:
                continue
            report_group(report, groups.pop(step.region), error, on_result)
        return report

    def _ordered_steps(
        self, target: TrafficManagerTarget, groups: dict[str, list[Change]], names: dict[str, str], deadline: float
    ) -> tuple[list[Step], dict[str, ActuatorError]]:
        touches_priority = any(c.field is Field.PRIORITY for changes in groups.values() for c in changes)
        if not touches_priority:
            return [Step(region, desired_fields(changes)) for region, changes in groups.items()], {}
        try:
            endpoints = list((self._profile(target, deadline).properties or {}).get("endpoints") or [])
        except ActuatorError as error:
            return [], dict.fromkeys(groups, error)
        current = {str(ep.name).lower(): ep.properties.priority for ep in endpoints}
        steps, refused = order_for_unique_priorities(groups, names, current, PRIORITY_RANGE[self.kind])
        return steps, dict(refused)

    def _write(self, target: TrafficManagerTarget, step: Step, report: ApplyReport, deadline: float) -> ActuatorError | None:
        from azure.mgmt.trafficmanager.models import Endpoint, EndpointProperties

        cfg = target.endpoints[step.region]
        body = sdk_fields(step.fields, "endpoint_status")
        client = self._client_for(target.subscription_id)

        def patch(left: float) -> Any:
            report.writes += 1
            return client.endpoints.update(
                target.resource_group,
                target.profile,
                cfg.type,
                cfg.name,
                Endpoint(properties=EndpointProperties(**body)),
                **self._opts(left),
            )

        what = f"PATCH Traffic Manager endpoint {target.profile}/{cfg.name}{' (park)' if step.park else ''}"
        try:
            result = self._retrying(patch, deadline, what)
        except ActuatorError as error:
            log.warning("%s failed: %s", what, error)
            return error
        try:
            props = result.properties
            observed = observed_fields(props.weight, props.priority, props.endpoint_status, "endpointStatus")
        except UnreadableEndpoint as exc:
            return unreadable_error(exc)
        except (AttributeError, TypeError) as exc:
            bad = malformed(what, exc)
            log.warning("%s: %s", what, bad)
            return bad
        return verify(step.fields, observed)
