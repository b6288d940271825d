"""Incidents from transitions, changes, overrides and panics: grouping, timings, and when one ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from controlplane.domain import (
    AuditEvent,
    ChangeOrigin,
    ChangeStatus,
    EventKind,
    Field,
    HealthStateName,
    Override,
    OverrideKind,
    Transition,
)
from controlplane.incidents import build, figures
from controlplane.store.records import ChangeRecord

H = HealthStateName
T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
TARGETS = {"eastus": {"tm-weighted", "tm-priority"}, "westeurope": {"tm-weighted", "tm-priority"}}


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def region(at: float, old: H, new: H, key: str = "eastus") -> Transition:
    return Transition("region", key, old, new, f"{new.value} reason", s(at))


def endpoint(at: float, new: H, vantage: str, evidence: tuple[str, ...], key: str = "eastus/gpt-4o") -> Transition:
    return Transition("endpoint", key, H.HEALTHY, new, "3 of 3 failed", s(at), vantage=vantage, evidence=evidence)


def write(
    at: float, target: str, after: bool, status: ChangeStatus = ChangeStatus.APPLIED, token: int = 7, key: str = "eastus"
) -> ChangeRecord:
    return ChangeRecord(
        id=1, plan_id=None, created_at=s(at), finished_at=s(at), target=target, region=key, endpoint=f"aoai-{key}",
        field=Field.ENABLED, before=not after, after=after, reason="eastus unhealthy" if not after else "eastus healthy again",
        actor="automation", origin=ChangeOrigin.AUTOMATION, status=status, error_code=None, error_message=None, fencing_token=token,
    )  # fmt: skip


def test_an_outage_is_one_incident_from_the_bad_verdict_until_restored_in_every_target() -> None:
    transitions = [region(30, H.HEALTHY, H.UNHEALTHY), region(300, H.UNHEALTHY, H.HEALTHY)]
    evidence = [endpoint(25, H.UNHEALTHY, "ci-a", ("12:00:05 server_error 503", "12:00:15 server_error 503", "12:00:25 timeout"))]
    changes = [
        write(35, "tm-weighted", False),
        write(36, "tm-priority", False, ChangeStatus.FAILED),
        write(45, "tm-priority", False, token=8),
        write(310, "tm-weighted", True),
        write(330, "tm-priority", True),
    ]
    override = Override(kind=OverrideKind.DRAIN, who="otto", why="belt and braces", created_at=s(40), region="eastus", id=3)
    panic = AuditEvent(EventKind.PANIC, s(60), "automation", "fail-open raised", target="tm-weighted")
    [inc] = build(transitions, evidence, changes, [override], [panic], TARGETS)
    assert inc.id == "eastus-20261127T120030Z"
    assert (inc.started_at, inc.ended_at, inc.healthy_at) == (s(30), s(330), s(300))
    assert inc.time_to_detect_s == 25.0  # first failed probe 12:00:05, verdict 12:00:30
    assert inc.time_to_act_s == 5.0
    assert inc.time_to_drain_s == 15.0  # the failed write does not count; the retry at +45 s does
    assert inc.time_to_restore_s == 30.0
    assert inc.outcomes == {"server_error", "timeout"} and inc.vantages == {"ci-a"}
    assert inc.fencing_tokens == [7, 8] and len(inc.writes) == 5
    assert inc.manual == [override] and inc.fail_open
    assert not inc.open and inc.duration_s(s(1000)) == 300.0


def test_healthy_but_still_drained_keeps_the_incident_open_and_a_relapse_is_the_same_incident() -> None:
    transitions = [region(0, H.HEALTHY, H.UNHEALTHY), region(100, H.UNHEALTHY, H.HEALTHY), region(150, H.HEALTHY, H.DEGRADED)]
    changes = [write(10, "tm-weighted", False), write(120, "tm-priority", False)]
    [inc] = build(transitions, [], changes, [], [], TARGETS)
    assert inc.open and inc.healthy_at is None and len(inc.verdicts) == 3
    assert inc.drained_everywhere_at == s(120)
    assert inc.time_to_restore_s is None


def test_separate_spells_are_separate_incidents_newest_first_with_figures() -> None:
    transitions = [
        region(0, H.HEALTHY, H.UNHEALTHY),
        region(60, H.UNHEALTHY, H.HEALTHY),
        region(600, H.HEALTHY, H.DEGRADED),
        region(660, H.DEGRADED, H.HEALTHY),
        region(10, H.HEALTHY, H.UNHEALTHY, key="westeurope"),
    ]
    changes = [write(20, "tm-weighted", False, key="westeurope")]
    found = build(transitions, [], changes, [], [], TARGETS)
    assert [(i.region, i.started_at) for i in found] == [("eastus", s(600)), ("westeurope", s(10)), ("eastus", s(0))]
    assert [i.open for i in found] == [False, True, False]
    f = figures(found)
    assert (f.count, f.open, f.act_mean_s, f.detect_mean_s) == (3, 1, 10.0, None)


def test_an_unknown_to_healthy_start_is_no_incident() -> None:
    assert build([region(0, H.UNKNOWN, H.HEALTHY)], [], [], [], [], TARGETS) == []
