"""LeaderElector on a real (SQLite) store with an injected clock: no sleeping."""

from __future__ import annotations

from controlplane.domain import LeaseName
from controlplane.runtime.leader import LeaderElector
from controlplane.store import Store
from tests.fakes import FakeClock


def test_one_holder_at_a_time_and_takeover_after_expiry_with_a_larger_token(store: Store) -> None:
    clock = FakeClock()
    a = LeaderElector(store, "a", ttl_s=10, clock=clock)
    b = LeaderElector(store, "b", ttl_s=10, clock=clock)
    assert a.tick().leader and not b.tick().leader
    first = a.token
    clock.advance(5)
    assert a.tick().token == first and a.still_holds()
    clock.advance(11)  # a stopped renewing
    state = b.tick()
    assert state.leader and state.token is not None and first is not None and state.token > first
    assert not a.still_holds(), "the old holder must fail its fencing check"
    assert not a.tick().leader


def test_a_released_elector_never_takes_the_lease_again(store: Store) -> None:
    clock = FakeClock()
    a = LeaderElector(store, "a", ttl_s=10, clock=clock)
    assert a.tick().leader
    a.release()
    lease = store.lease(LeaseName.LEADER)
    assert lease is not None and lease.holder is None
    assert not a.tick().leader, "a late tick after release re-took the lease"
    assert LeaderElector(store, "b", ttl_s=10, clock=clock).tick().leader


def test_losing_the_database_means_losing_leadership(store: Store) -> None:
    clock = FakeClock()
    a = LeaderElector(store, "a", ttl_s=10, clock=clock)
    assert a.tick().leader
    broken = Store("sqlite:////nonexistent/dir/x.db")
    a.store = broken
    try:
        assert not a.tick().leader
        assert not a.still_holds()
    finally:
        broken.close()
