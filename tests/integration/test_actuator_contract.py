"""One contract, every actuator.

The same tests run against :class:`MemoryActuator` and against the four Azure
actuators (Traffic Manager, Front Door classic and Standard/Premium, APIM
load-balanced pools), which talk through the REAL Azure SDK clients (built by
``build_actuators``) to the fake ARM over HTTPS on 127.0.0.1. Faults are
injected at the ARM (or, for the memory actuator, with its hooks) and every
write is counted from the ARM request log.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from controlplane.actuators.base import APPLIED, FAILED, ActuatorError, PermanentError, RetryPolicy, TransientError
from controlplane.actuators.credentials import StaticTokenCredential
from controlplane.actuators.factory import build_actuators
from controlplane.actuators.memory import MemoryActuator
from controlplane.config import Settings, azure_name, parse_settings
from controlplane.domain import Change, EndpointSetting, Field, Plan
from simulator.arm import FakeArm
from simulator.arm_apim import backend_id
from simulator.arm_seed import classic_front_door_body
from simulator.arm_state import afd_origin_id, front_door_id, tm_endpoint_id

SUB = "00000000-0000-0000-0000-0000000000aa"
REGIONS = ("eastus", "westeurope", "japaneast")
FAST_RETRY = RetryPolicy(attempts=4, backoff=0.02, backoff_max=0.1, retry_after_max=1.0)
KINDS = ("memory", "memory-apim", "traffic_manager", "front_door", "front_door_cdn", "apim_backend_pool")
_names = itertools.count(1)


# ---------------------------------------------------------------- config and seeding


def settings_for(arm: FakeArm | None, n: int, *, apim: bool = True, **target_options: Any) -> Settings:
    """Three regions and one target of each kind (the APIM pool last, unless ``apim`` is False), with names unique to this test."""
    regions = [
        {
            "name": r,
            "azure_region": r,
            "endpoints": [
                {
                    "name": "gpt-4o",
                    "base_url": f"https://aoai-{r}.example.net",
                    "deployment": "gpt-4o",
                    "auth": {"kind": "api_key", "env": "AOAI_KEY"},
                }
            ],
        }
        for r in REGIONS
    ]
    common = {"subscription_id": SUB, "routing": "weighted", **target_options}
    targets = [
        {
            "name": f"tm-{n}",
            "kind": "traffic_manager",
            "resource_group": "rg-tm",
            "profile": f"llm-{n}",
            **common,
            "endpoints": {
                r: {"name": f"aoai-{r}", "weight": w, "priority": p} for r, w, p in zip(REGIONS, (500, 300, 200), (1, 2, 3), strict=True)
            },
        },
        {
            "name": f"fd-{n}",
            "kind": "front_door",
            "resource_group": "rg-fd",
            "front_door": f"fd-llm-{n}",
            "backend_pool": "llm-pool",
            **common,
            "endpoints": {
                r: {"address": f"llm-{r}.example.net", "weight": w, "priority": 1} for r, w in zip(REGIONS, (50, 30, 20), strict=True)
            },
        },
        {
            "name": f"afd-{n}",
            "kind": "front_door_cdn",
            "resource_group": "rg-afd",
            "profile": f"afd-{n}",
            "origin_group": "aoai",
            **common,
            "endpoints": {r: {"origin": f"origin-{r}", "weight": w, "priority": 1} for r, w in zip(REGIONS, (500, 300, 200), strict=True)},
        },
        {
            "name": f"apim-{n}",
            "kind": "apim_backend_pool",
            "resource_group": "rg-apim",
            "service": f"apim-{n}",
            "pool": "aoai-pool",
            **common,
            "endpoints": {r: {"backend": f"aoai-{r}", "weight": w, "priority": 1} for r, w in zip(REGIONS, (500, 300, 200), strict=True)},
        },
    ]
    if not apim:
        targets = [t for t in targets if t["kind"] != "apim_backend_pool"]
    azure: dict[str, Any] = {"credential": "static_token", "request_timeout": 5}
    if arm is not None:
        azure.update({"arm_base_url": arm.base_url, "ca_bundle": arm.ca_bundle, "polling_interval": 0})
    return parse_settings({"regions": regions, "targets": targets, "azure": azure, "guardrails": {"min_serving": 1}})


def seed_arm(arm: FakeArm, settings: Settings) -> None:
    """Seed every target, each with one endpoint regionguard does not own."""
    for t in settings.targets:
        if t.kind == "traffic_manager":
            eps = [
                {"name": e.name, "type": e.type, "target": f"{e.name}.example.net", "weight": e.weight, "priority": e.priority}
                for e in t.endpoints.values()
            ]
            eps.append({"name": "legacy-onprem", "type": "ExternalEndpoints", "target": "onprem.example.net", "weight": 1, "priority": 10})
            arm.seed_traffic_manager_profile(t.subscription_id, t.resource_group, t.profile, "Weighted", eps)
        elif t.kind == "front_door":
            backends = [{"address": e.address, "weight": e.weight, "priority": e.priority} for e in t.endpoints.values()]
            backends.append({"address": "legacy.example.net", "weight": 1, "priority": 5})
            body = classic_front_door_body(
                t.subscription_id, t.resource_group, t.front_door, managed_pool=t.backend_pool, backends=backends
            )
            arm.seed_front_door_classic(t.subscription_id, t.resource_group, t.front_door, body)
        elif t.kind == "apim_backend_pool":
            members = [{"name": e.backend, "url": f"https://{e.backend}.example.net/openai"} for e in t.endpoints.values()]
            members.append({"name": "legacy-onprem", "url": "https://onprem.example.net/openai"})
            pool = {
                "name": t.pool,
                "members": [{"backend": e.backend, "weight": e.weight // 10, "priority": e.priority} for e in t.endpoints.values()]
                + [{"backend": "legacy-onprem", "weight": 1, "priority": 5}],
            }
            arm.seed_apim_backends(t.subscription_id, t.resource_group, t.service, [*members, pool])
        else:
            origins = [
                {"name": e.origin, "host_name": f"{e.origin}.example.net", "weight": e.weight, "priority": e.priority}
                for e in t.endpoints.values()
            ]
            origins.append({"name": "legacy", "host_name": "legacy.example.net", "weight": 1, "priority": 5})
            arm.seed_afd_origin_group(t.subscription_id, t.resource_group, t.profile, t.origin_group, origins)


def pool_id(target: Any) -> str:
    return backend_id(target.subscription_id, target.resource_group, target.service, target.pool)


def apim_portal_edit(arm: FakeArm, target: Any, region: str, **fields: Any) -> None:
    """A portal edit of one member of an APIM pool: weight (regionguard's units), priority, enabled (in the pool or not)."""
    doc = arm.get_resource(pool_id(target))
    assert doc is not None
    services = doc["properties"]["pool"]["services"]
    member = backend_id(target.subscription_id, target.resource_group, target.service, target.endpoints[region].backend)
    index = next(i for i, s in enumerate(services) if s["id"].lower() == member.lower())
    item = dict(services[index])
    if "weight" in fields:
        item["weight"] = fields["weight"] // 10
    if "priority" in fields:
        item["priority"] = fields["priority"]
    if fields.get("enabled") is False:
        services.pop(index)
    else:
        services[index] = item
    arm.mutate(pool_id(target), {"pool": {"services": services}})


def resource_id(target: Any, region: str) -> str:
    """The ARM id a portal edit of ``region``'s endpoint goes to."""
    if target.kind == "traffic_manager":
        return tm_endpoint_id(
            target.subscription_id, target.resource_group, target.profile, target.endpoints[region].type, target.endpoints[region].name
        )
    if target.kind == "front_door":
        return (
            front_door_id(target.subscription_id, target.resource_group, target.front_door)
            + f"/backendPools/{target.backend_pool}/backends/{target.endpoints[region].address}"
        )
    return afd_origin_id(
        target.subscription_id, target.resource_group, target.profile, target.origin_group, target.endpoints[region].origin
    )


def portal_fields(target: Any, **fields: Any) -> dict[str, Any]:
    """weight/priority/enabled -> the resource's own property names."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if key == "enabled":
            out["endpointStatus" if target.kind == "traffic_manager" else "enabledState"] = "Enabled" if value else "Disabled"
        else:
            out[key] = value
    return out


def write_method(target: Any) -> str:
    return "PUT" if target.kind == "front_door" else "PATCH"


def drained_setting(kind: str, weight: int | None, priority: int | None) -> EndpointSetting:
    """How a drained endpoint reads: an APIM member out of its pool has no weight or priority there."""
    if kind == "apim_backend_pool":
        return EndpointSetting(weight=None, priority=None, enabled=False)
    return EndpointSetting(weight=weight, priority=priority, enabled=False)


def arm_writes(arm: FakeArm, target: Any | None = None) -> list[Any]:
    """Write requests (every attempt) in the ARM log, optionally for one target's resource."""
    marker = None
    if target is not None:
        if target.kind == "traffic_manager":
            marker = f"/trafficmanagerprofiles/{target.profile}/"
        elif target.kind == "front_door":
            marker = f"/frontdoors/{target.front_door}/"
        elif target.kind == "apim_backend_pool":
            marker = f"/service/{target.service}/"
        else:
            marker = f"/profiles/{target.profile}/"
        marker = marker.lower()
    return [
        e
        for e in arm.request_log
        if e.method in ("PUT", "PATCH", "POST", "DELETE") and (marker is None or marker in (e.path.lower() + "/"))
    ]


# ---------------------------------------------------------------- the harness


@dataclass
class Harness:
    """One actuator plus ways to poke at what it talks to."""

    kind: str
    settings: Settings
    target: Any
    actuator: Any
    inject: Callable[..., None]  # (fault, count)
    writes: Callable[[], int]  # write attempts so far
    edit: Callable[..., None]  # (region, **fields): a portal edit
    arm: FakeArm | None = None

    @property
    def apim(self) -> bool:
        return bool(self.target.kind == "apim_backend_pool")

    def w(self, weight: int) -> int:
        """A test weight the kind can hold (APIM: multiples of 10)."""
        return weight * 10 if self.apim else weight

    def change(self, region: str, field: Field, actual: Any, desired: Any) -> Change:
        return Change(self.target.name, region, azure_name(self.target, region), field, actual, desired, "contract test")

    def apply(self, *changes: Change, seconds: float = 10.0) -> tuple[Any, list[tuple[Change, str, ActuatorError | None]]]:
        results: list[tuple[Change, str, ActuatorError | None]] = []
        report = self.actuator.apply(
            self.target, Plan(changes=changes), deadline=time.monotonic() + seconds, on_result=lambda c, s, e: results.append((c, s, e))
        )
        return report, results


@pytest.fixture(scope="module")
def arm() -> Iterator[FakeArm]:
    with FakeArm(token="contract-token") as fake:
        yield fake


def _memory_harness(kind: str = "memory") -> Harness:
    settings = settings_for(None, next(_names))
    # Traffic Manager rules (unique priorities), or an APIM pool's (drain = out of the pool)
    target = settings.targets[3 if kind == "memory-apim" else 0]
    actuator = MemoryActuator(retry=FAST_RETRY)
    actuator.seed(target, unmanaged={"legacy-onprem": {"weight": 1, "priority": 10}})
    faults: dict[str, Callable[[int], None]] = {
        "throttle": lambda n: actuator.fail_writes(
            TransientError("throttled", code="SubscriptionRequestsThrottled", status=429, retry_after=0.05), n
        ),
        "throttle_no_retry_after": lambda n: actuator.fail_writes(
            TransientError("throttled", code="SubscriptionRequestsThrottled", status=429), n
        ),
        "busy": lambda n: actuator.fail_writes(
            TransientError("busy", code="RetryableErrorDueToAnotherOperation", status=429, retry_after=0.05), n
        ),
        "error": lambda n: actuator.fail_writes(TransientError("boom", code="InternalServerError", status=500), n),
        "hang": lambda n: actuator.hang_writes(30.0, n),
        "forbidden": lambda n: actuator.fail_writes(PermanentError("no", code="AuthorizationFailed", status=403), n),
    }
    return Harness(
        kind=kind,
        settings=settings,
        target=target,
        actuator=actuator,
        inject=lambda fault, count=1: faults[fault](count),
        writes=lambda: actuator.write_attempts,
        edit=lambda region, **f: actuator.edit(target, region, **f),
    )


def _azure_harness(arm: FakeArm, kind: str) -> Harness:
    settings = settings_for(arm, next(_names))
    seed_arm(arm, settings)
    target = next(t for t in settings.targets if t.kind == kind)
    actuator = build_actuators(settings, StaticTokenCredential("contract-token"), retry=FAST_RETRY)[target.name]
    method = write_method(target)

    def inject(fault: str, count: int = 1) -> None:
        match = {"method": method}
        if fault == "throttle":
            arm.inject_throttle(count, retry_after=0.05, **match)
        elif fault == "throttle_no_retry_after":
            arm.inject_throttle(count, retry_after=None, **match)
        elif fault == "busy":
            arm.inject_busy(count, retry_after=0.05, **match)
        elif fault == "error":
            arm.inject_error(500, count, **match)
        elif fault == "hang":
            arm.inject_hang(count, max_s=20.0, **match)
        elif fault == "forbidden":
            from simulator.arm_faults import FaultRule

            arm.inject(
                FaultRule(
                    "error",
                    count=count,
                    status=403,
                    code="AuthorizationFailed",
                    message="The client does not have authorization to perform action.",
                    **match,
                )
            )
        else:
            raise KeyError(fault)

    return Harness(
        kind=kind,
        settings=settings,
        target=target,
        actuator=actuator,
        inject=inject,
        writes=lambda: len(arm_writes(arm, target)),
        edit=(
            (lambda region, **f: apim_portal_edit(arm, target, region, **f))
            if kind == "apim_backend_pool"
            else (lambda region, **f: arm.mutate(resource_id(target, region), portal_fields(target, **f)))
        ),
        arm=arm,
    )


@pytest.fixture(params=KINDS)
def h(request: pytest.FixtureRequest) -> Iterator[Harness]:
    if request.param.startswith("memory"):
        yield _memory_harness(request.param)
        return
    fake: FakeArm = request.getfixturevalue("arm")
    fake.clear_faults()
    yield _azure_harness(fake, request.param)
    fake.clear_faults()


# ---------------------------------------------------------------- the contract


def test_it_reads_config_named_endpoints_by_region_and_lists_the_others_as_unmanaged(h: Harness) -> None:
    actual = h.actuator.read_actual(h.target)
    cfg = h.target.endpoints
    assert set(actual.endpoints) == set(REGIONS)
    for region in REGIONS:
        assert actual.endpoints[region].weight == cfg[region].weight
        assert actual.endpoints[region].enabled is True
    assert len(actual.unmanaged) == 1
    assert actual.unmanaged[0].startswith("legacy")
    assert h.writes() == 0


def test_it_writes_every_field_of_one_endpoint_in_one_write_and_reads_it_back(h: Harness) -> None:
    report, results = h.apply(
        h.change("westeurope", Field.WEIGHT, 300 if h.kind != "front_door" else 30, h.w(7)),
        h.change("westeurope", Field.PRIORITY, 1 if h.kind != "memory" else 2, 2 if h.kind != "memory" else 7),
    )
    assert report.ok and len(report.applied) == 2
    assert [s for _, s, _ in results] == [APPLIED, APPLIED]
    assert h.writes() == 1
    actual = h.actuator.read_actual(h.target)
    assert actual.endpoints["westeurope"] == EndpointSetting(weight=h.w(7), priority=2 if h.kind != "memory" else 7, enabled=True)
    assert actual.endpoints["eastus"].enabled and actual.endpoints["japaneast"].enabled


def test_it_drains_an_endpoint_and_restores_it_to_its_weight_in_one_write_each(h: Harness) -> None:
    before = h.actuator.read_actual(h.target).endpoints["westeurope"]
    report, results = h.apply(h.change("westeurope", Field.ENABLED, True, False))
    assert report.ok and [s for _, s, _ in results] == [APPLIED]
    drained = h.actuator.read_actual(h.target).endpoints["westeurope"]
    assert drained == drained_setting(h.target.kind, before.weight, before.priority)
    # A restore names the weight it comes back with (the planner plans it when Azure holds none).
    restore = [h.change("westeurope", Field.ENABLED, False, True)]
    if drained.weight is None:
        restore += [
            h.change("westeurope", Field.WEIGHT, None, before.weight),
            h.change("westeurope", Field.PRIORITY, None, before.priority),
        ]
    report, results = h.apply(*restore)
    assert report.ok and all(s == APPLIED for _, s, _ in results)
    assert h.actuator.read_actual(h.target).endpoints["westeurope"] == before
    assert h.writes() == 2


def test_it_applies_changes_to_several_endpoints_of_one_plan(h: Harness) -> None:
    report, _ = h.apply(h.change("eastus", Field.WEIGHT, None, h.w(11)), h.change("japaneast", Field.WEIGHT, None, h.w(13)))
    assert report.ok
    actual = h.actuator.read_actual(h.target)
    assert (actual.endpoints["eastus"].weight, actual.endpoints["japaneast"].weight) == (h.w(11), h.w(13))
    # Front Door classic and APIM write the whole resource once per plan; the others once per endpoint.
    assert h.writes() == (1 if h.kind in ("front_door", "apim_backend_pool") else 2)


def test_it_refuses_a_change_to_an_endpoint_the_config_does_not_name_and_writes_nothing(h: Harness) -> None:
    rogue = Change(h.target.name, "eastus", "legacy-onprem", Field.ENABLED, True, False, "not ours")
    report, results = h.apply(rogue)
    assert results[0][1] == FAILED and results[0][2] is not None and results[0][2].code == "NotOwned"
    assert not report.applied
    assert h.writes() == 0
    assert len(h.actuator.read_actual(h.target).unmanaged) == 1


def test_it_fails_a_validation_error_with_arms_code_and_message_and_does_not_retry_it(h: Harness) -> None:
    _report, results = h.apply(h.change("eastus", Field.WEIGHT, None, 5000))
    _change, status, error = results[0]
    assert status == FAILED
    assert isinstance(error, PermanentError)
    # ARM's own code: Microsoft.Network says BadRequest, API Management ValidationError (weight 5000 -> APIM's 500 of 0-100)
    assert error.code == ("ValidationError" if h.kind == "apim_backend_pool" else "BadRequest")
    assert "weight" in error.message and ("100" if h.kind == "apim_backend_pool" else "1000") in error.message
    assert h.writes() == 1  # one attempt, no retry loop
    assert h.actuator.read_actual(h.target).endpoints["eastus"].weight != 5000


def test_it_does_not_retry_an_authorization_failure(h: Harness) -> None:
    h.inject("forbidden", 3)
    _report, results = h.apply(h.change("eastus", Field.WEIGHT, None, h.w(9)))
    assert results[0][1] == FAILED
    assert isinstance(results[0][2], PermanentError) and results[0][2].code == "AuthorizationFailed"
    assert h.writes() == 1


@pytest.mark.parametrize("fault", ["throttle", "throttle_no_retry_after", "busy", "error"])
def test_it_retries_a_transient_error_within_the_deadline_and_lands_the_change(h: Harness, fault: str) -> None:
    h.inject(fault, 2)
    started = time.monotonic()
    _report, results = h.apply(h.change("eastus", Field.WEIGHT, None, h.w(21)))
    assert [s for _, s, _ in results] == [APPLIED], results
    assert h.writes() == 3  # two refused attempts, then the one that landed
    assert h.actuator.read_actual(h.target).endpoints["eastus"].weight == h.w(21)
    assert time.monotonic() - started < 3.0


def test_a_persistent_transient_error_fails_after_a_bounded_number_of_attempts(h: Harness) -> None:
    h.inject("throttle_no_retry_after", 50)
    _report, results = h.apply(h.change("eastus", Field.WEIGHT, None, h.w(22)))
    assert results[0][1] == FAILED and isinstance(results[0][2], TransientError)
    assert results[0][2].code == "SubscriptionRequestsThrottled"
    assert h.writes() == FAST_RETRY.attempts  # our loop only: the SDK's own retries are off


@pytest.mark.serial
def test_a_hanging_write_gives_up_at_the_deadline(h: Harness) -> None:
    h.inject("hang", 10)
    started = time.monotonic()
    _report, results = h.apply(
        h.change("eastus", Field.WEIGHT, None, h.w(23)), h.change("japaneast", Field.WEIGHT, None, h.w(24)), seconds=0.8
    )
    took = time.monotonic() - started
    assert took < 0.8 + 1.2, f"apply took {took:.2f}s past a 0.8s deadline"
    assert results and all(s == FAILED for _, s, _ in results)
    assert all(isinstance(e, TransientError) for _, _, e in results)


def test_it_swaps_two_priorities_without_an_intermediate_collision(h: Harness) -> None:
    if h.kind in ("front_door", "front_door_cdn", "apim_backend_pool", "memory-apim"):  # seeded all at priority 1
        h.edit("westeurope", priority=2)
    before = h.actuator.read_actual(h.target)
    a, b = before.endpoints["eastus"].priority, before.endpoints["westeurope"].priority
    _report, results = h.apply(h.change("eastus", Field.PRIORITY, a, b), h.change("westeurope", Field.PRIORITY, b, a))
    assert [s for _, s, _ in results] == [APPLIED, APPLIED], results
    after = h.actuator.read_actual(h.target)
    assert (after.endpoints["eastus"].priority, after.endpoints["westeurope"].priority) == (b, a)


def test_it_reports_a_change_made_behind_its_back_on_the_next_read(h: Harness) -> None:
    h.edit("japaneast", weight=h.w(99))
    h.edit("westeurope", enabled=False)
    actual = h.actuator.read_actual(h.target)
    assert actual.endpoints["japaneast"] == EndpointSetting(weight=h.w(99), priority=actual.endpoints["japaneast"].priority, enabled=True)
    assert actual.endpoints["westeurope"] == drained_setting(
        h.target.kind, 300 if h.kind != "front_door" else 30, actual.endpoints["westeurope"].priority
    )
    assert h.writes() == 0


# ---------------------------------------------------------------- Azure specifics (real SDK, fake ARM)


@pytest.fixture
def azure_settings(arm: FakeArm) -> Iterator[Settings]:
    arm.clear_faults()
    settings = settings_for(arm, next(_names))
    seed_arm(arm, settings)
    yield settings
    arm.clear_faults()


def _apply(settings: Settings, target: Any, *changes: Change) -> Any:
    actuator = build_actuators(settings, StaticTokenCredential("contract-token"), retry=FAST_RETRY)[target.name]
    return actuator.apply(target, Plan(changes=changes), deadline=time.monotonic() + 10)


def test_traffic_manager_patch_carries_only_the_fields_that_differ(arm: FakeArm, azure_settings: Settings) -> None:
    tm = azure_settings.targets[0]
    report = _apply(azure_settings, tm, Change(tm.name, "westeurope", "aoai-westeurope", Field.ENABLED, True, False, "drain"))
    assert report.ok
    (patch,) = arm_writes(arm, tm)
    assert patch.method == "PATCH"
    assert patch.path.endswith("/ExternalEndpoints/aoai-westeurope")
    assert patch.body == {"properties": {"endpointStatus": "Disabled"}}


def test_traffic_manager_monitor_status_is_azures_own_view(arm: FakeArm, azure_settings: Settings) -> None:
    tm = azure_settings.targets[0]
    arm.mutate(resource_id(tm, "japaneast"), {"endpointMonitorStatus": "Degraded"})
    actuator = build_actuators(azure_settings, StaticTokenCredential("contract-token"), retry=FAST_RETRY)[tm.name]
    actual = actuator.read_actual(tm)
    assert actual.monitor_status == {"eastus": "Online", "westeurope": "Online", "japaneast": "Degraded"}


def test_traffic_manager_refuses_a_priority_another_endpoint_keeps_without_writing(arm: FakeArm, azure_settings: Settings) -> None:
    tm = azure_settings.targets[0]
    report = _apply(azure_settings, tm, Change(tm.name, "eastus", "aoai-eastus", Field.PRIORITY, 1, 10, "collides with legacy-onprem"))
    assert report.failed and report.failed[0][1].code == "PriorityConflict"
    assert arm_writes(arm, tm) == []


def test_front_door_classic_put_leaves_every_unmanaged_part_byte_identical(arm: FakeArm, azure_settings: Settings) -> None:
    fd = azure_settings.targets[1]
    fid = front_door_id(fd.subscription_id, fd.resource_group, fd.front_door)
    before = arm.get_resource(fid)
    report = _apply(
        azure_settings,
        fd,
        Change(fd.name, "eastus", "llm-eastus.example.net", Field.WEIGHT, 50, 5, "nudge"),
        Change(fd.name, "japaneast", "llm-japaneast.example.net", Field.ENABLED, True, False, "drain"),
    )
    assert report.ok
    puts = arm_writes(arm, fd)
    assert [p.method for p in puts] == ["PUT"]  # the whole plan in one read-modify-write
    after = arm.get_resource(fid)
    assert before is not None and after is not None
    backends_after = after["properties"]["backendPools"][0]["properties"]["backends"]
    assert backends_after[0]["weight"] == 5 and backends_after[2]["enabledState"] == "Disabled"
    # Undo exactly the two managed fields: what remains must equal the original, byte for byte.
    backends_after[0]["weight"] = 50
    backends_after[2]["enabledState"] = "Enabled"
    assert json.dumps(after, sort_keys=True) == json.dumps(before, sort_keys=True)
    assert [p["name"] for p in after["properties"]["backendPools"]] == ["llm-pool", "static-pool"]
    assert [r["name"] for r in after["properties"]["routingRules"]] == ["llm-route", "static-route", "http-to-https"]
    assert after["properties"]["rulesEngines"] == before["properties"]["rulesEngines"]


def test_front_door_classic_retries_when_the_previous_operation_is_still_running(arm: FakeArm, azure_settings: Settings) -> None:
    fd = azure_settings.targets[1]
    arm.inject_busy(1, retry_after=0.05, method="PUT")
    report = _apply(azure_settings, fd, Change(fd.name, "westeurope", "llm-westeurope.example.net", Field.WEIGHT, 30, 31, "nudge"))
    assert report.ok
    assert [p.status for p in arm_writes(arm, fd)] == [429, 200]


def test_front_door_classic_reports_a_missing_backend_pool_as_permanent(arm: FakeArm, azure_settings: Settings) -> None:
    fd = azure_settings.targets[1].model_copy(update={"backend_pool": "no-such-pool"})
    actuator = build_actuators(azure_settings, StaticTokenCredential("contract-token"), retry=FAST_RETRY)[fd.name]
    with pytest.raises(PermanentError) as err:
        actuator.read_actual(fd)
    assert err.value.code == "BackendPoolNotFound"
