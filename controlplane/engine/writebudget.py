"""The Azure write budget per subscription, shared by all targets in it.

ARM limits writes per subscription (a bucket of 200 refilling 10/s); the
budget here is far below that (``guardrails.write_budget_per_hour``) so a
runaway loop cannot eat a limit that other tools share. This module is the
one home of the write budget: a :class:`WriteBudget` token bucket per
subscription, handing tokens out across every target of a subscription at
once. The reconciler spends it after the guardrails; replay runs the same
reconciler.

One token = one endpoint write (every changed field of one endpoint goes in
one write). When a bucket is short, the writes that fit go first in order of
importance -- drains, then restores, then priority, then weight
(:data:`controlplane.domain.CHANGE_KIND_RANK`) -- and the rest wait for a
later tick, recorded as skipped by the ``write_budget`` rule. Operators'
changes (``Change.manual``) and fail-open restores (every endpoint of a
target looked unhealthy: back to baseline) are never held but still spend
tokens, so automation yields to them.

Time is injected (a :class:`controlplane.domain.Clock`).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping, Sequence

from controlplane.domain import CHANGE_KIND_RANK, Change, ChangeOrigin, Clock, Plan, Skipped

log = logging.getLogger(__name__)

RULE = "write_budget"


class WriteBudget:
    """Token bucket of Azure writes: ``capacity_per_hour`` tokens, refilled evenly over the hour."""

    def __init__(self, capacity_per_hour: int, clock: Clock) -> None:
        if capacity_per_hour < 1:
            raise ValueError("capacity_per_hour must be at least 1")
        self.capacity = float(capacity_per_hour)
        self._clock = clock
        self._tokens = self.capacity
        self._at = clock.now()

    def _refill(self) -> None:
        now = self._clock.now()
        elapsed = (now - self._at).total_seconds()
        if elapsed > 0:
            self._tokens = min(self.capacity, self._tokens + elapsed * self.capacity / 3600.0)
            self._at = now

    @property
    def available(self) -> int:
        self._refill()
        return max(0, math.floor(self._tokens + 1e-9))

    def take(self, n: int = 1, *, force: bool = False) -> bool:
        """Spend ``n`` tokens if there are enough (or regardless, with ``force``)."""
        self._refill()
        if n <= 0:
            return True
        if self._tokens + 1e-9 >= n or force:
            self._tokens -= n
            return True
        return False


def never_held(c: Change) -> bool:
    """Operators' changes and fail-open restores always get their write (and spend its token)."""
    return c.origin is not ChangeOrigin.AUTOMATION


def write_groups(changes: Sequence[Change]) -> list[list[Change]]:
    """Changes grouped per endpoint write (target, endpoint), first-seen order."""
    groups: dict[tuple[str, str], list[Change]] = {}
    for c in changes:
        groups.setdefault((c.target, c.endpoint.lower()), []).append(c)
    return list(groups.values())


def importance(group: Sequence[Change]) -> tuple[int, int]:
    """Sort key of one write: operators' (and fail-open restores) first, then its most important change kind."""
    return (0 if any(never_held(c) for c in group) else 1, min(CHANGE_KIND_RANK[c.kind] for c in group))


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
            if bucket.take(1, force=any(never_held(c) for c in group)):
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
