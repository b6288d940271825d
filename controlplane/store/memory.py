"""An in-memory store: the part of :class:`controlplane.store.Store` the
reconciler uses (target snapshots, applied references, drift, changes and
plans, overrides, audit events, flags), with the same contract.

Replay runs the production :class:`~controlplane.runtime.reconcile.Reconciler`
on it: a SQLite store costs about 10 ms per tick, which would make a
simulated day take minutes. ``tests/integration/test_store_contract.py``
runs one contract suite against this and the SQL store so they cannot
drift apart.

Records are returned in the SQL store's types (``controlplane.store.records``).
Not thread-safe beyond what the GIL gives: the reconciler serialises its
store writes.
"""

from __future__ import annotations

import bisect
import copy
import itertools
import threading
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from controlplane.domain import (
    AuditEvent,
    Change,
    ChangeOrigin,
    ChangeStatus,
    EndpointSetting,
    EventKind,
    Field,
    FlagKind,
    LeaseName,
    Override,
    Plan,
    TargetState,
    WriteStatus,
)
from controlplane.store.records import (
    ChangeRecord,
    Flag,
    Panic,
    PlanRecord,
    TargetEndpointRecord,
    panics_of,
)


def _blank(target: str, region: str, endpoint: str) -> TargetEndpointRecord:
    return TargetEndpointRecord(
        target=target,
        region=region,
        endpoint=endpoint,
        actual=None,
        desired=None,
        applied=None,
        desired_reason=None,
        monitor_status=None,
        circuit_breakers=None,
        drift=None,
        write_status=None,
        write_error=None,
        last_change_at=None,
        read_at=None,
    )


class MemoryStore:
    """The reconciler's store, in memory (see the module doc)."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._endpoints: dict[str, dict[str, TargetEndpointRecord]] = {}  # target -> region -> record
        self._changes: dict[str, list[ChangeRecord]] = {}  # target -> records in insertion (= time) order
        self._change_by_id: dict[int, ChangeRecord] = {}
        self._by_status: dict[ChangeStatus, dict[int, ChangeRecord]] = {}  # status -> id -> record
        self._plans: list[PlanRecord] = []
        self._overrides: list[Override] = []
        self._events: list[AuditEvent] = []
        self._channels: dict[str, tuple[int, bool]] = {}  # notification channel -> (owed events above this id, removed)
        self._claims: dict[tuple[int, str], tuple[str, datetime]] = {}  # (event id, channel) -> (claimed by, claimed at)
        self._delivered: set[tuple[int, str]] = set()  # (event id, channel) the channel took
        self._relayed: set[int] = set()  # event ids every configured channel is done with
        self._relay_lock = threading.Lock()  # the relay claims on its thread and marks on the channels' threads
        self._flags: dict[str, Flag] = {}
        self._leases: dict[str, tuple[str, int, datetime]] = {}  # name -> (holder, fencing token, expires at)

    def close(self) -> None:
        pass

    def check(self) -> None:
        pass

    # ------------------------------------------------------------ plans and changes

    def record_plan(self, plan: Plan, actor: str, now: datetime, fencing_token: int | None = None, dry_run: bool = False) -> int:
        plan_id = next(self._ids)
        self._plans.append(
            PlanRecord(
                id=plan_id, created_at=now, checksum=plan.checksum, actor=actor, fencing_token=fencing_token, dry_run=dry_run, plan=plan
            )
        )
        return plan_id

    def record_change(
        self,
        change: Change,
        status: ChangeStatus,
        now: datetime,
        actor: str = "automation",
        plan_id: int | None = None,
        fencing_token: int | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> int:
        change_id = next(self._ids)
        status = ChangeStatus(status)
        row = ChangeRecord(
            id=change_id,
            plan_id=plan_id,
            created_at=now,
            finished_at=None if status is ChangeStatus.PENDING else now,
            target=change.target,
            region=change.region,
            endpoint=change.endpoint,
            field=Field(change.field),
            before=change.actual,
            after=change.desired,
            reason=change.reason,
            actor=actor,
            origin=ChangeOrigin(change.origin),
            status=status,
            error_code=error_code,
            error_message=error_message,
            fencing_token=fencing_token,
        )
        rows = self._changes.setdefault(change.target, [])
        if rows and rows[-1].created_at > now:  # out of time order: keep the list sorted
            keys = [r.created_at for r in rows]
            rows.insert(bisect.bisect_right(keys, now), row)
        else:
            rows.append(row)
        self._change_by_id[change_id] = row
        self._by_status.setdefault(status, {})[change_id] = row
        return change_id

    def finish_change(
        self, change_id: int, status: ChangeStatus, now: datetime, error_code: str | None = None, error_message: str | None = None
    ) -> None:
        row = self._change_by_id.get(change_id)
        if row is None:
            return
        status = ChangeStatus(status)
        self._by_status.get(row.status, {}).pop(change_id, None)
        done = replace(row, status=status, finished_at=now, error_code=error_code, error_message=error_message)
        rows = self._changes[row.target]
        rows[next(i for i in range(len(rows) - 1, -1, -1) if rows[i].id == change_id)] = done
        self._change_by_id[change_id] = done
        self._by_status.setdefault(status, {})[change_id] = done

    def changes(
        self,
        since: datetime | None = None,
        target: str | None = None,
        region: str | None = None,
        status: ChangeStatus | None = None,
        limit: int = 200,
    ) -> list[ChangeRecord]:
        """Newest first, like the SQL store."""
        if status is not None:
            pool: Iterable[ChangeRecord] = self._by_status.get(ChangeStatus(status), {}).values()
        elif target is not None:
            pool = self._changes.get(target, [])
        else:
            pool = itertools.chain.from_iterable(self._changes.values())
        rows = [
            r
            for r in pool
            if (since is None or r.created_at >= since)
            and (target is None or r.target == target)
            and (region is None or r.region == region)
        ]
        rows.sort(key=lambda r: (r.created_at, r.id), reverse=True)
        return rows[:limit]

    def plans(self, limit: int = 50) -> list[PlanRecord]:
        return sorted(self._plans, key=lambda r: (r.created_at, r.id), reverse=True)[:limit]

    # ------------------------------------------------------------ target snapshots (dashboard, drift)

    def save_target_state(
        self, target: str, names: dict[str, str], actual: TargetState | None, desired: TargetState | None, now: datetime
    ) -> None:
        rows = self._endpoints.setdefault(target, {})
        for region in names:
            values: dict[str, Any] = {"endpoint": names[region]}  # one replace per row: replay saves every tick
            if actual is not None and region in actual.endpoints:
                rules = actual.circuit_breakers.get(region)
                values.update(
                    actual=actual.endpoints[region],
                    monitor_status=actual.monitor_status.get(region),
                    circuit_breakers=tuple(rules) if rules is not None else None,
                    read_at=now,
                )
            if desired is not None and region in desired.endpoints:
                values.update(desired=desired.endpoints[region], desired_reason=desired.reasons.get(region))
            rows[region] = replace(rows.get(region) or _blank(target, region, names[region]), **values)

    def _update(self, target: str, region: str, **values: Any) -> None:
        rows = self._endpoints.get(target, {})
        row = rows.get(region)
        if row is not None:  # like the SQL UPDATE: only a row a snapshot created
            rows[region] = replace(row, **values)

    def set_applied(self, target: str, region: str, setting: EndpointSetting, now: datetime) -> None:
        self._update(target, region, applied=setting, last_change_at=now)

    def set_write_status(self, target: str, region: str, status: WriteStatus | None, error: str | None = None) -> None:
        self._update(target, region, write_status=None if status is None else WriteStatus(status), write_error=error)

    def set_drift(self, target: str, region: str, description: str | None) -> None:
        self._update(target, region, drift=description)

    def applied_settings(self, target: str) -> dict[str, EndpointSetting]:
        return {region: r.applied for region, r in self._endpoints.get(target, {}).items() if r.applied is not None}

    def target_endpoints(self, target: str | None = None) -> list[TargetEndpointRecord]:
        names = [target] if target else sorted(self._endpoints)
        return [row for t in names for _, row in sorted(self._endpoints.get(t, {}).items())]

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
        self._events.append(replace(e, id=event_id))
        return event_id

    def sync_channels(self, worker: str, names: Iterable[str], now: datetime, *, since: datetime) -> dict[str, int]:
        """Like the SQL store's: new channels are owed the events after the newest (all, the very first time)."""
        wanted = set(names)
        with self._relay_lock:
            newest = 0 if not self._channels else max((e.id or 0 for e in self._events), default=0)
            for name in sorted(wanted):
                if name not in self._channels or self._channels[name][1]:
                    self._channels[name] = (newest, False)
            removed: dict[str, int] = {}
            for name, (start, gone) in sorted(self._channels.items()):
                if name in wanted or gone:
                    continue
                removed[name] = sum(1 for e in self._events if self._owed_locked(e, name, since))
                self._channels[name] = (start, True)
                for key in [k for k in self._claims if k[1] == name]:
                    del self._claims[key]
                self._delivered = {k for k in self._delivered if k[1] != name}
            self._settle_locked([e.id for e in self._events if e.id is not None and e.at >= since])
            return removed

    def _owed_locked(self, e: AuditEvent, channel: str, since: datetime) -> bool:
        start, gone = self._channels.get(channel, (0, True))
        assert e.id is not None
        return not gone and e.id > start and e.id not in self._relayed and e.at >= since and (e.id, channel) not in self._delivered

    def _settle_locked(self, event_ids: Iterable[int]) -> None:
        for i in event_ids:
            if all((i, name) in self._delivered or i <= start for name, (start, gone) in self._channels.items() if not gone):
                self._relayed.add(i)

    def claim_events(
        self, worker: str, now: datetime, *, channel: str, since: datetime, stale_before: datetime, limit: int = 100
    ) -> list[AuditEvent]:
        """Like the SQL store's: each free (event, channel) (owed, unclaimed there or claimed before ``stale_before``) to one caller."""
        out: list[AuditEvent] = []
        with self._relay_lock:
            for e in self._events:
                if len(out) >= limit:
                    break
                assert e.id is not None
                claim = self._claims.get((e.id, channel))
                if not self._owed_locked(e, channel, since) or (claim is not None and claim[1] >= stale_before):
                    continue
                self._claims[(e.id, channel)] = (worker, now)
                out.append(e)
        return out

    def _mine_locked(self, worker: str, event_ids: Iterable[int], channel: str) -> list[tuple[int, str]]:
        keys = [(i, channel) for i in event_ids]
        return [k for k in keys if k not in self._delivered and k in self._claims and self._claims[k][0] == worker]

    def renew_claims(self, worker: str, event_ids: Iterable[int], now: datetime, *, channel: str) -> list[int]:
        with self._relay_lock:
            mine = self._mine_locked(worker, event_ids, channel)
            for k in mine:
                self._claims[k] = (worker, now)
            return sorted(i for i, _ in mine)

    def release_claims(self, worker: str, event_ids: Iterable[int], now: datetime, *, channel: str) -> int:
        with self._relay_lock:
            mine = self._mine_locked(worker, event_ids, channel)
            for k in mine:
                del self._claims[k]
            return len(mine)

    def mark_relayed(self, worker: str, event_ids: Iterable[int], now: datetime, *, channel: str) -> int:
        with self._relay_lock:
            fresh = [i for i in event_ids if (i, channel) in self._claims and (i, channel) not in self._delivered]
            self._delivered.update((i, channel) for i in fresh)
            self._settle_locked(fresh)
            return len(fresh)

    def events(
        self,
        since: datetime | None = None,
        kinds: Iterable[EventKind | str] | None = None,
        region: str | None = None,
        target: str | None = None,
        limit: int = 200,
    ) -> list[AuditEvent]:
        wanted = {str(k) for k in kinds} if kinds else None
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

    def set_flag(self, kind: FlagKind, subject: str | None, value: Mapping[str, Any] | None, now: datetime) -> None:
        key = kind.key(subject)
        if value is None:
            self._flags.pop(key, None)
        else:
            self._flags[key] = Flag(kind=kind, subject=subject, value=copy.deepcopy(dict(value)), updated_at=now)

    def flags(self, *kinds: FlagKind) -> list[Flag]:
        return [f for key, f in sorted(self._flags.items()) if f.kind in kinds]

    def panics(self) -> dict[str, Panic]:
        return panics_of(self.flags(FlagKind.PANIC))

    # ------------------------------------------------------------ leader lease

    def try_acquire_lease(self, name: LeaseName, holder: str, ttl_s: float, now: datetime) -> int | None:
        """Take or renew the lease; the fencing token if ``holder`` holds it now (a new holder gets a larger one)."""
        current = self._leases.get(name)
        if current is not None and current[0] != holder and current[2] > now:
            return None
        token = current[1] if current is not None and current[0] == holder and current[2] > now else (current[1] + 1 if current else 1)
        self._leases[name] = (holder, token, now + timedelta(seconds=ttl_s))
        return token

    def release_lease(self, name: LeaseName, holder: str) -> bool:
        current = self._leases.get(name)
        if current is None or current[0] != holder:
            return False
        self._leases[name] = (current[0], current[1], datetime.min.replace(tzinfo=UTC))
        return True

    def holds_lease(self, name: LeaseName, holder: str, token: int, now: datetime) -> bool:
        current = self._leases.get(name)
        return current is not None and current[0] == holder and current[1] == token and current[2] > now
