"""A leader that cannot authenticate to Azure steps down; how it counts, and how it yields afterwards (docs/adr/0016).

Pure values and a fake clock: the watch (controlplane/runtime/stepdown.py),
the classification of a failed call as the credential's, and the elector's
cool-off over a lease table kept in a dict.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError

from controlplane.actuators.base import PermanentError, TransientError, classify, credential_failure
from controlplane.actuators.credentials import TokenDeadlineExceeded
from controlplane.domain import AuditEvent, LeaseName
from controlplane.runtime.leader import LeaderElector
from controlplane.runtime.reconcile import TickReport
from controlplane.runtime.stepdown import CoolOff, CredentialWatch, StepDown, StepDownTiming
from controlplane.store.records import Lease
from tests.fakes import EPOCH, FakeClock

L = 15.0  # the default lease period
TIMING = StepDownTiming.for_lease(L)
TOKEN_TIMEOUT = "TokenTimeout: DefaultAzureCredential: no token within its hard deadline of 5 s"


def _fail(watch: CredentialWatch, clock: FakeClock, ticks: int, every_s: float) -> list[StepDown | None]:
    """``ticks`` ticks, ``every_s`` apart, in which each of 4 calls failed on the credential."""
    out = []
    for _ in range(ticks):
        clock.advance(every_s)
        out.append(watch.observe(4, 4, TOKEN_TIMEOUT, clock.now()))
    return out


# ---------------------------------------------------------------- what counts as the credential's failure


def test_a_token_that_never_comes_or_is_refused_is_the_credentials_failure_and_armss_5xx_429_and_timeouts_are_not() -> None:
    assert credential_failure(classify(TokenDeadlineExceeded("DefaultAzureCredential: no token")))
    assert credential_failure(classify(ClientAuthenticationError("ManagedIdentityCredential authentication unavailable")))
    assert credential_failure(PermanentError("The access token is invalid.", code="InvalidAuthenticationToken", status=401))
    assert not credential_failure(TransientError("busy", code="ServiceUnavailable", status=503))
    assert not credential_failure(TransientError("slow down", code="TooManyRequests", status=429))
    assert not credential_failure(TransientError("too many writes", code="SubscriptionRequestsThrottled", status=429))
    assert not credential_failure(classify(ServiceRequestError("connection refused")))
    assert not credential_failure(classify(HttpResponseError("boom")))
    assert not credential_failure(PermanentError("no role assignment", code="AuthorizationFailed", status=403))


def test_a_tick_failed_on_the_credential_only_when_it_called_azure_and_every_call_failed_on_it() -> None:
    tick = TickReport(at=EPOCH)
    assert not tick.credential_failed  # called nothing
    tick.count_call(TransientError("no token", code="TokenTimeout"))
    tick.count_call(PermanentError("no token", code="AuthenticationFailed"))
    assert tick.credential_failed and tick.credential_error == "AuthenticationFailed: no token"
    tick.count_call(TransientError("busy", code="ServiceUnavailable", status=503))  # this one got a token: ARM answered
    assert not tick.credential_failed
    assert (tick.azure_calls, tick.credential_failures) == (3, 2)


# ---------------------------------------------------------------- counting


def test_it_steps_down_after_three_failed_ticks_that_lasted_a_lease_period() -> None:
    clock, watch = FakeClock(), CredentialWatch(TIMING)
    verdicts = _fail(watch, clock, 3, 10.0)  # the default interval: the streak is 20 s old at the third tick
    assert verdicts[:2] == [None, None]
    verdict = verdicts[2]
    assert verdict is not None and verdict.ticks == 3 and verdict.streak_s == 20.0
    assert verdict.cool_off_until == clock.now() + timedelta(seconds=4 * L)
    assert "TokenTimeout" in verdict.reason() and "credential" in verdict.reason()


def test_a_burst_of_ticks_shorter_than_a_lease_period_is_not_enough() -> None:
    clock, watch = FakeClock(), CredentialWatch(TIMING)
    assert _fail(watch, clock, 10, 0.25) == [None] * 10  # ticks on probe news, the first at 0.25 s, the last at 2.5 s
    clock.advance(L - 2.25)
    assert watch.observe(4, 4, TOKEN_TIMEOUT, clock.now()) is not None  # the 11th, a lease period after the first


def test_one_call_that_gets_past_the_credential_ends_the_streak_and_a_tick_that_called_nothing_leaves_it() -> None:
    clock, watch = FakeClock(), CredentialWatch(TIMING)
    _fail(watch, clock, 2, 10.0)
    clock.advance(10.0)
    assert watch.observe(0, 0, None, clock.now()) is None  # the database failed before Azure: neither way
    assert watch.streak == 2 and watch.failing
    clock.advance(10.0)
    assert watch.observe(4, 3, TOKEN_TIMEOUT, clock.now()) is None  # ARM answered one call (its 503 included)
    assert watch.streak == 0 and not watch.failing and watch.worked is True and watch.flag_value(clock.now()) is None
    assert _fail(watch, clock, 3, 10.0)[:2] == [None, None]  # counted from nothing again


def test_each_step_down_without_a_working_tick_since_doubles_the_next_streak_up_to_eight_lease_periods() -> None:
    clock, watch = FakeClock(), CredentialWatch(TIMING)
    needed = []
    for _ in range(6):
        started = clock.now()
        verdict = None
        while verdict is None:
            verdict = _fail(watch, clock, 1, 5.0)[0]
        needed.append((clock.now() - started).total_seconds())
        watch.stepped_down(verdict, clock.now())
    assert needed == [L + 5, 2 * L + 5, 4 * L + 5, 8 * L + 5, 8 * L + 5, 8 * L + 5]  # the first tick starts the streak
    clock.advance(10.0)
    watch.observe(4, 0, None, clock.now())  # it worked: back to one lease period
    assert watch.required_s == L and watch.step_downs == 0


def test_the_flag_says_since_when_why_and_when_it_stepped_down() -> None:
    clock, watch = FakeClock(), CredentialWatch(TIMING)
    first = clock.advance(10.0)
    watch.observe(4, 4, TOKEN_TIMEOUT, first)
    verdict = _fail(watch, clock, 2, 10.0)[-1]
    assert verdict is not None
    watch.stepped_down(verdict, clock.now())
    flag = watch.flag_value(clock.now())
    assert flag is not None
    assert flag["since"] == first.isoformat() and flag["error"] == TOKEN_TIMEOUT
    assert flag["stepped_down_at"] == clock.now().isoformat() and flag["cool_off_until"] == verdict.cool_off_until.isoformat()


def test_timing_out_of_order_is_refused_with_the_figures() -> None:
    with pytest.raises(ValueError, match="cool-off 1"):
        StepDownTiming(ticks=3, for_s=15, grace_s=15, cool_off_s=1, max_for_s=120)


# ---------------------------------------------------------------- the cool-off


def test_in_the_cool_off_a_free_lease_is_left_to_others_for_the_grace_period_then_taken() -> None:
    cool = CoolOff(until=EPOCH + timedelta(seconds=60), grace_s=15, free_since=EPOCH)
    assert not cool.may_take(False, EPOCH + timedelta(seconds=14.9))
    assert cool.may_take(False, EPOCH + timedelta(seconds=15))


def test_in_the_cool_off_a_lease_someone_held_starts_the_grace_period_again_when_it_is_free() -> None:
    cool = CoolOff(until=EPOCH + timedelta(seconds=60), grace_s=15, free_since=EPOCH)
    assert not cool.may_take(True, EPOCH + timedelta(seconds=20))  # the standby leads
    assert not cool.may_take(False, EPOCH + timedelta(seconds=30))  # ... and stepped down (or died): free again
    assert not cool.may_take(False, EPOCH + timedelta(seconds=44))
    assert cool.may_take(False, EPOCH + timedelta(seconds=45))


def test_after_the_cool_off_it_may_try_at_once() -> None:
    cool = CoolOff(until=EPOCH + timedelta(seconds=60), grace_s=15, free_since=None)
    assert cool.may_take(False, EPOCH + timedelta(seconds=60))


class Leases:
    """A lease table in a dict, with the Store's compare-and-set meaning (what the elector asks of it)."""

    def __init__(self) -> None:
        self.rows: dict[str, Lease] = {}
        self.events: list[AuditEvent] = []

    def try_acquire_lease(self, name: LeaseName, holder: str, ttl_s: float, now: datetime) -> int | None:
        row = self.rows.get(name)
        if row is not None and row.alive(now) and row.holder != holder:
            return None
        mine = row is not None and row.alive(now) and row.holder == holder
        token = row.fencing_token if mine and row else (row.fencing_token + 1 if row else 1)
        self.rows[name] = Lease(name, holder, token, row.acquired_at if mine and row else now, now, now + timedelta(seconds=ttl_s))
        return token

    def release_lease(self, name: LeaseName, holder: str) -> bool:
        row = self.rows.get(name)
        if row is None or row.holder != holder:
            return False
        self.rows[name] = Lease(name, None, row.fencing_token, row.acquired_at, row.renewed_at, None)
        return True

    def lease(self, name: LeaseName = LeaseName.LEADER) -> Lease | None:
        return self.rows.get(name)

    def add_event(self, event: AuditEvent) -> int:
        self.events.append(event)
        return len(self.events)


def test_a_leader_that_steps_down_releases_says_why_and_does_not_take_the_lease_back_while_another_holds_it() -> None:
    clock, leases = FakeClock(), Leases()
    a = LeaderElector(leases, "worker-a", L, clock)  # type: ignore[arg-type]  # the lease part of the Store is all it uses
    b = LeaderElector(leases, "worker-b", L, clock)  # type: ignore[arg-type]  # same
    assert a.tick().leader and not b.tick().leader
    until = clock.now() + timedelta(seconds=4 * L)
    assert a.step_down("its Azure credential failed (TokenTimeout: ...)", until, L, {"reason": "credential"})
    assert not a.is_leader and a.cooling_off and leases.rows[LeaseName.LEADER].holder is None
    event = leases.events[-1]
    assert event.summary.startswith("worker-a stepped down (token 1): its Azure credential failed") and event.severity == "warning"
    assert event.data["stepped_down"] is True and event.data["reason"] == "credential"

    clock.advance(L / 5)
    assert not a.tick().leader  # free, but inside the grace period: left to the others
    assert b.tick().leader  # the standby's next tick takes it
    for _ in range(int(4 * L / (L / 5))):  # the whole cool-off, and on: a live holder is never taken from
        clock.advance(L / 5)
        assert not a.tick().leader and b.tick().leader
    assert not a.cooling_off


def test_a_leader_that_stepped_down_takes_the_lease_back_when_nobody_else_does() -> None:
    clock, leases = FakeClock(), Leases()
    a = LeaderElector(leases, "worker-a", L, clock)  # type: ignore[arg-type]  # the lease part of the Store is all it uses
    assert a.tick().leader
    a.step_down("its Azure credential failed", clock.now() + timedelta(seconds=4 * L), L)
    ticks = 0
    while not a.tick().leader:  # nobody takes it: after the grace period, leading with a broken credential beats nobody
        ticks += 1
        clock.advance(L / 5)
    assert ticks == 5 and a.token == 2
