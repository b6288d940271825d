"""APIM pools on plain values: config rules, the weight scale, and the engine's rules
for a member out of its pool (docs/adr/0008)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from controlplane.actuators.apim import _member_key, describe_circuit_breaker, from_native_weight, to_native_weight
from controlplane.config import ConfigError, Settings, clamp_weight, parse_settings
from controlplane.domain import EndpointSetting, Field, HealthStateName, RegionHealth, TargetState
from controlplane.engine.planner import plan_target
from controlplane.engine.strategy import desired_state
from controlplane.runtime.reconcile import find_drift

REGIONS = ("eastus", "westeurope", "japaneast")
TARGET: dict[str, Any] = {
    "name": "apim-pool",
    "kind": "apim_backend_pool",
    "subscription_id": "00000000-0000-0000-0000-000000000001",
    "resource_group": "rg-apim",
    "service": "apim-llm",
    "pool": "aoai-pool",
    "endpoints": {r: {"backend": f"aoai-{r}", "weight": w, "priority": 1} for r, w in zip(REGIONS, (500, 300, 200), strict=True)},
}


def config(**changes: Any) -> dict[str, Any]:
    target = copy.deepcopy(TARGET)
    target.update(changes)
    regions = [
        {
            "name": r,
            "azure_region": r,
            "endpoints": [
                {"name": "gpt", "base_url": f"https://{r}.example.test", "deployment": "gpt", "auth": {"kind": "api_key", "env": "K"}}
            ],
        }
        for r in REGIONS
    ]
    return {"regions": regions, "targets": [target]}


def problems(**changes: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_settings(config(**changes), "t.yaml")
    return info.value.problems


def settings() -> Settings:
    return parse_settings(config(), "t.yaml")


def test_an_apim_pool_target_parses_with_its_members() -> None:
    t = settings().targets[0]
    assert (t.service, t.pool, t.endpoints["westeurope"].backend, t.endpoints["westeurope"].weight) == (
        "apim-llm",
        "aoai-pool",
        "aoai-westeurope",
        300,
    )


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"service": "1apim"}, "targets[0].service: '1apim'"),
        ({"service": "apim-"}, "targets[0].service: 'apim-'"),
        ({"service": "a" * 51}, "targets[0].service"),
        ({"subscription_id": "my-sub"}, "targets[0].subscription_id: 'my-sub'"),
        ({"resource_group": "rg."}, "targets[0].resource_group: 'rg.'"),
        (
            {"pool": "pools/aoai"},
            "targets[0].pool: 'pools/aoai' rejected: an APIM backend id is one segment of an ARM path: it cannot contain /",
        ),
        ({"pool": "x" * 81}, "targets[0].pool"),
        ({"endpoints": {"eastus": {"backend": "aoai east", "weight": 500}}}, "targets[0].endpoints.eastus.backend: 'aoai east'"),
        ({"endpoints": {"eastus": {"backend": "aoai-eastus", "weight": 333}}}, "weight: 333 is not a multiple of 10"),
        ({"endpoints": {"eastus": {"backend": "aoai-eastus", "weight": 5}}}, "weight: 5 is not between 10 and 1000"),
        ({"endpoints": {"eastus": {"backend": "aoai-eastus", "priority": 101}}}, "priority: 101 is not between 0 and 100"),
        ({"endpoints": {"eastus": {"backend": "aoai-pool"}}}, "is the pool itself"),
        (
            {"endpoints": {"eastus": {"backend": "aoai-x"}, "westeurope": {"backend": "AOAI-X"}}},
            "Azure name 'aoai-x' is mapped from more than one region",
        ),
    ],
)
def test_it_refuses_names_and_values_azure_would_refuse_naming_field_and_value(changes: dict[str, Any], fragment: str) -> None:
    found = problems(**changes)
    assert any(fragment in p for p in found), found


def test_weights_map_onto_apims_0_to_100_by_a_tenth_and_back_exactly() -> None:
    assert [to_native_weight(w) for w in (10, 370, 500, 1000)] == [1, 37, 50, 100]
    assert [from_native_weight(n) for n in (0, 1, 37, 100, None)] == [0, 10, 370, 1000, None]
    assert all(from_native_weight(to_native_weight(w)) == w for w in range(10, 1001, 10))


def test_the_engine_only_makes_weights_an_apim_pool_can_hold() -> None:
    assert [clamp_weight("apim_backend_pool", w) for w in (367, 364, 3, 5000)] == [370, 360, 10, 1000]
    assert [clamp_weight("traffic_manager", w) for w in (367.4, 0, 5000)] == [367, 1, 1000]
    s = settings()
    t = s.targets[0]
    now = datetime(2026, 1, 1, tzinfo=UTC)
    degraded = {r: RegionHealth(r, HealthStateName.HEALTHY, 1.0, ("ok",)) for r in REGIONS}
    degraded["eastus"] = RegionHealth("eastus", HealthStateName.DEGRADED, 0.734, ("slow",))
    desired = desired_state(s, t, degraded, None, now=now)
    assert desired.endpoints["eastus"].weight == 370  # 500 x 0.734 = 367 -> APIM 37


def test_a_member_out_of_the_pool_gets_no_weight_planned_and_is_not_drift() -> None:
    s = settings()
    t = s.targets[0]
    out = EndpointSetting(weight=None, priority=None, enabled=False)
    actual = TargetState(t.name, {"eastus": out, "westeurope": EndpointSetting(300, 1, True), "japaneast": EndpointSetting(200, 1, True)})
    now = datetime(2026, 1, 1, tzinfo=UTC)
    health = {r: RegionHealth(r, HealthStateName.HEALTHY, 1.0, ("ok",)) for r in REGIONS}
    health["eastus"] = RegionHealth("eastus", HealthStateName.UNHEALTHY, 0.0, ("down",))
    assert plan_target(t, desired_state(s, t, health, actual, now=now), actual) == []
    assert find_drift(t, actual, {"eastus": EndpointSetting(weight=250, priority=1, enabled=False)}) == []
    health["eastus"] = RegionHealth("eastus", HealthStateName.HEALTHY, 1.0, ("ok",))
    restore = plan_target(t, desired_state(s, t, health, actual, now=now), actual)
    assert [(c.field, c.actual, c.desired) for c in restore] == [
        (Field.ENABLED, False, True),
        (Field.PRIORITY, None, 1),
        (Field.WEIGHT, None, 500),
    ]
    # a disabled endpoint that still holds a weight (Traffic Manager) is compared as before
    assert find_drift(t, TargetState(t.name, {"eastus": EndpointSetting(400, 1, False)}), {"eastus": EndpointSetting(500, 1, False)})


def test_members_match_by_service_and_backend_whatever_the_id_casing() -> None:
    a = "/subscriptions/S/resourceGroups/RG/providers/Microsoft.ApiManagement/service/APIM/backends/Aoai-EastUS"
    b = "/subscriptions/s/resourcegroups/rg/providers/microsoft.apimanagement/service/apim/backends/aoai-eastus/"
    assert _member_key(a) == _member_key(b) == "apim/aoai-eastus"


def test_a_circuit_breaker_rule_reads_as_one_line() -> None:
    from datetime import timedelta

    from azure.mgmt.apimanagement.models import CircuitBreakerFailureCondition, CircuitBreakerRule, FailureStatusCodeRange

    rule = CircuitBreakerRule(
        name="throttled",
        failure_condition=CircuitBreakerFailureCondition(
            percentage=50,
            interval=timedelta(minutes=5),
            status_code_ranges=[FailureStatusCodeRange(min=429, max=429), FailureStatusCodeRange(min=500, max=503)],
            error_reasons=["timeout"],
        ),
        trip_duration=timedelta(seconds=90),
        accept_retry_after=False,
    )
    assert describe_circuit_breaker(rule) == "throttled: trips after 50% failures (429, 500-503, timeout) in 5m for 1m30s"
