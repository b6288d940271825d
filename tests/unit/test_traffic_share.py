"""Share of traffic per region: weighted, priority, and the 24 h replay of applied changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from controlplane.domain import ChangeOrigin, ChangeStatus, Field
from controlplane.store.records import ChangeRecord
from web.traffic import history, shares

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
ORDER = ["eastus", "westeurope", "japaneast"]


def ep(enabled: bool | None, weight: int | None = None, priority: int | None = None) -> dict[str, object]:
    return {"enabled": enabled, "weight": weight, "priority": priority}


def test_a_weighted_target_splits_by_weight_over_the_enabled_endpoints_only() -> None:
    sh = shares("weighted", {"eastus": ep(True, 500), "westeurope": ep(True, 300), "japaneast": ep(False, 200)}, ORDER)
    assert {s.region: round(s.pct, 1) for s in sh.slices} == {"eastus": 62.5, "westeurope": 37.5}
    assert sh.summary == "eastus 62%, westeurope 38%"
    assert [s.x for s in sh.slices] == [0.0, 62.5]


def test_a_priority_target_sends_everything_to_the_lowest_enabled_priority_and_lists_the_standby_order() -> None:
    sh = shares("priority", {"eastus": ep(False, priority=1), "westeurope": ep(True, priority=3), "japaneast": ep(True, priority=2)}, ORDER)
    assert [(s.region, s.pct) for s in sh.slices] == [("japaneast", 100.0)]
    assert sh.standby == ("westeurope",)
    assert sh.summary == "japaneast 100%; standby westeurope"


def test_nothing_enabled_serves_nothing() -> None:
    sh = shares("weighted", {r: ep(False, 100) for r in ORDER}, ORDER)
    assert sh.serving_nothing and sh.summary == "no region serves traffic"


def change(
    at: datetime, region: str, field: Field, before: object, after: object, status: ChangeStatus = ChangeStatus.APPLIED
) -> ChangeRecord:
    return ChangeRecord(
        id=1, plan_id=None, created_at=at, finished_at=at, target="tm", region=region, endpoint=region, field=field,
        before=before, after=after, reason="r", actor="automation", origin=ChangeOrigin.AUTOMATION, status=status,
        error_code=None, error_message=None, fencing_token=7,
    )  # fmt: skip


def test_the_history_replays_applied_changes_backwards_from_the_state_now() -> None:
    now_state = {"eastus": ep(True, 500), "westeurope": ep(True, 300), "japaneast": ep(True, 200)}
    drained = NOW - timedelta(hours=6)
    restored = NOW - timedelta(hours=2)
    changes = [
        change(restored, "eastus", Field.ENABLED, False, True),
        change(drained, "eastus", Field.ENABLED, True, False),
        change(NOW - timedelta(hours=1), "japaneast", Field.ENABLED, True, False, ChangeStatus.FAILED),  # never happened
    ]
    h = history("weighted", now_state, ORDER, changes, NOW)
    assert h.changes == 2
    assert [s.start for s in h.steps] == [NOW - timedelta(hours=24), drained, restored]
    assert [s.shares.pct("eastus") for s in h.steps] == [50.0, 0.0, 50.0]
    assert round(h.steps[1].shares.pct("westeurope"), 1) == 60.0
    assert abs(sum(s.w for s in h.steps) - 100.0) < 1e-9
