"""The fault model of the simulated Azure OpenAI regions (pure values).

Shared by the simulator (``simulator.llm``) and by the replay
timeline format, so it does no I/O and reads no clock. Randomness is always
drawn from a ``random.Random`` the caller passes in, so a seeded run (or a
replay) makes the same decisions every time.

A fault is written as a small mapping, in YAML or JSON alike::

    {fault: down}
    {fault: slow, ttft_ms: 9000}
    {fault: slow, multiplier: 3}
    {fault: throttle, rate: 0.7, retry_after_s: 5}
    {fault: error, rate: 0.5, statuses: [503]}
    {fault: down, vantages: [eu]}

and a timeline event adds when and where::

    {at: 600s, region: eastus, deployment: gpt-4o, fault: down}

``region`` may be omitted (or ``"*"``) to mean every region; ``fault: none``
lifts the faults of that scope.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from controlplane.durations import parse_duration

KINDS: tuple[str, ...] = (
    "down",
    "hang",
    "slow",
    "throttle",
    "error",
    "bad_content",
    "truncate",
    "content_filter",
    "auth",
    "none",
)
"""Every fault kind, ``none`` meaning "clear the faults of this scope"."""

ERROR_STATUSES: frozenset[int] = frozenset({500, 502, 503, 504})
DEFAULT_STATUSES: tuple[int, ...] = (500, 502, 503)
DEFAULT_RETRY_AFTER_S = 1.0
ALL_REGIONS = "*"

_FAULT_KEYS = frozenset({"fault", "kind", "rate", "ttft_ms", "multiplier", "retry_after_s", "statuses", "vantages"})
_EVENT_KEYS = frozenset({"at", "region", "deployment"})


@dataclass(frozen=True)
class Fault:
    """One injected fault, validated on construction.

    - ``kind``: one of :data:`KINDS`.
    - ``rate``: fraction (0..1) of matching requests it hits; 1.0 = all.
    - ``ttft_ms`` / ``multiplier``: only for ``slow``. ``ttft_ms`` fixes the
      time to first token exactly (no jitter); ``multiplier`` scales the
      deployment's TTFT and per-token time (when both are given, TTFT is
      fixed and per-token time is scaled).
    - ``retry_after_s``: only for ``throttle``: the Retry-After the 429 carries.
    - ``statuses``: only for ``error``: which of 500/502/503/504 to answer,
      chosen uniformly per request.
    - ``vantages``: when set, only requests whose ``x-regionguard-vantage``
      header names one of them are hit (a partition seen by one prober).
    """

    kind: str
    rate: float = 1.0
    ttft_ms: float | None = None
    multiplier: float | None = None
    retry_after_s: float = DEFAULT_RETRY_AFTER_S
    statuses: tuple[int, ...] = DEFAULT_STATUSES
    vantages: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        # Accept lists (and a single vantage name) from hand-built faults; store tuples.
        if isinstance(self.statuses, list):
            object.__setattr__(self, "statuses", tuple(self.statuses))
        if isinstance(self.vantages, str):
            object.__setattr__(self, "vantages", (self.vantages,))
        elif isinstance(self.vantages, list):
            object.__setattr__(self, "vantages", tuple(self.vantages))
        if self.kind not in KINDS:
            raise ValueError(f"fault: unknown kind {self.kind!r} (one of {', '.join(KINDS)})")
        _check_fraction("rate", self.rate)
        self._check_slow()
        self._check_throttle()
        self._check_error()
        self._check_vantages()

    def _check_slow(self) -> None:
        if self.kind != "slow":
            for name in ("ttft_ms", "multiplier"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name}: only applies to fault 'slow', not {self.kind!r}")
            return
        if self.ttft_ms is None and self.multiplier is None:
            raise ValueError("ttft_ms: fault 'slow' needs ttft_ms or multiplier")
        if self.ttft_ms is not None:
            _check_number("ttft_ms", self.ttft_ms, minimum=0.0)
        if self.multiplier is not None:
            _check_number("multiplier", self.multiplier, minimum=0.0)
            if self.multiplier <= 0:
                raise ValueError(f"multiplier: must be > 0, got {self.multiplier!r}")

    def _check_throttle(self) -> None:
        if self.kind != "throttle" and self.retry_after_s != DEFAULT_RETRY_AFTER_S:
            raise ValueError(f"retry_after_s: only applies to fault 'throttle', not {self.kind!r}")
        _check_number("retry_after_s", self.retry_after_s, minimum=0.0)

    def _check_error(self) -> None:
        if self.kind != "error" and tuple(self.statuses) != DEFAULT_STATUSES:
            raise ValueError(f"statuses: only applies to fault 'error', not {self.kind!r}")
        if not isinstance(self.statuses, tuple) or not self.statuses:
            raise ValueError("statuses: must be a non-empty list of HTTP statuses")
        for status in self.statuses:
            if isinstance(status, bool) or status not in ERROR_STATUSES:
                raise ValueError(f"statuses: {status!r} is not one of {sorted(ERROR_STATUSES)}")

    def _check_vantages(self) -> None:
        if self.vantages is None:
            return
        if not isinstance(self.vantages, tuple) or not self.vantages:
            raise ValueError("vantages: must be a non-empty list of vantage names")
        for vantage in self.vantages:
            if not isinstance(vantage, str) or not vantage.strip():
                raise ValueError(f"vantages: {vantage!r} is not a vantage name")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fault:
        """Build from a mapping (``fault`` or ``kind`` names the kind); a bad field is named in the ValueError."""
        if not isinstance(data, Mapping):
            raise ValueError(f"fault: expected a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - _FAULT_KEYS)
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown field (fields: {', '.join(sorted(_FAULT_KEYS))})")
        if "fault" in data and "kind" in data:
            raise ValueError("kind: give either 'fault' or 'kind', not both")
        kind = data.get("fault", data.get("kind"))
        if not isinstance(kind, str):
            raise ValueError(f"fault: missing or not a string ({kind!r})")
        kwargs: dict[str, Any] = {"kind": kind.strip().lower()}
        for name in ("rate", "ttft_ms", "multiplier"):
            if data.get(name) is not None:
                kwargs[name] = _number(name, data[name])
        if data.get("retry_after_s") is not None:
            kwargs["retry_after_s"] = parse_duration(data["retry_after_s"], "retry_after_s")
        if data.get("statuses") is not None:
            kwargs["statuses"] = _statuses(data["statuses"])
        if data.get("vantages") is not None:
            kwargs["vantages"] = _vantages(data["vantages"])
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The mapping :meth:`from_dict` reads back (only fields that differ from defaults)."""
        out: dict[str, Any] = {"fault": self.kind}
        if self.rate != 1.0:
            out["rate"] = self.rate
        if self.ttft_ms is not None:
            out["ttft_ms"] = self.ttft_ms
        if self.multiplier is not None:
            out["multiplier"] = self.multiplier
        if self.kind == "throttle":
            out["retry_after_s"] = self.retry_after_s
        if self.kind == "error":
            out["statuses"] = list(self.statuses)
        if self.vantages is not None:
            out["vantages"] = list(self.vantages)
        return out

    def applies_to_vantage(self, vantage: str | None) -> bool:
        """True when the fault is not vantage-limited or names this vantage."""
        return self.vantages is None or (vantage is not None and vantage in self.vantages)

    @property
    def is_hard_down(self) -> bool:
        """A ``down`` that hits every request from everywhere (the listener itself can be closed)."""
        return self.kind == "down" and self.rate >= 1.0 and self.vantages is None


def _check_fraction(name: str, value: Any) -> None:
    _check_number(name, value, minimum=0.0)
    if value > 1.0:
        raise ValueError(f"{name}: must be between 0 and 1, got {value!r}")


def _check_number(name: str, value: Any, minimum: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name}: {value!r} is not a finite number")
    if value < minimum:
        raise ValueError(f"{name}: must be >= {minimum:g}, got {value!r}")


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{name}: {value!r} is not a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: {value!r} is not a number") from None


def _statuses(value: Any) -> tuple[int, ...]:
    items = [value] if isinstance(value, int | str) else value
    if not isinstance(items, list | tuple):
        raise ValueError(f"statuses: {value!r} is not a list of HTTP statuses")
    out: list[int] = []
    for item in items:
        try:
            out.append(int(item))
        except (TypeError, ValueError):
            raise ValueError(f"statuses: {item!r} is not an HTTP status") from None
    return tuple(out)


def _vantages(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ValueError(f"vantages: {value!r} is not a list of vantage names")
    return tuple(str(item).strip() if isinstance(item, str) else item for item in items)


def fault_fires(fault: Fault, vantage: str | None, rng: random.Random) -> bool:
    """Whether ``fault`` hits this request.

    Draws from ``rng`` only when the vantage matches and ``0 < rate < 1``, so
    a run of requests that all fire (or never match) leaves the generator's
    sequence untouched.
    """
    if fault.kind == "none" or not fault.applies_to_vantage(vantage):
        return False
    if fault.rate >= 1.0:
        return True
    if fault.rate <= 0.0:
        return False
    return rng.random() < fault.rate


def choose_status(fault: Fault, rng: random.Random) -> int:
    """The HTTP status an ``error`` fault answers with for one request."""
    if len(fault.statuses) == 1:
        return fault.statuses[0]
    return fault.statuses[rng.randrange(len(fault.statuses))]


@dataclass(frozen=True)
class FaultEntry:
    """A fault placed on a region (``deployment=None``) or on one deployment of it."""

    region: str
    deployment: str | None
    fault: Fault

    def to_dict(self) -> dict[str, Any]:
        return {"region": self.region, "deployment": self.deployment, **self.fault.to_dict()}


@dataclass
class FaultBook:
    """The faults in force, by scope. Pure bookkeeping, no I/O.

    A scope is a region or one deployment of a region. A scope holds at most
    one fault of each kind: setting a fault replaces the one of the same kind
    there (so ``slow`` and ``throttle`` can be combined), and ``none`` lifts
    every fault of that scope. For a request, a deployment's fault of a kind
    overrides the region's fault of the same kind.
    """

    _faults: dict[tuple[str, str | None], dict[str, Fault]] = field(default_factory=dict)

    def set(self, region: str, fault: Fault, deployment: str | None = None) -> None:
        scope = (region, deployment)
        if fault.kind == "none":
            self._faults.pop(scope, None)
            return
        self._faults.setdefault(scope, {})[fault.kind] = fault

    def clear(self, region: str | None = None, deployment: str | None = None) -> None:
        """Lift faults: all of them, a region's (with its deployments'), or one deployment's."""
        if region is None:
            self._faults.clear()
            return
        for scope in list(self._faults):
            if scope[0] == region and (deployment is None or scope[1] == deployment):
                del self._faults[scope]

    def for_request(self, region: str, deployment: str | None) -> dict[str, Fault]:
        """Faults that may apply to a request on ``region``/``deployment``, by kind."""
        merged = dict(self._faults.get((region, None), {}))
        if deployment is not None:
            merged.update(self._faults.get((region, deployment), {}))
        return merged

    def hard_down(self, region: str) -> bool:
        fault = self._faults.get((region, None), {}).get("down")
        return fault is not None and fault.is_hard_down

    def entries(self) -> list[FaultEntry]:
        return [
            FaultEntry(region, deployment, fault)
            for (region, deployment), by_kind in sorted(self._faults.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))
            for fault in by_kind.values()
        ]

    def __bool__(self) -> bool:
        return bool(self._faults)


@dataclass(frozen=True)
class TimelineEvent:
    """A fault to apply ``at_s`` seconds after a timeline starts.

    ``region=None`` means every region.
    """

    at_s: float
    fault: Fault
    region: str | None = None
    deployment: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TimelineEvent:
        if not isinstance(data, Mapping):
            raise ValueError(f"event: expected a mapping, got {type(data).__name__}")
        at_s = parse_duration(data.get("at", 0), "at")
        region = _optional_name(data, "region")
        if region == ALL_REGIONS:
            region = None
        deployment = _optional_name(data, "deployment")
        if deployment is not None and region is None:
            raise ValueError("deployment: a deployment fault needs a region")
        fault = Fault.from_dict({k: v for k, v in data.items() if k not in _EVENT_KEYS})
        return cls(at_s=at_s, fault=fault, region=region, deployment=deployment)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"at": f"{self.at_s:g}s"}
        if self.region is not None:
            out["region"] = self.region
        if self.deployment is not None:
            out["deployment"] = self.deployment
        out.update(self.fault.to_dict())
        return out


def _optional_name(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{key}: {value!r} is not a name")
    return value.strip()


def parse_timeline(items: Iterable[Mapping[str, Any] | TimelineEvent]) -> tuple[TimelineEvent, ...]:
    """Events sorted by time (stable for equal times); errors name the event index and field."""
    events: list[TimelineEvent] = []
    for index, item in enumerate(items):
        if isinstance(item, TimelineEvent):
            events.append(item)
            continue
        try:
            events.append(TimelineEvent.from_dict(item))
        except ValueError as exc:
            raise ValueError(f"events[{index}].{exc}") from None
    return tuple(sorted(events, key=lambda e: e.at_s))
