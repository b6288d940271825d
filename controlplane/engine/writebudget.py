"""The Azure write budget per subscription, shared by all targets in it.

ARM limits writes per subscription (a bucket of 200 refilling 10/s); the
budget here is far below that (``guardrails.write_budget_per_hour``) so a
runaway loop cannot eat a limit that other tools share. The bucket itself is
the decision engine's :class:`controlplane.engine.guardrails.WriteBudget`; this
module keeps one per subscription and hands tokens out across every target
of a subscription at once.

One token = one endpoint write (every changed field of one endpoint goes in
one write). When a bucket is short, the writes that fit go first in order of
importance -- drains, then restores, then priority, then weight
(:data:`controlplane.domain.CHANGE_KIND_RANK`) -- and the rest wait for a
later tick, recorded as skipped by the ``write_budget`` rule. Operators'
changes (``Change.manual``) are never held (operators win) but still spend
tokens, so automation yields to them.

Time is injected (a :class:`controlplane.domain.Clock`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence

from controlplane.domain import CHANGE_KIND_RANK, Change, Clock, Plan, Skipped
from controlplane.engine.guardrails import WriteBudget

log = logging.getLogger(__name__)

RULE = "write_budget"


def write_groups(changes: Sequence[Change]) -> list[list[Change]]:
    """Changes grouped per endpoint write (target, endpoint), first-seen order."""
    groups: dict[tuple[str, str], list[Change]] = {}
    for c in changes:
        groups.setdefault((c.target, c.endpoint.lower()), []).append(c)
    return list(groups.values())


def importance(group: Sequence[Change]) -> tuple[int, int]:
    """Sort key of one write: operators' first, then its most important change kind."""
    return (0 if any(c.manual for c in group) else 1, min(CHANGE_KIND_RANK[c.kind] for c in group))


class SubscriptionWriteBudget:
    """One token bucket of ``per_hour`` writes per subscription."""

    def __init__(self, per_hour: int, clock: Clock) -> None:
        if per_hour < 1:
            raise ValueError("per_hour must be >= 1")
        self.per_hour = per_hour
        self._clock = clock
        self._buckets: dict[str, WriteBudget] = {}
        self._lock = threading.Lock()

    def bucket(self, subscription: str) -> WriteBudget:
        with self._lock:
            key = subscription.lower()
            if key not in self._buckets:
                self._buckets[key] = WriteBudget(self.per_hour, self._clock)
            return self._buckets[key]

    def available(self, subscription: str) -> int:
        return self.bucket(subscription).available

    def allot(self, subscription: str, changes: Sequence[Change]) -> tuple[list[Change], list[Skipped]]:
        """Spend tokens on the most important writes that fit; the rest wait.

        Returns (granted changes, most important first; skipped changes, rule ``write_budget``).
        """
        bucket = self.bucket(subscription)
        granted: list[Change] = []
        waiting: list[Skipped] = []
        for group in sorted(write_groups(changes), key=importance):  # stable: plan order among equals
            manual = any(c.manual for c in group)
            if bucket.take(1, force=manual):
                granted.extend(group)
                continue
            reason = f"Azure write budget of subscription {subscription} is used up ({self.per_hour} writes/hour); {group[0].kind.value} waits for a later tick"
            waiting.extend(Skipped(change=c, rule=RULE, reason=reason) for c in group)
        if waiting:
            log.warning(
                "write budget short for subscription %s: %d write(s) wait", subscription, len(write_groups([s.change for s in waiting]))
            )
        return granted, waiting

    def allot_plan(self, plan: Plan, subscription_of: Mapping[str, str]) -> Plan:
        """The plan with only the writes the budgets allow; the rest skipped (target -> subscription)."""
        by_sub: dict[str, list[Change]] = {}
        for c in plan.changes:
            by_sub.setdefault(subscription_of[c.target], []).append(c)
        kept: list[Change] = []
        skipped: list[Skipped] = []
        for sub, changes in by_sub.items():
            granted, waiting = self.allot(sub, changes)
            kept += granted
            skipped += waiting
        return plan.with_changes(kept, skipped)  # most important writes first
