"""The Azure write budget: per subscription, shared by targets, most important writes first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controlplane.domain import Change, ChangeOrigin, Field, Plan
from controlplane.engine.writebudget import RULE, SubscriptionWriteBudget, WriteBudget

SUB_A = "00000000-0000-0000-0000-00000000000a"
SUB_B = "00000000-0000-0000-0000-00000000000b"


class FakeClock:
    def __init__(self) -> None:
        self.t = datetime(2025, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


def change(target: str, region: str, field: Field, actual: object, desired: object, manual: bool = False) -> Change:
    return Change(
        target, region, f"ep-{region}", field, actual, desired, "test", origin=ChangeOrigin.MANUAL if manual else ChangeOrigin.AUTOMATION
    )


def test_when_short_drains_go_first_then_restores_then_priority_then_weight() -> None:
    clock = FakeClock()
    budget = SubscriptionWriteBudget(4, clock)
    weight = change("tm", "r1", Field.WEIGHT, 100, 200)
    priority = change("tm", "r2", Field.PRIORITY, 2, 3)
    restore = change("tm", "r3", Field.ENABLED, False, True)
    drain = change("tm", "r4", Field.ENABLED, True, False)
    drain2 = change("fd", "r5", Field.ENABLED, True, False)
    assert budget.bucket(SUB_A).take(2)  # 2 of 4 left
    granted, waiting = budget.allot(SUB_A, [weight, priority, restore, drain, drain2])
    assert granted == [drain, drain2]
    assert [s.change for s in waiting] == [restore, priority, weight]
    assert all(s.rule == RULE for s in waiting)
    assert "write budget" in waiting[0].reason
    clock.advance(3600 / 4 * 2)  # two more tokens
    granted, waiting = budget.allot(SUB_A, [weight, priority, restore])
    assert granted == [restore, priority]
    assert [s.change for s in waiting] == [weight]


def test_every_field_of_one_endpoint_costs_one_write() -> None:
    budget = SubscriptionWriteBudget(2, FakeClock())
    a = [change("tm", "r1", Field.WEIGHT, 1, 2), change("tm", "r1", Field.ENABLED, True, False)]
    b = [change("tm", "r2", Field.WEIGHT, 1, 2), change("tm", "r2", Field.PRIORITY, 1, 2)]
    granted, waiting = budget.allot(SUB_A, a + b)
    assert granted == a + b
    assert waiting == []
    assert budget.available(SUB_A) == 0


def test_targets_of_one_subscription_share_a_bucket_and_other_subscriptions_have_their_own() -> None:
    budget = SubscriptionWriteBudget(1, FakeClock())
    tm, afd = change("tm", "r1", Field.WEIGHT, 1, 2), change("afd", "r1", Field.WEIGHT, 1, 2)
    plan = Plan(changes=(tm, afd, change("other", "r1", Field.WEIGHT, 1, 2)))
    out = budget.allot_plan(plan, {"tm": SUB_A, "afd": SUB_A, "other": SUB_B})
    assert [c.target for c in out.changes] == ["tm", "other"]
    assert [s.change.target for s in out.skipped] == ["afd"]
    assert out.skipped[0].rule == RULE


def test_the_bucket_refills_evenly_over_the_hour_and_never_beyond_capacity() -> None:
    clock = FakeClock()
    budget = SubscriptionWriteBudget(120, clock)
    bucket = budget.bucket(SUB_A)
    assert bucket.take(120)
    assert budget.available(SUB_A) == 0
    clock.advance(60)
    assert budget.available(SUB_A) == 2
    clock.advance(10 * 3600)
    assert budget.available(SUB_A) == 120


def test_operator_changes_are_never_held_but_spend_the_tokens_automation_wanted() -> None:
    budget = SubscriptionWriteBudget(1, FakeClock())
    manual = change("tm", "r1", Field.WEIGHT, 100, 1, manual=True)
    auto_drain = change("tm", "r2", Field.ENABLED, True, False)
    granted, waiting = budget.allot(SUB_A, [auto_drain, manual])
    assert granted == [manual]
    assert [s.change for s in waiting] == [auto_drain]
    granted, waiting = budget.allot(SUB_A, [change("tm", "r3", Field.ENABLED, True, False, manual=True)])
    assert len(granted) == 1 and not waiting  # over budget, still not held


def test_it_refuses_a_budget_below_one_write_an_hour() -> None:
    with pytest.raises(ValueError):
        SubscriptionWriteBudget(0, FakeClock())


def test_one_bucket_refills_evenly_over_the_hour() -> None:
    clock = FakeClock()
    b = WriteBudget(60, clock)
    assert b.available == 60
    assert b.take(60) and not b.take(1)
    clock.advance(59)
    assert b.available == 0
    clock.advance(1)
    assert b.available == 1
    clock.advance(7200)
    assert b.available == 60
    assert b.take(100, force=True) and b.available == 0


def test_fail_open_restores_are_never_held_but_spend_tokens() -> None:
    budget = SubscriptionWriteBudget(1, FakeClock())
    assert budget.bucket(SUB_A).take(1)
    # the origin decides, not the reason's wording
    restore = Change("tm", "r1", "ep-r1", Field.ENABLED, False, True, "back to baseline", ChangeOrigin.FAIL_OPEN)
    weight = change("tm", "r2", Field.WEIGHT, 100, 200)
    granted, waiting = budget.allot(SUB_A, [weight, restore])
    assert granted == [restore]
    assert [s.change for s in waiting] == [weight]
    assert budget.available(SUB_A) == 0
