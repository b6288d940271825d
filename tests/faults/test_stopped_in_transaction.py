"""A process stopped (SIGSTOP) inside a PostgreSQL transaction must not hold its locks for as long as it sleeps.

PostgreSQL does not notice a stopped client: its session sits "idle in
transaction" and keeps every lock it took. A leader stopped between its
lease renewal's UPDATE and the commit kept the lease row locked, and the
standby's takeover UPDATE waited on it until the old leader resumed: nobody
led for as long as the pause lasted (seen in about 0.1-0.3 % of pauses). A
web process stopped inside Store.exclusive kept the override lock, and every
other operator's action waited behind it.

The stopped process is tests/faults/stopper.py: the production code (the
lease tick, Store.exclusive) that stops itself right after the chosen
statement, so the stop lands inside the transaction every time.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from controlplane.actions import LOCK
from controlplane.domain import LeaseName
from controlplane.runtime.leader import LeaderElector
from controlplane.store import Store, open_store
from controlplane.store.db import LockTimeout
from controlplane.store.repo import lease_lock_wait
from tests.faults.stopper import Stopper
from tests.waiting import wait_until

TTL = 2.0  # the lease period in these tests
SLACK_S = 1.5  # process scheduling on two busy cores
IDLE_S = 1.0  # the web's stores use db.IDLE_IN_TRANSACTION_S (5 s); a shorter one here keeps the test short


@pytest.fixture
def store(postgres_url: str) -> Iterator[Store]:
    s = open_store(postgres_url, migrate=True)
    yield s
    s.close()


def _session_state(store: Store, backend: int) -> str | None:
    with store.engine.connect() as conn:
        return conn.scalar(text("SELECT state FROM pg_stat_activity WHERE pid = :p"), {"p": backend})


def _in_thread(fn: Callable[[], object], name: str) -> tuple[threading.Thread, list[float]]:
    """Run ``fn`` in a daemon thread; the list gets the wall-clock time it returned."""
    done: list[float] = []

    def run() -> None:
        fn()
        done.append(time.time())

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread, done


def test_a_leader_stopped_inside_its_lease_renewal_does_not_block_the_takeover(store: Store, postgres_url: str) -> None:
    old = Stopper(store, "lease", postgres_url, "worker-a", str(TTL))
    standby = LeaderElector(store, "worker-b", ttl_s=TTL)
    try:
        old.stopped()  # its renewal's UPDATE ran: the lease row is locked by a transaction that sleeps
        lease = store.lease(LeaseName.LEADER)
        assert lease is not None and lease.holder == "worker-a" and lease.expires_at is not None
        expires = lease.expires_at.timestamp()  # the last renewal that was committed
        bound = expires - time.time() + SLACK_S

        def take_over() -> None:
            deadline = time.monotonic() + bound + 30
            while not standby.tick().leader and time.monotonic() < deadline:
                time.sleep(0.05)

        thread, done = _in_thread(take_over, "standby")
        thread.join(bound)
        assert done, (
            f"the standby has not taken the lease {SLACK_S:g} s after it expired: its UPDATE waits on the row lock"
            " of the stopped leader's open transaction"
        )
        assert standby.is_leader and done[0] <= expires + SLACK_S
        out = old.resume()
        assert out[-1] == "leader False", f"the old leader resumed believing it still leads: {out}"
        lease = store.lease(LeaseName.LEADER)
        assert lease is not None and lease.holder == "worker-b"
    finally:
        old.kill()
        standby.release()


def test_a_process_stopped_holding_the_override_lock_does_not_block_other_operators(store: Store, postgres_url: str) -> None:
    web = Stopper(store, "exclusive", postgres_url, LOCK, str(IDLE_S))
    try:
        web.stopped()
        stopped_at = time.time()
        bound = IDLE_S + SLACK_S

        def act() -> None:
            with store.exclusive(LOCK):
                pass

        thread, done = _in_thread(act, "operator")
        thread.join(bound)
        assert done, f"another operator's action still waits for the override lock {bound:g} s after its holder stopped"
        assert done[0] - stopped_at <= bound
        out = web.resume()
        assert out[-1].startswith("failed"), f"the stopped action committed after it lost its lock: {out}"
    finally:
        web.kill()


def test_a_lease_statement_waits_for_a_row_lock_at_most_a_tenth_of_the_lease(store: Store) -> None:
    """A session that is not idle (so not cut off) but holds the lease row's lock: the lease tick gives up in time."""
    now = datetime.now(UTC)
    assert store.try_acquire_lease(LeaseName.LEADER, "worker-a", TTL, now) is not None
    conn = store.engine.connect()
    conn.execute(text("UPDATE leader_lease SET renewed_at = renewed_at"))  # the row lock, then busy for 30 s
    backend = conn.scalar(text("SELECT pg_backend_pid()"))

    def sleep() -> None:
        with contextlib.suppress(Exception):  # cancelled at the end
            conn.execute(text("SELECT pg_sleep(30)"))

    busy, _ = _in_thread(sleep, "busy")
    try:
        wait_until(lambda: _session_state(store, backend) == "active", 10, "the lock holder to be busy")
        started = time.monotonic()
        with pytest.raises(LockTimeout):
            store.try_acquire_lease(LeaseName.LEADER, "worker-a", TTL, datetime.now(UTC))
        assert time.monotonic() - started < lease_lock_wait(TTL) + SLACK_S
    finally:
        with store.engine.connect() as admin:
            admin.execute(text("SELECT pg_cancel_backend(:p)"), {"p": backend})
        busy.join(10)
        conn.invalidate()
        conn.close()
