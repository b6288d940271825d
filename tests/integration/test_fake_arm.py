"""The fake Azure Resource Manager, driven by the real Azure SDK clients over HTTPS.

Every test starts its own FakeArm on 127.0.0.1 (ephemeral port, throwaway CA)
and talks to it with azure-mgmt-trafficmanager / -frontdoor / -cdn exactly as
the actuators do: ``base_url``, ``connection_verify`` (the CA bundle), a
StaticTokenCredential and ``polling_interval=0``. Raw httpx is used only
where the SDK cannot show a thing (missing token, response headers).
"""

from __future__ import annotations

import copy
import io
import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceResponseError,
)
from azure.mgmt.apimanagement import ApiManagementClient
from azure.mgmt.cdn import CdnManagementClient
from azure.mgmt.cdn.models import (
    AFDOrigin,
    AFDOriginProperties,
    AFDOriginUpdateParameters,
    AFDOriginUpdatePropertiesParameters,
)
from azure.mgmt.frontdoor import FrontDoorManagementClient
from azure.mgmt.trafficmanager import TrafficManagerManagementClient
from azure.mgmt.trafficmanager.models import Endpoint

from controlplane.actuators.credentials import StaticTokenCredential
from simulator import arm as arm_module
from simulator.arm import FakeArm
from simulator.arm_seed import classic_front_door_body
from simulator.arm_state import (
    ArmError,
    afd_origin_id,
    front_door_id,
    tm_endpoint_id,
    tm_profile_id,
)
from tests.waiting import wait_until

TOKEN = "fake-arm-test-token"
SUB = "11111111-2222-3333-4444-555555555555"
OTHER_SUB = "99999999-2222-3333-4444-555555555555"
RG = "rg-llm"
TM_PATH = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/trafficmanagerprofiles/tm-llm"
FD_ID = front_door_id(SUB, RG, "fd-llm")
MANAGED_POOL = "llm-pool"
FAST_RETRIES = {"retry_backoff_factor": 0.01, "retry_backoff_max": 0.05}


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def arm() -> Iterator[FakeArm]:
    with FakeArm(token=TOKEN, fault_seed=7) as server:
        server.seed_traffic_manager_profile(
            SUB,
            RG,
            "tm-llm",
            "Priority",
            [
                {"name": "eastus", "type": "ExternalEndpoints", "target": "aoai-eastus.example.net", "weight": 500, "priority": 1},
                {"name": "westeurope", "type": "ExternalEndpoints", "target": "aoai-weu.example.net", "weight": 500, "priority": 2},
            ],
        )
        server.seed_front_door_classic(SUB, RG, "fd-llm", classic_front_door_body(SUB, RG, "fd-llm", managed_pool=MANAGED_POOL))
        server.seed_afd_origin_group(
            SUB,
            RG,
            "afd-llm",
            "llm-origins",
            [
                {"name": "eastus", "host_name": "aoai-eastus.example.net", "weight": 500, "priority": 1},
                {"name": "westeurope", "host_name": "aoai-weu.example.net", "weight": 500, "priority": 2},
            ],
        )
        yield server


def _kwargs(arm: FakeArm, **extra: Any) -> dict[str, Any]:
    return {**arm.sdk_kwargs(), **FAST_RETRIES, **extra}


@pytest.fixture
def tm(arm: FakeArm) -> TrafficManagerManagementClient:
    return TrafficManagerManagementClient(StaticTokenCredential(TOKEN), SUB, **_kwargs(arm))


@pytest.fixture
def fd(arm: FakeArm) -> FrontDoorManagementClient:
    return FrontDoorManagementClient(StaticTokenCredential(TOKEN), SUB, **_kwargs(arm))


@pytest.fixture
def cdn(arm: FakeArm) -> CdnManagementClient:
    return CdnManagementClient(StaticTokenCredential(TOKEN), SUB, **_kwargs(arm))


@pytest.fixture
def raw(arm: FakeArm) -> Iterator[httpx.Client]:
    ctx = ssl.create_default_context(cafile=arm.ca_bundle)
    with httpx.Client(base_url=arm.base_url, verify=ctx, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as client:
        yield client


def _calls(arm: FakeArm, method: str, contains: str) -> list[Any]:
    return [e for e in arm.request_log if e.method == method and contains.lower() in e.path.lower()]


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


# ---------------------------------------------------------------- Traffic Manager


def test_it_serves_a_profile_with_every_endpoint_inline(arm: FakeArm, tm: TrafficManagerManagementClient) -> None:
    profile = tm.profiles.get(RG, "tm-llm")

    assert profile.id == tm_profile_id(SUB, RG, "tm-llm")
    assert profile.traffic_routing_method == "Priority"
    assert [(e.name, e.weight, e.priority, e.endpoint_status, e.endpoint_monitor_status) for e in profile.endpoints] == [
        ("eastus", 500, 1, "Enabled", "Online"),
        ("westeurope", 500, 2, "Enabled", "Online"),
    ]
    assert profile.endpoints[0].type == "Microsoft.Network/trafficManagerProfiles/externalEndpoints"
    assert profile.monitor_config.profile_monitor_status == "Online"
    (entry,) = _calls(arm, "GET", "/trafficmanagerprofiles/tm-llm")
    assert (entry.status, entry.api_version) == (200, "2026-09-01")


def test_it_updates_weight_priority_and_status_with_a_partial_patch(arm: FakeArm, tm: TrafficManagerManagementClient) -> None:
    tm.endpoints.update(RG, "tm-llm", "ExternalEndpoints", "eastus", Endpoint(weight=250))
    tm.endpoints.update(RG, "tm-llm", "ExternalEndpoints", "eastus", Endpoint(priority=3))
    updated = tm.endpoints.update(RG, "tm-llm", "ExternalEndpoints", "eastus", Endpoint(endpoint_status="Disabled"))

    assert (updated.weight, updated.priority, updated.endpoint_status) == (250, 3, "Disabled")
    assert updated.target == "aoai-eastus.example.net"  # PATCH merges, it does not replace
    assert updated.endpoint_monitor_status == "Disabled"
    read_back = tm.endpoints.get(RG, "tm-llm", "ExternalEndpoints", "eastus")
    assert (read_back.weight, read_back.priority, read_back.endpoint_status) == (250, 3, "Disabled")
    bodies = [e.body for e in _calls(arm, "PATCH", "/ExternalEndpoints/eastus")]
    assert bodies == [
        {"properties": {"weight": 250}},
        {"properties": {"priority": 3}},
        {"properties": {"endpointStatus": "Disabled"}},
    ]


def test_put_creates_an_endpoint_with_201_and_replaces_it_with_200(arm: FakeArm, tm: TrafficManagerManagementClient) -> None:
    created = tm.endpoints.create_or_update(
        RG, "tm-llm", "ExternalEndpoints", "swedencentral", Endpoint(target="aoai-swc.example.net", weight=10, priority=3)
    )
    replaced = tm.endpoints.create_or_update(
        RG, "tm-llm", "ExternalEndpoints", "swedencentral", Endpoint(target="aoai-swc2.example.net", priority=4)
    )

    assert created.id == tm_endpoint_id(SUB, RG, "tm-llm", "ExternalEndpoints", "swedencentral")
    assert (replaced.target, replaced.priority, replaced.weight) == ("aoai-swc2.example.net", 4, None)
    assert [e.status for e in _calls(arm, "PUT", "/swedencentral")] == [201, 200]
    assert [e.name for e in tm.profiles.get(RG, "tm-llm").endpoints] == ["eastus", "westeurope", "swedencentral"]


def test_it_rejects_a_duplicate_priority_with_arms_code_and_message(tm: TrafficManagerManagementClient) -> None:
    with pytest.raises(HttpResponseError) as info:
        tm.endpoints.update(RG, "tm-llm", "ExternalEndpoints", "westeurope", Endpoint(priority=1))

    assert info.value.status_code == 400
    assert info.value.error.code == "BadRequest"
    assert "'westeurope' has priority 1" in info.value.error.message
    assert "already used by endpoint 'eastus'" in info.value.error.message
    assert tm.endpoints.get(RG, "tm-llm", "ExternalEndpoints", "westeurope").priority == 2


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (Endpoint(weight=0), "'weight'"),
        (Endpoint(weight=1001), "'weight'"),
        (Endpoint(priority=0), "'priority'"),
        (Endpoint(priority=1001), "'priority'"),
        (Endpoint(endpoint_status="Paused"), "'endpointStatus'"),
    ],
)
def test_it_rejects_out_of_range_values_as_a_400_bad_request(tm: TrafficManagerManagementClient, change: Endpoint, fragment: str) -> None:
    with pytest.raises(HttpResponseError) as info:
        tm.endpoints.update(RG, "tm-llm", "ExternalEndpoints", "eastus", change)

    assert (info.value.status_code, info.value.error.code) == (400, "BadRequest")
    assert fragment in info.value.error.message
    after = tm.endpoints.get(RG, "tm-llm", "ExternalEndpoints", "eastus")
    assert (after.weight, after.priority, after.endpoint_status) == (500, 1, "Enabled")


def test_profile_monitor_status_follows_the_endpoints(arm: FakeArm, tm: TrafficManagerManagementClient) -> None:
    arm.mutate(tm_endpoint_id(SUB, RG, "tm-llm", "ExternalEndpoints", "westeurope"), {"endpointMonitorStatus": "Degraded"})
    assert tm.profiles.get(RG, "tm-llm").monitor_config.profile_monitor_status == "Degraded"

    for name in ("eastus", "westeurope"):
        tm.endpoints.update(RG, "tm-llm", "ExternalEndpoints", name, Endpoint(endpoint_status="Disabled"))
    profile = tm.profiles.get(RG, "tm-llm")
    assert profile.monitor_config.profile_monitor_status == "Inactive"
    assert {e.endpoint_monitor_status for e in profile.endpoints} == {"Disabled"}

    tm.endpoints.update(RG, "tm-llm", "ExternalEndpoints", "westeurope", Endpoint(endpoint_status="Enabled"))
    assert tm.endpoints.get(RG, "tm-llm", "ExternalEndpoints", "westeurope").endpoint_monitor_status == "Degraded"


def test_unknown_profiles_and_endpoints_are_404_with_arms_codes(tm: TrafficManagerManagementClient) -> None:
    with pytest.raises(ResourceNotFoundError) as profile:
        tm.profiles.get(RG, "nope")
    with pytest.raises(ResourceNotFoundError) as endpoint:
        tm.endpoints.get(RG, "tm-llm", "ExternalEndpoints", "nope")
    with pytest.raises(ResourceNotFoundError) as group:
        tm.profiles.get("no-such-rg", "tm-llm")

    assert profile.value.error.code == "ResourceNotFound"
    assert "Microsoft.Network/trafficmanagerprofiles/nope" in profile.value.error.message
    assert endpoint.value.error.code == "NotFound"
    assert group.value.error.code == "ResourceGroupNotFound"


def test_it_rejects_api_versions_the_sdk_does_not_send(arm: FakeArm, raw: httpx.Client) -> None:
    old = TrafficManagerManagementClient(StaticTokenCredential(TOKEN), SUB, api_version="2022-04-01", **_kwargs(arm))
    with pytest.raises(HttpResponseError) as info:
        old.profiles.get(RG, "tm-llm")
    garbage = raw.get(TM_PATH, params={"api-version": "latest"})
    missing = raw.get(TM_PATH)

    assert (info.value.status_code, info.value.error.code) == (400, "NoRegisteredProviderFound")
    assert "2026-09-01" in info.value.error.message
    assert (garbage.status_code, garbage.json()["error"]["code"]) == (400, "InvalidApiVersionParameter")
    assert (missing.status_code, missing.json()["error"]["code"]) == (400, "MissingApiVersionParameter")


def test_unimplemented_methods_and_unknown_resource_types_answer_like_arm(raw: httpx.Client) -> None:
    delete = raw.delete(TM_PATH, params={"api-version": "2026-09-01"})
    unknown = raw.get(
        f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/dnsZones/z", params={"api-version": "2018-05-01"}
    )
    not_json = raw.patch(TM_PATH + "/ExternalEndpoints/eastus", params={"api-version": "2026-09-01"}, content=b"weight=5")

    assert (delete.status_code, delete.json()["error"]["code"]) == (405, "MethodNotAllowed")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "InvalidResourceType")
    assert (not_json.status_code, not_json.json()["error"]["code"]) == (400, "InvalidRequestContent")


# ---------------------------------------------------------------- auth and headers


def test_it_answers_401_with_arms_body_without_a_bearer_token(arm: FakeArm) -> None:
    ctx = ssl.create_default_context(cafile=arm.ca_bundle)
    response = httpx.get(arm.base_url + TM_PATH, params={"api-version": "2026-09-01"}, verify=ctx)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "AuthenticationFailed"
    assert response.headers["x-ms-request-id"]
    assert "Bearer" in response.headers["WWW-Authenticate"]


def test_the_sdk_with_the_wrong_token_gets_a_client_authentication_error(arm: FakeArm) -> None:
    client = TrafficManagerManagementClient(StaticTokenCredential("someone-elses-token"), SUB, **_kwargs(arm))

    with pytest.raises(ClientAuthenticationError) as info:
        client.profiles.get(RG, "tm-llm")

    assert info.value.status_code == 401
    assert info.value.error.code == "InvalidAuthenticationToken"
    assert "someone-elses-token" not in str(info.value)
    assert [e.status for e in arm.request_log] == [401]


def test_every_answer_carries_request_ids_that_match_the_log(arm: FakeArm, raw: httpx.Client) -> None:
    ok = raw.get(TM_PATH, params={"api-version": "2026-09-01"}, headers={"x-ms-correlation-request-id": "corr-1"})
    missing = raw.get(TM_PATH + "-nope", params={"api-version": "2026-09-01"})

    assert [ok.status_code, missing.status_code] == [200, 404]
    assert ok.headers["x-ms-correlation-request-id"] == "corr-1"
    assert [e.request_id for e in arm.request_log] == [ok.headers["x-ms-request-id"], missing.headers["x-ms-request-id"]]
    assert "ETag" not in ok.headers  # Traffic Manager has no ETag


# ---------------------------------------------------------------- Front Door classic


def _managed_backends(doc: dict[str, Any]) -> list[dict[str, Any]]:
    for pool in doc["properties"]["backendPools"]:
        if pool["name"] == MANAGED_POOL:
            return list(pool["properties"]["backends"])
    raise AssertionError("managed pool missing")


def _without_managed_pool(doc: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    out["properties"]["backendPools"] = [p for p in out["properties"]["backendPools"] if p["name"] != MANAGED_POOL]
    out["properties"].pop("provisioningState")
    return out


def test_a_full_put_through_the_sdk_poller_leaves_unmanaged_parts_byte_identical(arm: FakeArm, fd: FrontDoorManagementClient) -> None:
    before = arm.get_resource(FD_ID)
    assert before is not None
    front_door = fd.front_doors.get(RG, "fd-llm")
    pool = next(p for p in front_door.backend_pools if p.name == MANAGED_POOL)
    pool.backends[0].weight = 900
    pool.backends[1].priority = 2
    pool.backends[1].enabled_state = "Disabled"

    result = fd.front_doors.begin_create_or_update(RG, "fd-llm", front_door).result()

    after = arm.get_resource(FD_ID)
    assert after is not None
    assert result.provisioning_state == "Succeeded"
    assert _canon(_without_managed_pool(after)) == _canon(_without_managed_pool(before))
    assert json.dumps(after["properties"]["rulesEngines"]) == json.dumps(before["properties"]["rulesEngines"])
    backends = _managed_backends(after)
    assert (backends[0]["weight"], backends[1]["priority"], backends[1]["enabledState"]) == (900, 2, "Disabled")
    (put,) = _calls(arm, "PUT", "/frontDoors/fd-llm")
    assert put.status == 200
    assert "rulesEngines" not in put.body["properties"]  # read-only: the SDK drops it, ARM keeps it
    polls = _calls(arm, "GET", "/frontdooroperationresults/")
    assert len(polls) == 2 and polls[0].api_version == "2025-10-01"


def test_the_resource_is_updating_until_its_async_operation_succeeds(arm: FakeArm, raw: httpx.Client) -> None:
    body = raw.get(FD_ID, params={"api-version": "2025-10-01"}).json()
    _managed_backends(body)[0]["weight"] = 10

    put = raw.put(FD_ID, params={"api-version": "2025-10-01"}, json=body)
    operation_url = put.headers["Azure-AsyncOperation"]
    first = raw.get(operation_url).json()
    during = raw.get(FD_ID, params={"api-version": "2025-10-01"}).json()
    second = raw.get(operation_url).json()
    done = raw.get(FD_ID, params={"api-version": "2025-10-01"}).json()

    assert put.status_code == 200
    assert operation_url.startswith(arm.base_url + f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/")
    assert put.json()["properties"]["provisioningState"] == "Updating"
    assert (first["status"], during["properties"]["provisioningState"]) == ("InProgress", "Updating")
    assert (second["status"], done["properties"]["provisioningState"]) == ("Succeeded", "Succeeded")
    assert "ETag" not in put.headers  # Front Door classic has no ETag


def test_a_put_while_the_previous_one_runs_is_429_retryable_error_due_to_another_operation(raw: httpx.Client) -> None:
    body = raw.get(FD_ID, params={"api-version": "2025-10-01"}).json()

    first = raw.put(FD_ID, params={"api-version": "2025-10-01"}, json=body)
    second = raw.put(FD_ID, params={"api-version": "2025-10-01"}, json=body)

    assert first.status_code == 200
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "RetryableErrorDueToAnotherOperation"
    assert second.headers["Retry-After"] == "1"


def test_a_put_of_a_new_front_door_answers_201_and_the_service_fills_its_own_fields(arm: FakeArm, fd: FrontDoorManagementClient) -> None:
    body = classic_front_door_body(SUB, RG, "fd-new")
    body["properties"]["cname"] = "client-made-this-up.example"

    created = fd.front_doors.begin_create_or_update(RG, "fd-new", body).result()

    assert created.id == front_door_id(SUB, RG, "fd-new")
    assert (created.cname, created.provisioning_state) == ("fd-new.azurefd.net", "Succeeded")
    assert [e.status for e in _calls(arm, "PUT", "/frontDoors/fd-new")] == [201]


@pytest.mark.parametrize(
    ("field", "value"),
    [("priority", 6), ("priority", 0), ("weight", 0), ("weight", 1001), ("enabled_state", "Paused")],
)
def test_front_door_rejects_bad_backend_values_before_any_change(
    arm: FakeArm, fd: FrontDoorManagementClient, field: str, value: Any
) -> None:
    before = arm.get_resource(FD_ID)
    front_door = fd.front_doors.get(RG, "fd-llm")
    setattr(next(p for p in front_door.backend_pools if p.name == MANAGED_POOL).backends[0], field, value)

    with pytest.raises(HttpResponseError) as info:
        fd.front_doors.begin_create_or_update(RG, "fd-llm", front_door)

    assert (info.value.status_code, info.value.error.code) == (400, "BadRequest")
    assert MANAGED_POOL in info.value.error.message
    assert arm.get_resource(FD_ID) == before


def test_a_routing_rule_pointing_at_a_missing_pool_is_rejected(fd: FrontDoorManagementClient) -> None:
    front_door = fd.front_doors.get(RG, "fd-llm")
    front_door.backend_pools = [p for p in front_door.backend_pools if p.name != "static-pool"]

    with pytest.raises(HttpResponseError) as info:
        fd.front_doors.begin_create_or_update(RG, "fd-llm", front_door)

    assert info.value.status_code == 400
    assert "static-pool" in info.value.error.message


# ---------------------------------------------------------------- Front Door Standard/Premium


def test_an_afd_origin_patch_goes_through_the_sdk_poller(arm: FakeArm, cdn: CdnManagementClient) -> None:
    params = AFDOriginUpdateParameters(properties=AFDOriginUpdatePropertiesParameters(weight=1, priority=2, enabled_state="Disabled"))

    result = cdn.afd_origins.begin_update(RG, "afd-llm", "llm-origins", "eastus", params).result()

    props = result.properties
    assert (props.weight, props.priority, props.enabled_state, props.provisioning_state) == (1, 2, "Disabled", "Succeeded")
    assert props.host_name == "aoai-eastus.example.net"
    assert [(e.method, e.status) for e in arm.request_log] == [("PATCH", 202), ("GET", 200), ("GET", 200), ("GET", 200)]
    assert "/Microsoft.Cdn/operationresults/" in arm.request_log[1].path
    assert arm.request_log[0].body == {"properties": {"weight": 1, "priority": 2, "enabledState": "Disabled"}}


def test_afd_reads_the_origin_group_and_lists_its_origins(cdn: CdnManagementClient) -> None:
    group = cdn.afd_origin_groups.get(RG, "afd-llm", "llm-origins")
    origins = list(cdn.afd_origins.list_by_origin_group(RG, "afd-llm", "llm-origins"))

    assert group.type == "Microsoft.Cdn/profiles/origingroups"
    assert group.properties.load_balancing_settings.sample_size == 4
    assert [(o.name, o.properties.weight, o.properties.priority, o.properties.enabled_state) for o in origins] == [
        ("eastus", 500, 1, "Enabled"),
        ("westeurope", 500, 2, "Enabled"),
    ]
    assert origins[0].id == afd_origin_id(SUB, RG, "afd-llm", "llm-origins", "eastus")


def test_an_afd_origin_put_creates_it_through_the_sdk_poller(arm: FakeArm, cdn: CdnManagementClient) -> None:
    origin = AFDOrigin(properties=AFDOriginProperties(host_name="aoai-swc.example.net", weight=5, priority=3))

    created = cdn.afd_origins.begin_create(RG, "afd-llm", "llm-origins", "swedencentral", origin).result()

    assert created.id == afd_origin_id(SUB, RG, "afd-llm", "llm-origins", "swedencentral")
    assert (created.properties.provisioning_state, created.properties.origin_group_name) == ("Succeeded", "llm-origins")
    assert next((e.method, e.status) for e in arm.request_log) == ("PUT", 201)
    assert len(list(cdn.afd_origins.list_by_origin_group(RG, "afd-llm", "llm-origins"))) == 3


@pytest.mark.parametrize(("field", "value"), [("priority", 6), ("weight", 1001), ("weight", 0), ("enabled_state", "Off")])
def test_afd_rejects_out_of_range_origin_values(cdn: CdnManagementClient, field: str, value: Any) -> None:
    params = AFDOriginUpdateParameters(properties=AFDOriginUpdatePropertiesParameters(**{field: value}))

    with pytest.raises(HttpResponseError) as info:
        cdn.afd_origins.begin_update(RG, "afd-llm", "llm-origins", "eastus", params)

    assert (info.value.status_code, info.value.error.code) == (400, "BadRequest")
    assert cdn.afd_origins.get(RG, "afd-llm", "llm-origins", "eastus").properties.weight == 500


def test_afd_origins_carry_an_etag_that_changes_and_guards_if_match(raw: httpx.Client) -> None:
    path = afd_origin_id(SUB, RG, "afd-llm", "llm-origins", "westeurope")
    q = {"api-version": "2026-10-01"}
    etag = raw.get(path, params=q).headers["ETag"]

    stale = raw.patch(path, params=q, json={"properties": {"weight": 7}}, headers={"If-Match": '"stale"'})
    fresh = raw.patch(path, params=q, json={"properties": {"weight": 7}}, headers={"If-Match": etag})

    assert stale.status_code == 412 and stale.json()["error"]["code"] == "PreconditionFailed"
    assert fresh.status_code == 202
    assert fresh.headers["ETag"] != etag
    assert raw.get(path, params=q).json()["properties"]["weight"] == 7


# ---------------------------------------------------------------- fault injection


def test_an_injected_429_with_retry_after_is_retried_by_the_sdk(arm: FakeArm, tm: TrafficManagerManagementClient) -> None:
    arm.inject_throttle(count=1, retry_after=1, method="PATCH")
    started = time.monotonic()

    updated = tm.endpoints.update(RG, "tm-llm", "ExternalEndpoints", "eastus", Endpoint(weight=42))

    assert updated.weight == 42
    assert time.monotonic() - started >= 0.9  # the SDK waited for Retry-After
    patches = _calls(arm, "PATCH", "/eastus")
    assert [(e.status, e.fault) for e in patches] == [(429, "throttle"), (200, None)]


def test_a_429_without_retry_after_on_patch_is_not_retried(arm: FakeArm, tm: TrafficManagerManagementClient) -> None:
    arm.inject_throttle(count=1, retry_after=None, method="PATCH")

    with pytest.raises(HttpResponseError) as info:
        tm.endpoints.update(RG, "tm-llm", "ExternalEndpoints", "eastus", Endpoint(weight=42))

    assert (info.value.status_code, info.value.error.code) == (429, "SubscriptionRequestsThrottled")
    assert len(_calls(arm, "PATCH", "/eastus")) == 1
    assert tm.endpoints.get(RG, "tm-llm", "ExternalEndpoints", "eastus").weight == 500


def test_injected_5xx_on_reads_are_retried_until_they_run_out(arm: FakeArm, tm: TrafficManagerManagementClient) -> None:
    arm.inject_error(503, count=1, method="GET")
    arm.inject_error(500, count=1, method="GET")

    profile = tm.profiles.get(RG, "tm-llm")

    assert profile.name == "tm-llm"
    assert [(e.status, e.fault) for e in arm.request_log] == [(503, "error"), (500, "error"), (200, None)]


def test_an_injected_busy_error_is_arms_retryable_error_due_to_another_operation(arm: FakeArm, fd: FrontDoorManagementClient) -> None:
    arm.inject_busy(count=None, retry_after=None, method="PUT", path_contains="/frontDoors/")
    front_door = fd.front_doors.get(RG, "fd-llm")
    client = FrontDoorManagementClient(StaticTokenCredential(TOKEN), SUB, **_kwargs(arm, retry_total=2))

    with pytest.raises(HttpResponseError) as info:
        client.front_doors.begin_create_or_update(RG, "fd-llm", front_door)

    assert (info.value.status_code, info.value.error.code) == (429, "RetryableErrorDueToAnotherOperation")
    assert len(_calls(arm, "PUT", "/frontDoors/")) == 3  # PUT is retried on 429 (1 + retry_total)


def test_a_hang_holds_the_request_until_the_client_gives_up(arm: FakeArm) -> None:
    arm.inject_hang(count=1, max_s=20)
    client = TrafficManagerManagementClient(StaticTokenCredential(TOKEN), SUB, **_kwargs(arm, retry_total=0, read_timeout=0.5))
    started = time.monotonic()

    with pytest.raises(ServiceResponseError):
        client.profiles.get(RG, "tm-llm")

    assert 0.4 < time.monotonic() - started < 5
    deadline = time.monotonic() + 5
    while not arm.request_log and time.monotonic() < deadline:  # the server notices the client left
        time.sleep(0.05)
    assert [e.fault for e in arm.request_log] == ["hang"]
    assert arm.request_log[0].duration_ms < 5000


def test_stop_releases_a_hanging_request_promptly() -> None:
    server = FakeArm(token=TOKEN).start()
    server.seed_traffic_manager_profile(SUB, RG, "tm-llm", "Weighted", [{"name": "a"}])
    server.inject_hang(count=1, max_s=60)
    ctx = ssl.create_default_context(cafile=server.ca_bundle)
    outcome: list[Any] = []

    def call() -> None:
        try:
            outcome.append(
                httpx.get(
                    server.base_url + TM_PATH,
                    params={"api-version": "2026-09-01"},
                    headers={"Authorization": f"Bearer {TOKEN}"},
                    verify=ctx,
                    timeout=30,
                ).status_code
            )
        except httpx.HTTPError as exc:
            outcome.append(type(exc).__name__)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    deadline = time.monotonic() + 5
    while server.faults.rules() and time.monotonic() < deadline:  # the rule is used up once the request is held
        time.sleep(0.02)
    started = time.monotonic()
    server.stop()
    caller.join(10)

    assert time.monotonic() - started < 5
    assert outcome == [504]
    assert [e.fault for e in server.request_log] == ["hang"]


def test_a_hold_keeps_a_write_unhandled_until_released_and_it_lands_even_if_the_client_left(arm: FakeArm) -> None:
    arm.inject_hold(count=1, max_s=20, method="PATCH")
    client = TrafficManagerManagementClient(StaticTokenCredential(TOKEN), SUB, **_kwargs(arm, retry_total=0, read_timeout=0.3))
    endpoint = tm_endpoint_id(SUB, RG, "tm-llm", "ExternalEndpoints", "eastus")

    with pytest.raises(ServiceResponseError):  # the client gives up while its write is held
        client.endpoints.update(RG, "tm-llm", "ExternalEndpoints", "eastus", Endpoint(weight=42))
    (held,) = arm.held()
    assert (held.method, held.path.lower()) == ("PATCH", endpoint.lower()) and "azsdk-python" in (held.user_agent or "")
    assert arm.get_resource(endpoint)["properties"]["weight"] == 500  # not handled yet
    assert arm.request_log == []

    released_at = time.time()  # the client has given up by now
    assert arm.release() == 1
    wait_until(lambda: arm.request_log, 5, "ARM to handle the released request", step=0.02)
    (entry,) = arm.request_log
    assert (entry.status, entry.fault) == (200, "hold")
    assert entry.received == held.received and entry.time >= released_at  # handled once released, after the client left
    assert arm.get_resource(endpoint)["properties"]["weight"] == 42  # ARM went on with the request it had received
    assert arm.held() == []


@pytest.mark.serial
def test_latency_is_added_and_filters_pick_the_requests_it_hits(arm: FakeArm, raw: httpx.Client) -> None:
    arm.inject_latency(0.3, count=None, path_contains="/frontDoors/")

    raw.get(TM_PATH, params={"api-version": "2026-09-01"})
    raw.get(FD_ID, params={"api-version": "2025-10-01"})

    tm_entry, fd_entry = arm.request_log
    assert tm_entry.duration_ms < 250 and tm_entry.fault is None
    assert fd_entry.duration_ms >= 290 and fd_entry.fault == "latency:0.3s"


def test_a_fractional_fault_hits_some_requests_but_not_all(arm: FakeArm, raw: httpx.Client) -> None:
    arm.inject_error(500, count=None, fraction=0.5, method="GET")

    statuses = [raw.get(TM_PATH, params={"api-version": "2026-09-01"}).status_code for _ in range(40)]

    assert 5 <= statuses.count(500) <= 35
    assert statuses.count(200) == 40 - statuses.count(500)


def test_the_write_bucket_answers_429_with_retry_after_when_empty(arm: FakeArm, raw: httpx.Client) -> None:
    arm.set_write_limit(capacity=2, refill_per_s=0.5)
    arm.seed_traffic_manager_profile(OTHER_SUB, RG, "tm-other", "Weighted", [{"name": "a", "weight": 1}])
    path = TM_PATH + "/ExternalEndpoints/eastus"
    q = {"api-version": "2026-09-01"}

    answers = [raw.patch(path, params=q, json={"properties": {"weight": w}}) for w in (10, 20, 30)]
    other = raw.patch(tm_endpoint_id(OTHER_SUB, RG, "tm-other", "ExternalEndpoints", "a"), params=q, json={"properties": {"weight": 2}})
    read = raw.get(TM_PATH, params=q)

    assert [a.status_code for a in answers] == [200, 200, 429]
    assert [a.headers["x-ms-ratelimit-remaining-subscription-writes"] for a in answers] == ["1", "0", "0"]
    assert answers[2].json()["error"]["code"] == "SubscriptionRequestsThrottled"
    assert answers[2].headers["Retry-After"] == "2"
    assert other.status_code == 200  # the bucket is per subscription
    assert read.status_code == 200  # reads are not writes
    assert arm.get_resource(tm_endpoint_id(SUB, RG, "tm-llm", "ExternalEndpoints", "eastus"))["properties"]["weight"] == 20


# ---------------------------------------------------------------- portal edits


def test_a_portal_edit_changes_resources_behind_the_clients_back(
    arm: FakeArm, tm: TrafficManagerManagementClient, fd: FrontDoorManagementClient, cdn: CdnManagementClient
) -> None:
    arm.mutate(tm_endpoint_id(SUB, RG, "tm-llm", "ExternalEndpoints", "eastus"), {"weight": 7, "endpointStatus": "Disabled"})
    arm.mutate(f"{FD_ID}/backendPools/{MANAGED_POOL}/backends/llm-eastus.example.net", {"weight": 3})
    arm.mutate(afd_origin_id(SUB, RG, "afd-llm", "llm-origins", "westeurope"), {"priority": 5})

    ep = tm.endpoints.get(RG, "tm-llm", "ExternalEndpoints", "eastus")
    backends = next(p for p in fd.front_doors.get(RG, "fd-llm").backend_pools if p.name == MANAGED_POOL).backends
    origin = cdn.afd_origins.get(RG, "afd-llm", "llm-origins", "westeurope")
    assert (ep.weight, ep.endpoint_status) == (7, "Disabled")
    assert [b.weight for b in backends] == [3, 50]
    assert origin.properties.priority == 5
    assert [e.method for e in arm.request_log] == ["GET", "GET", "GET"]  # edits are not client requests


def test_a_portal_edit_is_validated_like_arm(arm: FakeArm) -> None:
    with pytest.raises(ArmError) as info:
        arm.mutate(tm_endpoint_id(SUB, RG, "tm-llm", "ExternalEndpoints", "westeurope"), {"priority": 1})

    assert info.value.code == "BadRequest"
    arm.mutate(tm_endpoint_id(SUB, RG, "tm-llm", "ExternalEndpoints", "westeurope"), {"priority": 1}, validate=False)
    assert arm.get_resource(tm_profile_id(SUB, RG, "tm-llm"))["properties"]["endpoints"][1]["properties"]["priority"] == 1


# ---------------------------------------------------------------- admin API, persistence, config, CLI


def test_the_admin_api_injects_faults_edits_resources_and_serves_the_log(arm: FakeArm, raw: httpx.Client) -> None:
    q = {"api-version": "2026-09-01"}
    added = raw.post("/_arm/faults", json={"kind": "error", "status": 503, "count": 1})
    failed = raw.get(TM_PATH, params=q)
    edited = raw.post(
        "/_arm/mutate",
        json={"resource_id": tm_endpoint_id(SUB, RG, "tm-llm", "ExternalEndpoints", "eastus"), "changes": {"weight": 9}},
    )
    ok = raw.get(TM_PATH, params=q)
    log = raw.get("/_arm/log").json()["value"]
    bad = raw.post("/_arm/faults", json={"kind": "meteor"})
    held, released = raw.get("/_arm/held"), raw.post("/_arm/release")
    cleared = raw.delete("/_arm/log")

    assert added.status_code == 201 and added.json()["kind"] == "error"
    assert (failed.status_code, failed.json()["error"]["code"]) == (503, "ServiceUnavailable")
    assert edited.status_code == 200 and edited.json()["properties"]["weight"] == 9
    assert ok.json()["properties"]["endpoints"][0]["properties"]["weight"] == 9
    assert [(e["method"], e["status"], e["api_version"]) for e in log] == [("GET", 503, "2026-09-01"), ("GET", 200, "2026-09-01")]
    assert bad.status_code == 400
    assert (held.json(), released.json()) == ({"value": []}, {"released": 0})
    assert cleared.status_code == 200 and arm.request_log == []


def test_state_survives_a_restart_through_the_state_file(tmp_path: Path) -> None:
    state_file = tmp_path / "arm.json"
    with FakeArm(token=TOKEN, state_file=state_file) as first:
        first.seed_traffic_manager_profile(SUB, RG, "tm-saved", "Weighted", [{"name": "a", "weight": 100}])
        client = TrafficManagerManagementClient(StaticTokenCredential(TOKEN), SUB, **_kwargs(first))
        client.endpoints.update(RG, "tm-saved", "ExternalEndpoints", "a", Endpoint(weight=321))

    with FakeArm(token=TOKEN, state_file=state_file) as second:
        client = TrafficManagerManagementClient(StaticTokenCredential(TOKEN), SUB, **_kwargs(second))
        assert client.endpoints.get(RG, "tm-saved", "ExternalEndpoints", "a").weight == 321


def _config() -> Any:
    from controlplane.config import parse_settings

    def region(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "azure_region": name,
            "endpoints": [
                {
                    "name": f"aoai-{name}",
                    "base_url": f"https://aoai-{name}.openai.azure.com",
                    "deployment": "gpt-4o-mini",
                    "auth": {"kind": "api_key", "env": "AOAI_KEY"},
                }
            ],
        }

    common = {"subscription_id": SUB, "resource_group": "rg-from-config"}
    return parse_settings(
        {
            "regions": [region("eastus"), region("swedencentral")],
            "targets": [
                {
                    **common,
                    "kind": "traffic_manager",
                    "name": "tm",
                    "profile": "tm-cfg",
                    "routing": "priority",
                    "endpoints": {"eastus": {"name": "ep-eastus", "priority": 1}, "swedencentral": {"name": "ep-swc", "priority": 2}},
                },
                {
                    **common,
                    "kind": "front_door",
                    "name": "fd",
                    "front_door": "fd-cfg",
                    "backend_pool": "aoai-pool",
                    "endpoints": {
                        "eastus": {"address": "aoai-eastus.openai.azure.com"},
                        "swedencentral": {"address": "aoai-swedencentral.openai.azure.com"},
                    },
                },
                {
                    **common,
                    "kind": "front_door_cdn",
                    "name": "afd",
                    "profile": "afd-cfg",
                    "origin_group": "aoai-origins",
                    "endpoints": {"eastus": {"origin": "o-eastus", "weight": 700}, "swedencentral": {"origin": "o-swc", "weight": 300}},
                },
                {
                    **common,
                    "kind": "apim_backend_pool",
                    "name": "apim",
                    "service": "apim-cfg",
                    "pool": "aoai-pool",
                    "endpoints": {
                        "eastus": {"backend": "b-eastus", "weight": 700, "priority": 1},
                        "swedencentral": {"backend": "b-swc", "weight": 300},
                    },
                },
            ],
        }
    )


def test_seed_from_config_creates_every_target_it_names(arm: FakeArm) -> None:
    ids = arm.seed_from_config(_config())
    credential = StaticTokenCredential(TOKEN)
    tm = TrafficManagerManagementClient(credential, SUB, **_kwargs(arm))
    fd = FrontDoorManagementClient(credential, SUB, **_kwargs(arm))
    cdn = CdnManagementClient(credential, SUB, **_kwargs(arm))

    profile = tm.profiles.get("rg-from-config", "tm-cfg")
    pools = {p.name: p for p in fd.front_doors.get("rg-from-config", "fd-cfg").backend_pools}
    origins = list(cdn.afd_origins.list_by_origin_group("rg-from-config", "afd-cfg", "aoai-origins"))
    apim = ApiManagementClient(credential, SUB, **_kwargs(arm))
    pool = apim.backend.get("rg-from-config", "apim-cfg", "aoai-pool")
    member = apim.backend.get("rg-from-config", "apim-cfg", "b-eastus")

    assert len(ids) == 4
    assert (pool.type_properties_type, [(i.id.rsplit("/", 1)[-1], i.weight, i.priority) for i in pool.pool.services]) == (
        "Pool",
        [("b-eastus", 70, 1), ("b-swc", 30, None)],  # APIM's 0-100: regionguard's weight / 10
    )
    assert member.url == "https://aoai-eastus.openai.azure.com/openai" and member.circuit_breaker.rules
    assert profile.traffic_routing_method == "Priority"
    assert [(e.name, e.priority, e.target) for e in profile.endpoints] == [
        ("ep-eastus", 1, "aoai-eastus.openai.azure.com"),
        ("ep-swc", 2, "aoai-swedencentral.openai.azure.com"),
    ]
    assert [b.address for b in pools["aoai-pool"].backends] == ["aoai-eastus.openai.azure.com", "aoai-swedencentral.openai.azure.com"]
    assert "static-pool" in pools  # unmanaged parts are there to be left alone
    assert [(o.name, o.properties.weight, o.properties.host_name) for o in origins] == [
        ("o-eastus", 700, "aoai-eastus.openai.azure.com"),
        ("o-swc", 300, "aoai-swedencentral.openai.azure.com"),
    ]


def test_main_prints_the_base_url_and_ca_bundle_and_serves_until_stopped() -> None:
    stop = threading.Event()
    out = io.StringIO()

    def run() -> None:
        with redirect_stdout(out):
            arm_module.main(["--port", "0", "--token", TOKEN], stop=stop)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while "CA bundle:" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = dict(line.split(": ", 1) for line in out.getvalue().splitlines() if ": " in line)
    try:
        ctx = ssl.create_default_context(cafile=lines["CA bundle"])
        health = httpx.get(lines["fake ARM"] + "/_arm/health", verify=ctx, timeout=5)
    finally:
        stop.set()
        thread.join(10)

    assert health.json()["status"] == "ok"
    assert not thread.is_alive()
    assert not Path(lines["CA bundle"]).exists()  # the throwaway CA is removed at stop
