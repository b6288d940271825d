"""The timed windows of ``bench/scale.py``: calls timed one by one in processes of their own, a busier machine on
purpose, and where each slow call's time went (prints nothing; scale.py prints).

A window (:class:`Latencies`) runs each kind of timed call in a process of its own until it is left. Each call
records :data:`CALL_FIELDS`: its wall-clock time; its own and its PostgreSQL backend's CPU and wait for a core
(``/proc/<pid>/schedstat``); the KiB that backend read and wrote (``/proc/<pid>/io``). The window records
``pg_stat_bgwriter``'s checkpoint and buffer-write counts over it. With a :class:`Busy`, it also spins cores,
vacuums the table at autovacuum's pace, and samples the server's wait events, all for as long as it lasts.

Linux only for the /proc figures (elsewhere, or for a server that is not local or not ours to read, they are 0).
Every loop is bounded in count and time.
"""

from __future__ import annotations

import multiprocessing
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controlplane.stats import percentile

CALL_FIELDS = ("wall", "cpu", "runq", "db cpu", "db runq", "db KiB read", "db KiB written", "first")
"""What each timed call records after its start (wall-clock seconds since the epoch): ms of wall-clock time; ms on
a CPU and ms runnable but waiting for one, of the calling process and then of its PostgreSQL backend; the KiB that
backend read and wrote through read()/write() (shared buffers it missed, dirty ones it wrote out itself to make
room, and the WAL it wrote out at a commit: an insert's few KiB are that); the ms until
its first statement returned (the page read: the region's figures, then its newest probes; else the whole call).
Whatever of the wall time is none of the four times is the backend or the client waiting (on I/O, a lock, the
network): the wait events sampled meanwhile say which."""

SLOW_MS = 100.0
MAX_SLOW_LINES = 20


@dataclass(frozen=True)
class Busy:
    """A busier machine on purpose, for as long as a window lasts: ``burners`` processes spinning a core each,
    ``vacuum`` (a table's name) vacuumed at autovacuum's pace, and the server's wait events sampled every
    ``sample_waits`` seconds (0: not), which say where a slow call's backend waited. PostgreSQL for the last two."""

    burners: int = 0
    vacuum: str | None = None
    sample_waits: float = 0.0


CALM = Busy()
"""No busier machine than it is."""


def conninfo(url: str) -> str:
    """psycopg's connection string of a SQLAlchemy PostgreSQL URL."""
    return url.replace("postgresql+psycopg://", "postgresql://")


def proc_sched(pid: int | str) -> tuple[float, float]:
    """(ms on a CPU, ms runnable but waiting for one) of a process so far, from Linux's /proc/<pid>/schedstat; (0, 0)
    where it cannot be read (another OS, or a server that is not local or not ours to read)."""
    try:
        run, wait, _ = Path(f"/proc/{pid}/schedstat").read_text().split()
    except (OSError, ValueError):
        return 0.0, 0.0
    return int(run) / 1e6, int(wait) / 1e6


def proc_io(pid: int | str) -> tuple[float, float]:
    """(KiB read, KiB written) through read()/write() by a process so far (/proc/<pid>/io: a PostgreSQL backend's
    shared-buffer misses, the dirty buffers it wrote out itself to make room, the WAL it wrote out at commit; not
    its socket's traffic); (0, 0) where unreadable."""
    try:
        fields = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
        return int(fields["rchar"]) / 1024, int(fields["wchar"]) / 1024
    except (OSError, ValueError, KeyError):
        return 0.0, 0.0


def measure(call: Callable[[], float | None], backend: int | None) -> tuple[float, ...]:
    """Run ``call`` once: (its start, *CALL_FIELDS). ``call`` returns ``time.perf_counter()`` when its first
    statement returned, or None (then "first" is the whole call); ``backend``: its PostgreSQL backend's pid (None:
    SQLite, the database is this process, and its figures are 0)."""
    # the clock outside the counters: a wait for a core around them counts as "other", never twice
    at, t = time.time(), time.perf_counter()
    own0 = proc_sched("self")
    db0 = (*proc_sched(backend), *proc_io(backend)) if backend else (0.0,) * 4
    first = call()
    own1 = proc_sched("self")
    db1 = (*proc_sched(backend), *proc_io(backend)) if backend else (0.0,) * 4
    end = time.perf_counter()
    parts = (b - a for a, b in zip((*own0, *db0), (*own1, *db1), strict=True))
    return (at, (end - t) * 1000, *parts, ((end if first is None else first) - t) * 1000)


def wait_events(url: str, ready: Any, stop: Any, out: Any, period: float) -> None:
    """Sample pg_stat_activity every ``period`` s until ``stop``: (time, pid, backend type, wait event or "CPU") of
    every session of the server that is not idle, this one excepted, put on ``out``. (The server's own processes,
    checkpointer and autovacuum, are shown only to a role with pg_read_all_stats: their figures come from
    pg_stat_bgwriter and the server's log.)"""
    import psycopg

    samples: list[tuple[float, int, str, str]] = []
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        ready.wait()
        for _ in range(200_000):  # bounded; stops when told
            if stop.is_set():
                break
            at = time.time()
            for pid, kind, wait in conn.execute(
                "SELECT pid, backend_type, coalesce(wait_event_type || ':' || wait_event, 'CPU') FROM pg_stat_activity"
                " WHERE pid <> pg_backend_pid() AND coalesce(state, '') NOT LIKE 'idle%'"
            ):
                samples.append((at, pid, kind, wait))
            stop.wait(period)
    out.put(("waits", [], samples))


def vacuuming(url: str, table: str, stop: Any) -> None:
    """``VACUUM table`` at autovacuum's pace (cost delay 2 ms, limit 200) until ``stop``, again a second after it
    ends: what autovacuum may or may not do on the table meanwhile, on purpose.

    It returns only once ``stop`` is set (or after 900 s), its thread that waits on ``stop`` too: a process that
    exits while waiting on a multiprocessing Event leaves a sleeper that never wakes, and ``stop.set()`` then
    blocks every process of the window for good."""
    import psycopg

    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        conn.execute("SET vacuum_cost_delay = '2ms'")
        conn.execute("SET vacuum_cost_limit = 200")

        def cancel() -> None:
            stop.wait(900)
            conn.cancel()

        canceller = threading.Thread(target=cancel)
        canceller.start()
        for _ in range(1000):  # bounded; stops when told
            if stop.is_set():
                break
            try:
                conn.execute(f"VACUUM {table}")
            except psycopg.errors.QueryCanceled:
                break
            stop.wait(1.0)
        stop.wait(900)
        canceller.join()


def burn(stop: Any, seconds: float) -> None:
    """Spin one core until ``stop`` or ``seconds``: a busier machine, on purpose."""
    end = time.monotonic() + seconds
    while not stop.is_set() and time.monotonic() < end:
        sum(range(10_000))


def server_counters(url: str) -> dict[str, float]:
    """The server's checkpoint and buffer-write counts so far (pg_stat_bgwriter: every database of the server), and
    the autovacuum and autoanalyze passes probe_result and probe_rollup have had (ended); {} on SQLite."""
    if not url.startswith("postgresql"):
        return {}
    import psycopg

    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        cur = conn.execute(
            "SELECT checkpoints_timed + checkpoints_req AS checkpoints,"
            " checkpoint_write_time + checkpoint_sync_time AS checkpoint_ms, buffers_checkpoint, buffers_clean,"
            " buffers_backend, buffers_backend_fsync, (SELECT sum(autovacuum_count + autoanalyze_count)"
            " FROM pg_stat_user_tables WHERE relname IN ('probe_result', 'probe_rollup')) AS autovacuums FROM pg_stat_bgwriter"
        )
        row = cur.fetchone()
        names = [d.name for d in cur.description or ()]
    return {k: float(v or 0) for k, v in zip(names, row or (), strict=True)}


class Latencies:
    """Timed calls, each ``kind`` in a process of its own running ``target(kind, *args, ready, stop, out)``, for as
    long as this is entered; ``target`` puts (kind, its backends' pids, [(start, *CALL_FIELDS) per call]) on ``out``.

    Not threads of this process: there they shared the interpreter lock with
    the retention loop (or whatever else this process runs), and a call
    measured as slow had often been waiting for the lock, not for the
    database: the bench measured itself. A real writer and a real page are
    other processes (the workers, the dashboard), as here. ``busy`` makes the
    machine busier meanwhile (:class:`Busy`).
    """

    def __init__(self, url: str, kinds: tuple[str, ...], target: Callable[..., None], args: tuple[Any, ...], busy: Busy = CALM) -> None:
        ctx = multiprocessing.get_context("spawn")
        postgres = url.startswith("postgresql")
        sampling = busy.sample_waits > 0 and postgres
        self.url, self.kinds = url, kinds
        self.ready, self.stop, self.out = ctx.Barrier(len(kinds) + 1 + sampling, timeout=120), ctx.Event(), ctx.Queue()
        self.procs = [ctx.Process(target=target, args=(kind, *args, self.ready, self.stop, self.out)) for kind in kinds]
        if sampling:
            self.procs.append(ctx.Process(target=wait_events, args=(url, self.ready, self.stop, self.out, busy.sample_waits)))
        self.helpers = [ctx.Process(target=burn, args=(self.stop, 900.0)) for _ in range(busy.burners)]
        if busy.vacuum and postgres:
            self.helpers.append(ctx.Process(target=vacuuming, args=(url, busy.vacuum, self.stop)))
        self.calls: dict[str, list[tuple[float, ...]]] = {}
        self.pids: dict[str, list[int]] = {}
        self.samples: list[tuple[float, int, str, str]] = []
        self.counters: dict[str, float] = {}

    def __enter__(self) -> Latencies:
        for p in self.procs + self.helpers:
            p.start()
        try:
            self.ready.wait()
        except BaseException:
            self.stop.set()  # the helpers' and the callers' cue to end, or they would spin on
            raise
        self.counters = server_counters(self.url)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        end = server_counters(self.url)
        self.counters = {k: end[k] - v for k, v in self.counters.items()}
        for _ in self.procs:
            kind, pids, calls = self.out.get(timeout=60)
            if kind == "waits":
                self.samples = calls
            else:
                self.calls[kind], self.pids[kind] = calls, pids
        for p in self.procs + self.helpers:
            p.join(timeout=30)

    def times(self, kind: str) -> list[float]:
        return sorted(c[1] for c in self.calls.get(kind, []))

    def summary(self, names: dict[str, str]) -> str:
        """p50 / p99 / max of each kind (called by its ``names``), and how many calls took over 100 ms."""

        def one(xs: list[float]) -> str:
            if not xs:
                return "none"
            over = sum(x > SLOW_MS for x in xs)
            return (
                f"p50 {statistics.median(xs):.1f} / p99 {percentile(xs, 0.99) or 0:.1f} / max {xs[-1]:.0f} ms"
                f" ({over} of {len(xs)} > {SLOW_MS:g} ms)"
            )

        return ", ".join(f"{names[kind]} {one(self.times(kind))}" for kind in self.kinds)

    def parts(self, kind: str, over: float = SLOW_MS) -> str:
        """Mean ms per call of each of CALL_FIELDS' times, for all calls and for those over ``over`` ms. The client's
        and its backend's waits for a core can overlap (both runnable at once), so the parts may sum to over the wall."""

        def means(calls: list[tuple[float, ...]]) -> str:
            wall, cpu, runq, db_cpu, db_runq, db_read, db_written = (statistics.fmean(c[k] for c in calls) for k in range(1, 8))
            return (
                f"wall {wall:.1f}: cpu {cpu:.1f} + runq {runq:.1f}, db cpu {db_cpu:.1f} + runq {db_runq:.1f};"
                f" db read {db_read:.0f} KiB, wrote {db_written:.0f} KiB"
            )

        calls = self.calls.get(kind, [])
        if not calls:
            return f"{kind}: no calls"
        slow = [c for c in calls if c[1] > over]
        return f"{kind}, mean ms of all {len(calls)}: {means(calls)}" + (
            f"; of the {len(slow)} over {over:g} ms: {means(slow)}" if slow else ""
        )

    def slow(self, over: float = SLOW_MS) -> list[str]:
        """One line per call over ``over`` ms, oldest first (the first :data:`MAX_SLOW_LINES`): where its time went
        (CALL_FIELDS), and its backend's wait events sampled meanwhile ("CPU": active, waiting for nothing; none
        sampled: the backend was idle, the client busy)."""
        slow = sorted((c[0], kind, c[1:]) for kind, calls in self.calls.items() for c in calls if c[1] > over)
        lines = []
        for at, kind, (wall, cpu, runq, db_cpu, db_runq, db_read, db_written, first) in slow[:MAX_SLOW_LINES]:
            end = at + wall / 1000
            own = Counter(w for t, pid, _, w in self.samples if at <= t <= end and pid in self.pids[kind])
            lines.append(
                f"{kind} {datetime.fromtimestamp(at, UTC):%H:%M:%S.%f}"[:-3]
                + f" UTC {wall:.0f} ms: cpu {cpu:.0f} + runq {runq:.0f}, db cpu {db_cpu:.0f} + runq {db_runq:.0f},"
                f" other {wall - cpu - runq - db_cpu - db_runq:.0f}; db read {db_read:.0f} KiB, wrote {db_written:.0f} KiB;"
                f" first statement {first:.0f} ms" + (f"; db waits {dict(own.most_common(4))}" if own else "")
            )
        if len(slow) > MAX_SLOW_LINES:
            lines.append(f"... and {len(slow) - MAX_SLOW_LINES} more")
        return lines

    def report(self, names: dict[str, str]) -> list[str]:
        """The window in lines: its summary, the server's counts over it, each kind's split, its slow calls."""
        lines = [self.summary(names)]
        if self.counters:
            lines.append("  server: " + ", ".join(f"{k} {v:,.0f}" for k, v in self.counters.items()))
        lines += [f"  {self.parts(kind)}" for kind in self.kinds]
        return lines + [f"  {line}" for line in self.slow()]
