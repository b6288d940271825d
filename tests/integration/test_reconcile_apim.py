"""The reconciler over an APIM load-balanced pool: the real azure-mgmt-apimanagement
client over HTTPS against the fake ARM, a real SQLite store.

What is checked: a drain takes the member out of ``pool.services`` and a
restore puts it back at its weight (no drift either way), a concurrent edit
between our GET and PATCH (412) is read, planned again and carried over,
members regionguard does not own are never touched, a 429 is retried, and a
crash after the PATCH leaves a trail the next tick settles without redoing it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from controlplane.actuators.credentials import StaticTokenCredential
from controlplane.actuators.factory import build_actuators
from controlplane.domain import ChangeStatus, EndpointSetting, EventKind, Field
from controlplane.store import Store
from simulator.arm import FakeArm
from simulator.arm_apim import backend_id
from tests.integration.test_actuator_contract import FAST_RETRY, apim_portal_edit, pool_id
from tests.integration.test_reconcile import CrashAfterFirstWrite, H, World, health


@pytest.fixture(scope="module")
def arm() -> Iterator[FakeArm]:
    with FakeArm(token="contract-token") as fake:
        yield fake


@pytest.fixture
def world(arm: FakeArm, store: Store) -> Iterator[World]:
    arm.clear_faults()
    arm.before_write.clear()
    yield World(arm, store, apim=True)
    arm.before_write.clear()
    arm.clear_faults()


def apim(world: World) -> Any:
    return world.settings.targets[3]


def services(world: World) -> list[dict[str, Any]]:
    doc = world.arm.get_resource(pool_id(apim(world)))
    assert doc is not None
    return list(doc["properties"]["pool"]["services"])


def member(world: World, name: str) -> dict[str, Any] | None:
    t = apim(world)
    wanted = backend_id(t.subscription_id, t.resource_group, t.service, name).lower()
    return next((s for s in services(world) if s["id"].lower() == wanted), None)


def pool_writes(world: World) -> list[Any]:
    return [w for w in world.writes(apim(world)) if w.path.lower().endswith(f"/backends/{apim(world).pool}".lower())]


def edit_legacy(world: World, weight: int) -> None:
    """A portal edit of the member regionguard does not own (APIM's own units)."""
    items = services(world)
    for item in items:
        if item["id"].lower().endswith("/backends/legacy-onprem"):
            item["weight"] = weight
    world.arm.mutate(pool_id(apim(world)), {"pool": {"services": items}})


def test_an_outage_takes_the_member_out_of_the_pool_and_recovery_puts_it_back_at_its_weight(world: World) -> None:
    r = world.reconciler()
    assert not world.tick(r, health()).plan.changes
    before = services(world)
    report = world.tick(r, health(westeurope=H.UNHEALTHY))
    assert report.ok, report
    assert [(c.target, c.region, c.field) for c in report.applied if c.target == apim(world).name] == [
        (apim(world).name, "westeurope", Field.ENABLED)
    ]
    assert report.targets[apim(world).name].confirmed
    assert member(world, "aoai-westeurope") is None  # out of the pool: no traffic, whatever the weights
    assert [s["id"] for s in services(world)] == [s["id"] for s in before if not s["id"].endswith("/aoai-westeurope")]
    (patch,) = pool_writes(world)
    assert patch.method == "PATCH" and patch.headers["If-Match"].startswith('"') and list(patch.body) == ["properties"]
    assert list(patch.body["properties"]) == ["pool"]  # nothing else of the backend is sent
    assert world.actual(apim(world)).endpoints["westeurope"] == EndpointSetting(weight=None, priority=None, enabled=False)
    assert not world.tick(r, health(westeurope=H.UNHEALTHY)).plan.changes  # converged: no weight planned for a member out of the pool
    restored = world.tick(r, health())
    assert {(c.region, c.field, c.desired) for c in restored.applied if c.target == apim(world).name} == {
        ("westeurope", Field.ENABLED, True),
        ("westeurope", Field.WEIGHT, 300),
        ("westeurope", Field.PRIORITY, 1),
    }
    assert len(pool_writes(world)) == 2  # the restore is one PATCH carrying weight and priority
    assert member(world, "aoai-westeurope") == {"id": backend_id_of(world, "aoai-westeurope"), "weight": 30, "priority": 1}
    assert not world.tick(r, health()).plan.changes
    assert not world.store.events(kinds=[EventKind.DRIFT])


def backend_id_of(world: World, name: str) -> str:
    t = apim(world)
    return backend_id(t.subscription_id, t.resource_group, t.service, name)


def test_a_degraded_member_gets_a_weight_apim_can_hold(world: World) -> None:
    r = world.reconciler()
    world.tick(r, health())
    report = world.tick(r, health(eastus=(H.DEGRADED, 0.734)))
    (change,) = [c for c in report.applied if c.target == apim(world).name]
    assert (change.field, change.actual, change.desired) == (Field.WEIGHT, 500, 370)  # 500 x 0.734 = 367 -> 370 (APIM 37)
    assert member(world, "aoai-eastus") == {"id": backend_id_of(world, "aoai-eastus"), "weight": 37, "priority": 1}
    assert not world.tick(r, health(eastus=(H.DEGRADED, 0.734))).plan.changes
    assert not world.store.events(kinds=[EventKind.DRIFT])


def test_a_412_race_reads_and_plans_again_and_keeps_the_other_writers_change(world: World) -> None:
    r = world.reconciler()
    world.tick(r, health())
    raced: list[str] = []

    def portal_edit_first(method: str, path: str) -> None:
        if method == "PATCH" and path.lower().endswith(f"/backends/{apim(world).pool}") and not raced:
            raced.append(path)
            edit_legacy(world, 7)  # lands after our GET, before our PATCH

    world.arm.before_write.append(portal_edit_first)
    report = world.tick(r, health(japaneast=H.UNHEALTHY))
    assert report.ok, report
    assert [w.status for w in pool_writes(world)] == [412, 200]
    first, second = pool_writes(world)
    assert first.headers["If-Match"] != second.headers["If-Match"] and "*" not in (first.headers["If-Match"], second.headers["If-Match"])
    assert member(world, "aoai-japaneast") is None
    legacy = member(world, "legacy-onprem")
    assert legacy is not None and legacy["weight"] == 7  # the other writer's edit survived our write
    assert not world.store.events(kinds=[EventKind.DRIFT])
    assert not world.tick(r, health(japaneast=H.UNHEALTHY)).plan.changes


def test_a_concurrent_edit_of_a_managed_member_is_not_written_over(world: World) -> None:
    r = world.reconciler()
    world.tick(r, health())
    raced: list[str] = []

    def portal_edit_first(method: str, path: str) -> None:
        if method == "PATCH" and path.lower().endswith(f"/backends/{apim(world).pool}") and not raced:
            raced.append(path)
            apim_portal_edit(world.arm, apim(world), "eastus", weight=120)

    world.arm.before_write.append(portal_edit_first)
    report = world.tick(r, health(eastus=(H.DEGRADED, 0.5)))  # plans eastus 500 -> 250
    failed = [(c.region, code) for c, code, _msg in report.failed if c.target == apim(world).name]
    assert failed == [("eastus", "ChangedMeanwhile")]
    assert [w.status for w in pool_writes(world)] == [412]  # the second plan had nothing it may write
    assert member(world, "aoai-eastus") == {"id": backend_id_of(world, "aoai-eastus"), "weight": 12, "priority": 1}
    drift = world.tick(r, health(eastus=(H.DEGRADED, 0.5)))
    assert drift.targets[apim(world).name].drift == {"eastus": "changed outside regionguard: weight 500 -> 120"}


def test_a_portal_edit_of_a_member_it_does_not_own_is_neither_drift_nor_touched(world: World) -> None:
    r = world.reconciler()
    world.tick(r, health())
    edit_legacy(world, 42)
    report = world.tick(r, health())
    assert not report.plan.changes and not report.targets[apim(world).name].drift
    assert pool_writes(world) == []
    world.tick(r, health(eastus=H.UNHEALTHY))
    legacy = member(world, "legacy-onprem")
    assert legacy is not None and legacy["weight"] == 42 and legacy["priority"] == 5
    assert not world.store.events(kinds=[EventKind.DRIFT])


def test_a_429_on_the_pool_patch_is_retried_and_lands(world: World) -> None:
    r = world.reconciler()
    world.tick(r, health())
    world.arm.inject_throttle(2, retry_after=0.05, path_contains=f"/backends/{apim(world).pool}", method="PATCH")
    report = world.tick(r, health(eastus=H.UNHEALTHY))
    assert report.ok, report
    assert [w.status for w in pool_writes(world)] == [429, 429, 200]
    assert member(world, "aoai-eastus") is None


def test_a_crash_after_the_patch_leaves_a_trail_the_next_tick_settles_without_writing_again(world: World) -> None:
    actuators = build_actuators(world.settings, StaticTokenCredential("contract-token"), retry=FAST_RETRY)
    actuators[apim(world).name] = CrashAfterFirstWrite(actuators[apim(world).name])
    sick = health(eastus=(H.DEGRADED, 0.5), westeurope=H.UNHEALTHY)
    with pytest.raises(KeyboardInterrupt):
        world.reconciler(actuators).reconcile_once(sick, fencing_token=world.token)
    pending = world.store.changes(target=apim(world).name, status=ChangeStatus.PENDING)
    assert sorted((row.region, row.field.value) for row in pending) == [("eastus", "weight"), ("westeurope", "enabled")]
    assert len(pool_writes(world)) == 1  # the one PATCH of the plan landed
    world.clock.advance(120)
    report = world.tick(world.reconciler(), sick)  # a new process, the same store
    assert [c for c in report.applied if c.target == apim(world).name] == []
    rows = {row.region: row for row in world.store.changes(target=apim(world).name) if row.plan_id == pending[0].plan_id}
    assert rows["eastus"].status is ChangeStatus.APPLIED and rows["westeurope"].status is ChangeStatus.APPLIED  # confirmed by read-back
    assert len(pool_writes(world)) == 1  # nothing applied twice
    assert not world.store.events(kinds=[EventKind.DRIFT])
    assert not world.tick(world.reconciler(), sick).plan.changes


def test_the_target_page_shows_each_members_circuit_breaker_read_only(world: World) -> None:
    from tests.integration.web_seed import PASSWORD, cheap_hashing, default_hashing
    from web import create_app

    world.tick(world.reconciler(), health())
    rows = {row.region: row for row in world.store.target_endpoints(apim(world).name)}
    assert set(rows) == {"eastus", "westeurope", "japaneast"}
    assert all(any("429" in rule for rule in row.circuit_breakers or ()) for row in rows.values())
    cheap_hashing()
    try:
        from controlplane import users

        users.add_user(world.store, "olive", "viewer", PASSWORD, world.clock.now())
        app = create_app(world.settings, world.store, {"TESTING": True, "CLOCK": world.clock, "SECRET_KEY": "test-secret"})
        client = app.test_client()
        login_page = client.get("/login").get_data(as_text=True)
        token = login_page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        assert client.post("/login", data={"username": "olive", "password": PASSWORD, "csrf_token": token}).status_code == 302
        page = client.get(f"/target/{apim(world).name}").get_data(as_text=True)
    finally:
        default_hashing()
    assert "Circuit breakers" in page and "read-only" in page
    assert "w 500 (APIM 50)" in page  # regionguard's units, and what the portal shows
    assert "aoai-throttled: trips after 3 failures (429, 500-599) in 1m for 1m; honours Retry-After" in page
    tm_page_has_none = "Circuit breakers" not in client.get(f"/target/{world.tm.name}").get_data(as_text=True)
    assert tm_page_has_none
    assert world.writes() == []  # shown, never changed
    world.tick(world.reconciler(), health(eastus=H.UNHEALTHY))
    drained = client.get(f"/target/{apim(world).name}").get_data(as_text=True)
    row = drained.split('data-region="eastus"', 1)[1].split("</tr>", 1)[0]
    assert "out of the pool" in row and "APIM" not in row


def test_a_drained_member_reads_in_sync_on_the_dashboard(world: World) -> None:
    from controlplane.status import read_status
    from web.readmodel import target_views

    r = world.reconciler()
    world.tick(r, health(eastus=H.UNHEALTHY))
    world.tick(r, health(eastus=H.UNHEALTHY))
    (view,) = target_views(read_status(world.settings, world.store, world.clock.now()), target=apim(world).name)
    row = next(row for row in view.rows if row.region == "eastus")
    assert row.actual == {"enabled": False, "weight": None, "priority": None}
    assert row.desired["enabled"] is False and not row.differs


def test_a_member_taken_out_in_the_portal_is_put_back_under_revert(arm: FakeArm, store: Store) -> None:
    world = World(arm, store, apim=True, drift="revert")
    r = world.reconciler()
    world.tick(r, health())
    apim_portal_edit(arm, apim(world), "japaneast", enabled=False)
    report = world.tick(r, health())
    assert report.targets[apim(world).name].drift == {"japaneast": "changed outside regionguard: enabled True -> False"}
    assert {(c.region, c.field, c.desired) for c in report.applied if c.target == apim(world).name} == {
        ("japaneast", Field.ENABLED, True),
        ("japaneast", Field.WEIGHT, 200),
        ("japaneast", Field.PRIORITY, 1),
    }
    assert member(world, "aoai-japaneast") == {"id": backend_id_of(world, "aoai-japaneast"), "weight": 20, "priority": 1}
    assert not world.tick(r, health()).plan.changes


def test_a_portal_weight_is_adopted_as_a_pin_in_regionguards_units(arm: FakeArm, store: Store) -> None:
    world = World(arm, store, apim=True, drift="adopt")
    r = world.reconciler()
    world.tick(r, health())
    apim_portal_edit(arm, apim(world), "westeurope", weight=420)  # APIM 42
    report = world.tick(r, health())
    assert not [c for c in report.plan.changes if c.target == apim(world).name] and pool_writes(world) == []
    (pin,) = [o for o in store.active_overrides(world.clock.now()) if o.target == apim(world).name]
    assert (pin.kind.value, pin.region, pin.weight) == ("pin", "westeurope", 420)
    assert not world.tick(r, health()).plan.changes  # it sticks
    assert member(world, "aoai-westeurope") == {"id": backend_id_of(world, "aoai-westeurope"), "weight": 42, "priority": 1}


def test_a_pool_name_that_is_a_single_backend_is_a_permanent_read_error(world: World) -> None:
    from controlplane.actuators.base import PermanentError

    single = apim(world).model_copy(update={"pool": "aoai-eastus"})
    actuator = build_actuators(world.settings, StaticTokenCredential("contract-token"), retry=FAST_RETRY)[apim(world).name]
    with pytest.raises(PermanentError) as err:
        actuator.read_actual(single)
    assert err.value.code == "NotAPool" and "'Single'" in err.value.message


def test_a_member_backend_that_cannot_be_read_keeps_its_last_rules_marked_as_such(world: World) -> None:
    actuator = build_actuators(world.settings, StaticTokenCredential("contract-token"), retry=FAST_RETRY)[apim(world).name]
    first = actuator.read_actual(apim(world)).circuit_breakers
    assert first["eastus"] == ("aoai-throttled: trips after 3 failures (429, 500-599) in 1m for 1m; honours Retry-After",)
    world.arm.inject_error(503, 1, method="GET", path_contains="/backends/aoai-eastus")
    again = actuator.read_actual(apim(world))
    assert again.circuit_breakers["eastus"][0] == first["eastus"][0]
    assert "as last read" in again.circuit_breakers["eastus"][-1] and "ServiceUnavailable" in again.circuit_breakers["eastus"][-1]
    assert again.circuit_breakers["westeurope"] == first["westeurope"]
    assert again.endpoints == actuator.read_actual(apim(world)).endpoints  # the pool itself read fine


def test_draining_every_member_keeps_the_last_one_in_the_pool(world: World) -> None:
    from controlplane.domain import Change, Plan

    t = apim(world)
    ours = [s for s in services(world) if not s["id"].lower().endswith("/legacy-onprem")]
    world.arm.mutate(pool_id(t), {"pool": {"services": ours}})  # a pool of our three members only
    actuator = build_actuators(world.settings, StaticTokenCredential("contract-token"), retry=FAST_RETRY)[t.name]
    drains = [Change(t.name, r, t.endpoints[r].backend, Field.ENABLED, True, False, "forced drain of everything") for r in t.endpoints]
    report = actuator.apply(t, Plan(changes=tuple(drains)), deadline=time.monotonic() + 10)
    assert [c.region for c in report.applied] == ["eastus", "westeurope"]
    assert [(c.region, e.code) for c, e in report.failed] == [("japaneast", "PoolNeedsAMember")]
    assert [s["id"].rsplit("/", 1)[-1] for s in services(world)] == ["aoai-japaneast"]
    assert [w.status for w in pool_writes(world)] == [200]  # one PATCH, never an empty list


def test_a_priority_pool_fails_over_by_removing_the_primary_and_fails_back_with_its_priority(arm: FakeArm, store: Store) -> None:
    from controlplane.config import parse_settings
    from controlplane.runtime.reconcile import Reconciler
    from tests.integration.test_reconcile import HOLDER, FakeClock

    base = World(arm, store, apim=True).settings
    t = base.targets[3]
    data = base.model_dump(mode="json")
    target = data["targets"][3] | {
        "name": "apim-priority",
        "service": f"{t.service}-p",
        "routing": "priority",
        "failback_dwell": "60s",
        "endpoints": {
            r: {"backend": f"aoai-{r}", "weight": 500, "priority": i + 1} for i, r in enumerate(("eastus", "westeurope", "japaneast"))
        },
    }
    settings = parse_settings({**data, "targets": [target]})
    arm.seed_from_config(settings)
    pt = settings.targets[0]
    clock = FakeClock()
    token = store.try_acquire_lease("leader", HOLDER, 3600, clock.now())
    actuators = build_actuators(settings, StaticTokenCredential("contract-token"), retry=FAST_RETRY)
    r = Reconciler(settings, store, actuators, clock, HOLDER, deadline_s=12.0)  # reads: 4 s (test_reconcile's World says why)

    def tick(h: Any) -> Any:
        report = r.reconcile_once(h, fencing_token=token)
        clock.advance(30)
        return report

    def members() -> list[tuple[str, int | None]]:
        doc = arm.get_resource(backend_id(pt.subscription_id, pt.resource_group, pt.service, pt.pool))
        assert doc is not None
        return [(s["id"].rsplit("/", 1)[-1], s.get("priority")) for s in doc["properties"]["pool"]["services"]]

    assert not tick(health()).plan.changes
    assert members() == [("aoai-eastus", 1), ("aoai-westeurope", 2), ("aoai-japaneast", 3)]
    failover = tick(health(eastus=H.UNHEALTHY))
    assert [(c.region, c.field, c.desired) for c in failover.applied] == [("eastus", Field.ENABLED, False)]
    assert members() == [("aoai-westeurope", 2), ("aoai-japaneast", 3)]  # APIM sends everything to priority 2 now
    tick(health())  # recovered: failback waits for the dwell (60 s)
    assert members() == [("aoai-westeurope", 2), ("aoai-japaneast", 3)]
    tick(health())
    back = tick(health())
    assert {(c.region, c.field, c.desired) for c in back.applied} == {
        ("eastus", Field.ENABLED, True),
        ("eastus", Field.PRIORITY, 1),
        ("eastus", Field.WEIGHT, 500),
    }
    assert sorted(members(), key=lambda m: m[1] or 0) == [("aoai-eastus", 1), ("aoai-westeurope", 2), ("aoai-japaneast", 3)]
    assert not tick(health()).plan.changes
