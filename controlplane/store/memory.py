"""An in-memory store: the part of :class:`controlplane.store.Store` the
reconciler uses (target snapshots, applied references, drift, changes and
plans, overrides, audit events, flags), with the same contract.

Replay runs the production :class:`~controlplane.runtime.reconcile.Reconciler`
on it: a SQLite store costs about 10 ms per tick, which would make a
simulated day take minutes. ``tests/integration/test_store_contract.py``
runs one contract suite against this and the SQL store so they cannot
drift apart.

Rows are returned in the SQL store's shapes; callers must not mutate them.
Not thread-safe beyond what the GIL gives: the reconciler serialises its
store writes.
"""

from __future__ import annotations

import bisect
import copy
import itertools
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from controlplane.domain import AuditEvent, Change, EndpointSetting, Override, Plan, TargetState

_TARGET_ENDPOINT_COLUMNS = (
    "target",
    "region",
    "endpoint",
    "actual_weight",
    "actual_priority",
    "actual_enabled",
    "monitor_status",
    "desired_weight",
    "desired_priority",
    "desired_enabled",
    "desired_reason",
    "applied_weight",
    "applied_priority",
    "applied_enabled",
    "drift",
    "write_status",
    "write_error",
    "last_change_at",
    "read_at",
)


class MemoryStore:
    """The reconciler's store, in memory (see the module doc)."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._endpoints: dict[str, dict[str, dict[str, Any]]] = {}  # target -> region -> row
        self._changes: dict[str, list[dict[str, Any]]] = {}  # target -> rows in insertion (= time) order
        self._change_by_id: dict[int, dict[str, Any]] = {}
        self._by_status: dict[str, dict[int, dict[str, Any]]] = {}  # status -> id -> row
        self._plans: list[dict[str, Any]] = []
        self._overrides: list[Override] = []
        self._events: list[AuditEvent] = []
        self._flags: dict[str, dict[str, Any]] = {}
        self._leases: dict[str, tuple[str, int, datetime]] = {}  # name -> (holder, fencing token, expires at)

    def close(self) -> None:
        pass

    def check(self) -> None:
        pass

    # ------------------------------------------------------------ plans and changes

    def record_plan(self, plan: Plan, actor: str, now: datetime, fencing_token: int | None = None, dry_run: bool = False) -> int:
        plan_id = next(self._ids)
        self._plans.append(
            {
                "id": plan_id,
                "created_at": now,
                "checksum": plan.checksum,
                "actor": actor,
                "fencing_token": fencing_token,
                "dry_run": dry_run,
                "body": plan.to_dict(),
            }
        )
        return plan_id

    def record_change(
        self,
        change: Change,
        status: str,
        now: datetime,
        actor: str = "automation",
        plan_id: int | None = None,
        fencing_token: int | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> int:
        change_id = next(self._ids)
        row = {
            "id": change_id,
            "plan_id": plan_id,
            "created_at": now,
            "finished_at": None if status == "pending" else now,
            "target": change.target,
            "region": change.region,
            "endpoint": change.endpoint,
            "field": change.field.value,
            "before": change.actual,
            "after": change.desired,
            "reason": change.reason,
            "actor": actor,
            "manual": change.manual,
            "status": status,
            "error_code": error_code,
            "error_message": error_message,
            "fencing_token": fencing_token,
        }
        rows = self._changes.setdefault(change.target, [])
        if rows and rows[-1]["created_at"] > now:  # out of time order: keep the list sorted
            keys = [r["created_at"] for r in rows]
            rows.insert(bisect.bisect_right(keys, now), row)
        else:
            rows.append(row)
        self._change_by_id[change_id] = row
        self._by_status.setdefault(status, {})[change_id] = row
        return change_id

    def finish_change(
        self, change_id: int, status: str, now: datetime, error_code: str | None = None, error_message: str | None = None
    ) -> None:
        row = self._change_by_id.get(change_id)
        if row is None:
            return
        self._by_status.get(row["status"], {}).pop(change_id, None)
        row.update(status=status, finished_at=now, error_code=error_code, error_message=error_message)
        self._by_status.setdefault(status, {})[change_id] = row

    def changes(
        self,
        since: datetime | None = None,
        target: str | None = None,
        region: str | None = None,
        status: str | None = None,
        limit: int = 200,
    ) -> list[dict[str, Any]]:
        """Newest first, like the SQL store."""
        if status is not None:
            pool: Iterable[dict[str, Any]] = self._by_status.get(status, {}).values()
        elif target is not None:
            pool = self._changes.get(target, [])
        else:
            pool = itertools.chain.from_iterable(self._changes.values())
        rows = [
            r
            for r in pool
            if (since is None or r["created_at"] >= since)
            and (target is None or r["target"] == target)
            and (region is None or r["region"] == region)
        ]
        rows.sort(key=lambda r: (r["created_at"], r["id"]), reverse=True)
        return rows[:limit]

    def plans(self, limit: int = 50) -> list[dict[str, Any]]:
        return sorted(self._plans, key=lambda r: (r["created_at"], r["id"]), reverse=True)[:limit]

    # ------------------------------------------------------------ target snapshots (dashboard, drift)

    def save_target_state(
        self, target: str, names: dict[str, str], actual: TargetState | None, desired: TargetState | None, now: datetime
    ) -> None:
        rows = self._endpoints.setdefault(target, {})
        for region in names:
            row = rows.get(region)
            if row is None:
                row = rows[region] = dict.fromkeys(_TARGET_ENDPOINT_COLUMNS)
                row.update(target=target, region=region)
            row["endpoint"] = names[region]
            if actual is not None and region in actual.endpoints:
                a = actual.endpoints[region]
                row.update(actual_weight=a.weight, actual_priority=a.priority, actual_enabled=a.enabled, read_at=now)
                row["monitor_status"] = actual.monitor_status.get(region)
            if desired is not None and region in desired.endpoints:
                d = desired.endpoints[region]
                row.update(desired_weight=d.weight, desired_priority=d.priority, desired_enabled=d.enabled)
                row["desired_reason"] = desired.reasons.get(region)

    def _row(self, target: str, region: str) -> dict[str, Any] | None:
        return self._endpoints.get(target, {}).get(region)

    def set_applied(self, target: str, region: str, setting: EndpointSetting, now: datetime) -> None:
        row = self._row(target, region)
        if row is not None:  # like the SQL UPDATE: only a row a snapshot created
            row.update(applied_weight=setting.weight, applied_priority=setting.priority, applied_enabled=setting.enabled)
            row["last_change_at"] = now

    def set_write_status(self, target: str, region: str, status: str | None, error: str | None = None) -> None:
        row = self._row(target, region)
        if row is not None:
            row.update(write_status=status, write_error=error)

    def set_drift(self, target: str, region: str, description: str | None) -> None:
        row = self._row(target, region)
        if row is not None:
            row["drift"] = description

    def applied_settings(self, target: str) -> dict[str, EndpointSetting]:
        return {
            region: EndpointSetting(weight=r["applied_weight"], priority=r["applied_priority"], enabled=bool(r["applied_enabled"]))
            for region, r in self._endpoints.get(target, {}).items()
            if r["applied_enabled"] is not None
        }

    def target_endpoints(self, target: str | None = None) -> list[dict[str, Any]]:
        names = [target] if target else sorted(self._endpoints)
        return [dict(row) for t in names for _, row in sorted(self._endpoints.get(t, {}).items())]

    # ------------------------------------------------------------ overrides

    def add_override(self, o: Override) -> Override:
        stored = replace(o, id=next(self._ids))
        self._overrides.append(stored)
        return stored

    def active_overrides(self, now: datetime) -> list[Override]:
        active = [o for o in self._overrides if o.lifted_at is None and (o.expires_at is None or o.expires_at > now)]
        return sorted(active, key=lambda o: (o.created_at, o.id or 0))

    def overrides(self, since: datetime | None = None, limit: int = 200) -> list[Override]:
        rows = [o for o in self._overrides if since is None or o.created_at >= since]
        return sorted(rows, key=lambda o: (o.created_at, o.id or 0), reverse=True)[:limit]

    # ------------------------------------------------------------ audit trail

    def add_event(self, e: AuditEvent) -> int:
        event_id = next(self._ids)
        self._events.append(e)
        return event_id

    def events(
        self,
        since: datetime | None = None,
        kinds: Iterable[str] | None = None,
        region: str | None = None,
        target: str | None = None,
        limit: int = 200,
    ) -> list[AuditEvent]:
        wanted = set(kinds) if kinds else None
        rows = [
            e
            for e in self._events
            if (since is None or e.at >= since)
            and (wanted is None or e.kind in wanted)
            and (region is None or e.region == region)
            and (target is None or e.target == target)
        ]
        return list(reversed(rows))[:limit]

    # ------------------------------------------------------------ flags

    def set_flag(self, key: str, value: dict[str, Any] | None, now: datetime) -> None:
        if value is None:
            self._flags.pop(key, None)
        else:
            self._flags[key] = {"value": copy.deepcopy(value), "updated_at": now}

    def flags(self, prefix: str = "") -> dict[str, dict[str, Any]]:
        return {key: dict(f["value"], updated_at=f["updated_at"].isoformat()) for key, f in self._flags.items() if key.startswith(prefix)}

    # ------------------------------------------------------------ leader lease

    def try_acquire_lease(self, name: str, holder: str, ttl_s: float, now: datetime) -> int | None:
        """Take or renew the lease; the fencing token if ``holder`` holds it now (a new holder gets a larger one)."""
        current = self._leases.get(name)
        if current is not None and current[0] != holder and current[2] > now:
            return None
        token = current[1] if current is not None and current[0] == holder and current[2] > now else (current[1] + 1 if current else 1)
        self._leases[name] = (holder, token, now + timedelta(seconds=ttl_s))
        return token

    def release_lease(self, name: str, holder: str) -> bool:
        current = self._leases.get(name)
        if current is None or current[0] != holder:
            return False
        self._leases[name] = (current[0], current[1], datetime.min.replace(tzinfo=UTC))
        return True

    def holds_lease(self, name: str, holder: str, token: int, now: datetime) -> bool:
        current = self._leases.get(name)
        return current is not None and current[0] == holder and current[1] == token and current[2] > now
