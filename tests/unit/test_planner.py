"""Planner: a pure, deterministic diff over the fields each target manages."""

from __future__ import annotations

import json
from dataclasses import replace

from controlplane.domain import Change, ChangeOrigin, EndpointSetting, Field, Plan, Skipped, TargetState
from controlplane.engine.planner import apply_to_states, managed_fields, plan
from tests.fakes import make_settings, target_state

S = make_settings(targets=("tm-weighted", "tm-priority", "afd-prod"))


def desired_from(
    actual: TargetState, reasons: dict[str, str] | None = None, manual: tuple[str, ...] = (), **changes: EndpointSetting
) -> TargetState:
    eps = dict(actual.endpoints)
    eps.update(changes)
    return TargetState(target=actual.target, endpoints=eps, reasons=reasons or {}, manual=manual)


def test_nothing_differs_nothing_planned() -> None:
    actual = [target_state(S, t.name) for t in S.targets]
    p = plan(S, actual, actual)
    assert not p and p.changes == ()
    assert p.to_text() == "No changes."


def test_each_target_kind_manages_its_own_fields() -> None:
    assert managed_fields(S.target("tm-weighted")) == (Field.ENABLED, Field.WEIGHT)
    assert managed_fields(S.target("tm-priority")) == (Field.ENABLED, Field.PRIORITY)
    assert managed_fields(S.target("afd-prod")) == (Field.ENABLED, Field.PRIORITY, Field.WEIGHT)


def test_fields_a_target_does_not_manage_are_never_planned() -> None:
    actual = target_state(S, "tm-weighted")
    desired = desired_from(actual, eastus=EndpointSetting(weight=500, priority=7, enabled=True))
    assert plan(S, [desired], [actual]).changes == ()
    actual_p = target_state(S, "tm-priority")
    desired_p = desired_from(actual_p, eastus=EndpointSetting(weight=999, priority=1, enabled=True))
    assert plan(S, [desired_p], [actual_p]).changes == ()


def test_a_change_carries_azure_name_reason_and_both_sides() -> None:
    actual = target_state(S, "tm-weighted")
    desired = desired_from(actual, {"eastus": "unhealthy: 3 consecutive timeouts"}, eastus=EndpointSetting(weight=500, enabled=False))
    (c,) = plan(S, [desired], [actual]).changes
    assert (c.target, c.region, c.endpoint, c.field, c.actual, c.desired) == (
        "tm-weighted",
        "eastus",
        "aoai-eastus",
        Field.ENABLED,
        True,
        False,
    )
    assert c.reason == "unhealthy: 3 consecutive timeouts"
    assert c.manual is False


def test_changes_for_regions_an_override_decides_are_manual() -> None:
    actual = target_state(S, "afd-prod")
    desired = desired_from(actual, {"japaneast": "drain"}, ("japaneast",), japaneast=EndpointSetting(weight=200, priority=1, enabled=False))
    (c,) = plan(S, [desired], [actual]).changes
    assert c.manual is True and c.endpoint == "japaneast"


def test_only_regions_the_config_names_are_touched() -> None:
    actual = target_state(S, "tm-weighted")
    actual = replace(
        actual, endpoints={**actual.endpoints, "brazilsouth": EndpointSetting(weight=1, enabled=True)}, unmanaged=("aoai-brazil",)
    )
    desired = replace(actual, endpoints={**actual.endpoints, "brazilsouth": EndpointSetting(weight=999, enabled=False)})
    assert plan(S, [desired], [actual]).changes == ()


def test_a_region_azure_does_not_report_is_not_planned() -> None:
    actual = target_state(S, "tm-weighted")
    missing = replace(actual, endpoints={r: e for r, e in actual.endpoints.items() if r != "eastus"})
    desired = desired_from(actual, eastus=EndpointSetting(weight=1, enabled=False))
    assert plan(S, [desired], [missing]).changes == ()


def test_a_target_missing_on_either_side_is_skipped() -> None:
    desired = desired_from(target_state(S, "tm-weighted"), eastus=EndpointSetting(weight=1, enabled=False))
    assert plan(S, [desired], []).changes == ()
    assert plan(S, [], [desired]).changes == ()


def test_order_is_config_target_then_region_then_field_whatever_the_input_order() -> None:
    actual = {t.name: target_state(S, t.name) for t in S.targets}
    desired = {
        "afd-prod": desired_from(
            actual["afd-prod"],
            japaneast=EndpointSetting(weight=50, priority=2, enabled=False),
            eastus=EndpointSetting(weight=1, priority=1, enabled=True),
        ),
        "tm-weighted": desired_from(actual["tm-weighted"], westeurope=EndpointSetting(weight=1, enabled=True)),
    }
    p1 = plan(S, desired, actual)
    p2 = plan(S, list(reversed(list(desired.values()))), list(reversed(list(actual.values()))))
    assert p1 == p2 and p1.checksum == p2.checksum
    keys = [(c.target, c.region, c.field.value) for c in p1.changes]
    assert keys == [
        ("tm-weighted", "westeurope", "weight"),
        ("afd-prod", "eastus", "weight"),
        ("afd-prod", "japaneast", "enabled"),
        ("afd-prod", "japaneast", "priority"),
        ("afd-prod", "japaneast", "weight"),
    ]


def test_applying_a_plan_makes_the_next_plan_empty() -> None:
    actual = {t.name: target_state(S, t.name) for t in S.targets}
    desired = {
        "tm-priority": desired_from(actual["tm-priority"], eastus=EndpointSetting(weight=1, priority=1, enabled=False)),
        "afd-prod": desired_from(actual["afd-prod"], westeurope=EndpointSetting(weight=10, priority=1, enabled=True)),
    }
    p = plan(S, desired, actual)
    assert len(p.changes) == 2
    after = apply_to_states(p, actual)
    assert plan(S, desired, after).changes == ()
    assert after["tm-weighted"] is actual["tm-weighted"]  # untouched targets are not copied


def test_a_plan_prints_as_text_and_json_with_a_checksum() -> None:
    actual = target_state(S, "tm-weighted")
    desired = desired_from(actual, {"eastus": "unhealthy"}, eastus=EndpointSetting(weight=500, enabled=False))
    p = plan(S, [desired], [actual])
    data = json.loads(json.dumps(p.to_dict()))
    assert data["checksum"] == p.checksum and len(p.checksum) == 16
    assert data["changes"][0]["kind"] == "drain"
    assert "tm-weighted/aoai-eastus (eastus): enabled True -> False (unhealthy)" in p.to_text()
    # the checksum covers what would be written, not why: 'apply the plan I reviewed' survives a reworded reason
    assert Plan(tuple(replace(c, reason="reviewed at 03:00") for c in p.changes)).checksum == p.checksum
    assert Plan(tuple(replace(c, desired=True) for c in p.changes)).checksum != p.checksum


def test_a_recorded_plan_reads_back_as_the_same_plan_with_each_change_origin() -> None:
    actual = target_state(S, "tm-weighted")
    desired = desired_from(actual, {"eastus": "unhealthy"}, eastus=EndpointSetting(weight=500, enabled=False))
    drain = plan(S, [desired], [actual]).changes[0]
    manual = replace(drain, region="westeurope", endpoint="aoai-westeurope", origin=ChangeOrigin.MANUAL)
    p = Plan((drain, manual), (Skipped(replace(drain, origin=ChangeOrigin.FAIL_OPEN), "write_budget", "wait"),), ("tm-weighted: all down",))
    assert Plan.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    # a body recorded before origins were stored says only "manual"
    old = {k: v for k, v in manual.to_dict().items() if k != "origin"}
    assert Change.from_dict(old).origin is ChangeOrigin.MANUAL and Change.from_dict(old).manual
