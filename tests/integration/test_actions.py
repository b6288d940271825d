"""Manual operator actions: validation, previews through the decision engine, guardrails, audit."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controlplane import actions
from controlplane.actions import Action, ActionRefused, ActionRequest, InvalidAction, NotAllowed
from controlplane.config import Settings
from controlplane.domain import HealthStateName, OverrideKind
from controlplane.store import Store, open_store
from controlplane.users import Principal
from tests.integration.web_seed import seed_health, seed_targets, settings

T0 = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
ADMIN = Principal("ada", "admin")
OPERATOR = Principal("otto", "operator")
VIEWER = Principal("vic", "viewer")


@pytest.fixture
def s() -> Settings:
    return settings()


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated empty database per module, copied for each test (migrating each time is slow)."""
    path = tmp_path_factory.mktemp("actions") / "empty.db"
    open_store("sqlite:///" + str(path), migrate=True).close()
    return path


@pytest.fixture
def store(migrated: Path, tmp_path: Path) -> Iterator[Store]:
    path = tmp_path / "actions.db"
    shutil.copyfile(migrated, path)
    s = open_store("sqlite:///" + str(path))
    yield s
    s.close()


@pytest.fixture
def seeded(store: Store, s: Settings) -> Store:
    seed_targets(store, s, T0)
    seed_health(store, T0)
    return store


def req(action: Action, **kw: Any) -> ActionRequest:
    return ActionRequest(action=action, reason=kw.pop("reason", "region on fire"), **kw)


def test_drain_preview_names_every_target_and_how_many_stay_serving(s, seeded: Store) -> None:
    p = actions.preview(s, seeded, req(Action.DRAIN, region="eastus"), OPERATOR, T0)
    assert p.allowed
    assert "disable eastus" in p.sentence
    assert "tm-weighted" in p.sentence and "afd-prod" in p.sentence and "tm-priority" in p.sentence
    assert "2 of 3 stay serving" in p.sentence
    by_target = {i.target: i for i in p.impacts}
    assert by_target["tm-weighted"].changes == (("eastus", "enabled", True, False),)
    assert by_target["tm-weighted"].serving_after == 2
    assert seeded.active_overrides(T0) == []  # a preview writes nothing


def test_drain_is_stored_as_an_override_with_an_audit_event(s, seeded: Store) -> None:
    r = actions.execute(s, seeded, req(Action.DRAIN, region="eastus", target="tm-weighted"), OPERATOR, T0)
    [o] = seeded.active_overrides(T0)
    assert (o.kind, o.region, o.target, o.who, o.why, o.forced) == (
        OverrideKind.DRAIN,
        "eastus",
        "tm-weighted",
        "otto",
        "region on fire",
        False,
    )
    assert r.added[0].id == o.id
    [e] = seeded.events(kinds=["override"])
    assert e.actor == "otto" and e.region == "eastus" and e.target == "tm-weighted"
    assert "disable eastus in tm-weighted" in e.data["preview"]
    assert e.data["override_ids"] == [o.id]


def test_a_drain_that_breaks_min_serving_is_refused_with_the_reason(s, store: Store) -> None:
    seed_targets(store, s, T0, disabled={"tm-weighted": {"westeurope", "japaneast"}})
    seed_health(store, T0)
    p = actions.preview(s, store, req(Action.DRAIN, region="eastus", target="tm-weighted"), OPERATOR, T0)
    assert not p.allowed and p.forceable
    assert "min_serving is 1" in p.refusal
    with pytest.raises(ActionRefused, match="min_serving"):
        actions.execute(s, store, req(Action.DRAIN, region="eastus", target="tm-weighted"), OPERATOR, T0)
    assert store.active_overrides(T0) == []


def test_forcing_past_min_serving_needs_admin_and_the_typed_region_name(s, store: Store) -> None:
    seed_targets(store, s, T0, disabled={"tm-weighted": {"westeurope", "japaneast"}})
    forced = req(Action.DRAIN, region="eastus", target="tm-weighted", force=True, confirm="eastus")
    with pytest.raises(NotAllowed, match="admin"):
        actions.execute(s, store, forced, OPERATOR, T0)
    with pytest.raises(InvalidAction) as bad:
        actions.execute(s, store, req(Action.DRAIN, region="eastus", target="tm-weighted", force=True, confirm="westus"), ADMIN, T0)
    assert bad.value.field == "confirm" and bad.value.value == "westus"
    assert store.active_overrides(T0) == []
    r = actions.execute(s, store, forced, ADMIN, T0)
    assert r.forced and store.active_overrides(T0)[0].forced
    [e] = store.events(kinds=["override"])
    assert e.severity == "critical" and "FORCED" in e.summary and "min_serving" in e.data["refusal_overridden"]


def test_draining_the_last_healthy_region_is_refused_even_if_others_still_serve(s, store: Store) -> None:
    seed_targets(store, s, T0)
    seed_health(store, T0, {"westeurope": HealthStateName.UNHEALTHY, "japaneast": HealthStateName.UNHEALTHY})
    p = actions.preview(s, store, req(Action.DRAIN, region="eastus", target="afd-prod"), OPERATOR, T0)
    assert not p.allowed
    assert "healthy" in p.refusal


def test_a_viewer_may_not_act_and_a_reason_is_required(s, seeded: Store) -> None:
    with pytest.raises(NotAllowed):
        actions.preview(s, seeded, req(Action.DRAIN, region="eastus"), VIEWER, T0)
    with pytest.raises(InvalidAction) as bad:
        actions.preview(s, seeded, req(Action.DRAIN, region="eastus", reason=" "), OPERATOR, T0)
    assert bad.value.field == "reason"


def test_unknown_region_and_target_name_the_field_and_value(s, seeded: Store) -> None:
    with pytest.raises(InvalidAction) as bad:
        actions.preview(s, seeded, req(Action.DRAIN, region="mars"), OPERATOR, T0)
    assert (bad.value.field, bad.value.value) == ("region", "mars")
    assert "'mars'" in str(bad.value)
    with pytest.raises(InvalidAction) as bad:
        actions.preview(s, seeded, req(Action.DRAIN, region="eastus", target="tm-nope"), OPERATOR, T0)
    assert (bad.value.field, bad.value.value) == ("target", "tm-nope")


def test_a_confirm_after_the_situation_changed_is_refused(s, seeded: Store) -> None:
    r = req(Action.DRAIN, region="eastus", target="tm-weighted")
    digest = actions.preview(s, seeded, r, OPERATOR, T0).digest
    actions.execute(s, seeded, req(Action.DRAIN, region="westeurope", target="tm-weighted"), ADMIN, T0)
    with pytest.raises(ActionRefused, match="changed since the preview"):
        actions.execute(s, seeded, r, OPERATOR, T0, expected_digest=digest)


def test_a_timed_action_confirmed_after_the_clock_passed_a_minute_is_not_refused(s, seeded: Store) -> None:
    # the preview states the expiry to the minute; confirming a second later, across a minute's
    # boundary, reviewed the same action (the same 30 minutes) and must not be refused as "changed"
    previewed_at = T0 + timedelta(seconds=59.5)
    r = req(Action.DRAIN, region="eastus", target="tm-weighted", expires_in=1800.0)
    p = actions.preview(s, seeded, r, OPERATOR, previewed_at)
    assert "until 2026-11-27 12:30 UTC" in p.sentence
    done = actions.execute(s, seeded, r, OPERATOR, previewed_at + timedelta(seconds=1), expected_digest=p.digest)
    assert [o.expires_at for o in done.added] == [previewed_at + timedelta(seconds=1801)]
    # another duration than the one reviewed is a different action
    longer = req(Action.DRAIN, region="westeurope", target="tm-weighted", expires_in=3600.0)
    digest = actions.preview(
        s, seeded, req(Action.DRAIN, region="westeurope", target="tm-weighted", expires_in=1800.0), OPERATOR, T0
    ).digest
    with pytest.raises(ActionRefused, match="changed since the preview"):
        actions.execute(s, seeded, longer, OPERATOR, T0, expected_digest=digest)


def test_failover_only_applies_to_priority_targets(s, seeded: Store) -> None:
    with pytest.raises(InvalidAction) as bad:
        actions.preview(s, seeded, req(Action.FAILOVER, region="westeurope", target="tm-weighted"), OPERATOR, T0)
    assert bad.value.field == "target"


def test_failover_disables_the_regions_ranked_above_and_replaces_an_older_failover(s, seeded: Store) -> None:
    p = actions.preview(s, seeded, req(Action.FAILOVER, region="westeurope", target="tm-priority"), OPERATOR, T0)
    assert p.allowed
    assert p.impacts[0].changes == (("eastus", "enabled", True, False),)
    assert "westeurope" in p.sentence and "disable eastus" in p.sentence
    first = actions.execute(s, seeded, req(Action.FAILOVER, region="westeurope", target="tm-priority"), OPERATOR, T0).added[0]
    second = actions.execute(s, seeded, req(Action.FAILOVER, region="japaneast", target="tm-priority"), OPERATOR, T0 + timedelta(seconds=1))
    assert [o.id for o in second.lifted] == [first.id]
    assert [o.region for o in seeded.active_overrides(T0 + timedelta(seconds=2))] == ["japaneast"]


def test_failover_to_an_unhealthy_region_is_refused(s, store: Store) -> None:
    seed_targets(store, s, T0)
    seed_health(store, T0, {"japaneast": HealthStateName.UNHEALTHY})
    p = actions.preview(s, store, req(Action.FAILOVER, region="japaneast", target="tm-priority"), OPERATOR, T0)
    assert not p.allowed and "unhealthy" in p.refusal


def test_pin_checks_the_target_kinds_range_and_field(s, seeded: Store) -> None:
    with pytest.raises(InvalidAction) as bad:
        actions.preview(s, seeded, req(Action.PIN, region="eastus", target="tm-weighted", weight=5000), OPERATOR, T0)
    assert (bad.value.field, bad.value.value) == ("weight", 5000) and "between 1 and 1000" in str(bad.value)
    with pytest.raises(InvalidAction) as bad:
        actions.preview(s, seeded, req(Action.PIN, region="eastus", target="afd-prod", priority=9), OPERATOR, T0)
    assert "between 1 and 5" in str(bad.value)
    with pytest.raises(InvalidAction) as bad:
        actions.preview(s, seeded, req(Action.PIN, region="eastus", target="tm-weighted", priority=2), OPERATOR, T0)
    assert bad.value.field == "priority"


def test_pin_weight_previews_the_change_and_a_new_pin_replaces_the_old(s, seeded: Store) -> None:
    p = actions.preview(s, seeded, req(Action.PIN, region="eastus", target="tm-weighted", weight=100), OPERATOR, T0)
    assert p.impacts[0].changes == (("eastus", "weight", 500, 100),)
    assert "weight to 100 (now 500)" in p.sentence
    old = actions.execute(s, seeded, req(Action.PIN, region="eastus", target="tm-weighted", weight=100), OPERATOR, T0).added[0]
    new = actions.execute(s, seeded, req(Action.PIN, region="eastus", target="tm-weighted", weight=50), OPERATOR, T0)
    assert [o.id for o in new.lifted] == [old.id]
    assert [o.weight for o in seeded.active_overrides(T0)] == [50]


def test_freeze_with_expiry_then_unfreeze(s, seeded: Store) -> None:
    r = actions.execute(
        s, seeded, actions.parse_request({"action": "freeze", "reason": "change window", "expires_in": "30m"}), OPERATOR, T0
    )
    assert r.added[0].expires_at == T0 + timedelta(minutes=30) and r.added[0].target is None
    with pytest.raises(ActionRefused, match="already frozen"):
        actions.execute(s, seeded, req(Action.FREEZE), OPERATOR, T0)
    assert seeded.active_overrides(T0 + timedelta(minutes=31)) == []  # it expires by itself
    lifted = actions.execute(s, seeded, req(Action.UNFREEZE), OPERATOR, T0 + timedelta(minutes=1)).lifted
    assert [o.id for o in lifted] == [r.added[0].id]


def test_restore_lifts_the_drain_and_refuses_when_nothing_is_drained(s, seeded: Store) -> None:
    with pytest.raises(ActionRefused, match="no active drain"):
        actions.execute(s, seeded, req(Action.RESTORE, region="eastus"), OPERATOR, T0)
    drain = actions.execute(s, seeded, req(Action.DRAIN, region="eastus"), OPERATOR, T0).added[0]
    p = actions.preview(s, seeded, req(Action.RESTORE, region="eastus", target="tm-weighted"), OPERATOR, T0)
    assert not p.allowed and "restore it without choosing a target" in p.refusal
    r = actions.execute(s, seeded, req(Action.RESTORE, region="eastus"), OPERATOR, T0)
    assert [o.id for o in r.lifted] == [drain.id]
    assert seeded.active_overrides(T0) == []


def test_lift_by_id_is_audited_and_cannot_happen_twice(s, seeded: Store) -> None:
    o = actions.execute(s, seeded, req(Action.DRAIN, region="eastus"), OPERATOR, T0).added[0]
    actions.lift(s, seeded, o.id, OPERATOR, "fixed", T0)
    [e] = seeded.events(kinds=["override_lifted"])
    assert e.data["override_id"] == o.id and "fixed" in e.summary
    with pytest.raises(ActionRefused, match="not active"):
        actions.lift(s, seeded, o.id, OPERATOR, "again", T0)


def test_failover_to_a_region_that_is_disabled_now_counts_the_enable_in_the_same_plan(s, store: Store) -> None:
    seed_targets(store, s, T0, disabled={"tm-priority": {"westeurope", "japaneast"}})
    seed_health(store, T0)
    p = actions.preview(s, store, req(Action.FAILOVER, region="westeurope", target="tm-priority"), OPERATOR, T0)
    assert p.allowed, p.refusal
    assert ("eastus", "enabled", True, False) in p.impacts[0].changes
    assert p.impacts[0].serving_after == 1  # westeurope serves once the same plan enables it


def test_lifting_an_override_runs_the_guardrails(s, store: Store) -> None:
    # japaneast and westeurope are drained; a newer failover to westeurope overrules its drain
    seed_targets(store, s, T0)
    seed_health(store, T0)
    for region in ("westeurope", "japaneast"):
        actions.execute(s, store, req(Action.DRAIN, region=region, target="tm-priority"), OPERATOR, T0)
    failover = actions.execute(s, store, req(Action.FAILOVER, region="westeurope", target="tm-priority"), OPERATOR, T0).added[0]
    # then eastus turns unhealthy: lifting the failover would leave no healthy region serving
    seed_health(store, T0, {"eastus": HealthStateName.UNHEALTHY})
    with pytest.raises(ActionRefused, match="would keep only 0 healthy serving"):
        actions.lift(s, store, failover.id, OPERATOR, "done with it", T0)
    assert failover.id in [o.id for o in store.active_overrides(T0)]
    assert store.events(kinds=["override_lifted"]) == []


def test_a_new_override_is_previewed_as_the_newest_even_within_the_same_instant(s, seeded: Store) -> None:
    actions.execute(s, seeded, req(Action.FAILOVER, region="westeurope", target="tm-priority"), OPERATOR, T0)
    # at the same instant, a drain of westeurope is newer than the failover: it wins, in the preview as in the worker
    p = actions.preview(s, seeded, req(Action.DRAIN, region="westeurope", target="tm-priority"), OPERATOR, T0)
    assert ("westeurope", "enabled", True, False) in p.impacts[0].changes
