"""Scale benchmark: SQLite and PostgreSQL side by side at the target size (prints figures; not a test).

The target deployment: 3 vantages x 100 endpoints (20 regions x 5
deployments), each probed every 10 s, a week of raw results kept: about
2.6 M rows a day, 18 M in all, plus their per-minute rollups and a month of
changes and incidents (3 a day, each with its verdicts, drains and restores). This script fills both databases with that (bulk ``executemany`` on
SQLite, ``COPY`` on PostgreSQL, after the schema is made by the Alembic
migrations), then prints, per database:

Rollups are kept longer than raw results (``retention.rollup_days``, 90 by
default: 300 rows a minute, about 39 M at this size). On PostgreSQL the fill
makes that many (``--rollup-days``; those older than the raw results are
made in SQL, a day per statement); on SQLite only those of the raw days
(a single-vantage install's database is not this size, and 39 M rows more
would take the fill from minutes to most of an hour).

- p50 / p95 of every dashboard page and JSON API read (Flask test client),
  and the CPU one costs (this process and its PostgreSQL backends), which
  says more than wall-clock time when the cores are shared and busy;
- the rollup job (the worker's: the last 3 minutes; five runs, and the
  memory one allocates in Python, by ``tracemalloc``) and one retention pass
  that deletes the oldest day, with its longest statement and the latencies
  a writer and a page read saw meanwhile, each in a process of its own (as a
  worker and the dashboard are; threads here would share this process's
  interpreter lock with the purge), next to what they see for as long again
  right after it with no purge (the machine's own noise);
- the rollups at their full size (PostgreSQL): the region page's uncached
  7-day chart from the per-minute rollups alone (as before migration 0010)
  and from the hourly ones, reads taken in turn; migration 0010 summing
  every rollup kept into hours on the live table while a writer and a page
  read run; and a rollup retention pass of the oldest day (432,000 rows)
  with a writer's, a page read's and the rollup job's latencies meanwhile;
- insert throughput in results/s per writer with 3 writers at once;
- the worker's health evaluation: warm start, and one steady tick of news;
- the database size.

Floors (PostgreSQL): pages and API p95 < 50 ms; rollup tick < 1 s; no writer
or page blocked > 100 ms by retention; >= 2,000 results/s per writer; one
evaluation tick < 100 ms.

Run: ``.venv/bin/python bench/scale.py [--days 7] [--rollup-days 90] [--pg-url postgresql://...]``
(without ``--pg-url`` or ``REGIONGUARD_TEST_POSTGRES_URL``, SQLite only);
``--only postgres --parts rollup,rollups`` fills PostgreSQL and measures
only the rollups (each run prints how long it took in all).
Everything runs on 127.0.0.1; loops are bounded in count and time.

Retention pass after pass on one fill (PostgreSQL; a fill takes minutes):

- ``--keep-db NAME`` fills database NAME once and keeps it (its comment
  says which fill: a later run reuses it only with the same ``--days``,
  ``--regions``, ``--interval`` and ``--rollup-days``); a run on a kept
  database first puts back the oldest day of raw results and of rollups if
  a pass deleted them, and deletes every row stored after the fill (the
  writers', the timed calls'). ``--drop-db NAME`` drops it, nothing else.
- ``--retention-only`` measures only the writers and retention (``--parts
  inserts,retention``); ``--passes N`` runs N retention passes, the oldest
  day put back before each after the first and the writers run again.
- ``--unvacuumed``: no ``VACUUM (ANALYZE)`` after the fill or the put-back
  day (a table autovacuum has yet to take up).
- A busier machine on purpose, in every pass and in its window without a
  purge: ``--burners N`` processes spinning a core each,
  ``--vacuum-during`` (the pass's table vacuumed at autovacuum's pace),
  ``--sample-waits SECONDS`` (the server's wait events sampled this often).

Every timed call records where its time went (bench/retention_window.py):
its own and its PostgreSQL backend's CPU and wait for a core
(``/proc/<pid>/schedstat``, when the server is local and readable) and the
KiB that backend read and wrote (``/proc/<pid>/io``); each window prints
the mean split of all its calls and of those over 100 ms, one line per call
over 100 ms (with its backend's sampled wait events), and
``pg_stat_bgwriter``'s checkpoint and buffer-write counts over it, e.g.
``--keep-db rg_kept --retention-only --passes 3 --unvacuumed --burners 1
--vacuum-during --sample-waits 0.02``, then ``--drop-db rg_kept``.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from argon2 import PasswordHasher
from sqlalchemy import event

from bench.dashboard import bench_settings
from bench.retention_window import CALM, Busy, Latencies, conninfo, measure, proc_sched
from controlplane import users
from controlplane.config import Settings, azure_name
from controlplane.domain import (
    Change,
    ChangeStatus,
    EndpointHealth,
    EndpointSetting,
    Field,
    HealthStateName,
    LeaseName,
    Outcome,
    ProbeResult,
    RegionHealth,
    TargetState,
    Transition,
)
from controlplane.engine.health import HealthEvaluator
from controlplane.stats import percentile
from controlplane.store import Store, open_store, queries

NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
VANTAGES = ("eu-west", "us-east", "asia")
DEPLOYMENTS = ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "o4-mini")
PASSWORD = "bench password 123"
COLUMNS = (
    "endpoint_id",
    "region",
    "vantage",
    "started_at",
    "outcome",
    "status_code",
    "ttft_ms",
    "total_ms",
    "output_chunks",
    "finished",
    "limit_tokens",
    "remaining_tokens",
    "request_id",
)
ROLLUP_COLUMNS = (
    "endpoint_id",
    "vantage",
    "minute_at",
    "region",
    "count",
    "ok",
    "throttled",
    "failed",
    "ttft_p50_ms",
    "ttft_p95_ms",
    "total_p50_ms",
    "total_p95_ms",
    "tokens",
)


class FixedClock:
    def now(self) -> datetime:
        return NOW


def scale_settings(regions: int, interval: float) -> Settings:
    return bench_settings(regions, interval, DEPLOYMENTS)


# ---------------------------------------------------------------- data


def rows(
    s: Settings, days: float, interval: float, seed: int = 7, first: float | None = None
) -> Iterator[tuple[tuple[Any, ...], str, str]]:
    """(raw row, minute key, region) oldest first, for every endpoint and vantage; with ``first``, only the rows of
    the first ``first`` days (the same rows)."""
    rng = random.Random(seed)
    ticks = int(days * 86400 / interval)
    start = NOW - timedelta(seconds=ticks * interval)
    endpoints = [(f"{r.name}/{e.name}", r.name, i) for i, r in enumerate(s.regions) for e in r.endpoints]
    for k in range(ticks if first is None else min(ticks, int(first * 86400 / interval))):
        at = start + timedelta(seconds=k * interval)
        for eid, region, i in endpoints:
            for v in VANTAGES:
                roll = rng.random()
                if i % 7 == 3 and roll < 0.15:
                    values: tuple[Any, ...] = ("throttled", 429, None, None)
                elif roll < 0.01:
                    values = ("server_error", 503, None, None)
                else:
                    ttft = 150.0 + 50 * i % 400 + rng.random() * 120
                    values = ("ok", 200, ttft, ttft + 250 + rng.random() * 200)
                outcome, status, ttft_ms, total_ms = values
                yield (
                    (eid, region, v, at, outcome, status, ttft_ms, total_ms, 3 if ttft_ms else 0, bool(ttft_ms), 1000, 600, f"r{k}"),
                    eid,
                    v,
                )


class Rollups:
    """Per-minute aggregates built on the way, emitted once a minute is complete."""

    def __init__(self) -> None:
        self.open: dict[tuple[str, str, datetime], list[Any]] = {}

    def add(self, row: tuple[Any, ...]) -> None:
        eid, region, vantage, at, outcome, _status, ttft, total = row[:8]
        key = (eid, vantage, at.replace(second=0, microsecond=0))
        agg = self.open.get(key)
        if agg is None:
            agg = self.open[key] = [region, 0, 0, 0, 0, [], []]
        agg[1] += 1
        agg[2] += outcome == "ok"
        agg[3] += outcome == "throttled"
        agg[4] += outcome not in ("ok", "throttled")
        if ttft is not None:
            agg[5].append(ttft)
            agg[6].append(total)

    def done(self, before: datetime | None) -> list[tuple[Any, ...]]:
        keys = [k for k in self.open if before is None or k[2] < before]
        out = []
        for key in keys:
            region, count, ok, throttled, failed, ttft, total = self.open.pop(key)
            ttft.sort()
            total.sort()
            out.append(
                (
                    key[0],
                    key[1],
                    key[2],
                    region,
                    count,
                    ok,
                    throttled,
                    failed,
                    percentile(ttft, 0.5),
                    percentile(ttft, 0.95),
                    percentile(total, 0.5),
                    percentile(total, 0.95),
                    0,
                )
            )
        return out


def fill_sqlite(path: Path, s: Settings, days: float, interval: float) -> tuple[int, int]:
    fmt = "%Y-%m-%d %H:%M:%S.%f"  # what SQLAlchemy's DateTime stores on SQLite
    conn = sqlite3.connect(str(path))
    conn.execute("PRAGMA synchronous=OFF")
    raw_sql = f"INSERT INTO probe_result ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    roll_sql = f"INSERT INTO probe_rollup ({', '.join(ROLLUP_COLUMNS)}) VALUES ({', '.join('?' * len(ROLLUP_COLUMNS))})"
    rollups, raw, rolled = Rollups(), 0, 0
    batch: list[tuple[Any, ...]] = []

    def flush(before: datetime | None) -> None:
        nonlocal raw, rolled
        conn.executemany(raw_sql, [(*r[:3], r[3].strftime(fmt), *r[4:]) for r in batch])
        raw += len(batch)
        batch.clear()
        done = rollups.done(before)
        conn.executemany(roll_sql, [(*r[:2], r[2].strftime(fmt), *r[3:]) for r in done])
        rolled += len(done)

    with conn:
        for row, _, _ in rows(s, days, interval):
            batch.append(row)
            rollups.add(row)
            if len(batch) >= 60_000:
                flush(row[3].replace(second=0, microsecond=0))
        flush(None)
    conn.close()
    return raw, rolled


def older_rollups(cur: Any, s: Settings, since: datetime, until: datetime) -> int:
    """Per-minute rollups of every endpoint and vantage for the whole minutes in [since, until), made in SQL a day
    at a time (oldest first, as a worker appends them): the months of rollups older than the raw results, 300 rows
    a minute at the target size, too many to build from raw rows in Python. Six probes a minute each, one of them
    throttled in the regions seeded degraded; the latencies as the raw rows'."""
    endpoints = ", ".join(f"('{r.name}/{e.name}', '{r.name}', {i})" for i, r in enumerate(s.regions) for e in r.endpoints)
    vantages = ", ".join(f"('{v}')" for v in VANTAGES)
    sql = f"""
        INSERT INTO probe_rollup ({", ".join(ROLLUP_COLUMNS)})
        SELECT eid, v, at, region, 6, 6 - throttled, throttled, 0, ttft, ttft + 90, ttft + 350, ttft + 450, 0
        FROM (
            SELECT e.eid, v.v, m.at, e.region, CASE WHEN e.i %% 7 = 3 THEN 1 ELSE 0 END AS throttled,
                   150 + (50 * e.i) %% 400 + random() * 120 AS ttft
            FROM generate_series(%(start)s::timestamptz, %(end)s::timestamptz - interval '1 minute', interval '1 minute') AS m(at)
            CROSS JOIN (VALUES {endpoints}) AS e(eid, region, i)
            CROSS JOIN (VALUES {vantages}) AS v(v)
        ) AS minute
        ORDER BY at
    """
    rolled, start = 0, since.replace(second=0, microsecond=0)
    while start < until:
        end = min(start + timedelta(days=1), until)
        cur.execute(sql, {"start": start, "end": end})
        rolled += cur.rowcount
        start = end
    return rolled


def fill_postgres(url: str, s: Settings, days: float, interval: float, rollup_days: float, vacuum: bool = True) -> tuple[int, int]:
    import psycopg

    rollups, raw, rolled = Rollups(), 0, 0
    raw_since = NOW - timedelta(seconds=int(days * 86400 / interval) * interval)
    with psycopg.connect(conninfo(url)) as conn, conn.cursor() as cur:
        rolled = older_rollups(cur, s, NOW - timedelta(days=rollup_days), raw_since.replace(second=0, microsecond=0))
        with cur.copy(f"COPY probe_result ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for row, _, _ in rows(s, days, interval):
                copy.write_row(row)
                rollups.add(row)
                raw += 1
        done = rollups.done(None)
        with cur.copy(f"COPY probe_rollup ({', '.join(ROLLUP_COLUMNS)}) FROM STDIN") as copy:
            for r in done:
                copy.write_row(r)
        rolled += len(done)
        conn.commit()
        # VACUUM as well as ANALYZE, here in the fill: else autovacuum takes up the millions of new rows a minute
        # later, while the pages are timed (at 7 days its pass over probe_result ran about 90 s, from just after the
        # seeding); a worker's table is vacuumed as it grows, never a week of rows at once
        conn.autocommit = True
        if vacuum:
            cur.execute("VACUUM (ANALYZE) probe_result")
            cur.execute("VACUUM (ANALYZE) probe_rollup")
    return raw, rolled


def put_back_oldest_day(url: str, s: Settings, args: argparse.Namespace, rollup_days: float) -> tuple[int, int]:
    """Make a kept database as it was filled again, for pass after pass on one fill (PostgreSQL): the oldest day
    of raw results put back if a pass deleted any of it (the fill's rows), the oldest day of rollups too (made in
    SQL, as the older ones are), and every row stored after the fill deleted (by the writers, the timed calls, the
    evaluation: a kept database would pile them up, and the page read reads them); then ``VACUUM (ANALYZE)`` as
    after the fill, unless ``--unvacuumed``. Returns the raw rows and the rollups put back."""
    import psycopg

    endpoints = sum(len(r.endpoints) for r in s.regions) * len(VANTAGES)
    raw_until = NOW - timedelta(seconds=int(args.days * 86400 / args.interval) * args.interval) + timedelta(days=1)
    roll_since = (NOW - timedelta(days=rollup_days)).replace(second=0, microsecond=0)
    roll_until = roll_since + timedelta(days=1)
    put = rolled = 0
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        conn.execute("DELETE FROM probe_result WHERE started_at >= %s", (NOW,))
        conn.execute("DELETE FROM probe_rollup WHERE minute_at >= %s", (NOW,))
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM probe_result WHERE started_at < %s", (raw_until,))
            if (cur.fetchone() or (0,))[0] != int(86400 / args.interval) * endpoints:
                cur.execute("DELETE FROM probe_result WHERE started_at < %s", (raw_until,))
                with cur.copy(f"COPY probe_result ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                    for row, _, _ in rows(s, args.days, args.interval, first=1.0):
                        copy.write_row(row)
                        put += 1
            cur.execute("SELECT count(*) FROM probe_rollup WHERE minute_at >= %s AND minute_at < %s", (roll_since, roll_until))
            if (cur.fetchone() or (0,))[0] != 1440 * endpoints:
                cur.execute("DELETE FROM probe_rollup WHERE minute_at >= %s AND minute_at < %s", (roll_since, roll_until))
                rolled = older_rollups(cur, s, roll_since, roll_until)
        if not args.unvacuumed:
            conn.execute("VACUUM (ANALYZE) probe_result")
            conn.execute("VACUUM (ANALYZE) probe_rollup")
    return put, rolled


def seed_state(store: Store, s: Settings) -> None:
    """Health, targets, a lease, a user and a month of changes and incidents: what a running worker leaves."""
    endpoints, regions = [], []
    for i, r in enumerate(s.regions):
        state = HealthStateName.DEGRADED if i % 7 == 3 else HealthStateName.HEALTHY
        eps = [EndpointHealth(f"{r.name}/{e.name}", r.name, state, 0.8 if i % 7 == 3 else 1.0, "ok", since=NOW) for e in r.endpoints]
        endpoints += eps
        regions.append(RegionHealth(r.name, state, eps[0].score, (), tuple(eps), 0.6, NOW - timedelta(hours=3)))
    store.save_health(endpoints, regions, NOW)
    for t in s.targets:
        names = {r: azure_name(t, r) for r in t.endpoints}
        target_state = TargetState(t.name, {r: EndpointSetting(ep.weight, ep.priority, True) for r, ep in t.endpoints.items()})
        store.save_target_state(t.name, names, target_state, target_state, NOW)
    store.try_acquire_lease(LeaseName.LEADER, "bench-worker", 3600, NOW - timedelta(seconds=5))
    for k in range(30 * 20):  # a month: 20 changes a day
        c = Change("tm-weighted", s.regions[k % len(s.regions)].name, "aoai", Field.WEIGHT, 100, 80, "degraded: 15% throttled")
        store.record_change(c, ChangeStatus.APPLIED, NOW - timedelta(hours=1.2 * k), fencing_token=3)
    seed_incidents(store, s)
    users.set_hasher(PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    users.add_user(store, "bench", "operator", PASSWORD, NOW)


INCIDENTS_PER_DAY = 3


def seed_incidents(store: Store, s: Settings) -> list[str]:
    """A month of incidents (3 a day), plus the open ones of the degraded regions; returns their ids, newest first.

    Each closed one is what the worker records for an outage: two endpoints
    seen failing by every vantage, the region's verdict, a drain in every
    target, the verdicts of recovery and the restores. The regions seeded
    degraded (every 7th from the 4th) have an open incident since 3 hours ago.
    """
    bad, ok = HealthStateName.UNHEALTHY, HealthStateName.HEALTHY
    transitions: list[Transition] = []
    ids = []

    def endpoint_verdicts(region: str, at: datetime, old: HealthStateName, new: HealthStateName, why: str) -> None:
        for e in DEPLOYMENTS[:2]:
            for v in VANTAGES:
                evidence = tuple(f"{v} {at - timedelta(seconds=10 * j):%H:%M:%S} server_error 503" for j in (2, 1, 0))
                transitions.append(Transition("endpoint", f"{region}/{e}", old, new, why, at, v, evidence if new is bad else ()))

    def drain_or_restore(region: str, at: datetime, enabled: bool, why: str) -> None:
        for t in s.targets:
            c = Change(t.name, region, azure_name(t, region), Field.ENABLED, not enabled, enabled, why)
            store.record_change(c, ChangeStatus.APPLIED, at, fencing_token=3)

    for k in range(30 * INCIDENTS_PER_DAY):
        region = s.regions[(7 * k) % len(s.regions)].name  # a region's incidents are 20 apart: never overlapping
        start = NOW - timedelta(hours=24 / INCIDENTS_PER_DAY * k + 5)
        end = start + timedelta(minutes=10 + 7 * (k % 5))
        endpoint_verdicts(region, start - timedelta(seconds=5), ok, bad, "3 of 3 failed (503)")
        transitions.append(Transition("region", region, ok, bad, f"{region}/{DEPLOYMENTS[0]}: 3 of 3 failed", start))
        drain_or_restore(region, start + timedelta(seconds=4), False, f"{region} unhealthy: 3 of 3 failed")
        endpoint_verdicts(region, end - timedelta(seconds=5), bad, ok, "3 successes")
        transitions.append(Transition("region", region, bad, ok, "recovered", end))
        drain_or_restore(region, end + timedelta(seconds=30), True, f"{region} healthy again")
        ids.append(f"{region}-{start:%Y%m%dT%H%M%SZ}")
    for i, r in enumerate(s.regions):
        if i % 7 == 3:
            since = NOW - timedelta(hours=3)
            transitions.append(Transition("region", r.name, ok, HealthStateName.DEGRADED, "15% throttled", since))
            ids.append(f"{r.name}-{since:%Y%m%dT%H%M%SZ}")
    store.add_transitions(transitions)
    return sorted(ids, key=lambda i: i.rsplit("-", 1)[1], reverse=True)


# ---------------------------------------------------------------- measurements


def ms(seconds: float) -> float:
    return seconds * 1000


def load() -> str:
    """The machine's load averages (1, 5, 15 min): every figure here is wall-clock time on shared cores."""
    return "load " + " / ".join(f"{x:.2f}" for x in os.getloadavg())


def server_cpu(store: Store) -> Callable[[], float]:
    """CPU seconds used so far by the PostgreSQL backends serving this database (0 on SQLite: it runs in this process).

    Read from /proc (10 ms ticks: meaningful summed over many requests). With
    this process's own CPU time it gives what a request costs in CPU, which on
    shared, busy cores says more than its wall-clock time does.
    """
    if store.engine.dialect.name != "postgresql":
        return lambda: 0.0
    with store.engine.connect() as conn:
        pids = [int(p) for (p,) in conn.exec_driver_sql("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")]
    tick = os.sysconf("SC_CLK_TCK")

    def used() -> float:
        total = 0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # that backend has gone (its connection was closed)
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / tick

    return used


class FullCollections:
    """The full (generation 2) cyclic GC passes while it is entered, and the longest: a read that meets one is slow."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append(ms(time.perf_counter() - self._started))

    def __enter__(self) -> FullCollections:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


def pages(store: Store, s: Settings, iterations: int) -> list[tuple[str, float, float, float, FullCollections]]:
    """(path, p50 ms, p95 ms, mean CPU ms per request: this process and its database backends, its full GC passes)."""
    from controlplane.cli.common import freeze_startup_heap
    from web import create_app

    app = create_app(s, store, {"TESTING": True, "CLOCK": FixedClock(), "SECRET_KEY": "bench"})
    freeze_startup_heap()  # as `regionguard web` and `run` do before serving
    client = app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True))
    assert token
    client.post("/login", data={"username": "bench", "password": PASSWORD, "csrf_token": token.group(1)})
    region = s.regions[3].name
    closed = f"{s.regions[7].name}-{NOW - timedelta(hours=24 / INCIDENTS_PER_DAY + 5):%Y%m%dT%H%M%SZ}"  # the second incident
    paths = [
        "/",
        "/partials/overview",
        f"/region/{region}",
        f"/region/{region}?range=24h",
        f"/region/{region}?range=7d",
        "/target/tm-weighted",
        "/timeline",
        "/incidents",
        f"/incident/{closed}",
        "/api/v1/regions",
        f"/api/v1/regions/{region}",
        "/api/v1/targets",
        "/api/v1/events",
        "/api/v1/incidents",
        f"/api/v1/incidents/{closed}",
        "/api/v1/overrides",
    ]
    out = []
    for path in paths:
        client.get(path)  # warm: templates, chart cache, the pool's connection
        backends = server_cpu(store)
        times = []
        cpu0, server0 = time.process_time(), backends()
        with FullCollections() as full:
            for _ in range(iterations):
                t = time.perf_counter()
                r = client.get(path)
                times.append(ms(time.perf_counter() - t))
                if r.status_code != 200:
                    raise SystemExit(f"{path}: HTTP {r.status_code}")
        cpu = ms(time.process_time() - cpu0 + backends() - server0) / iterations
        times.sort()
        out.append((path, statistics.median(times), percentile(times, 0.95) or 0.0, cpu, full))
    return out


def result(eid: str, region: str, vantage: str, at: datetime) -> ProbeResult:
    return ProbeResult(eid, region, vantage, at, Outcome.OK, status_code=200, ttft_ms=180.0, total_ms=420.0, request_id=uuid.uuid4().hex)


def writers(url: str, s: Settings, seconds: float, n: int = 3, batch: int = 100) -> list[float]:
    """``n`` writers, each with its own connection pool, storing batches like the worker's writer thread."""
    stop = time.monotonic() + seconds
    counts = [0] * n
    eps = [(f"{r.name}/{e.name}", r.name) for r in s.regions for e in r.endpoints]

    def work(k: int) -> None:
        store = Store(url)
        try:
            i = 0
            while time.monotonic() < stop:
                at = NOW + timedelta(seconds=i)
                counts[k] += store.add_probe_results(
                    [result(*eps[(i + j) % len(eps)], VANTAGES[k % len(VANTAGES)], at) for j in range(batch)]
                )
                i += 1
        finally:
            store.close()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 60)
    took = time.monotonic() - started
    return [c / took for c in counts]


CALLS = {
    "insert": "insert",  # a writer storing one result at a time
    "read": "page read",  # the region page's raw-table queries
    "chart": "7-day chart read",  # the region page's 7-day chart from the rollups, uncached
    "rollup": "rollup job",  # the leader's rollup tick (the last 3 minutes), once a second (the worker's: every 15 s)
}


def timed_calls(kind: str, url: str, regions: int, interval: float, ready: Any, stop: Any, out: Any) -> None:
    """Time one kind of call (:data:`CALLS`) in a loop until ``stop`` is set, on its own store, and put
    (kind, its backends' pids, [(start, *CALL_FIELDS) per call]) on ``out`` (:mod:`bench.retention_window`).

    Runs in a process of its own (see :class:`Latencies`). The first call (connect, compile) is not timed.
    """
    s = scale_settings(regions, interval)
    store = Store(url)
    pids: list[int] = []
    if store.engine.dialect.name == "postgresql":
        event.listen(store.engine, "connect", lambda dbapi_conn, _record: pids.append(dbapi_conn.info.backend_pid))
    eid, region, page_region = f"{s.regions[0].name}/{DEPLOYMENTS[0]}", s.regions[0].name, s.regions[3].name
    salt = os.getpid()  # a fresh request id per run: several runs on one database

    def call(i: int) -> float | None:
        if kind == "insert":
            store.add_probe_results([result(eid, region, "eu-west", NOW + timedelta(minutes=5, seconds=i, microseconds=salt % 10**6))])
        elif kind == "read":
            queries.region_stats(store, NOW - timedelta(minutes=5), page_region)
            first = time.perf_counter()
            queries.recent_probes(store, page_region)
            return first
        elif kind == "chart":
            queries.rollup_series(store, [page_region], NOW - timedelta(days=7), 3600)
        else:
            store.rollup(NOW - timedelta(minutes=3), NOW + timedelta(seconds=1))
        return None

    calls: list[tuple[float, ...]] = []
    try:
        call(0)
        ready.wait()
        for i in range(1, 1_000_000):  # bounded; stops when told
            if stop.is_set():
                break
            calls.append(measure(lambda i=i: call(i), pids[-1] if pids else None))
            if kind == "rollup":
                stop.wait(1.0)  # paced: a job that takes 100 ms back to back would be a core of its own
    finally:
        store.close()
        out.put((kind, pids, calls))


def window(url: str, args: argparse.Namespace, kinds: tuple[str, ...] = ("insert", "read"), busy: Busy = CALM) -> Latencies:
    """A writer storing one result at a time and a page read (or other ``kinds`` of :data:`CALLS`), each timed call
    by call in a process of its own (:class:`bench.retention_window.Latencies`), with ``busy`` meanwhile."""
    return Latencies(url, kinds, timed_calls, (url, args.regions, args.interval), busy)


def busier(args: argparse.Namespace, table: str) -> Busy:
    """The busier machine the options ask for, in a retention pass on ``table`` and in its window without."""
    return Busy(args.burners, table if args.vacuum_during else None, args.sample_waits)


@dataclass
class Pass:
    """One retention pass and its window without a purge, as :func:`retention` measured them: seconds, rows deleted,
    the longest statement on its table (ms), the CPU seconds the purge took (this process and its backends)."""

    took: float
    rows: int
    longest: float
    cpu: float
    during: Latencies
    quiet: Latencies

    def show(self, what: str) -> None:
        print(f"{what}: {self.rows:,} rows in {self.took:.1f} s (CPU {self.cpu:.1f} s); longest statement {self.longest:.0f} ms ({load()})")
        for name, w in (("meanwhile", self.during), ("as long again after it, no purge", self.quiet)):
            first, *rest = w.report(CALLS)
            print(f"  {name}: {first}")
            for line in rest:
                print(f"  {line}")
        print(f"  ({load()})")


def retention(
    store: Store, url: str, args: argparse.Namespace, purge: Callable[[], int], table: str, kinds: tuple[str, ...] = ("insert", "read")
) -> Pass:
    """Run ``purge`` (a pass that deletes the oldest day of ``table``; returns the rows it deleted) while a writer
    and a page read (or other ``kinds``) run in processes of their own; then as long again with no purge (what the
    machine does without it; a max is only comparable over windows of the same length). Both windows get the
    same busier machine (``--burners``, ``--vacuum-during``, ``--sample-waits``)."""
    longest = [0.0]
    started_at: dict[int, float] = {}
    backends: dict[int, float] = {}  # pid: its CPU ms when the purge first took its connection

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        started_at[id(cursor)] = time.perf_counter()

    def after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if table in statement:  # the batch's select and its DELETE
            longest[0] = max(longest[0], ms(time.perf_counter() - started_at.pop(id(cursor), time.perf_counter())))

    def checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        if store.engine.dialect.name == "postgresql":
            backends.setdefault(dbapi_conn.info.backend_pid, proc_sched(dbapi_conn.info.backend_pid)[0])

    hooks = (("before_cursor_execute", before), ("after_cursor_execute", after), ("checkout", checkout))
    for name, hook in hooks:
        event.listen(store.engine, name, hook)
    try:
        with window(url, args, kinds, busier(args, table)) as during:
            t, cpu = time.perf_counter(), time.process_time()
            deleted = purge()
            took, cpu = time.perf_counter() - t, time.process_time() - cpu
    finally:
        for name, hook in hooks:
            event.remove(store.engine, name, hook)
    cpu += sum(proc_sched(pid)[0] - at for pid, at in backends.items()) / 1000
    with window(url, args, kinds, busier(args, table)) as quiet:
        time.sleep(min(took, 300.0))
    return Pass(took, deleted, longest[0], cpu, during, quiet)


def evaluation(store: Store, s: Settings) -> tuple[float, float]:
    """The worker's evaluation: warm start from the store, then one steady tick of 10 s of news (ms)."""
    t = time.perf_counter()
    warm = store.latest_results(per_endpoint=s.health.window, since=NOW - timedelta(minutes=15))
    high = store.max_result_id()
    evaluator = HealthEvaluator.from_results(s, warm, NOW)
    evaluator.evaluate(NOW)
    warm_ms = ms(time.perf_counter() - t)
    news = [result(f"{r.name}/{e.name}", r.name, v, NOW + timedelta(seconds=5)) for r in s.regions for e in r.endpoints for v in VANTAGES]
    store.add_probe_results(news)
    t = time.perf_counter()
    high, fresh = store.results_after(high)
    evaluator.observe_many(fresh)
    evaluator.evaluate(NOW + timedelta(seconds=10))
    return warm_ms, ms(time.perf_counter() - t)


def size_of(store: Store, path: Path | None) -> str:
    if path is not None:
        return f"{path.stat().st_size / 2**30:.2f} GiB"
    with store.engine.connect() as conn:
        return str(conn.exec_driver_sql("SELECT pg_size_pretty(pg_database_size(current_database()))").scalar())


PARTS = ("pages", "rollup", "evaluation", "inserts", "retention", "rollups")


def timed_ms(call: Callable[[], object], times: int = 1) -> list[float]:
    out = []
    for _ in range(times):
        t = time.perf_counter()
        call()
        out.append(ms(time.perf_counter() - t))
    return sorted(out)


def rollup_job(store: Store, runs: int = 5) -> str:
    """The worker's rollup job (the last 3 minutes) ``runs`` times, then once more under ``tracemalloc``: the memory
    it allocates in this process (the rows it brought into Python, when it did; the soak's RSS steps came from that)."""

    def job() -> None:
        store.rollup(NOW - timedelta(minutes=3), NOW + timedelta(seconds=1))

    times = timed_ms(job, runs)
    tracemalloc.start()
    try:
        job()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return f"{times[runs // 2]:.0f} ms (of {runs}: {times[0]:.0f}-{times[-1]:.0f}); Python's peak allocation in it {peak / 2**20:.2f} MiB"


def chart_reads(store: Store, region: str, reads: int) -> tuple[list[float], list[float]]:
    """The region page's 7-day chart of ``region`` uncached (its first read, and each one after the cache's 5 minutes),
    ``reads`` times from the per-minute rollups alone (as before migration 0010) and as many from the hourly ones,
    taken in turn so both see the same machine. Viewed 23 minutes past the hour: 37 minutes of its first hour come
    from the per-minute rollups."""
    since = NOW - timedelta(days=7) + timedelta(minutes=23)
    by_minute: list[float] = []
    hourly: list[float] = []
    for i in range(2 * reads + 2):  # the first of each is not timed (connect, compile)
        t = time.perf_counter()
        queries.rollup_series(store, [region], since, 3600, hourly=bool(i % 2))
        if i >= 2:
            (hourly if i % 2 else by_minute).append(ms(time.perf_counter() - t))
    return sorted(by_minute), sorted(hourly)


def median_p95(xs: list[float]) -> str:
    return (
        f"median {statistics.median(xs):.1f} ms, p95 {percentile(sorted(xs), 0.95) or 0:.1f} ms (of {len(xs)}: {min(xs):.1f}-{max(xs):.1f})"
    )


def rollups_at_size(store: Store, url: str, args: argparse.Namespace, rolled: int, oldest: datetime) -> None:
    """The rollups at their retention's size: the region page's uncached 7-day chart from the per-minute and from the
    hourly rollups, migration 0010 filling the hourly rollups on the live table while a writer and a page read run,
    and a rollup retention pass of the oldest day while a writer, a page read and the rollup job (the leader's) run,
    each in a process of its own (the pass's longest statement is one of its rollup statements)."""
    from controlplane.store import db

    region = scale_settings(args.regions, args.interval).regions[3].name
    by_minute, hourly = chart_reads(store, region, 25)
    print(f"the region page's 7-day chart, uncached, {rolled:,} rollups ({load()}):")
    print(f"  from the per-minute rollups (before 0010): {median_p95(by_minute)}")
    print(f"  from the hourly rollups:                   {median_p95(hourly)}")
    db.downgrade(url, "0009")
    with window(url, args, ("insert", "read")) as building:
        t = time.perf_counter()
        db.upgrade(url)
        took = time.perf_counter() - t
    print(f"migration 0010 on the live table (the hours of {rolled:,} rollups, one INSERT ... SELECT): {took:.1f} s ({load()})")
    print(f"  meanwhile: {building.summary(CALLS)}")
    print(f"rollup job after it: {rollup_job(store)} ({load()})")
    retention(
        store,
        url,
        args,
        lambda: store.purge(raw_before=NOW - timedelta(days=args.days), rollup_before=oldest + timedelta(days=1))[1],
        "probe_rollup",
        ("insert", "read", "rollup"),
    ).show("rollup retention of the oldest day")


def run(
    name: str,
    url: str,
    fill: Callable[[], tuple[int, int]] | None,
    s: Settings,
    args: argparse.Namespace,
    path: Path | None,
    rollup_days: float,
) -> None:
    """Fill (``fill`` None: a kept database, filled by an earlier run, its oldest days put back), then measure
    ``args.parts``; ``rollup_days``: how many days of rollups the fill makes. The retention part runs
    ``--passes`` passes on PostgreSQL, the oldest day put back before each after the first (and the writers' rows
    stored again, with ``inserts``: a page read reads them); on SQLite one."""
    print(f"\n== {name}")
    started = time.perf_counter()
    open_store(url, migrate=True).close()  # a kept database too: its schema may be older than this code
    t = time.perf_counter()
    if fill is None:
        put, back = put_back_oldest_day(url, s, args, rollup_days)
        print(f"kept database: put back {put:,} probe results and {back:,} rollups in {time.perf_counter() - t:.0f} s ({load()})")
    else:
        raw, rolled = fill()
        print(f"filled {raw:,} probe results and {rolled:,} rollups ({rollup_days:g} days) in {time.perf_counter() - t:.0f} s ({load()})")
    oldest_rollup = NOW - timedelta(days=rollup_days)
    store = open_store(url)
    try:
        if fill is None:  # seeded when it was filled
            with store.engine.connect() as conn:
                rolled = int(conn.exec_driver_sql("SELECT count(*) FROM probe_rollup").scalar() or 0)
        else:
            seed_state(store, s)
        # the hours of the minutes the fill made or put back (and of none after NOW), as a worker's rollup job sums them
        t = time.perf_counter()
        hours = store.rollup_hours(NOW, NOW + timedelta(days=1))
        hours += store.rollup_hours(oldest_rollup, NOW if fill is not None else oldest_rollup + timedelta(days=1))
        print(f"summed {hours:,} hourly rollups in {time.perf_counter() - t:.0f} s ({load()})")
        if store.engine.dialect.name == "postgresql" and not getattr(args, "unvacuumed", False):
            with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM (ANALYZE) probe_rollup_hour")
        if "pages" in args.parts:
            print(f"{'page / API':44} {'p50 ms':>8} {'p95 ms':>8} {'CPU ms':>8}  full GC passes, longest ms   ({load()})")
            for path_, p50, p95, cpu, full in pages(store, s, args.iterations):
                print(f"{path_:44} {p50:8.1f} {p95:8.1f} {cpu:8.1f}  {len(full.pauses):3d} {max(full.pauses, default=0.0):8.1f}")
            print(f"  ({load()} after the pages)")
        if "rollup" in args.parts:
            print(f"rollup job (last 3 minutes): {rollup_job(store)} ({load()})")
        if "evaluation" in args.parts:
            warm_ms, tick_ms = evaluation(store, s)
            print(f"evaluation: warm start {warm_ms:.0f} ms, one tick of news {tick_ms:.1f} ms ({load()})")
        if "retention" in args.parts:
            oldest = NOW - timedelta(days=args.days)
            for k in range(args.passes if path is None else 1):
                if k > 0:
                    t = time.perf_counter()
                    put, _ = put_back_oldest_day(url, s, args, rollup_days)
                    vacuumed = "" if args.unvacuumed else ", VACUUM (ANALYZE)"
                    print(
                        f"\npass {k + 1}: put back {put:,} rows of the oldest day{vacuumed} in {time.perf_counter() - t:.0f} s ({load()})"
                    )
                if "inserts" in args.parts:
                    insert_rates(url, s, args)
                retention(
                    store,
                    url,
                    args,
                    lambda: store.purge(raw_before=oldest + timedelta(days=1), rollup_before=min(oldest, oldest_rollup))[0],
                    "probe_result",
                ).show("retention of the oldest day")
        elif "inserts" in args.parts:
            insert_rates(url, s, args)
        if "rollups" in args.parts:
            rollups_at_size(store, url, args, rolled, oldest_rollup)
        print(f"database size: {size_of(store, path)}")
    finally:
        store.close()
    print(f"({name}: {time.perf_counter() - started:.0f} s in all)")


def insert_rates(url: str, s: Settings, args: argparse.Namespace) -> None:
    rates = writers(url, s, args.write_seconds)
    print(f"insert, 3 writers at once: {', '.join(f'{r:,.0f}' for r in rates)} results/s per writer ({load()})")


def drop(admin: Any, name: str) -> bool:
    """Drop the bench database. A plain DROP also stops autovacuum there (FORCE would need superuser for that)."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    for _ in range(30):  # bounded: our own connections are closed, others close within seconds
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            return True
        except OperationalError:
            time.sleep(1.0)
    print(f"could not drop database {name}: drop it by hand")
    return False


def whole_number(least: int, most: int) -> Callable[[str], int]:
    """An argparse type: a whole number in [least, most], else an error that names the value (argparse adds the option)."""

    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            n = least - 1
        if not least <= n <= most:
            raise argparse.ArgumentTypeError(f"{value!r} is not a whole number from {least} to {most}")
        return n

    return parse


def seconds_or_off(value: str) -> float:
    """An argparse type: seconds from 0.005 to 60, or 0 (off)."""
    try:
        x = float(value)
    except ValueError:
        x = -1.0
    if not (x == 0 or 0.005 <= x <= 60):  # NaN fails both
        raise argparse.ArgumentTypeError(f"{value!r} is not 0 (off) or a number of seconds from 0.005 to 60")
    return x


def database_name(value: str) -> str:
    """An argparse type: a plain PostgreSQL database name (it is quoted into CREATE and DROP DATABASE)."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a database name of lower-case letters, digits and _ (at most 63)")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--regions", type=int, default=20)
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--iterations", type=int, default=100)  # p95 of 30 reads is the second-slowest: one stray pause doubles it
    ap.add_argument("--write-seconds", type=float, default=10.0)
    ap.add_argument(
        "--pg-url", default=os.environ.get("REGIONGUARD_TEST_POSTGRES_URL"), help="an admin URL; a database is made and dropped"
    )
    ap.add_argument("--rollup-days", type=float, default=None, help="days of rollups on PostgreSQL (default: the config's rollup_days)")
    ap.add_argument("--only", choices=("sqlite", "postgres"), default=None)
    ap.add_argument(
        "--parts",
        type=lambda v: tuple(p for p in v.split(",") if p),
        default=None,
        help=f"what to measure after the fill, comma-separated (default: all): {','.join(PARTS)}",
    )
    ap.add_argument(
        "--keep-db",
        metavar="NAME",
        type=database_name,
        help="PostgreSQL only: fill database NAME only if it is not there yet, and keep it (iterate on one fill)",
    )
    ap.add_argument("--drop-db", metavar="NAME", type=database_name, help="drop a database --keep-db kept, and do nothing else")
    ap.add_argument("--retention-only", action="store_true", help="measure only the writers and retention: --parts inserts,retention")
    ap.add_argument(
        "--passes",
        type=whole_number(1, 100),
        default=1,
        help="retention passes (PostgreSQL; SQLite runs one); before each after the first, the oldest day is put back",
    )
    ap.add_argument("--unvacuumed", action="store_true", help="no VACUUM (ANALYZE) after the fill, or after putting the oldest day back")
    ap.add_argument(
        "--burners", type=whole_number(0, 64), default=0, help="processes spinning a core each during every retention pass and its window"
    )
    ap.add_argument(
        "--vacuum-during", action="store_true", help="VACUUM the pass's table at autovacuum's pace during every pass and its window"
    )
    ap.add_argument(
        "--sample-waits",
        type=seconds_or_off,
        default=0.0,
        metavar="SECONDS",
        help="sample pg_stat_activity this often during the retention windows: the wait events of each slow call's backend",
    )
    args = ap.parse_args(argv)
    if args.retention_only and args.parts is not None:
        ap.error(f"--retention-only measures inserts,retention: not with --parts {','.join(args.parts)}")
    args.parts = ("inserts", "retention") if args.retention_only else args.parts or PARTS
    if unknown := set(args.parts) - set(PARTS):
        ap.error(f"--parts: {','.join(sorted(unknown))} is not one of {','.join(PARTS)}")
    if (args.keep_db or args.drop_db) and not args.pg_url:
        ap.error(
            f"--{'keep' if args.keep_db else 'drop'}-db {args.keep_db or args.drop_db}: needs --pg-url or REGIONGUARD_TEST_POSTGRES_URL"
        )
    if args.keep_db and args.only == "sqlite":
        ap.error(f"--keep-db {args.keep_db}: a kept database is PostgreSQL's, not with --only sqlite")
    if args.keep_db:
        args.only = "postgres"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    s = scale_settings(args.regions, args.interval)
    rollup_days = max(args.days, s.retention.rollup_days if args.rollup_days is None else args.rollup_days)
    print(
        f"{len(s.regions)} regions x {len(DEPLOYMENTS)} deployments x {len(VANTAGES)} vantages every {args.interval:g} s "
        f"for {args.days:g} days, rollups for {rollup_days:g} days on PostgreSQL; {os.cpu_count()} cores; {load()}"
    )
    if args.only in (None, "sqlite") and not args.drop_db:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "scale.db"
            url = "sqlite:///" + str(path)
            run("SQLite", url, lambda: fill_sqlite(path, s, args.days, args.interval), s, args, path, args.days)
    if args.only in (None, "postgres") or args.drop_db:
        if not args.pg_url:
            print("\n(no PostgreSQL: pass --pg-url or set REGIONGUARD_TEST_POSTGRES_URL)")
            return 0
        from sqlalchemy import text
        from sqlalchemy.engine import make_url

        from controlplane.store.db import make_engine

        admin = make_engine(args.pg_url).execution_options(isolation_level="AUTOCOMMIT")
        if args.drop_db:
            dropped = drop(admin, args.drop_db)
            admin.dispose()
            print(f"dropped database {args.drop_db} (if it was there)" if dropped else "")
            return 0 if dropped else 1
        name = args.keep_db or f"rg_scale_{uuid.uuid4().hex[:8]}"
        # a kept database says what fill it holds (its comment, set once the fill is complete): reused only for the same
        shape = (
            f"bench/scale.py fill: --days {args.days:g} --regions {args.regions} --interval {args.interval:g} --rollup-days {rollup_days:g}"
        )
        with admin.connect() as conn:
            there = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first() is not None
            if not there:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            elif (
                held := conn.execute(
                    text("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = :n"), {"n": name}
                ).scalar()
            ) != shape:
                admin.dispose()
                raise SystemExit(f"--keep-db {name}: it holds {held or 'no complete fill'}, not {shape} (--drop-db {name} drops it)")
        url = make_url(args.pg_url).set(database=name).render_as_string(hide_password=False)

        def fill() -> tuple[int, int]:
            filled = fill_postgres(url, s, args.days, args.interval, rollup_days, vacuum=not args.unvacuumed)
            if args.keep_db:
                with admin.connect() as conn:
                    conn.execute(text(f"COMMENT ON DATABASE \"{name}\" IS '{shape}'"))
            return filled

        try:
            run("PostgreSQL", url, None if there else fill, s, args, None, rollup_days)
        finally:
            if args.keep_db:
                print(f"kept database {name} (drop it with --drop-db {name})")
            else:
                drop(admin, name)
            admin.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
