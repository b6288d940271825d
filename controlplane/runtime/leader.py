"""One writer: a lease row in the database, taken and renewed by compare-and-set.

Only the holder plans and writes to Azure; every write is fenced with the
token the lease handed out (a new holder always gets a larger one), and the
token is checked again right before each write (``Store.holds_lease``), so a
worker that paused past its lease cannot write after another took over.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass

from controlplane.domain import AuditEvent, Clock, EventKind, LeaseName, SystemClock
from controlplane.store import Store

log = logging.getLogger(__name__)


def make_holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


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
        self._released = False  # after release() a late tick must not take the lease again

    @property
    def token(self) -> int | None:
        return self._token

    @property
    def is_leader(self) -> bool:
        return self._token is not None

    def tick(self) -> LeaseState:
        """Take or renew the lease. Never raises: a database error means 'not leader'."""
        with self._lock:
            if self._released:
                return LeaseState(False, None)
            before = self._token
            try:
                self._token = self.store.try_acquire_lease(self.name, self.holder, self.ttl_s, self.clock.now())
            except Exception as exc:
                log.warning("lease renewal failed, stepping down: %s", type(exc).__name__)
                self._token = None
            if self._token != before:
                self._record(before, self._token)
            return LeaseState(self._token is not None, self._token)

    def still_holds(self) -> bool:
        """Fencing check right before a write."""
        token = self._token
        if token is None:
            return False
        try:
            return self.store.holds_lease(self.name, self.holder, token, self.clock.now())
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

    def _record(self, before: int | None, after: int | None) -> None:
        if after is not None:
            summary, severity = f"{self.holder} became leader (fencing token {after})", "info"
        else:
            summary, severity = f"{self.holder} stopped being leader (token {before})", "warning" if before else "info"
        log.info(summary)
        try:
            self.store.add_event(
                AuditEvent(
                    kind=EventKind.LEASE,
                    at=self.clock.now(),
                    actor=f"worker:{self.holder}",
                    summary=summary,
                    severity=severity,
                    data={"token": after, "previous": before},
                )
            )
        except Exception:
            pass
