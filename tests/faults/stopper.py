"""A process that stops itself (SIGSTOP) inside a database transaction, the way a paused worker or web process would.

    python -m tests.faults.stopper lease URL HOLDER TTL       # a worker's lease tick, stopped after its renewal UPDATE
    python -m tests.faults.stopper exclusive URL NAME IDLE   # an operator action, stopped holding Store.exclusive(NAME)

It runs the production code (LeaderElector.tick, Store.exclusive) on a store
opened the way the worker or the web opens it; a hook on the engine sends
SIGSTOP to the process itself right after the chosen statement, so the stop
lands inside the transaction every time (no timing decides it). It prints
``ready`` before the stop and, once continued (SIGCONT), what it then
believes (``leader True/False``, ``committed``/``failed <error>``).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from sqlalchemy import event, text

from controlplane.runtime.leader import LeaderElector, LeaseTiming, open_worker_store
from controlplane.store import Store, open_store


def process_state(pid: int) -> str:
    """R, S, D ... or T once stopped (from /proc)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def sessions_idle_in_transaction(store: Store) -> int:
    """Other sessions of this database that sit inside a transaction, waiting for their client."""
    with store.engine.connect() as conn:
        return int(
            conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'"
                )
            )
            or 0
        )


def stop_after(store: Store, statement_starts: str) -> None:
    """SIGSTOP this process right after the first statement that starts with ``statement_starts`` (inside its transaction)."""
    armed = [True]

    def after(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if armed[0] and statement.lstrip().upper().startswith(statement_starts.upper()):
            armed[0] = False
            print("stopping", flush=True)
            os.kill(os.getpid(), signal.SIGSTOP)

    event.listen(store.engine, "after_cursor_execute", after)


def lease(url: str, holder: str, ttl_s: float) -> None:
    store = open_worker_store(url, LeaseTiming.for_lease(ttl_s, 30.0))  # as `regionguard run --lease-ttl TTL` opens it
    elector = LeaderElector(store, holder, ttl_s=ttl_s)
    print(f"leader {elector.tick().leader}", flush=True)  # takes the lease (committed)
    stop_after(store, "UPDATE leader_lease")
    print("ready", flush=True)
    state = elector.tick()  # the renewal: stopped right after its UPDATE, before the commit
    print(f"leader {state.leader}", flush=True)


def exclusive(url: str, name: str, idle_in_transaction_s: float) -> None:
    store = open_store(url, idle_in_transaction_s=idle_in_transaction_s)  # as the web opens it, with a shorter cut-off
    stop_after(store, "SELECT pg_advisory_xact_lock")
    print("ready", flush=True)
    try:
        with store.exclusive(name):
            pass  # stopped holding the lock
    except Exception as exc:
        print(f"failed {type(exc).__name__}", flush=True)
    else:
        print("committed", flush=True)


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "lease":
        lease(args[0], args[1], float(args[2]))
    elif mode == "exclusive":
        exclusive(args[0], args[1], float(args[2]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
