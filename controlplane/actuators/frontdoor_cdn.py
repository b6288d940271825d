"""Azure Front Door Standard/Premium through azure-mgmt-cdn.

Reads: ``afd_origins.list_by_origin_group``. Writes: one
``afd_origins.begin_update`` (PATCH, long-running) per origin, carrying only
the fields that differ; the operation's result (the service's final GET of
the origin) is checked against what was asked.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from controlplane.actuators.base import (
    ActuatorError,
    ApplyReport,
    OnResult,
    SdkActuator,
    TransientError,
    UnreadableEndpoint,
    desired_fields,
    observed_fields,
    read_setting,
    report_group,
    sdk_fields,
    start_apply,
    target_of_kind,
    unreadable_error,
    verify,
)
from controlplane.config import FrontDoorCdnTarget, Target
from controlplane.domain import Change, EndpointSetting, Plan, TargetState

log = logging.getLogger(__name__)


class FrontDoorCdnActuator(SdkActuator):
    kind = "front_door_cdn"

    def read_actual(self, target: Target, *, deadline: float | None = None) -> TargetState:
        target = target_of_kind(target, FrontDoorCdnTarget)
        deadline = self._deadline(deadline)
        client = self._client_for(target.subscription_id)
        origins = self._retrying(
            lambda left: list(
                client.afd_origins.list_by_origin_group(target.resource_group, target.profile, target.origin_group, **self._opts(left))
            ),
            deadline,
            f"list origins of {target.profile}/{target.origin_group}",
        )
        by_name = {str(o.name).lower(): o for o in origins}
        settings: dict[str, EndpointSetting] = {}
        errors: dict[str, str] = {}
        for region, cfg in target.endpoints.items():
            origin = by_name.get(cfg.origin.lower())
            if origin is None:
                log.warning("target %s: origin %s not found in origin group %s", target.name, cfg.origin, target.origin_group)
                continue
            p = origin.properties
            try:
                settings[region] = read_setting(p.weight, p.priority, p.enabled_state, "enabledState")
            except UnreadableEndpoint as exc:
                errors[region] = f"{cfg.origin}: {exc}"
                log.warning("target %s: origin %s unreadable: %s", target.name, cfg.origin, exc)
        owned = {cfg.origin.lower() for cfg in target.endpoints.values()}
        unmanaged = tuple(sorted(str(o.name) for o in origins if str(o.name).lower() not in owned))
        return TargetState(target=target.name, endpoints=settings, unmanaged=unmanaged, read_errors=errors)

    def apply(self, target: Target, plan: Plan, *, deadline: float, on_result: OnResult | None = None) -> ApplyReport:
        target = target_of_kind(target, FrontDoorCdnTarget)
        report, groups = start_apply(target, plan, on_result)
        for region, changes in groups.items():
            report_group(report, changes, self._write(target, region, changes, report, deadline), on_result)
        return report

    def _write(
        self, target: FrontDoorCdnTarget, region: str, changes: list[Change], report: ApplyReport, deadline: float
    ) -> ActuatorError | None:
        from azure.mgmt.cdn.models import AFDOriginUpdateParameters, AFDOriginUpdatePropertiesParameters

        origin = target.endpoints[region].origin
        wanted = desired_fields(changes)
        body = sdk_fields(wanted, "enabled_state")
        client = self._client_for(target.subscription_id)

        def patch(left: float) -> Any:
            report.writes += 1
            poller = client.afd_origins.begin_update(
                target.resource_group,
                target.profile,
                target.origin_group,
                origin,
                AFDOriginUpdateParameters(properties=AFDOriginUpdatePropertiesParameters(**body)),
                **self._opts(left),
            )
            result = poller.result(timeout=max(0.0, deadline - time.monotonic()))
            if not poller.done():
                raise TransientError(
                    f"origin {origin}: the update was accepted but had not finished by the deadline", code="OperationTimeout"
                )
            return result

        what = f"PATCH origin {target.profile}/{target.origin_group}/{origin}"
        try:
            result = self._retrying(patch, deadline, what)
        except ActuatorError as error:
            log.warning("%s failed: %s", what, error)
            return error
        p = result.properties
        try:
            return verify(wanted, observed_fields(p.weight, p.priority, p.enabled_state, "enabledState"))
        except UnreadableEndpoint as exc:
            return unreadable_error(exc)
