"""A hanging token endpoint ends the tick within the call deadline, and nothing is sent.

The SDK asks the credential for a token before a request reaches the
transport, so the transport's hard deadline (ADR 0012) never covered the
token fetch, and azure-identity's own timeouts are per socket operation and
retried: a token endpoint that hangs held a tick for as long as it hung. The
lease was safe (a stuck tick stops the renewals, and the fence is asked
after the token, right before the bytes go out), but the leader did nothing
and said nothing useful while it hung.

What is injected: a real azure-identity ClientSecretCredential whose
authority is a local HTTPS server (tests/faults/authority.py) that holds
every token request.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from controlplane.actuators.factory import build_actuators
from tests.faults.authority import HangingAuthority
from tests.faults.world import TWO_WRITES, World, health
from tests.integration.test_actuator_contract import FAST_RETRY

CALL_S = 1.0  # one call's hard deadline: a token fetch gets the same
DEADLINE_S = 3.0  # the tick's
HANG_S = 8.0  # how long the authority holds a token request (the tick took this long before)


@pytest.fixture
def authority() -> Iterator[HangingAuthority]:
    server = HangingAuthority(hang_s=HANG_S)
    try:
        yield server
    finally:
        server.close()


def test_a_hanging_token_endpoint_ends_the_tick_within_its_deadline_and_nothing_is_sent(world: World, authority: HangingAuthority) -> None:
    actuators = build_actuators(world.settings, authority.credential(), retry=FAST_RETRY, call_s=CALL_S)
    leader = world.reconciler("worker-a", actuators, call_s=CALL_S, deadline_s=DEADLINE_S)
    token = world.lease("worker-a", 60)

    for tick in (1, 2):  # the second tick finds the first fetch still hanging: it waits for it, no new request
        started = time.monotonic()
        report = leader.reconcile_once(health(**TWO_WRITES), fencing_token=token)
        took = time.monotonic() - started
        assert took < DEADLINE_S, f"tick {tick} took {took:.1f} s with the token endpoint hanging (deadline {DEADLINE_S:g} s)"
        assert set(report.read_errors) == {t.name for t in world.settings.targets}, report.read_errors
        for why in report.read_errors.values():
            assert why.startswith("TokenTimeout: ClientSecretCredential: no token for https://management.azure.com/.default"), why
        assert not report.applied and not report.failed
    assert authority.token_requests == 1, "a token request was started beside the one still hanging"
    assert world.arm.request_log == [], "a request reached ARM without a token"
