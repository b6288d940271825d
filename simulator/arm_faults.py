"""Fault injection, the write token bucket and the request log of the fake ARM.

All three are plain, thread-safe objects: tests and the admin API change them
from one thread while the server reads them from its event-loop thread.
"""

from __future__ import annotations

import itertools
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

FaultKind = Literal["throttle", "busy", "error", "latency", "hang", "hold", "garbage", "trickle", "huge"]
FAULT_KINDS: tuple[str, ...] = ("throttle", "busy", "error", "latency", "hang", "hold", "garbage", "trickle", "huge")

Clock = Callable[[], float]


@dataclass
class FaultRule:
    """One injected fault.

    ``count`` is how many more matching requests it hits (``None``: no limit);
    ``fraction`` is the chance a matching request is hit (1.0: every one).
    ``method`` and ``path_contains`` narrow what matches (case-insensitive).

    Kinds: ``throttle`` (429 ``SubscriptionRequestsThrottled``, with
    ``Retry-After`` unless ``retry_after`` is None), ``busy`` (429
    ``RetryableErrorDueToAnotherOperation``), ``error`` (``status`` 500/502/503/504),
    ``latency`` (adds ``latency_s`` then answers normally; stacks with the
    others) and ``hang`` (holds the request until the client goes away, the
    server stops or ``hang_s`` passes, then answers 504), ``hold`` (holds the
    request, not yet handled, until the test releases it (``FakeArm.release``,
    ``POST /_arm/release``), the server stops or ``hang_s`` passes, then handles
    it and answers as ARM would: a write lands even if its client has gone,
    since ARM does not cancel a request it has received), ``garbage`` (200 with
    a body that is not JSON, as a broken proxy sends; the request is not
    handled), ``trickle`` (the request is handled, then its answer's headers
    go out and the body follows one byte every ``trickle_s``) and ``huge``
    (200 with a JSON body of ``body_bytes`` bytes, streamed; not handled).
    """

    kind: FaultKind
    count: int | None = 1
    fraction: float = 1.0
    method: str | None = None
    path_contains: str | None = None
    status: int | None = None
    retry_after: float | None = None
    latency_s: float = 0.0
    hang_s: float = 30.0
    code: str | None = None
    message: str | None = None
    trickle_s: float = 1.0
    body_bytes: int = 64 * 1024 * 1024
    id: int = 0
    hits: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind {self.kind!r} is not one of {FAULT_KINDS}")
        if self.count is not None and self.count < 0:
            raise ValueError("count must be >= 0 or None")
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError("fraction must be between 0 and 1")
        if self.kind == "error" and self.status is None:
            self.status = 500
        if self.kind in ("throttle", "busy"):
            self.status = 429
        if self.latency_s < 0 or self.hang_s < 0:
            raise ValueError("latency_s and hang_s must be >= 0")
        if self.trickle_s <= 0 or self.body_bytes < 0:
            raise ValueError(f"trickle_s must be > 0 and body_bytes >= 0 (got {self.trickle_s!r}, {self.body_bytes!r})")

    def matches(self, method: str, path: str) -> bool:
        if self.count is not None and self.count <= 0:
            return False
        if self.method and self.method.upper() != method.upper():
            return False
        return not (self.path_contains and self.path_contains.lower() not in path.lower())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaultRule:
        allowed = {f for f in cls.__dataclass_fields__ if f not in ("id", "hits")}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown fault field(s): {sorted(unknown)}")
        return cls(**dict(data))


@dataclass(frozen=True)
class FaultDecision:
    """What the fault book decided for one request."""

    latency_s: float = 0.0
    terminal: FaultRule | None = None

    @property
    def labels(self) -> str | None:
        parts = []
        if self.latency_s:
            parts.append(f"latency:{self.latency_s:g}s")
        if self.terminal is not None:
            parts.append(self.terminal.kind)
        return ",".join(parts) or None


class FaultBook:
    """The list of active fault rules; decides per request, in insertion order."""

    def __init__(self, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._ids = itertools.count(1)
        self._random = random.Random(seed)

    def add(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            rule.id = next(self._ids)
            self._rules.append(rule)
            return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def rules(self) -> list[FaultRule]:
        with self._lock:
            return [FaultRule(**asdict(r)) for r in self._rules]

    def decide(self, method: str, path: str) -> FaultDecision:
        """Consume matching rules: all matching latency rules, then the first other one."""
        latency = 0.0
        terminal: FaultRule | None = None
        with self._lock:
            for rule in self._rules:
                if not rule.matches(method, path):
                    continue
                if rule.kind != "latency" and terminal is not None:
                    continue
                if rule.fraction < 1.0 and self._random.random() >= rule.fraction:
                    continue
                self._consume(rule)
                if rule.kind == "latency":
                    latency += rule.latency_s
                else:
                    terminal = FaultRule(**asdict(rule))
            self._rules = [r for r in self._rules if r.count is None or r.count > 0]
        return FaultDecision(latency_s=latency, terminal=terminal)

    @staticmethod
    def _consume(rule: FaultRule) -> None:
        rule.hits += 1
        if rule.count is not None:
            rule.count -= 1


class TokenBucket:
    """ARM's per-subscription write limit: ``capacity`` tokens refilling ``refill_per_s``."""

    def __init__(self, capacity: float, refill_per_s: float, clock: Clock = time.monotonic) -> None:
        if capacity < 1 or refill_per_s <= 0:
            raise ValueError("capacity must be >= 1 and refill_per_s > 0")
        self.capacity = float(capacity)
        self.refill_per_s = float(refill_per_s)
        self._clock = clock
        self._tokens = float(capacity)
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.refill_per_s)
        self._at = now

    def take(self) -> tuple[bool, int, float]:
        """Take one token: (taken, tokens left, seconds until one is available)."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True, int(self._tokens), 0.0
        wait = (1.0 - self._tokens) / self.refill_per_s
        return False, 0, wait


class WriteLimiter:
    """One :class:`TokenBucket` per subscription (case-insensitive)."""

    def __init__(self, capacity: float, refill_per_s: float, clock: Clock = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._capacity = capacity
        self._refill = refill_per_s
        self._buckets: dict[str, TokenBucket] = {}
        TokenBucket(capacity, refill_per_s, clock)  # validate the figures now

    def configure(self, capacity: float, refill_per_s: float) -> None:
        TokenBucket(capacity, refill_per_s, self._clock)
        with self._lock:
            self._capacity, self._refill = capacity, refill_per_s
            self._buckets.clear()

    def take(self, subscription: str) -> tuple[bool, int, int]:
        """(allowed, remaining writes, Retry-After seconds when refused)."""
        with self._lock:
            key = subscription.lower()
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(self._capacity, self._refill, self._clock)
            ok, left, wait = bucket.take()
        return ok, left, max(1, math.ceil(wait)) if not ok else 0


LOGGED_HEADERS = ("If-Match", "If-None-Match", "Content-Type", "User-Agent")


@dataclass(frozen=True)
class LoggedRequest:
    """One request the fake ARM answered (admin requests are not logged)."""

    method: str
    path: str
    api_version: str | None
    body: Any
    status: int
    time: float  # wall clock (time.time()) when it was answered
    request_id: str
    query: dict[str, str] = field(default_factory=dict)
    fault: str | None = None
    duration_ms: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)  # only LOGGED_HEADERS (never Authorization)
    received: float = 0.0  # wall clock when it arrived (before any fault held or delayed it)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class HeldRequest:
    """A request a ``hold`` fault keeps waiting, unhandled, until :meth:`release`."""

    method: str
    path: str
    received: float  # wall clock
    user_agent: str | None = None
    released: threading.Event = field(default_factory=threading.Event, repr=False)

    def release(self) -> None:
        self.released.set()

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path, "received": self.received, "user_agent": self.user_agent}


class RequestLog:
    """Bounded, thread-safe list of :class:`LoggedRequest` (oldest dropped first)."""

    def __init__(self, limit: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._entries: list[LoggedRequest] = []
        self._limit = limit

    def append(self, entry: LoggedRequest) -> None:
        with self._lock:
            self._entries.append(entry)
            if len(self._entries) > self._limit:
                del self._entries[: len(self._entries) - self._limit]

    def entries(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
