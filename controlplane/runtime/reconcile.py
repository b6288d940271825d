"""The reconciler: read actual -> drift -> desired -> plan -> guardrails -> apply -> read back -> record.

One :meth:`Reconciler.reconcile_once` per tick, on the leader only:

1. **Read** every target through its actuator. A read error is recorded and
   that target sits this tick out (nothing is planned from stale data).
2. **Settle** our own earlier writes: a change left ``pending`` by a crash,
   or ``failed`` by a timeout although it landed, is confirmed (or failed)
   against what Azure now shows, so it is neither redone nor taken for drift.
3. **Drift**: a managed field whose actual value differs from what
   regionguard last applied (``Store.applied_settings``), with nobody having
   asked, is drift. Policy per target:

   * ``report`` (default): a ``drift`` event (once), the drift shown on the
     target's row, and automation paused for that endpoint (its automated
     changes are skipped, rule ``drift``) until an operator decides: any
     override for the region, or :func:`resolve_drift` (``adopt`` or
     ``revert``).
   * ``revert``: a ``drift`` event, and the plan writes desired state over it.
   * ``adopt``: a ``drift`` event, and the outside change becomes an override
     (a ``pin`` of the changed weight/priority, a ``drain`` for a disable),
     so it sticks, is visible, and is lifted like any other override.

4. **Decide** (``guardrails.decide``: strategy with overrides, plan,
   guardrails), hold drifted endpoints and writes that just failed
   permanently (same value, ``PERMANENT_RETRY_AFTER``), then spend the
   Azure write budget per subscription (drains first).
5. **Apply** targets side by side (independent resources; a hang in one
   cannot starve another), all bounded by the tick's deadline
   (``reconcile.deadline``; reads get a third of it), each after a fencing
   check (``Store.holds_lease``) right before its writes. Every change is recorded ``pending``
   before its write and finished ``applied`` / ``failed`` (ARM's code and
   message) from the actuator's report; held changes are ``skipped`` with
   their rule. ``set_applied`` after each landed change.
6. **Read back** each written target, save it for the dashboard and confirm.

Panics raised by the guardrails set ``panic`` flags per target (and clear them
when they end). Dry-run (``azure.dry_run`` or the argument) does everything
but the write and records the plan as a dry run. :meth:`Reconciler.plan_only`
reads and plans without writing anything anywhere (``regionguard plan``).
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from controlplane.actuators.base import APPLIED, Actuator, ActuatorError, FencedError, PermanentError, classify, credential_failure
from controlplane.actuators.transport import write_fence
from controlplane.config import Settings, Target, azure_name
from controlplane.domain import (
    AuditEvent,
    Change,
    ChangeStatus,
    Clock,
    EndpointSetting,
    EventKind,
    Field,
    FlagKind,
    LeaseName,
    Override,
    OverrideKind,
    Plan,
    Skipped,
    TargetState,
    WriteStatus,
)
from controlplane.drift import DriftFinding, adopt_overrides
from controlplane.engine.guardrails import CooldownMemory, decide, record_applied
from controlplane.engine.planner import managed_fields
from controlplane.engine.strategy import StrategyMemory, active_overrides
from controlplane.engine.writebudget import SubscriptionWriteBudget
from controlplane.store import Store
from controlplane.store.memory import MemoryStore

log = logging.getLogger(__name__)

DRIFT_RULE = "drift"
FENCED_RULE = "fenced"
DRY_RUN_CODE = "dry_run"
SETTLE_WINDOW = timedelta(hours=24)  # how far back our own unconfirmed writes are looked for
FAILED_RULE = "failed_permanently"
IN_FLIGHT_RULE = "in_flight"  # an earlier leader's write may still land: not rewritten until it is settled
NOT_WRITTEN = "not_written"  # a pending change the read-back shows never landed: settled as still to do
PERMANENT_RETRY_AFTER = timedelta(minutes=15)
MAX_PARALLEL_TARGETS = 8  # a permanently failed write is not tried again sooner (same value)


# ---------------------------------------------------------------- reports


@dataclass
class TargetResult:
    """What one tick did to one target."""

    target: str
    actual: TargetState | None = None
    desired: TargetState | None = None
    read_back: TargetState | None = None
    read_error: str | None = None
    drift: dict[str, str] = field(default_factory=dict)  # region -> description (new or ongoing)
    applied: list[Change] = field(default_factory=list)
    failed: list[tuple[Change, str | None, str]] = field(default_factory=list)  # change, ARM code, message
    settled: list[int] = field(default_factory=list)  # ids of earlier changes confirmed this tick
    confirmed: bool | None = None  # read back matches every applied change
    writes: int = 0


@dataclass
class TickReport:
    at: datetime
    plan: Plan = field(default_factory=Plan)
    plan_id: int | None = None
    dry_run: bool = False
    fenced: bool = False  # lost the lease before (some) writes
    refused: str | None = None  # e.g. the plan is not the one reviewed
    targets: dict[str, TargetResult] = field(default_factory=dict)
    azure_calls: int = 0  # reads, writes and read-backs tried this tick (a write fenced before it was sent is none)
    credential_failures: int = 0  # those that failed on this worker's credential (base.credential_failure)
    credential_error: str | None = None  # the last of those, "code: message"

    def count_call(self, error: ActuatorError | None) -> None:
        """One Azure call's outcome (``None``: it went through), for :attr:`credential_failed`."""
        self.azure_calls += 1
        if error is not None and credential_failure(error):
            self.credential_failures += 1
            self.credential_error = f"{error.code}: {error.message}"

    @property
    def credential_failed(self) -> bool:
        """Azure was called, and every call failed on the credential: this worker could not authenticate at
        all (ARM's 5xx and 429 are not that: every replica meets them). docs/adr/0016."""
        return self.azure_calls > 0 and self.credential_failures == self.azure_calls

    @property
    def applied(self) -> list[Change]:
        return [c for t in self.targets.values() for c in t.applied]

    @property
    def failed(self) -> list[tuple[Change, str | None, str]]:
        return [f for t in self.targets.values() for f in t.failed]

    @property
    def read_errors(self) -> dict[str, str]:
        """``target`` (the whole target) or ``target/region`` (one endpoint) -> why it could not be read."""
        out: dict[str, str] = {}
        for name, t in self.targets.items():
            if t.read_error is not None:
                out[name] = t.read_error
            elif t.actual is not None:
                out.update({f"{name}/{region}": why for region, why in t.actual.read_errors.items()})
        return out

    @property
    def ok(self) -> bool:
        return not self.failed and not self.fenced and self.refused is None and all(t.read_error is None for t in self.targets.values())


# ---------------------------------------------------------------- helpers


def _names(target: Target) -> dict[str, str]:
    return {region: azure_name(target, region) for region in target.endpoints}


def _with_field(setting: EndpointSetting, f: Field, value: Any) -> EndpointSetting:
    return EndpointSetting(
        weight=value if f is Field.WEIGHT else setting.weight,
        priority=value if f is Field.PRIORITY else setting.priority,
        enabled=bool(value) if f is Field.ENABLED else setting.enabled,
    )


def _held_by_nothing(f: Field, have: EndpointSetting) -> bool:
    """A weight or priority Azure does not report on a disabled endpoint: a member drained
    out of an APIM pool has none, so there is nothing to drift (docs/adr/0008)."""
    return f is not Field.ENABLED and have.get(f) is None and not have.enabled


def find_drift(target: Target, actual: TargetState, applied: Mapping[str, EndpointSetting]) -> list[DriftFinding]:
    """Managed fields whose actual value differs from what regionguard last applied."""
    out = []
    for region in target.endpoints:
        have, ref = actual.endpoints.get(region), applied.get(region)
        if have is None or ref is None:
            continue
        diffs = {
            f: (ref.get(f), have.get(f))
            for f in managed_fields(target)
            if ref.get(f) is not None and ref.get(f) != have.get(f) and not _held_by_nothing(f, have)
        }
        if diffs:
            out.append(DriftFinding(target.name, region, diffs, have))
    return out


# ---------------------------------------------------------------- the reconciler


class Reconciler:
    """Runs ticks for one leader. Keeps cooldown, strategy and budget memory between ticks."""

    def __init__(
        self,
        settings: Settings,
        store: Store | MemoryStore,
        actuators: Mapping[str, Actuator],
        clock: Clock,
        holder_id: str,
        *,
        lease_name: LeaseName | None = LeaseName.LEADER,
        actor: str = "automation",
        deadline_s: float | None = None,
        budget: SubscriptionWriteBudget | None = None,
        cooldown: CooldownMemory | None = None,
        memory: StrategyMemory | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        max_parallel: int = MAX_PARALLEL_TARGETS,
        call_s: float | None = None,
        skew_s: float = 1.0,
    ) -> None:
        self.settings = settings
        self.store = store
        self.actuators = dict(actuators)
        self.clock = clock
        self.holder_id = holder_id
        self.lease_name = lease_name
        self.actor = actor
        self.deadline_s = deadline_s if deadline_s is not None else settings.reconcile.deadline
        self.budget = budget or SubscriptionWriteBudget(settings.guardrails.write_budget_per_hour, clock)
        self.cooldown = cooldown or CooldownMemory()
        self.memory = memory or StrategyMemory()
        self._monotonic = monotonic
        self._max_parallel = max(1, max_parallel)  # 1: reads and applies run one target after another, in this thread
        self._read_errors: dict[str, str] = {}  # target -> last recorded read error (one event per new error)
        self._missing: dict[str, set[str]] = {}  # target -> configured regions Azure does not have
        self._last_record_key: tuple[Any, ...] | None = None
        self._permanent: dict[tuple[str, str, Field, Any], tuple[datetime, str]] = {}  # change -> (when, ARM error)
        self._lock = threading.RLock()  # store writes from the apply workers
        # the hard deadline of one Azure call and the clock-skew allowance (docs/adr/0012)
        self.call_s = call_s if call_s is not None else settings.azure.request_timeout
        self.skew_s = skew_s
        # change ids this reconciler recorded pending and not yet finished -> when (its writes are over when its tick is);
        # finished ones are forgotten, and any left pending by a tick that died once they fall out of the settle window
        self._mine: dict[int, datetime] = {}
        self._in_flight: dict[tuple[str, str], str] = {}  # (target, region) -> why an earlier write may still land

    # ------------------------------------------------------------ public

    def plan_only(self, health: Any) -> Plan:
        """Read Azure and plan; write nothing anywhere (Azure or store)."""
        return self.plan_and_read_errors(health)[0]

    def plan_and_read_errors(self, health: Any) -> tuple[Plan, dict[str, str]]:
        """:meth:`plan_only`, and what could not be read: ``target`` or ``target/region`` -> why.

        A plan made without some of Azure is not "nothing to do": callers must
        say what is missing (``regionguard plan`` fails when anything is).
        """
        now = self.clock.now()
        actual: dict[str, TargetState] = {}
        errors: dict[str, str] = {}
        for name, state in self._read_many(self._read_deadline()).items():
            if isinstance(state, ActuatorError):
                log.warning("plan: cannot read %s: %s", name, state)
                errors[name] = f"{state.code}: {state.message}"
            else:
                actual[name] = state
                errors.update({f"{name}/{region}": why for region, why in state.read_errors.items()})
        overrides = self.store.active_overrides(now)
        _, guarded = decide(
            self.settings, health, actual, overrides, now=now, cooldown=copy.deepcopy(self.cooldown), memory=copy.deepcopy(self.memory)
        )
        held, _ = self._drift(actual, overrides, now, record=False)
        return self._hold_failed(self._hold_drifted(guarded, {**held, **self._in_flight}), now, overrides), errors

    def reconcile_once(
        self, health: Any, *, fencing_token: int | None, dry_run: bool = False, manual_plan_checksum: str | None = None
    ) -> TickReport:
        if self.lease_name is not None and fencing_token is None:
            raise ValueError("reconcile_once needs the fencing token of the lease it holds")
        now = self.clock.now()
        dry = dry_run or self.settings.azure.dry_run
        deadline = self._monotonic() + self.deadline_s
        report = TickReport(at=now, dry_run=dry)
        actual = self._read_all(report, self._read_deadline(), now)
        overrides = self.store.active_overrides(now)
        held, reverting = self._drift(actual, overrides, now, record=True, report=report)
        overrides = self.store.active_overrides(now)  # adopting drift may have added some
        desired, guarded = decide(self.settings, health, actual, overrides, now=now, cooldown=self.cooldown, memory=self.memory)
        guarded = self._hold_failed(self._hold_in_flight(self._hold_drifted(guarded, held)), now, overrides)
        if not dry:
            self._accept_unreverted(guarded, reverting, now)
        self._save_desired(desired, actual, report, now)
        self._panics(guarded, now)
        if manual_plan_checksum is not None and manual_plan_checksum != guarded.checksum:
            report.plan = guarded
            report.refused = (
                f"the plan is now {guarded.checksum}, not the reviewed {manual_plan_checksum}: nothing written; review the plan again"
            )
            self.store.add_event(
                AuditEvent(
                    kind=EventKind.PLAN,
                    at=now,
                    actor=self.actor,
                    summary=report.refused,
                    severity="warning",
                    data={"plan": guarded.to_dict()},
                )
            )
            return report
        if dry:
            report.plan = guarded
            self._record_dry_run(guarded, fencing_token, now, report)
            return report
        plan = self.budget.allot_plan(guarded, {t.name: t.subscription_id for t in self.settings.targets})
        report.plan = plan
        if not plan.changes:
            self._record_skips_only(plan, fencing_token, now, report)
            return report
        report.plan_id = self.store.record_plan(plan, self.actor, now, fencing_token, dry_run=False)
        self._last_record_key = None
        for s in plan.skipped:
            self.store.record_change(s.change, ChangeStatus.SKIPPED, now, self.actor, report.plan_id, fencing_token, s.rule, s.reason)
        self._apply_all(plan, actual, report, fencing_token, deadline)
        record_applied(report.applied, now, self.cooldown)
        return report

    # ------------------------------------------------------------ read and settle

    def _read(self, target: Target, deadline: float) -> TargetState:
        actuator = self.actuators.get(target.name)
        if actuator is None:
            raise PermanentError(f"no actuator for target {target.name!r}", code="NoActuator")
        try:
            return actuator.read_actual(target, deadline=deadline)
        except ActuatorError:
            raise
        except Exception as exc:
            raise classify(exc) from exc

    def _read_deadline(self) -> float:
        """Reads get a third of the tick (at least a second), so a hanging read leaves time to write elsewhere."""
        return self._monotonic() + min(self.deadline_s, max(1.0, self.deadline_s / 3))

    def _read_many(self, deadline: float) -> dict[str, TargetState | ActuatorError]:
        """Every target read side by side (config order kept); an error in place of a state."""
        targets = self.settings.targets
        if not targets:
            return {}

        def one(t: Target) -> TargetState | ActuatorError:
            try:
                return self._read(t, deadline)
            except ActuatorError as error:
                return error

        if self._max_parallel == 1:
            return {t.name: one(t) for t in targets}
        with ThreadPoolExecutor(max_workers=min(self._max_parallel, len(targets)), thread_name_prefix="reconcile-read") as pool:
            return dict(zip([t.name for t in targets], pool.map(one, targets), strict=True))

    def _read_all(self, report: TickReport, deadline: float, now: datetime) -> dict[str, TargetState]:
        actual: dict[str, TargetState] = {}
        states = self._read_many(deadline)
        for t in self.settings.targets:
            result = report.targets[t.name] = TargetResult(t.name)
            state = states[t.name]
            report.count_call(state if isinstance(state, ActuatorError) else None)
            if isinstance(state, ActuatorError):
                result.read_error = f"{state.code}: {state.message}"
                self._record_read_error(t, result.read_error, now)
                continue
            if self._read_errors.pop(t.name, None) is not None:
                self.store.add_event(
                    AuditEvent(
                        kind=EventKind.READ_ERROR, at=now, actor=self.actor, summary=f"{t.name}: Azure can be read again", target=t.name
                    )
                )
            result.actual = actual[t.name] = state
            self.store.save_target_state(t.name, _names(t), state, None, now)
            self._record_endpoint_read_errors(t, state, now)
            self._warn_missing(t, state, now)
            self._settle(t, state, now, result)
        return actual

    def _record_read_error(self, target: Target, message: str, now: datetime) -> None:
        log.warning("cannot read %s: %s", target.name, message)
        if self._read_errors.get(target.name) == message:
            return
        self._read_errors[target.name] = message
        self.store.add_event(
            AuditEvent(
                kind=EventKind.READ_ERROR,
                at=now,
                actor=self.actor,
                summary=f"{target.name}: cannot read Azure state, target skipped this tick: {message}",
                target=target.name,
                severity="warning",
            )
        )

    def _record_endpoint_read_errors(self, target: Target, state: TargetState, now: datetime) -> None:
        """An endpoint whose ARM answer is unreadable sits this tick out: one warning event per new error."""
        for region in target.endpoints:
            key = f"{target.name}/{region}"
            message = state.read_errors.get(region)
            if message is None:
                if self._read_errors.pop(key, None) is not None:
                    self.store.add_event(
                        AuditEvent(
                            kind=EventKind.READ_ERROR,
                            at=now,
                            actor=self.actor,
                            summary=f"{key}: Azure's answer can be read again",
                            target=target.name,
                            region=region,
                        )
                    )
                continue
            if self._read_errors.get(key) == message:
                continue
            self._read_errors[key] = message
            log.warning("cannot read %s: %s", key, message)
            self.store.add_event(
                AuditEvent(
                    kind=EventKind.READ_ERROR,
                    at=now,
                    actor=self.actor,
                    summary=f"{key}: Azure's answer for this endpoint is unreadable, it is left alone this tick: {message}",
                    target=target.name,
                    region=region,
                    severity="warning",
                )
            )

    def _warn_missing(self, target: Target, state: TargetState, now: datetime) -> None:
        missing = {r for r in target.endpoints if r not in state.endpoints and r not in state.read_errors}
        if missing == self._missing.get(target.name, set()):
            return
        self._missing[target.name] = missing
        for region in sorted(missing):
            text = f"{target.name}: {azure_name(target, region)} ({region}) is in the config but not in Azure; it is not managed until it exists"
            log.warning("%s", text)
            self.store.add_event(
                AuditEvent(
                    kind=EventKind.CONFIG_PROBLEM,
                    at=now,
                    actor=self.actor,
                    summary=text,
                    region=region,
                    target=target.name,
                    severity="warning",
                )
            )

    def in_flight_until(self, recorded_at: datetime) -> datetime:
        """When a write recorded pending at ``recorded_at`` by another leader is surely over.

        Its writes start within the tick's deadline of being recorded, only
        while its lease outlives the call (ADR 0012), and each is cut off by
        the call's hard deadline; the clock-skew allowance covers the two clocks.
        """
        return recorded_at + timedelta(seconds=self.deadline_s + self.call_s + 2 * self.skew_s)

    def _settle(self, target: Target, actual: TargetState, now: datetime, result: TargetResult) -> None:
        """Confirm unconfirmed writes (pending after a crash or a takeover, failed by a timeout) against Azure.

        A pending write of another leader (or an earlier process) is left
        alone while it may still be in flight (:meth:`in_flight_until`): its
        endpoint is held (rule ``in_flight``), so it is neither written twice
        nor overtaken by a newer write that the old one would then undo. Once
        it is surely over, the read-back settles it: ``applied`` if Azure shows
        it, otherwise ``skipped`` / ``not_written`` (still to do: the plan
        brings it again), never ``failed``.
        """
        for key in [k for k in self._in_flight if k[0] == target.name]:
            del self._in_flight[key]
        with self._lock:  # another target's apply may be finishing its changes meanwhile
            for change_id in [i for i, at in self._mine.items() if at < now - SETTLE_WINDOW]:
                del self._mine[change_id]
        applied = self.store.applied_settings(target.name)
        reference_at = {r.region: r.last_change_at for r in self.store.target_endpoints(target.name)}
        rows = [
            r
            for status in (ChangeStatus.PENDING, ChangeStatus.FAILED)
            for r in self.store.changes(since=now - SETTLE_WINDOW, target=target.name, status=status, limit=500)
        ]
        for row in sorted(rows, key=lambda r: (r.created_at, r.id)):
            region, f = row.region, row.field
            if row.status is ChangeStatus.PENDING and row.id not in self._mine and now < self.in_flight_until(row.created_at):
                until = self.in_flight_until(row.created_at)
                self._in_flight[(target.name, region)] = (
                    f"change {row.id} ({f.value} -> {row.after!r}, fencing token {row.fencing_token}) may still be in flight;"
                    f" settled by read-back after {until:%H:%M:%S} UTC"
                )
                continue
            have = actual.endpoints.get(region)
            since = reference_at.get(region)
            if have is None or (row.status is ChangeStatus.FAILED and since is not None and row.created_at < since):
                continue  # a failure older than the last write we know landed cannot explain today's value
            ref = applied.get(region)
            shows_it = have.get(f) == row.after
            # pending: the tick died around the write; failed: a timeout whose write landed after all
            landed = shows_it if row.status is ChangeStatus.PENDING else shows_it and (ref is None or ref.get(f) != have.get(f))
            if landed:
                self.store.finish_change(row.id, ChangeStatus.APPLIED, now, None, "confirmed by read-back on a later tick")
                self._mine.pop(row.id, None)
                ref = _with_field(ref or have, f, have.get(f))
                applied[region] = ref
                self.store.set_applied(target.name, region, ref, now)
                result.settled.append(row.id)
                self.store.add_event(
                    AuditEvent(
                        kind=EventKind.CHANGE,
                        at=now,
                        actor=self.actor,
                        summary=f"confirmed on a later tick: {target.name}/{row.endpoint} {f.value} -> {row.after!r}",
                        region=region,
                        target=target.name,
                        data={"change_id": row.id},
                    )
                )
            elif row.status is ChangeStatus.PENDING:
                self.store.finish_change(
                    row.id,
                    ChangeStatus.SKIPPED,
                    now,
                    NOT_WRITTEN,
                    "the leader stopped before this write landed, and Azure does not show it once it surely is over: still to do",
                )
                self._mine.pop(row.id, None)
                result.settled.append(row.id)

    # ------------------------------------------------------------ drift

    def _drift(
        self, actual: Mapping[str, TargetState], overrides: list[Override], now: datetime, *, record: bool, report: TickReport | None = None
    ) -> tuple[dict[tuple[str, str], str], dict[tuple[str, str], DriftFinding]]:
        """Find drift and act on each target's policy.

        Returns (target, region) -> why automation is paused there (drift
        under ``report``), and the drift being reverted this tick.
        """
        held: dict[tuple[str, str], str] = {}
        reverting: dict[tuple[str, str], DriftFinding] = {}
        revert_asked = {f.subject for f in self.store.flags(FlagKind.DRIFT_REVERT)}
        for t in self.settings.targets:
            state = actual.get(t.name)
            if state is None:
                continue
            applied = self.store.applied_settings(t.name)
            if record:
                for region, have in state.endpoints.items():
                    if region not in applied:  # first sight: Azure as it is becomes the reference
                        self.store.set_applied(t.name, region, have, now)
                        applied[region] = have
            drift_now = {r.region: r.drift for r in self.store.target_endpoints(t.name)} if record else {}
            findings = {f.region: f for f in find_drift(t, state, applied)}
            for region in t.endpoints:
                finding = findings.get(region)
                if finding is None:
                    if record and drift_now.get(region):
                        self._drift_resolved(t, region, now, "Azure matches what regionguard applied again")
                    continue
                if report is not None:
                    report.targets[t.name].drift[region] = finding.describe()
                by_operator = any(
                    o.applies_to(t.name, region) and o.kind is not OverrideKind.FREEZE for o in active_overrides(overrides, t.name, now)
                )
                revert = t.drift == "revert" or f"{t.name}/{region}" in revert_asked
                if record:
                    self._record_drift(t, finding, drift_now.get(region), now, by_operator, revert)
                if by_operator or t.drift == "adopt":
                    continue
                if revert:
                    reverting[(t.name, region)] = finding
                else:
                    held[(t.name, region)] = finding.describe()
        return held, reverting

    def _accept_unreverted(self, plan: Plan, reverting: Mapping[tuple[str, str], DriftFinding], now: datetime) -> None:
        """Drift to revert that desired state agrees with (no change planned or held): Azure's value stands."""
        touched = {(c.target, c.region, c.field) for c in plan.changes} | {
            (s.change.target, s.change.region, s.change.field) for s in plan.skipped
        }
        for (target, region), finding in reverting.items():
            if any((target, region, f) in touched for f in finding.fields):
                continue
            self.store.set_applied(target, region, finding.actual, now)
            self._drift_resolved(
                self.settings.target(target), region, now, "desired state agrees with the value found in Azure", finding.describe()
            )

    def _record_drift(
        self, target: Target, finding: DriftFinding, reported: str | None, now: datetime, by_operator: bool, revert: bool
    ) -> None:
        text = finding.describe()
        region = finding.region
        if by_operator:  # an override decides this endpoint now: the outside value is the new reference
            self.store.set_applied(target.name, region, finding.actual, now)
            self._drift_resolved(target, region, now, f"an operator override now decides {region}", text)
            return
        if target.drift == "adopt":
            for o in adopt_overrides(finding, "regionguard (drift: adopt)", now, why=f"adopted automatically ({text})"):
                self.store.add_override(o)
            self.store.set_applied(target.name, region, finding.actual, now)
            self._event_drift(target, region, now, f"{target.name}/{region} {text}; adopted (policy adopt)", "warning", finding)
            return
        if reported == text:
            return  # already reported
        self.store.set_drift(target.name, region, text)
        action = (
            "reverting it (policy revert)"
            if revert
            else "automation paused for this endpoint until an operator decides (override, adopt or revert)"
        )
        self._event_drift(target, region, now, f"{target.name}/{region} {text}; {action}", "warning", finding)

    def _event_drift(self, target: Target, region: str, now: datetime, summary: str, severity: str, finding: DriftFinding) -> None:
        data = {"policy": target.drift, "fields": {f.value: {"applied": a, "actual": b} for f, (a, b) in finding.fields.items()}}
        self.store.add_event(
            AuditEvent(
                kind=EventKind.DRIFT,
                at=now,
                actor=self.actor,
                summary=summary,
                region=region,
                target=target.name,
                severity=severity,
                data=data,
            )
        )

    def _drift_resolved(self, target: Target, region: str, now: datetime, why: str, was: str | None = None) -> None:
        self.store.set_drift(target.name, region, None)
        self.store.set_flag(FlagKind.DRIFT_REVERT, f"{target.name}/{region}", None, now)
        self.store.add_event(
            AuditEvent(
                kind=EventKind.DRIFT,
                at=now,
                actor=self.actor,
                summary=f"{target.name}/{region}: drift resolved: {why}",
                region=region,
                target=target.name,
                data={"was": was},
            )
        )

    @staticmethod
    def _hold_drifted(plan: Plan, held: Mapping[tuple[str, str], str]) -> Plan:
        if not held:
            return plan
        keep, skipped = [], []
        for c in plan.changes:
            why = held.get((c.target, c.region))
            if why is None or c.manual:
                keep.append(c)
            else:
                skipped.append(Skipped(c, DRIFT_RULE, f"{why}; automation paused for this endpoint until an operator decides"))
        return plan.with_changes(keep, skipped)

    def _hold_in_flight(self, plan: Plan) -> Plan:
        if not self._in_flight:
            return plan
        keep, skipped = [], []
        for c in plan.changes:
            why = self._in_flight.get((c.target, c.region))
            if why is None:
                keep.append(c)
            else:
                skipped.append(Skipped(c, IN_FLIGHT_RULE, why))
        return plan.with_changes(keep, skipped)

    @staticmethod
    def _failure_key(c: Change) -> tuple[str, str, Field, Any]:
        return (c.target, c.region, c.field, c.desired)

    def _hold_failed(self, plan: Plan, now: datetime, overrides: list[Override] | None = None) -> Plan:
        """A write that failed permanently is not sent again for a while (same target value).

        Unless an operator acted since: a change an override made after the
        failure decides (e.g. the same drain issued again) is sent.
        """
        self._permanent = {k: v for k, v in self._permanent.items() if now - v[0] < PERMANENT_RETRY_AFTER}
        if not self._permanent:
            return plan
        keep, skipped = [], []
        for c in plan.changes:
            failed = self._permanent.get(self._failure_key(c))
            if failed is None:
                keep.append(c)
                continue
            at, error = failed
            if c.manual and any(o.applies_to(c.target, c.region) and o.created_at > at for o in overrides or []):
                keep.append(c)  # the operator's new action is not swallowed by an old failure
                continue
            until = at + PERMANENT_RETRY_AFTER
            skipped.append(
                Skipped(
                    c,
                    FAILED_RULE,
                    f"the same write failed permanently at {at:%H:%M:%S} ({error}); not retried before {until:%H:%M:%S} UTC unless the desired value changes",
                )
            )
        return plan.with_changes(keep, skipped)

    # ------------------------------------------------------------ desired, panics, records

    def _save_desired(self, desired: list[TargetState], actual: Mapping[str, TargetState], report: TickReport, now: datetime) -> None:
        for d in desired:
            if d.target not in actual:
                continue
            report.targets[d.target].desired = d
            self.store.save_target_state(d.target, _names(self.settings.target(d.target)), None, d, now)

    def _panics(self, plan: Plan, now: datetime) -> None:
        raised: dict[str, str] = {}
        for text in plan.panics:
            target, _, reason = text.partition(": ")
            raised.setdefault(target, reason or text)
        current = {f.subject or "": f.value for f in self.store.flags(FlagKind.PANIC)}
        for target, reason in raised.items():
            if target in current and current[target].get("reason") == reason:
                continue
            since = current.get(target, {}).get("since", now.isoformat())
            self.store.set_flag(FlagKind.PANIC, target, {"reason": reason, "since": since}, now)
            if target not in current:
                self.store.add_event(
                    AuditEvent(
                        kind=EventKind.PANIC,
                        at=now,
                        actor=self.actor,
                        summary=f"PANIC {target}: {reason}",
                        target=target,
                        severity="critical",
                    )
                )
        for target in current:
            if target not in raised:
                self.store.set_flag(FlagKind.PANIC, target, None, now)
                self.store.add_event(
                    AuditEvent(kind=EventKind.PANIC, at=now, actor=self.actor, summary=f"panic over for {target}", target=target)
                )

    def _record_dry_run(self, plan: Plan, token: int | None, now: datetime, report: TickReport) -> None:
        if not plan.changes and not plan.skipped:
            return
        key = ("dry", plan.checksum, tuple((s.change.target, s.change.region, s.change.field, s.rule) for s in plan.skipped))
        if key == self._last_record_key:
            return  # same dry-run plan as last tick: recorded already
        self._last_record_key = key
        report.plan_id = self.store.record_plan(plan, self.actor, now, token, dry_run=True)
        for c in plan.changes:
            self.store.record_change(c, ChangeStatus.SKIPPED, now, self.actor, report.plan_id, token, DRY_RUN_CODE, "dry run: not written")
        for s in plan.skipped:
            self.store.record_change(s.change, ChangeStatus.SKIPPED, now, self.actor, report.plan_id, token, s.rule, s.reason)

    def _record_skips_only(self, plan: Plan, token: int | None, now: datetime, report: TickReport) -> None:
        """A plan of held changes only: recorded when it differs from the last one (no row per tick)."""
        if not plan.skipped:
            self._last_record_key = None
            return
        key = ("held", tuple((s.change.target, s.change.region, s.change.field, s.change.desired, s.rule) for s in plan.skipped))
        if key == self._last_record_key:
            return
        self._last_record_key = key
        report.plan_id = self.store.record_plan(plan, self.actor, now, token, dry_run=False)
        for s in plan.skipped:
            self.store.record_change(s.change, ChangeStatus.SKIPPED, now, self.actor, report.plan_id, token, s.rule, s.reason)

    # ------------------------------------------------------------ apply

    def _fenced_ok(self, token: int | None, for_s: float = 0.0) -> bool:
        """Do we hold the lease, and will we still hold it ``for_s`` seconds (plus the skew allowance) from now?"""
        if self.lease_name is None:
            return True
        try:
            until = self.clock.now() + timedelta(seconds=for_s + self.skew_s)
            return self.store.holds_lease(self.lease_name, self.holder_id, int(token or 0), until)
        except Exception:
            log.warning("fencing check failed", exc_info=True)
            return False

    def _fence(self, token: int | None) -> Any:
        """The check made right before each Azure write (installed in the actuators' transport)."""

        def fence(seconds: float) -> None:
            if not self._fenced_ok(token, seconds):
                raise FencedError(
                    f"not sent: the leader lease (token {token}) would not outlive this write's {seconds:g} s deadline"
                    f" plus the {self.skew_s:g} s clock-skew allowance",
                    code="Fenced",
                )

        return fence

    def _apply_all(self, plan: Plan, actual: Mapping[str, TargetState], report: TickReport, token: int | None, deadline: float) -> None:
        """Targets are independent Azure resources: apply them side by side, all bounded by the tick's deadline.

        A hanging Traffic Manager then cannot starve a Front Door drain. Store
        writes from the workers are serialised by a lock.
        """
        work = [(t, plan.for_target(t.name)) for t in self.settings.targets]
        work = [(t, mine) for t, mine in work if mine.changes]
        if self._max_parallel == 1:
            for t, mine in work:
                self._apply_fenced(t, mine, actual[t.name], report, token, deadline)
            return
        with ThreadPoolExecutor(max_workers=min(self._max_parallel, len(work)), thread_name_prefix="reconcile-apply") as pool:
            futures = [pool.submit(self._apply_fenced, t, mine, actual[t.name], report, token, deadline) for t, mine in work]
            for future in futures:
                future.result()  # re-raises what a worker raised

    def _apply_fenced(
        self, target: Target, plan: Plan, actual: TargetState, report: TickReport, token: int | None, deadline: float
    ) -> None:
        if not self._fenced_ok(token, self.call_s):
            report.fenced = True
            with self._lock:
                now = self.clock.now()
                for c in plan.changes:
                    self.store.record_change(
                        c,
                        ChangeStatus.SKIPPED,
                        now,
                        self.actor,
                        report.plan_id,
                        token,
                        FENCED_RULE,
                        "this worker no longer holds the leader lease: not written",
                    )
            log.warning("lost the lease: %d change(s) to %s not written", len(plan.changes), target.name)
            return
        with write_fence(self._fence(token) if self.lease_name is not None else None):
            self._apply_target(target, plan, actual, report, token, deadline)

    def _apply_target(
        self, target: Target, plan: Plan, actual: TargetState, report: TickReport, token: int | None, deadline: float
    ) -> None:
        result = report.targets[target.name]
        now = self.clock.now()
        ids: dict[int, int] = {}
        with self._lock:
            for c in plan.changes:  # recorded before the write: a crash leaves a trail
                ids[id(c)] = self.store.record_change(c, ChangeStatus.PENDING, now, self.actor, report.plan_id, token)
                self._mine[ids[id(c)]] = now
            for region in dict.fromkeys(c.region for c in plan.changes):
                self.store.set_write_status(target.name, region, WriteStatus.PENDING)
        running = dict(actual.endpoints)

        def on_result(change: Change, status: str, error: ActuatorError | None) -> None:
            with self._lock:
                record(change, status, error)

        def record(change: Change, status: str, error: ActuatorError | None) -> None:
            at = self.clock.now()
            if not isinstance(error, FencedError):  # a fenced write was never sent
                report.count_call(None if status == APPLIED else error or PermanentError("failed"))
            change_id = ids.get(id(change))
            if change_id is not None:
                self._mine.pop(change_id, None)  # finished below, whatever the outcome
            if status == APPLIED:
                # the reference first: a crash right after leaves a pending row that the next tick confirms
                running[change.region] = _with_field(running[change.region], change.field, change.desired)
                self.store.set_applied(target.name, change.region, running[change.region], at)
                if change_id is not None:
                    self.store.finish_change(change_id, ChangeStatus.APPLIED, at)
                self.store.set_write_status(target.name, change.region, None)
                result.applied.append(change)
                self.store.add_event(
                    AuditEvent(
                        kind=EventKind.CHANGE,
                        at=at,
                        actor=self.actor,
                        summary=f"applied: {change.describe()}",
                        region=change.region,
                        target=target.name,
                        data={**change.to_dict(), "change_id": change_id, "fencing_token": token},
                    )
                )
                return
            if isinstance(error, FencedError):  # not sent: not a failure of the write, and no trace in Azure
                report.fenced = True
                if change_id is not None:
                    self.store.finish_change(change_id, ChangeStatus.SKIPPED, at, FENCED_RULE, error.message)
                self.store.set_write_status(target.name, change.region, None)
                log.warning("fenced: %s not written: %s", change.describe(), error.message)
                return
            code = error.code if error else None
            message = error.message if error else "failed"
            if change_id is not None:
                self.store.finish_change(change_id, ChangeStatus.FAILED, at, code, message)
            self.store.set_write_status(target.name, change.region, WriteStatus.FAILED, f"{code}: {message}")
            result.failed.append((change, code, message))
            if error is not None and not error.transient:
                self._permanent[self._failure_key(change)] = (at, f"{code}: {message}")
            severity = "warning" if error is not None and error.transient else "critical"
            self.store.add_event(
                AuditEvent(
                    kind=EventKind.CHANGE,
                    at=at,
                    actor=self.actor,
                    summary=f"failed ({code}): {change.describe()}: {message}",
                    region=change.region,
                    target=target.name,
                    severity=severity,
                    data={
                        **change.to_dict(),
                        "change_id": change_id,
                        "error_code": code,
                        "error_message": message,
                        "transient": bool(error and error.transient),
                    },
                )
            )

        apply_report = self.actuators[target.name].apply(target, plan, deadline=deadline, on_result=on_result)
        result.writes = apply_report.writes
        self._read_back(target, result, deadline, report)

    def _read_back(self, target: Target, result: TargetResult, deadline: float, report: TickReport) -> None:
        now = self.clock.now()
        if self._monotonic() >= deadline:
            log.info("no time left to read %s back this tick; the next tick reads it", target.name)
            return
        try:
            state = self._read(target, deadline)
        except ActuatorError as error:
            log.warning("read-back of %s failed: %s", target.name, error)
            result.confirmed = False
            with self._lock:
                report.count_call(error)
            return
        with self._lock:
            report.count_call(None)
        result.read_back = state
        wrong = [c for c in result.applied if state.endpoints.get(c.region) is None or state.endpoints[c.region].get(c.field) != c.desired]
        result.confirmed = not wrong
        with self._lock:
            self._record_read_back(target, state, result, wrong, now)

    def _record_read_back(self, target: Target, state: TargetState, result: TargetResult, wrong: list[Change], now: datetime) -> None:
        self.store.save_target_state(target.name, _names(target), state, result.desired, now)
        for c in wrong:
            self.store.set_write_status(target.name, c.region, WriteStatus.UNCONFIRMED, f"read back {c.field.value} is not {c.desired!r}")
            self.store.add_event(
                AuditEvent(
                    kind=EventKind.CHANGE,
                    at=now,
                    actor=self.actor,
                    summary=f"not confirmed by read-back: {c.describe()}",
                    region=c.region,
                    target=target.name,
                    severity="warning",
                )
            )
