"""One writer: a lease row in the database, taken and renewed by compare-and-set.

Only the holder plans and writes to Azure; every write is fenced with the
token the lease handed out (a new holder always gets a larger one). Right
before each write the holder checks that its lease stays valid for longer
than that write can take (the call's hard deadline plus a clock-skew
allowance, :class:`LeaseTiming`), so a worker that paused, or whose lease is
about to run out, cannot have a write in flight once another took over. The
timing argument is docs/adr/0012.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from controlplane.domain import AuditEvent, Clock, EventKind, LeaseName, SystemClock
from controlplane.runtime.stepdown import CoolOff
from controlplane.store import Store, open_store
from controlplane.store.db import IDLE_IN_TRANSACTION_S

log = logging.getLogger(__name__)

MAX_UNRECORDED = 100  # lease events kept while the database is down (the oldest dropped first)


def make_holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class LeaseTiming:
    """The figures the one-writer argument rests on (docs/adr/0012).

    ``ttl_s``: the lease period. ``call_s``: the hard wall-clock deadline of
    any single Azure call (reads and writes), at most a third of the lease.
    ``skew_s``: how far two workers' clocks may disagree. A write starts only
    if the lease, by the writer's clock, is still valid ``call_s + skew_s``
    after the check; renewals come every ``renew_s`` (a fifth of the lease),
    so a live holder always has room to write.
    """

    ttl_s: float
    call_s: float
    skew_s: float

    def __post_init__(self) -> None:
        if self.ttl_s <= 0 or self.call_s <= 0 or self.skew_s < 0:
            raise ValueError(f"lease timing must be positive: ttl {self.ttl_s!r}, call {self.call_s!r}, skew {self.skew_s!r}")
        if self.call_s + self.skew_s >= self.ttl_s - self.renew_s:
            raise ValueError(
                f"an Azure call's deadline ({self.call_s:g} s) plus the clock-skew allowance ({self.skew_s:g} s) must be shorter"
                f" than the lease ({self.ttl_s:g} s) less one renewal period ({self.renew_s:g} s)"
            )

    @property
    def renew_s(self) -> float:
        return max(0.5, self.ttl_s / 5) if self.ttl_s > 2.5 else self.ttl_s / 5

    @property
    def idle_in_transaction_s(self) -> float:
        """How long PostgreSQL lets a worker's session sit inside a transaction (then it ends it, and its locks go).

        A worker stopped inside its renewal holds the lease row's lock; the renewal
        started at most ``renew_s`` after the last committed one, so the lock is gone
        by ``renew_s`` plus this, which leaves half of ``ttl_s - renew_s`` before
        that lease runs out: the standby never waits on it (docs/adr/0012)."""
        return min(IDLE_IN_TRANSACTION_S, (self.ttl_s - self.renew_s) / 2)

    @classmethod
    def for_lease(cls, ttl_s: float, request_timeout: float, skew_s: float | None = None) -> LeaseTiming:
        """Calls get the configured request timeout, but never more than a third of the lease."""
        skew = min(1.0, ttl_s / 10) if skew_s is None else skew_s
        return cls(ttl_s=ttl_s, call_s=min(request_timeout, ttl_s / 3), skew_s=skew)


def open_worker_store(url: str, timing: LeaseTiming, migrate: bool = False) -> Store:
    """The worker's store: its PostgreSQL sessions are ended after ``timing.idle_in_transaction_s`` idle inside a transaction."""
    return open_store(url, migrate=migrate, idle_in_transaction_s=timing.idle_in_transaction_s)


@dataclass(frozen=True)
class LeaseState:
    leader: bool
    token: int | None


class LeaderElector:
    def __init__(
        self, store: Store, holder: str | None = None, ttl_s: float = 15.0, clock: Clock | None = None, name: LeaseName = LeaseName.LEADER
    ) -> None:
        self.store = store
        self.holder = holder or make_holder_id()
        self.ttl_s = ttl_s
        self.clock = clock or SystemClock()
        self.name = name
        self._lock = threading.Lock()
        self._token: int | None = None
        self._expires: datetime | None = None  # by our clock: the lease is ours until then at most
        self._released = False  # after release() a late tick must not take the lease again
        self._cool_off: CoolOff | None = None  # after step_down(): a free lease is left to the others for a while
        self._unrecorded: list[AuditEvent] = []  # lease events to record once the database answers again (bounded below)

    @property
    def token(self) -> int | None:
        return self._token

    @property
    def is_leader(self) -> bool:
        expires = self._expires
        return self._token is not None and (expires is None or self.clock.now() < expires)

    def tick(self) -> LeaseState:
        """Take or renew the lease. Never raises: a database error means 'not leader'."""
        with self._lock:
            if self._released:
                return LeaseState(False, None)
            before = self._token
            now = self.clock.now()
            if before is None and not self._may_try(now):
                self._flush_unrecorded()
                return LeaseState(False, None)
            try:
                self._token = self.store.try_acquire_lease(self.name, self.holder, self.ttl_s, now)
            except Exception as exc:
                if before is not None:
                    log.warning("lease renewal failed, stepping down: %s", type(exc).__name__)
                else:
                    log.info("could not try for the lease: %s", type(exc).__name__)
                self._token = None
            self._expires = now + timedelta(seconds=self.ttl_s) if self._token is not None else None
            if self._token != before:
                self._record(before, self._token)
            elif self._unrecorded:
                self._flush_unrecorded()
            return LeaseState(self._token is not None, self._token)

    def lapse(self, why: str) -> None:
        """Stop renewing: the lease runs out on its own and a standby takes over (a stuck loop must not hold it)."""
        with self._lock:
            if self._token is None:
                return
            if self.is_leader:
                log.warning("not renewing the lease: %s", why)
                return
            before, self._token, self._expires = self._token, None, None
            self._record(before, None, why)

    def step_down(self, why: str, until: datetime, grace_s: float, data: Mapping[str, Any] | None = None) -> bool:
        """Give the lease up now, for a standby to take, and leave it to the others until ``until``.

        Until then a free lease is taken back only once it has stayed free for
        ``grace_s`` (no other worker wanted it: leading with a broken
        credential beats nobody leading). The caller makes sure none of our
        writes is in flight (the worker holds its apply lock). Returns False
        when we did not lead.
        """
        with self._lock:
            before = self._token
            if before is None:
                return False
            try:
                self.store.release_lease(self.name, self.holder)
            except Exception as exc:  # not renewed either: it runs out within a lease period
                log.warning("lease release failed (%s): the lease runs out on its own", type(exc).__name__)
            now = self.clock.now()
            self._token, self._expires = None, None
            self._cool_off = CoolOff(until=until, grace_s=grace_s, free_since=now)
            self._record(before, None, why, data={**(data or {}), "stepped_down": True}, verb="stepped down")
            return True

    @property
    def cooling_off(self) -> bool:
        return self._cool_off is not None

    def _may_try(self, now: datetime) -> bool:
        """Outside a cool-off, always; inside, only for a lease nobody else has taken for its grace period."""
        cool_off = self._cool_off
        if cool_off is None:
            return True
        if now >= cool_off.until:
            self._cool_off = None
            return True
        try:
            lease = self.store.lease(self.name)
        except Exception as exc:
            log.info("could not read the lease: %s", type(exc).__name__)
            return False
        held = lease is not None and lease.holder_at(now) is not None
        return cool_off.may_take(held, now)

    def still_holds(self, for_s: float = 0.0) -> bool:
        """Fencing check right before a write: the lease is ours and stays ours ``for_s`` seconds more."""
        token = self._token
        if token is None:
            return False
        try:
            return self.store.holds_lease(self.name, self.holder, token, self.clock.now() + timedelta(seconds=for_s))
        except Exception:
            return False

    def release(self) -> None:
        """Give the lease up for good (a stopping worker); later ticks do nothing."""
        with self._lock:
            self._released = True
            if self._token is None:
                return
            try:
                self.store.release_lease(self.name, self.holder)
                self._record(self._token, None)
            except Exception as exc:
                log.warning("lease release failed: %s", type(exc).__name__)
            self._token = None

    def _record(
        self,
        before: int | None,
        after: int | None,
        why: str | None = None,
        data: Mapping[str, Any] | None = None,
        verb: str = "stopped being leader",
    ) -> None:
        if after is not None:
            summary, severity = f"{self.holder} became leader (fencing token {after})", "info"
        else:
            summary, severity = f"{self.holder} {verb} (token {before})", "warning" if before else "info"
            if why:
                summary = f"{summary}: {why}"
        log.info(summary)
        event = AuditEvent(
            kind=EventKind.LEASE,
            at=self.clock.now(),
            actor=f"worker:{self.holder}",
            summary=summary,
            severity=severity,
            data={**(data or {}), "token": after, "previous": before},
        )
        self._unrecorded = [*self._unrecorded, event][-MAX_UNRECORDED:]
        self._flush_unrecorded()

    def _flush_unrecorded(self) -> None:
        """Lease events the database could not take (it was down: that is often why the lease was lost) go in once it is back."""
        while self._unrecorded:
            try:
                self.store.add_event(self._unrecorded[0])
            except Exception as exc:
                log.warning("cannot record %d lease event(s) yet: %s", len(self._unrecorded), type(exc).__name__)
                return
            self._unrecorded.pop(0)
