"""Dashboard benchmark: prints p50/p95 render times (not a timed test).

Builds a SQLite store like a busy week: 20 regions x 2 deployments probed
every 10 s for 7 days (about 2.4 M probe results), their per-minute rollups
(about 400 k rows), health, target rows for two targets (Traffic Manager and
Front Door, 20 endpoints each), overrides, transitions and changes. Then,
through Flask's test client with a logged-in session, renders the overview,
its live partial, a region page (1 h, 24 h and 7 d), the timeline, the
incident list (30 days of incidents: one a day per region) and an incident
page many times and prints p50/p95 per page. Floor: p95 under 200 ms for the overview and the region page.

Rows are written with fast bulk inserts (sqlite3 ``executemany`` in one
transaction) in the exact format SQLAlchemy stores, after the schema is
created by the Alembic migrations.

Run: ``.venv/bin/python bench/dashboard.py [--db PATH] [--iterations N]``
(``--db`` keeps the generated database between runs; it is reused when it
already holds the data).
"""

from __future__ import annotations

import argparse
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from argon2 import PasswordHasher

from controlplane import users
from controlplane.config import Settings, parse_settings
from controlplane.domain import (
    Change,
    ChangeStatus,
    EndpointHealth,
    EndpointSetting,
    Field,
    HealthStateName,
    LeaseName,
    Override,
    OverrideKind,
    RegionHealth,
    TargetState,
    Transition,
)
from controlplane.store import Store, open_store

NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
FMT = "%Y-%m-%d %H:%M:%S.%f"  # what SQLAlchemy's DateTime stores on SQLite
DEPLOYMENTS = ("gpt-4o", "gpt-4o-mini")
PASSWORD = "bench password 123"
MIN_REGIONS = 6  # the seeded state names the 4th and the 6th region


class FixedClock:
    def now(self) -> datetime:
        return NOW


def bench_settings(regions: int, interval: float, deployments: tuple[str, ...] = DEPLOYMENTS) -> Settings:
    """``regions`` regions of ``deployments`` each, behind a weighted Traffic Manager and a Front Door (bench/scale.py too)."""
    names = [f"region{i:02d}" for i in range(regions)]
    common = {"subscription_id": "00000000-0000-0000-0000-000000000001", "resource_group": "rg", "routing": "weighted"}
    return parse_settings(
        {
            "regions": [
                {
                    "name": n,
                    "azure_region": n,
                    "endpoints": [
                        {"name": d, "base_url": f"https://{n}.example.test", "deployment": d, "auth": {"kind": "entra_id"}}
                        for d in deployments
                    ],
                }
                for n in names
            ],
            "probe": {"interval": f"{interval}s", "fast_interval": "5s", "timeout": "5s"},
            "targets": [
                {
                    **common,
                    "name": "tm-weighted",
                    "kind": "traffic_manager",
                    "profile": "p",
                    "endpoints": {n: {"name": f"tm-{n}", "weight": 100} for n in names},
                },
                {
                    **common,
                    "name": "afd-prod",
                    "kind": "front_door_cdn",
                    "profile": "afd",
                    "origin_group": "og",
                    "endpoints": {n: {"origin": n, "weight": 500, "priority": 1} for n in names},
                },
            ],
        }
    )


# ---------------------------------------------------------------- data


def _probe_rows(
    s: Settings, days: float, interval: float, rng: random.Random, rollups: dict[tuple[str, str], list[float | int]]
) -> Iterator[tuple[Any, ...]]:
    """Raw rows, oldest first; per-minute aggregates are accumulated into ``rollups`` on the way."""
    ticks = int(days * 86400 / interval)
    start = NOW - timedelta(seconds=ticks * interval)
    endpoints = [(f"{r.name}/{e.name}", r.name, i) for i, r in enumerate(s.regions) for e in r.endpoints]
    for k in range(ticks):
        at = start + timedelta(seconds=k * interval)
        at_s = at.strftime(FMT)
        minute = at.replace(second=0, microsecond=0).strftime(FMT)
        for eid, region, i in endpoints:
            roll = rng.random()
            bad_region = i % 7 == 3
            if bad_region and roll < 0.15:
                outcome, status, ttft, total = "throttled", 429, None, None
            elif roll < 0.01:
                outcome, status, ttft, total = "server_error", 503, None, None
            else:
                ttft = 150.0 + 50 * i % 400 + rng.random() * 120
                total = ttft + 250 + rng.random() * 200
                outcome, status = ("slow" if ttft > 3000 else "ok"), 200
            agg = rollups.get((eid, minute))
            if agg is None:
                agg = rollups[(eid, minute)] = [region, 0, 0, 0, 0, [], []]
            agg[1] += 1
            agg[2] += outcome == "ok"
            agg[3] += outcome == "throttled"
            agg[4] += outcome not in ("ok", "throttled")
            if ttft is not None:
                agg[5].append(ttft)
                agg[6].append(total)
            yield (eid, region, "bench", at_s, outcome, status, ttft, total, 3 if ttft else 0, 1 if ttft else 0, 1000, 600, f"req-{k}")


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _flush_rollups(conn: sqlite3.Connection, rollups: dict[tuple[str, str], list[Any]], keep_minute: str | None) -> int:
    done = [k for k in rollups if keep_minute is None or k[1] < keep_minute]
    rows = []
    for key in done:
        region, count, ok, throttled, failed, ttft, total = rollups.pop(key)
        rows.append(
            (
                key[0],
                "bench",
                key[1],
                region,
                count,
                ok,
                throttled,
                failed,
                _pct(ttft, 0.5),
                _pct(ttft, 0.95),
                _pct(total, 0.5),
                _pct(total, 0.95),
                0,
            )
        )
    conn.executemany(
        "INSERT INTO probe_rollup (endpoint_id, vantage, minute_at, region, count, ok, throttled, failed, ttft_p50_ms, ttft_p95_ms, total_p50_ms, total_p95_ms, tokens) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        rows,
    )
    return len(rows)


def bulk_probes(path: Path, s: Settings, days: float, interval: float) -> tuple[int, int]:
    """Raw results and rollups straight through sqlite3 (one transaction, batches of 50 k)."""
    rng = random.Random(7)
    rollups: dict[tuple[str, str], list[Any]] = {}
    conn = sqlite3.connect(str(path))
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-200000")
    sql = (
        "INSERT INTO probe_result (endpoint_id, region, vantage, started_at, outcome, status_code, ttft_ms, total_ms, output_chunks, finished, limit_tokens, remaining_tokens, request_id)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
    )
    raw = rolled = 0
    batch: list[tuple[Any, ...]] = []
    with conn:
        for row in _probe_rows(s, days, interval, rng, rollups):
            batch.append(row)
            if len(batch) >= 50_000:
                conn.executemany(sql, batch)
                raw += len(batch)
                rolled += _flush_rollups(conn, rollups, batch[-1][3][:16] + ":00.000000")
                batch.clear()
        conn.executemany(sql, batch)
        raw += len(batch)
        rolled += _flush_rollups(conn, rollups, None)
    conn.close()
    return raw, rolled


def seed_state(store: Store, s: Settings) -> None:
    """Health, target rows, a lease, overrides, transitions and changes: what a running worker leaves."""
    endpoints, regions = [], []
    for i, r in enumerate(s.regions):
        state = HealthStateName.DEGRADED if i % 7 == 3 else HealthStateName.HEALTHY
        reason = "15% of last 60 probes throttled (429), retry-after 12 s" if state is HealthStateName.DEGRADED else ""
        eps = [
            EndpointHealth(
                f"{r.name}/{e.name}",
                r.name,
                state,
                0.8 if reason else 1.0,
                reason or "ok",
                since=NOW - timedelta(hours=3),
                quota_headroom=0.6,
            )
            for e in r.endpoints
        ]
        endpoints += eps
        regions.append(RegionHealth(r.name, state, eps[0].score, (reason,) if reason else (), tuple(eps), 0.6, NOW - timedelta(hours=3)))
    store.save_health(endpoints, regions, NOW)
    for t in s.targets:
        names = {r: getattr(ep, "name", None) or ep.origin for r, ep in t.endpoints.items()}
        state = TargetState(
            t.name, {r: EndpointSetting(ep.weight, ep.priority, True) for r, ep in t.endpoints.items()}, {r: "Online" for r in t.endpoints}
        )
        store.save_target_state(t.name, names, state, state, NOW)
    store.try_acquire_lease(LeaseName.LEADER, "bench-worker", 3600, NOW - timedelta(seconds=5))
    store.add_transitions(
        [
            Transition(
                "region",
                s.regions[3].name,
                HealthStateName.HEALTHY,
                HealthStateName.DEGRADED,
                "throttled",
                NOW - timedelta(hours=k),
                evidence=("429 at x",),
            )
            for k in range(1, 100)
        ]
    )
    for k in range(200):
        c = Change("tm-weighted", s.regions[k % len(s.regions)].name, "tm-x", Field.WEIGHT, 100, 80, "degraded")
        store.record_change(c, ChangeStatus.APPLIED, NOW - timedelta(minutes=30 * k), fencing_token=3)
    store.add_override(Override(OverrideKind.DRAIN, "bench", "maintenance", NOW - timedelta(hours=1), region=s.regions[5].name))
    store.add_override(
        Override(
            OverrideKind.FREEZE,
            "bench",
            "change window",
            NOW - timedelta(minutes=10),
            target="afd-prod",
            expires_at=NOW + timedelta(hours=1),
        )
    )


INCIDENT_DAYS = 30


def seed_incidents(store: Store, s: Settings, days: int = INCIDENT_DAYS) -> int:
    """One incident a day per region for ``days`` days: per-vantage evidence, the verdict, drains, recovery, restores."""
    n = 0
    transitions: list[Transition] = []
    for day in range(1, days + 1):
        for i, r in enumerate(s.regions):
            start = NOW - timedelta(days=day, minutes=7 * i)
            ep = f"{r.name}/{DEPLOYMENTS[0]}"
            for vantage in ("vantage-a", "vantage-b"):
                evidence = tuple(f"{start - timedelta(seconds=k * 10):%H:%M:%S} server_error 503" for k in (3, 2, 1))
                transitions.append(
                    Transition(
                        "endpoint", ep, HealthStateName.HEALTHY, HealthStateName.UNHEALTHY, "3 of 3 failed", start, vantage, evidence
                    )
                )
            transitions.append(Transition("region", r.name, HealthStateName.HEALTHY, HealthStateName.UNHEALTHY, "3 of 3 failed", start))
            healthy = start + timedelta(minutes=20)
            transitions.append(Transition("region", r.name, HealthStateName.UNHEALTHY, HealthStateName.HEALTHY, "recovered", healthy))
            for t in s.targets:
                name = getattr(t.endpoints[r.name], "name", None) or t.endpoints[r.name].origin
                drain = Change(t.name, r.name, name, Field.ENABLED, True, False, f"{r.name} unhealthy: 3 of 3 failed")
                store.record_change(drain, ChangeStatus.APPLIED, start + timedelta(seconds=6), fencing_token=3)
                back = Change(t.name, r.name, name, Field.ENABLED, False, True, f"{r.name} healthy again")
                store.record_change(back, ChangeStatus.APPLIED, healthy + timedelta(minutes=2), fencing_token=3)
            n += 1
    store.add_transitions(transitions)
    return n


def build(path: Path, s: Settings, days: float, interval: float) -> None:
    t0 = time.perf_counter()
    store = open_store("sqlite:///" + str(path), migrate=True)
    store.close()
    raw, rolled = bulk_probes(path, s, days, interval)
    t1 = time.perf_counter()
    store = open_store("sqlite:///" + str(path))
    store.rollup_hours(NOW - timedelta(days=days + 1), NOW + timedelta(hours=1))  # the worker's rollup job sums the hours as it goes
    seed_state(store, s)
    incidents = seed_incidents(store, s)
    users.set_hasher(PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    users.add_user(store, "bench", "operator", PASSWORD, NOW)
    store.close()
    print(f"built {path}: {raw:,} probe results, {rolled:,} per-minute rollups, {incidents} incidents in {t1 - t0:.1f} s")


def populated(path: Path, expected: int) -> bool:
    if not path.exists():
        return False
    try:
        conn = sqlite3.connect(str(path))
        n = conn.execute("SELECT max(id) FROM probe_result").fetchone()[0] or 0
        users_n = conn.execute("SELECT count(*) FROM app_user").fetchone()[0]
        conn.close()
    except sqlite3.Error:
        return False
    return n >= expected and users_n > 0


# ---------------------------------------------------------------- timing


def timed(client: Any, path: str, n: int) -> tuple[float, list[float]]:
    """(first render in ms, then ``n`` more)."""
    t = time.perf_counter()
    client.get(path)  # the first also compiles templates and fills the chart cache
    first = (time.perf_counter() - t) * 1000
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = client.get(path)
        out.append((time.perf_counter() - t) * 1000)
        if r.status_code != 200:
            raise SystemExit(f"{path}: HTTP {r.status_code}")
    return first, out


def logged_in(app: Any) -> Any:
    client = app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True))
    assert token
    r = client.post("/login", data={"username": "bench", "password": PASSWORD, "csrf_token": token.group(1)})
    if r.status_code != 302:
        raise SystemExit(f"login failed: HTTP {r.status_code}")
    return client


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", type=Path, help="SQLite file to build or reuse (default: a temporary file)")
    ap.add_argument("--regions", type=int, default=20)
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--iterations", type=int, default=40)
    args = ap.parse_args()
    if args.regions < MIN_REGIONS:
        ap.error(
            f"--regions: {args.regions} is too few: the seeded state drains, degrades and shows regions 4 and 6 (at least {MIN_REGIONS})"
        )

    s = bench_settings(args.regions, args.interval)
    tmp = None
    if args.db is None:
        tmp = tempfile.TemporaryDirectory(prefix="rg-bench-")
        path = Path(tmp.name) / "dashboard.db"
    else:
        path = args.db
    expected = int(args.days * 86400 / args.interval) * args.regions * len(DEPLOYMENTS)
    if populated(path, expected):
        print(f"reusing {path}")
    else:
        path.unlink(missing_ok=True)
        build(path, s, args.days, args.interval)

    from web import create_app

    store = open_store("sqlite:///" + str(path))
    client = logged_in(create_app(s, store, {"CLOCK": FixedClock(), "SECRET_KEY": "bench", "TESTING": True}))
    uncached = logged_in(create_app(s, store, {"CLOCK": FixedClock(), "SECRET_KEY": "bench", "TESTING": True, "SERIES_CACHE": False}))

    region = s.regions[3].name
    pages = [
        ("overview", client, "/"),
        ("overview partial (auto-refresh)", client, "/partials/overview"),
        (f"region page 1h ({region})", client, f"/region/{region}"),
        (f"region page 24h ({region})", client, f"/region/{region}?range=24h"),
        (f"region page 7d ({region})", client, f"/region/{region}?range=7d"),
        ("region page 7d, no chart cache", uncached, f"/region/{region}?range=7d"),
        ("timeline", client, "/timeline"),
        ("api regions", client, "/api/v1/regions"),
        (f"incidents ({INCIDENT_DAYS} days)", client, "/incidents"),
        (f"incidents, one region ({region})", client, f"/incidents?region={region}"),
        ("incident page", client, f"/incident/{region}-{NOW - timedelta(days=2, minutes=21):%Y%m%dT%H%M%SZ}"),
        ("api incidents", client, "/api/v1/incidents"),
    ]
    print(
        f"render times over {args.iterations} requests each (SQLite, {args.regions} regions x {len(DEPLOYMENTS)} deployments, {args.days:g} d at {args.interval:g} s):"
    )
    worst: dict[str, float] = {}
    for label, c, url in pages:
        first, samples = timed(c, url, args.iterations)
        p50 = statistics.median(samples)
        p95 = statistics.quantiles(samples, n=20)[18] if len(samples) >= 20 else max(samples)
        worst[label] = p95
        print(f"  {label:36s} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms   (first {first:6.1f} ms)")
    store.close()
    floor = {k: v for k, v in worst.items() if k == "overview" or (k.startswith("region page") and "no chart cache" not in k)}
    verdict = "ok" if all(v < 200 for v in floor.values()) else "OVER"
    print(f"floor p95 < 200 ms for the overview and region pages: {verdict} (worst {max(floor.values()):.1f} ms)")
    over = sorted(k for k, v in worst.items() if v >= 50 and "no chart cache" not in k)
    print(f"target p95 < 50 ms for every page (issue 16): {'ok' if not over else 'over for ' + ', '.join(over)}")
    if tmp is not None:
        tmp.cleanup()
    return 0 if verdict == "ok" else 1


if __name__ == "__main__":
    raise SystemExit(main())
