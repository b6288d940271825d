"""A leader that cannot authenticate to Azure steps down, so a standby whose credential works can lead (docs/adr/0016).

The lease is renewed while the reconcile loop makes progress (ADR 0012). A
leader whose credential gets no token (the token endpoint hangs or refuses,
``BoundedCredential`` cuts each fetch: ``TokenTimeout``; the credential is
unavailable; ARM turns the token down) still finishes every tick, with errors,
so it would keep the lease for good while a standby with another identity
could have written. :class:`CredentialWatch` counts the reconcile ticks in
which every Azure call failed on the credential, and says when to step down;
:class:`StepDownTiming` holds its figures, all taken from the lease period.

Pure: time is passed in, nothing here reads a clock, the store or Azure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

STEP_DOWN_TICKS = 3  # consecutive ticks that failed on the credential: one tick can meet a token refresh's hiccup, three cannot
COOL_OFF_LEASES = 4.0  # how long a worker that stepped down leaves a free lease to others first, in lease periods
MAX_STREAK_LEASES = 8.0  # the longest a failing streak must last before a step-down, however often it stepped down before


@dataclass(frozen=True)
class StepDownTiming:
    """When a leader whose credential fails steps down, and how long it then yields (docs/adr/0016).

    ``ticks``: consecutive reconcile ticks in which every Azure call failed on
    the credential. ``for_s``: how long that streak must have lasted, at least
    (one lease period: a burst of ticks, e.g. on probe news, is not enough).
    Each step-down with no working tick since doubles it, up to ``max_for_s``,
    so two workers whose credentials both fail hand the lease over less and
    less often instead of every few ticks. ``cool_off_s``: after stepping down,
    the worker takes a free lease only once it has stayed free for
    ``grace_s`` (another worker polls it every fifth of a lease period, so it
    had five chances); after the cool-off it is a standby like any other.
    """

    ticks: int
    for_s: float
    grace_s: float
    cool_off_s: float
    max_for_s: float

    def __post_init__(self) -> None:
        if self.ticks < 1 or self.for_s < 0 or self.grace_s < 0 or self.cool_off_s < self.grace_s or self.max_for_s < self.for_s:
            raise ValueError(
                f"step-down timing out of order: ticks {self.ticks!r}, for {self.for_s!r} s, grace {self.grace_s!r} s,"
                f" cool-off {self.cool_off_s!r} s, longest streak {self.max_for_s!r} s"
            )

    @classmethod
    def for_lease(cls, ttl_s: float) -> StepDownTiming:
        return cls(
            ticks=STEP_DOWN_TICKS,
            for_s=ttl_s,
            grace_s=ttl_s,
            cool_off_s=COOL_OFF_LEASES * ttl_s,
            max_for_s=MAX_STREAK_LEASES * ttl_s,
        )


@dataclass(frozen=True)
class StepDown:
    """The watch's verdict: step down now, and why (for the audit event and the log)."""

    ticks: int
    streak_s: float
    error: str
    cool_off_until: datetime

    def reason(self) -> str:
        return (
            f"its Azure credential failed every call for {self.ticks} reconcile ticks over {self.streak_s:.1f} s ({self.error});"
            f" it leaves the lease to a worker whose credential works, and does not take it back before"
            f" {self.cool_off_until:%H:%M:%S} UTC unless no other worker does"
        )


class CredentialWatch:
    """Counts consecutive reconcile ticks in which every Azure call failed on this worker's credential."""

    def __init__(self, timing: StepDownTiming) -> None:
        self.timing = timing
        self.streak = 0  # consecutive ticks that failed on the credential
        self.streak_since: datetime | None = None  # when the first of them ended
        self.failing_since: datetime | None = None  # the outage as this worker saw it (kept across a step-down)
        self.error: str | None = None  # the last credential failure, "code: message"
        self.step_downs = 0  # step-downs with no working tick since (each doubles the next streak's length)
        self.stepped_down_at: datetime | None = None
        self.cool_off_until: datetime | None = None
        self.worked: bool | None = None  # the last tick that called Azure: did the credential work? (None: never called)

    @property
    def failing(self) -> bool:
        return self.worked is False

    @property
    def required_s(self) -> float:
        """How long the current streak must last before a step-down."""
        return min(self.timing.max_for_s, self.timing.for_s * 2**self.step_downs)

    def observe(self, calls: int, failures: int, error: str | None, now: datetime) -> StepDown | None:
        """One finished tick: ``calls`` Azure calls, ``failures`` of them on the credential. A tick that called
        nothing (or died before Azure) leaves the count as it is; one call that got past the credential ends it."""
        if calls <= 0:
            return None
        if failures < calls:
            self.worked = True
            self.streak, self.streak_since, self.failing_since, self.error = 0, None, None, None
            self.step_downs, self.stepped_down_at, self.cool_off_until = 0, None, None
            return None
        self.worked = False
        self.streak += 1
        self.error = error or self.error or "the credential failed"
        if self.streak_since is None:
            self.streak_since = now
        if self.failing_since is None:
            self.failing_since = now
        lasted = (now - self.streak_since).total_seconds()
        if self.streak < self.timing.ticks or lasted < self.required_s:
            return None
        return StepDown(
            ticks=self.streak,
            streak_s=lasted,
            error=self.error,
            cool_off_until=now + timedelta(seconds=self.timing.cool_off_s),
        )

    def stepped_down(self, verdict: StepDown, now: datetime) -> None:
        """The lease was given up: the next streak (if it leads again) starts from nothing and must last longer."""
        self.step_downs += 1
        self.streak, self.streak_since = 0, None
        self.stepped_down_at = now
        self.cool_off_until = verdict.cool_off_until

    def flag_value(self, now: datetime) -> dict[str, Any] | None:
        """The ``credential:<holder>`` flag (None while the credential works): what `regionguard status` shows."""
        if not self.failing:
            return None
        return {
            "error": self.error,
            "since": self.failing_since.isoformat() if self.failing_since else None,
            "stepped_down_at": self.stepped_down_at.isoformat() if self.stepped_down_at else None,
            "cool_off_until": self.cool_off_until.isoformat() if self.cool_off_until else None,
            "at": now.isoformat(),
        }


@dataclass
class CoolOff:
    """A worker that stepped down: until ``until`` it takes a free lease only once it has stayed free for ``grace_s``.

    ``free_since`` is when this worker last saw the lease become free (its own
    release first). A lease held by anyone resets it: the next free spell is
    left to the others for ``grace_s`` again.
    """

    until: datetime
    grace_s: float
    free_since: datetime | None

    def may_take(self, held: bool, now: datetime) -> bool:
        """May the worker try for the lease now? ``held``: the lease row names a holder whose lease has not run out."""
        if now >= self.until:
            return True
        if held:
            self.free_since = None
            return False
        if self.free_since is None:
            self.free_since = now
        return (now - self.free_since).total_seconds() >= self.grace_s


__all__ = ["COOL_OFF_LEASES", "MAX_STREAK_LEASES", "STEP_DOWN_TICKS", "CoolOff", "CredentialWatch", "StepDown", "StepDownTiming"]
