"""One contract, two stores: the SQL store and the in-memory one replay runs the
reconciler on (controlplane.store.memory) answer the reconciler's questions alike."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from controlplane.actuators.memory import MemoryActuator
from controlplane.domain import (
    AuditEvent,
    Change,
    ChangeOrigin,
    ChangeStatus,
    EndpointSetting,
    EventKind,
    Field,
    FlagKind,
    LivenessFailure,
    LivenessResult,
    OverrideKind,
    Plan,
    TargetState,
    WriteStatus,
)
from controlplane.runtime.reconcile import Reconciler
from controlplane.store import Panic, open_store
from controlplane.store.memory import MemoryStore
from controlplane.store.records import LivenessRecord, LivenessTally, config_problems_of, liveness_of
from tests.fakes import EPOCH, FakeClock, at, make_settings, override, region_health

T = "tm-weighted"
NAMES = {"eastus": "aoai-eastus", "westeurope": "aoai-westeurope"}


@pytest.fixture(params=["sql", "memory"])
def any_store(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryStore()
        return
    s = open_store(sqlite_url, migrate=True)
    yield s
    s.close()


def state(**enabled: bool) -> TargetState:
    return TargetState(T, {r: EndpointSetting(weight=100, priority=None, enabled=on) for r, on in enabled.items()})


def test_target_snapshots_applied_references_drift_and_write_status(any_store: Any) -> None:
    s = any_store
    s.set_applied(T, "eastus", EndpointSetting(100, None, True), EPOCH)  # no snapshot yet: nothing to update
    assert s.applied_settings(T) == {}
    s.save_target_state(T, NAMES, state(eastus=True, westeurope=False), None, EPOCH)
    s.set_applied(T, "eastus", EndpointSetting(100, None, True), at(5))
    s.set_drift(T, "westeurope", "changed outside regionguard")
    s.set_write_status(T, "eastus", WriteStatus.FAILED, "Conflict: busy")
    assert s.applied_settings(T) == {"eastus": EndpointSetting(100, None, True)}
    rows = {r.region: r for r in s.target_endpoints(T)}
    assert rows["eastus"].last_change_at == at(5) and rows["eastus"].write_status is WriteStatus.FAILED
    assert rows["westeurope"].drift == "changed outside regionguard" and rows["westeurope"].actual == EndpointSetting(100, None, False)
    assert rows["eastus"].endpoint == "aoai-eastus" and rows["eastus"].desired is None and rows["eastus"].read_at == EPOCH
    assert [(r.target, r.region) for r in s.target_endpoints()] == [(T, "eastus"), (T, "westeurope")]


def test_changes_newest_first_filtered_by_target_and_status(any_store: Any) -> None:
    s = any_store
    plan_id = s.record_plan(Plan(), "automation", EPOCH)
    drain = Change(T, "eastus", "aoai-eastus", Field.ENABLED, True, False, "unhealthy")
    first = s.record_change(drain, ChangeStatus.PENDING, at(1), plan_id=plan_id)
    second = s.record_change(drain, ChangeStatus.SKIPPED, at(2), plan_id=plan_id, error_code="cooldown")
    fail_open = Change("afd-prod", "eastus", "eastus", Field.WEIGHT, 1, 2, "x", ChangeOrigin.FAIL_OPEN)
    other = s.record_change(fail_open, ChangeStatus.PENDING, at(3))
    assert [r.id for r in s.changes(target=T)] == [second, first]
    assert [r.id for r in s.changes(status=ChangeStatus.PENDING)] == [other, first]
    assert [r.id for r in s.changes(since=at(2))] == [other, second]
    s.finish_change(first, ChangeStatus.APPLIED, at(4))
    assert [r.id for r in s.changes(target=T, status=ChangeStatus.PENDING)] == []
    row = s.changes(target=T, status=ChangeStatus.APPLIED)[0]
    assert (row.before, row.after, row.field, row.finished_at, row.change) == (True, False, Field.ENABLED, at(4), drain)
    assert s.changes(target=T)[0].id == second  # the finished row keeps its place
    assert s.changes(target="afd-prod")[0].origin is ChangeOrigin.FAIL_OPEN
    (recorded,) = s.plans()
    assert (recorded.id, recorded.plan, recorded.dry_run) == (plan_id, Plan(), False)


def test_active_overrides_flags_and_events(any_store: Any) -> None:
    s = any_store
    o = s.add_override(override(OverrideKind.DRAIN, "eastus", created=0.0, expires=60.0))
    assert o.id is not None
    assert [x.id for x in s.active_overrides(at(30))] == [o.id]
    assert s.active_overrides(at(61)) == []
    s.set_flag(FlagKind.PANIC, "tm-weighted", {"reason": "all down"}, EPOCH)
    s.set_flag(FlagKind.CONFIG_PROBLEMS, None, {"problems": ["auth_error"]}, EPOCH)
    s.set_flag(FlagKind.DRIFT_REVERT, "tm-weighted/eastus", {"who": "alice"}, EPOCH)
    assert s.panics() == {"tm-weighted": Panic(target="tm-weighted", reason="all down", since=None, updated_at=EPOCH)}
    assert [(f.subject, f.value) for f in s.flags(FlagKind.DRIFT_REVERT)] == [("tm-weighted/eastus", {"who": "alice"})]
    assert config_problems_of(s.flags(FlagKind.CONFIG_PROBLEMS)) == ["auth_error"]
    s.set_flag(FlagKind.PANIC, "tm-weighted", None, EPOCH)
    assert s.panics() == {} and s.flags(FlagKind.PANIC) == []
    s.add_event(AuditEvent(kind=EventKind.DRIFT, at=EPOCH, actor="automation", summary="a", target=T))
    s.add_event(AuditEvent(kind=EventKind.PANIC, at=at(1), actor="automation", summary="b", target=T))
    assert [e.summary for e in s.events(kinds=[EventKind.DRIFT, EventKind.PANIC])] == ["b", "a"]


def test_the_reconciler_does_the_same_on_either_store(any_store: Any) -> None:
    settings = make_settings(targets=("tm-weighted", "afd-prod"))
    clock = FakeClock(EPOCH)
    actuator = MemoryActuator()
    for t in settings.targets:
        actuator.seed(t)
    rec = Reconciler(settings, any_store, {t.name: actuator for t in settings.targets}, clock, "w1", lease_name=None, max_parallel=1)
    health = {r: region_health(r, "unhealthy" if r == "eastus" else "healthy") for r in ("eastus", "westeurope", "japaneast")}
    report = rec.reconcile_once(health, fencing_token=None)
    assert [(c.target, c.region, c.field.value, c.desired) for c in report.applied] == [
        ("tm-weighted", "eastus", "enabled", False),
        ("afd-prod", "eastus", "enabled", False),
    ]
    assert all(t.confirmed for t in report.targets.values() if t.applied)
    clock.advance(10)
    actuator.edit(settings.target("tm-weighted"), "westeurope", weight=7)  # a portal edit: drift, reported
    again = rec.reconcile_once(health, fencing_token=None)
    assert again.applied == []
    assert again.targets["tm-weighted"].drift == {"westeurope": "changed outside regionguard: weight 300 -> 7"}
    rows = {r.region: r for r in any_store.target_endpoints("tm-weighted")}
    assert rows["westeurope"].drift and rows["eastus"].applied is not None and rows["eastus"].applied.enabled is False
    # the weight automation would write back is held: drift pauses automation for that endpoint
    assert [(r.status, r.error_code) for r in any_store.changes(target="tm-weighted")] == [
        (ChangeStatus.SKIPPED, "drift"),
        (ChangeStatus.APPLIED, None),
    ]
    assert any_store.changes(since=clock.now() - timedelta(hours=1), status=ChangeStatus.PENDING) == []


def test_both_stores_answer_the_same_records(sqlite_url: str) -> None:
    """Same calls, same answers, field for field (ids aside)."""
    sql, memory = open_store(sqlite_url, migrate=True), MemoryStore()
    try:
        for s in (sql, memory):
            s.save_target_state(T, NAMES, state(eastus=True, westeurope=False), state(eastus=False, westeurope=False), EPOCH)
            s.set_applied(T, "eastus", EndpointSetting(100, None, True), at(5))
            s.set_write_status(T, "westeurope", WriteStatus.UNCONFIRMED, "read back enabled is not True")
            s.record_change(Change(T, "eastus", "aoai-eastus", Field.ENABLED, True, False, "unhealthy"), ChangeStatus.PENDING, at(6))
        assert sql.target_endpoints(T) == memory.target_endpoints(T)
        assert [replace(r, id=0) for r in sql.changes(target=T)] == [replace(r, id=0) for r in memory.changes(target=T)]
    finally:
        sql.close()


def test_liveness_summaries_are_bounded_and_read_back_alike(any_store: Any) -> None:
    s = any_store
    tally = LivenessTally(recent=4)
    flips = []
    for k, ok in enumerate([True, True, False, False, True, False]):
        failure = None if ok else LivenessFailure.TIMEOUT
        flips.append(tally.add(LivenessResult("eastus/gpt-4o", "eastus", "vantage-a", at(5 * k), ok, failure=failure)))
    assert flips == [False, False, True, False, True, True]
    s.set_flag(FlagKind.LIVENESS, "vantage-a", tally.flag_value(), at(25))
    junk = {
        "eastus/gpt-4o": {"at": "yesterday", "ok": True},
        "westeurope/gpt-4o": "not a mapping",
        "japaneast/gpt-4o": {"at": at(1).isoformat()},
    }
    s.set_flag(FlagKind.LIVENESS, "vantage-b", {"endpoints": junk}, at(25))  # skipped, not an error
    s.set_flag(FlagKind.LIVENESS, "vantage-c", {"endpoints": [1, 2]}, at(25))
    assert liveness_of(s.flags(FlagKind.LIVENESS)) == [
        LivenessRecord(
            endpoint_id="eastus/gpt-4o",
            vantage="vantage-a",
            at=at(25),
            ok=False,
            failure="timeout",
            status_code=None,
            error=None,
            recent_checks=4,  # the last four of six
            recent_failed=3,
            updated_at=at(25),
        )
    ]
    assert liveness_of(s.flags(FlagKind.LIVENESS))[0].reason == "timeout"


HORIZON = EPOCH - timedelta(minutes=15)


def claimer(s: Any, channel: str = "pager") -> Any:
    def claim(worker: str, now: Any) -> list[int]:
        return [e.id for e in s.claim_events(worker, now, channel=channel, since=HORIZON, stale_before=now - timedelta(seconds=30))]

    return claim


def drained(s: Any, region: str, at: Any = EPOCH) -> int:
    return int(s.add_event(AuditEvent(kind=EventKind.OVERRIDE, at=at, actor="alice", summary=f"drained {region}")))


def test_an_event_is_claimed_once_until_its_claim_is_stale_and_never_again_once_relayed(any_store: Any) -> None:
    s = any_store
    assert s.sync_channels("a", ["pager"], at(0), since=HORIZON) == {}
    first, second = drained(s, "eastus"), drained(s, "westeurope")
    drained(s, "history", EPOCH - timedelta(hours=1))
    claim = claimer(s)
    assert claim("a", at(0)) == [first, second]
    assert claim("b", at(10)) == []  # a's claims are fresh
    assert s.mark_relayed("a", [first], at(12), channel="pager") == 1
    assert s.renew_claims("b", [second], at(20), channel="pager") == []  # not b's to renew
    assert s.renew_claims("a", [first, second], at(20), channel="pager") == [second]  # the delivered one needs no renewal
    assert claim("b", at(45)) == []  # renewed at 20: fresh until 50
    assert claim("b", at(51)) == [second]  # a stopped renewing: stale, b takes it over
    assert claim("a", at(52)) == []
    assert s.renew_claims("a", [second], at(52), channel="pager") == []  # b's now
    assert s.mark_relayed("b", [second], at(53), channel="pager") == 1
    assert s.mark_relayed("a", [second], at(54), channel="pager") == 0
    assert claim("c", at(200)) == []  # relayed events are never claimed again


def test_a_claim_its_worker_releases_is_free_at_once_and_only_its_worker_can_release_it(any_store: Any) -> None:
    s = any_store
    s.sync_channels("a", ["pager"], at(0), since=HORIZON)
    first, second = drained(s, "eastus"), drained(s, "westeurope")
    claim = claimer(s)
    assert claim("a", at(0)) == [first, second]
    assert s.mark_relayed("a", [first], at(1), channel="pager") == 1
    assert s.release_claims("b", [second], at(2), channel="pager") == 0  # not b's to release
    assert s.release_claims("a", [first, second], at(2), channel="pager") == 1  # a delivered event stays delivered
    assert claim("b", at(3)) == [second]  # free at once, not 30 s later
    assert s.release_claims("a", [second], at(4), channel="pager") == 0  # b's now


def test_each_channel_claims_and_marks_an_event_on_its_own(any_store: Any) -> None:
    s = any_store
    s.sync_channels("a", ["pager", "chat"], at(0), since=HORIZON)
    page = drained(s, "eastus")
    pager, chat = claimer(s, "pager"), claimer(s, "chat")
    assert pager("a", at(0)) == [page] and chat("b", at(0)) == [page]  # one claim per channel, by anyone
    assert s.mark_relayed("b", [page], at(1), channel="chat") == 1
    assert chat("c", at(100)) == []  # chat took it: never again on chat
    assert pager("c", at(100)) == [page]  # the pager's claim went stale: still owed there
    assert s.mark_relayed("c", [page], at(101), channel="pager") == 1
    assert pager("d", at(200)) == [] and chat("d", at(200)) == []


def test_a_new_channel_is_owed_only_later_events_and_a_removed_one_nothing(any_store: Any) -> None:
    s = any_store
    assert s.sync_channels("a", ["chat"], at(0), since=HORIZON) == {}
    old = drained(s, "eastus")  # owed to chat (the first configuration: from event 0)
    assert s.sync_channels("b", ["chat", "pager"], at(1), since=HORIZON) == {}
    new = drained(s, "westus")
    pager, chat = claimer(s, "pager"), claimer(s, "chat")
    assert chat("b", at(2)) == [old, new]
    assert pager("b", at(2)) == [new]  # not the backlog
    assert s.sync_channels("c", ["chat"], at(3), since=HORIZON) == {"pager": 1}  # the pager's claim of `new` dropped
    assert pager("c", at(100)) == []
    assert s.mark_relayed("b", [old, new], at(4), channel="chat") == 2
    assert s.sync_channels("d", ["chat", "pager"], at(5), since=HORIZON) == {}  # back: a new channel
    assert pager("d", at(100)) == [] and chat("d", at(100)) == []
