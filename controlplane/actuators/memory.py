"""An in-memory actuator with the same contract as the Azure ones, for tests and replay.

It validates like ARM (weight and priority ranges per target kind, unique
Traffic Manager priorities), drains an APIM pool member as the APIM actuator
does (out of the pool, with no weight or priority; back at the written or
configured ones; never the last member), retries like the Azure actuators (the same
:func:`call_with_retry`), and has fault hooks:

- :meth:`fail_writes` / :meth:`fail_reads`: the next N attempts raise an error
  (a :class:`TransientError` is retried within the deadline, a
  :class:`PermanentError` is not);
- :meth:`hang_writes`: the next N write attempts block until the deadline;
- ``after_write``: called after each landed write (raise in it to simulate a
  crash between two writes of one plan);
- :meth:`edit`: a change behind regionguard's back (a portal edit).
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controlplane.actuators.base import (
    ActuatorError,
    ApplyReport,
    OnResult,
    PermanentError,
    RetryPolicy,
    Step,
    TransientError,
    call_with_retry,
    desired_fields,
    order_for_unique_priorities,
    report_group,
    start_apply,
    verify,
)
from controlplane.actuators.transport import check_write_fence
from controlplane.config import PRIORITY_RANGE, WEIGHT_QUANTUM, WEIGHT_RANGE, Target, azure_name
from controlplane.domain import EndpointSetting, Field, Plan, TargetState

log = logging.getLogger(__name__)


@dataclass
class _Endpoint:
    name: str
    weight: int | None
    priority: int | None
    enabled: bool = True
    monitor: str = "Online"

    def get(self, f: Field) -> int | bool | None:
        return self.enabled if f is Field.ENABLED else getattr(self, f.value)


@dataclass
class _Fault:
    error: BaseException | None = None
    hang_s: float = 0.0
    count: int = 1


@dataclass
class MemoryWrite:
    target: str
    endpoint: str
    fields: dict[Field, int | bool | None] = field(default_factory=dict)


class MemoryActuator:
    kind = "memory"

    def __init__(self, *, retry: RetryPolicy | None = None, after_write: Callable[[str, str], None] | None = None) -> None:
        self._retry = retry or RetryPolicy(backoff=0.01, backoff_max=0.05)
        self._rng = random.Random()  # backoff jitter; one generator, not one seeded per call
        self._targets: dict[str, tuple[str, dict[str, _Endpoint]]] = {}  # name -> (kind, azure name lower -> endpoint)
        self._write_faults: list[_Fault] = []
        self._read_faults: list[_Fault] = []
        self._lock = threading.RLock()
        self.after_write = after_write
        self.writes: list[MemoryWrite] = []  # landed writes
        self.write_attempts = 0
        self.reads = 0

    # ------------------------------------------------------------ set-up and test hooks

    def seed(self, target: Target, *, unmanaged: dict[str, dict[str, Any]] | None = None, **overrides: dict[str, Any]) -> None:
        """Create the target as the config describes it (all enabled); ``overrides``: region -> fields."""
        endpoints: dict[str, _Endpoint] = {}
        next_priority = 1
        for region, cfg in target.endpoints.items():
            name = azure_name(target, region)
            priority = cfg.priority
            if priority is None and target.kind == "traffic_manager":  # Traffic Manager assigns the next free one
                used = {e.priority for e in endpoints.values()} | {c.priority for c in target.endpoints.values()}
                while next_priority in used:
                    next_priority += 1
                priority = next_priority
            ep = _Endpoint(name=name, weight=cfg.weight, priority=priority)
            for key, value in overrides.get(region, {}).items():
                setattr(ep, key, value)
            endpoints[name.lower()] = ep
        for name, fields in (unmanaged or {}).items():
            endpoints[name.lower()] = _Endpoint(
                name=name, weight=fields.get("weight", 1), priority=fields.get("priority"), enabled=fields.get("enabled", True)
            )
        with self._lock:
            self._targets[target.name] = (target.kind, endpoints)

    def edit(self, target: Target, region: str, **fields: Any) -> None:
        """A portal edit: set ``weight``/``priority``/``enabled``/``monitor`` behind regionguard's back."""
        with self._lock:
            kind, endpoints = self._targets[target.name]
            ep = endpoints[azure_name(target, region).lower()]
            for key, value in fields.items():
                setattr(ep, key, value)
            if kind == "apim_backend_pool" and not ep.enabled:  # taken out of the pool
                ep.weight, ep.priority = None, None

    def endpoint(self, target: Target, name: str) -> EndpointSetting:
        with self._lock:
            ep = self._targets[target.name][1][name.lower()]
            return EndpointSetting(weight=ep.weight, priority=ep.priority, enabled=ep.enabled)

    def fail_writes(self, error: BaseException, count: int = 1) -> None:
        with self._lock:
            self._write_faults.append(_Fault(error=error, count=count))

    def fail_reads(self, error: BaseException, count: int = 1) -> None:
        with self._lock:
            self._read_faults.append(_Fault(error=error, count=count))

    def hang_writes(self, seconds: float, count: int = 1) -> None:
        """The next ``count`` write attempts block (bounded by the request's time left), then time out."""
        with self._lock:
            self._write_faults.append(_Fault(hang_s=seconds, count=count))

    def clear_faults(self) -> None:
        with self._lock:
            self._write_faults.clear()
            self._read_faults.clear()

    @staticmethod
    def _next_fault(faults: list[_Fault]) -> _Fault | None:
        if not faults:
            return None
        fault = faults[0]
        fault.count -= 1
        if fault.count <= 0:
            faults.pop(0)
        return fault

    # ------------------------------------------------------------ read

    def read_actual(self, target: Target, *, deadline: float | None = None) -> TargetState:
        deadline = deadline if deadline is not None else time.monotonic() + 5.0
        return call_with_retry(
            lambda left: self._read(target), deadline=deadline, policy=self._retry, what=f"read {target.name}", rng=self._rng
        )

    def _read(self, target: Target) -> TargetState:
        with self._lock:
            self.reads += 1
            fault = self._next_fault(self._read_faults)
            if fault is not None and fault.error is not None:
                raise fault.error
            if target.name not in self._targets:
                raise PermanentError(f"target {target.name!r} does not exist", code="ResourceNotFound", status=404)
            endpoints = self._targets[target.name][1]
            settings: dict[str, EndpointSetting] = {}
            monitor: dict[str, str] = {}
            owned: set[str] = set()
            for region in target.endpoints:
                ep = endpoints.get(azure_name(target, region).lower())
                if ep is None:
                    continue
                owned.add(ep.name.lower())
                settings[region] = EndpointSetting(weight=ep.weight, priority=ep.priority, enabled=ep.enabled)
                monitor[region] = ep.monitor if ep.enabled else "Disabled"
            unmanaged = tuple(sorted(ep.name for key, ep in endpoints.items() if key not in owned))
            return TargetState(target=target.name, endpoints=settings, monitor_status=monitor, unmanaged=unmanaged)

    # ------------------------------------------------------------ write

    def apply(self, target: Target, plan: Plan, *, deadline: float, on_result: OnResult | None = None) -> ApplyReport:
        report, groups = start_apply(target, plan, on_result)
        if not groups:
            return report
        names = {region: azure_name(target, region) for region in groups}
        if target.kind == "traffic_manager" and any(c.field is Field.PRIORITY for cs in groups.values() for c in cs):
            with self._lock:
                current = {k: ep.priority for k, ep in self._targets.get(target.name, ("", {}))[1].items()}
            steps, conflicts = order_for_unique_priorities(groups, names, current, PRIORITY_RANGE[target.kind])
            for region, conflict in conflicts.items():
                report_group(report, groups.pop(region), conflict, on_result)
        else:
            steps = [Step(region, desired_fields(changes)) for region, changes in groups.items()]
        for step in steps:
            if step.region not in groups:
                continue
            try:
                call_with_retry(
                    functools.partial(self._write, target, step, report),
                    deadline=deadline,
                    policy=self._retry,
                    what=f"write {target.name}/{names[step.region]}",
                    rng=self._rng,
                )
                error: ActuatorError | None = None if step.park else verify(step.fields, self._observed(target, names[step.region]))
            except ActuatorError as exc:
                error = exc
            if step.park and error is None:
                continue
            report_group(report, groups.pop(step.region), error, on_result)
            if error is None and self.after_write is not None:
                self.after_write(target.name, step.region)
        return report

    def _observed(self, target: Target, name: str) -> dict[Field, int | bool | None]:
        with self._lock:
            ep = self._targets[target.name][1][name.lower()]
            return {f: ep.get(f) for f in Field}

    def _write(self, target: Target, step: Step, report: ApplyReport, left: float) -> None:
        check_write_fence(0.0)  # like the SDK transport: nothing is sent once the lease would not outlive the write
        with self._lock:
            self.write_attempts += 1
            report.writes += 1
            fault = self._next_fault(self._write_faults)
        if fault is not None:
            if fault.error is not None:
                raise fault.error
            time.sleep(max(0.0, min(fault.hang_s, left)))
            raise TransientError("no answer before the request timed out", code="Timeout")
        with self._lock:
            if target.name not in self._targets:
                raise PermanentError(f"target {target.name!r} does not exist", code="ResourceNotFound", status=404)
            kind, endpoints = self._targets[target.name]
            name = azure_name(target, step.region)
            ep = endpoints.get(name.lower())
            if ep is None:
                raise PermanentError(f"endpoint {name!r} does not exist", code="NotFound", status=404)
            self._validate(kind, name, step.fields, endpoints)
            if kind == "apim_backend_pool":
                self._write_pool_member(target, step, ep, endpoints)
            else:
                for f, value in step.fields.items():
                    if f is Field.ENABLED:
                        ep.enabled = bool(value)
                    else:
                        setattr(ep, f.value, value)
            self.writes.append(MemoryWrite(target.name, ep.name, dict(step.fields)))

    @staticmethod
    def _write_pool_member(target: Target, step: Step, ep: _Endpoint, endpoints: dict[str, _Endpoint]) -> None:
        """An APIM pool member (docs/adr/0008): out of the pool it has no weight or priority;
        back in, it takes the written ones, else its configured baseline; a pool keeps one member."""
        enabled = bool(step.fields.get(Field.ENABLED, ep.enabled))
        if not enabled:
            if any(f is not Field.ENABLED for f in step.fields):
                raise PermanentError(f"{ep.name} is out of the pool: it has no weight or priority there", code="NotInPool")
            if ep.enabled and not any(e.enabled for e in endpoints.values() if e is not ep):
                raise PermanentError("that would leave the pool with no member; a pool needs at least one", code="PoolNeedsAMember")
            ep.enabled, ep.weight, ep.priority = False, None, None
            return
        cfg = target.endpoints[step.region]
        back = not ep.enabled
        weight = step.fields.get(Field.WEIGHT, cfg.weight if back else ep.weight)
        priority = step.fields.get(Field.PRIORITY, cfg.priority if back else ep.priority)
        ep.enabled = True
        ep.weight = None if weight is None else int(weight)
        ep.priority = None if priority is None else int(priority)

    @staticmethod
    def _validate(kind: str, name: str, fields: dict[Field, int | bool | None], endpoints: dict[str, _Endpoint]) -> None:
        for f, (lo, hi) in ((Field.WEIGHT, WEIGHT_RANGE.get(kind, (1, 1000))), (Field.PRIORITY, PRIORITY_RANGE.get(kind, (1, 1000)))):
            value = fields.get(f)
            if f in fields and (not isinstance(value, int) or not lo <= value <= hi):
                raise PermanentError(
                    f"The {f.value} of endpoint '{name}' must be between {lo} and {hi}; got {value!r}.", code="BadRequest", status=400
                )
        quantum = WEIGHT_QUANTUM.get(kind, 1)
        weight = fields.get(Field.WEIGHT)
        if isinstance(weight, int) and weight % quantum:
            raise PermanentError(f"The weight of '{name}' must be a multiple of {quantum}; got {weight}.", code="BadRequest", status=400)
        wanted = fields.get(Field.PRIORITY)
        if kind == "traffic_manager" and wanted is not None:
            holders = [ep.name for key, ep in endpoints.items() if key != name.lower() and ep.priority == wanted]
            if holders:
                raise PermanentError(
                    f"Priority {wanted} of endpoint '{name}' is already used by '{holders[0]}'.", code="BadRequest", status=400
                )
