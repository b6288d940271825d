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
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import event, text

from controlplane.runtime.leader import LeaderElector, LeaseTiming, open_worker_store
from controlplane.store import Store, open_store
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


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


class Stopper:
    """tests/faults/stopper.py in its own process; stopped inside its transaction once :meth:`stopped` returns."""

    def __init__(self, store: Store, *args: str) -> None:
        self.store = store
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.stopper", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        from tests.integration.test_worker_ha import _collect  # the test process's side only

        threading.Thread(target=_collect, args=(self.proc, self.lines), daemon=True).start()

    def stopped(self) -> None:
        """Wait until the kernel shows the process stopped and PostgreSQL shows its session idle inside a transaction."""
        wait_until(lambda: "stopping\n" in self.lines, 30, f"the process to reach its statement (output: {self.lines})")
        wait_until(lambda: process_state(self.proc.pid) == "T", 10, "the process to stop", step=0.002)
        wait_until(lambda: sessions_idle_in_transaction(self.store) >= 1, 10, "its session to be idle in transaction")

    def resume(self) -> list[str]:
        """SIGCONT; its output once it has finished."""
        self.proc.send_signal(signal.SIGCONT)
        self.proc.wait(30)
        wait_until(lambda: self.proc.stdout is None or self.proc.stdout.closed or self.lines[-1:], 5, "its last line")
        return [line.strip() for line in self.lines]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)


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
