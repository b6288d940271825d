"""Seed data for the dashboard tests (and a settings object with three regions, three targets).

Everything goes through the Store API, as the worker would write it.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher

from controlplane import users
from controlplane.config import Settings, parse_settings
from controlplane.domain import (
    Change,
    ChangeStatus,
    EndpointHealth,
    EndpointSetting,
    Field,
    FlagKind,
    HealthStateName,
    LivenessFailure,
    LivenessResult,
    Outcome,
    ProbeResult,
    RegionHealth,
    TargetState,
    Transition,
)
from controlplane.store import Store, open_store
from controlplane.store.records import LivenessTally

REGIONS = ("eastus", "westeurope", "japaneast")
PASSWORD = "correct horse battery staple"
HOSTILE = "<script>alert(1)</script>"


def cheap_hashing() -> None:
    """Argon2id with tiny parameters so tests log in fast (the format and checks are the same)."""
    users.set_hasher(PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))


def default_hashing() -> None:
    users.set_hasher(PasswordHasher())


def make_template(directory: Path, s: Settings, now: datetime) -> Path:
    """A migrated, seeded SQLite file (with viewer vic, operator otto, admin ada) to copy per test."""
    path = directory / "template.db"
    store = open_store("sqlite:///" + str(path), migrate=True)
    seed_everything(store, s, now)
    for name, role in (("vic", "viewer"), ("otto", "operator"), ("ada", "admin")):
        users.add_user(store, name, role, PASSWORD, now)
    with store.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    return path


def copy_of(template: Path, directory: Path) -> Store:
    path = directory / "web.db"
    shutil.copyfile(template, path)
    return open_store("sqlite:///" + str(path))


def settings(min_serving: int = 1, interval: str = "10s") -> Settings:
    def region(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "azure_region": name,
            "endpoints": [
                {
                    "name": "gpt-4o",
                    "base_url": f"https://{name}.example.test",
                    "deployment": "gpt-4o",
                    "auth": {"kind": "api_key", "env": "KEY"},
                    "pricing": {"input_per_1m": 2.0, "output_per_1m": 8.0},
                },
                {
                    "name": "gpt-4o-mini",
                    "base_url": f"https://{name}.example.test",
                    "deployment": "gpt-4o-mini",
                    "auth": {"kind": "api_key", "env": "KEY"},
                },
            ],
        }

    common = {"subscription_id": "00000000-0000-0000-0000-000000000001", "resource_group": "rg"}
    return parse_settings(
        {
            "regions": [region(r) for r in REGIONS],
            "probe": {"interval": interval, "fast_interval": "5s", "timeout": "5s"},
            "guardrails": {"min_serving": min_serving},
            "targets": [
                {
                    **common,
                    "name": "tm-weighted",
                    "kind": "traffic_manager",
                    "profile": "p1",
                    "routing": "weighted",
                    "endpoints": {r: {"name": f"aoai-{r}", "weight": w} for r, w in zip(REGIONS, (500, 300, 200), strict=True)},
                },
                {
                    **common,
                    "name": "tm-priority",
                    "kind": "traffic_manager",
                    "profile": "p2",
                    "routing": "priority",
                    "endpoints": {r: {"name": f"aoai-{r}", "priority": p} for r, p in zip(REGIONS, (1, 2, 3), strict=True)},
                },
                {
                    **common,
                    "name": "afd-prod",
                    "kind": "front_door_cdn",
                    "profile": "afd",
                    "origin_group": "og",
                    "routing": "weighted",
                    "endpoints": {r: {"origin": r, "weight": w, "priority": 1} for r, w in zip(REGIONS, (500, 300, 200), strict=True)},
                },
            ],
        }
    )


def seed_targets(store: Store, s: Settings, now: datetime, disabled: dict[str, set[str]] | None = None) -> None:
    """Actual == desired == config baseline for every target (minus ``disabled`` regions per target)."""
    disabled = disabled or {}
    for t in s.targets:
        names = {r: getattr(ep, "name", None) or getattr(ep, "origin", None) for r, ep in t.endpoints.items()}
        endpoints = {
            r: EndpointSetting(weight=ep.weight, priority=ep.priority, enabled=r not in disabled.get(t.name, set()))
            for r, ep in t.endpoints.items()
        }
        state = TargetState(
            target=t.name,
            endpoints=endpoints,
            monitor_status={r: "Online" for r in t.endpoints},
            reasons={r: "healthy" for r in t.endpoints},
        )
        store.save_target_state(t.name, names, state, state, now)
        for r, e in endpoints.items():
            store.set_applied(t.name, r, e, now)


def seed_health(store: Store, now: datetime, states: dict[str, HealthStateName] | None = None) -> None:
    states = states or {}
    endpoints, regions = [], []
    for r in REGIONS:
        st = states.get(r, HealthStateName.HEALTHY)
        reason = "" if st is HealthStateName.HEALTHY else "7 of last 10 probes failed (503)"
        eps = [
            EndpointHealth(
                endpoint_id=f"{r}/{e}",
                region=r,
                state=st,
                score=1.0 if st is HealthStateName.HEALTHY else 0.2,
                reason=reason or "ok",
                since=now - timedelta(minutes=30),
                quota_headroom=0.6,
            )
            for e in ("gpt-4o", "gpt-4o-mini")
        ]
        endpoints += eps
        regions.append(
            RegionHealth(
                region=r,
                state=st,
                score=eps[0].score,
                reasons=(reason,) if reason else (),
                endpoints=tuple(eps),
                quota_headroom=0.6,
                since=now - timedelta(minutes=30),
            )
        )
    store.save_health(endpoints, regions, now)


def seed_probes(store: Store, now: datetime, minutes: int = 15, error_region: str | None = None, error: str = HOSTILE) -> None:
    """Probe results every 10 s for ``minutes`` and their per-minute rollups."""
    results = []
    start = now - timedelta(minutes=minutes)
    for i in range(minutes * 6):
        at = start + timedelta(seconds=10 * i)
        for r in REGIONS:
            for e in ("gpt-4o", "gpt-4o-mini"):
                bad = r == error_region and i % 3 == 0
                results.append(
                    ProbeResult(
                        endpoint_id=f"{r}/{e}",
                        region=r,
                        vantage="test",
                        started_at=at,
                        outcome=Outcome.SERVER_ERROR if bad else Outcome.OK,
                        status_code=503 if bad else 200,
                        ttft_ms=None if bad else 200.0 + 10 * (i % 7),
                        total_ms=None if bad else 450.0 + 10 * (i % 5),
                        request_id=f"req-{r}-{i}",
                        error=error if bad else None,
                        limit_tokens=1000,
                        remaining_tokens=600,
                    )
                )
    store.add_probe_results(results)
    store.rollup(start, now)


def seed_transition(store: Store, now: datetime, region: str = "eastus") -> None:
    store.add_transitions(
        [
            Transition(
                subject="region",
                key=region,
                old=HealthStateName.HEALTHY,
                new=HealthStateName.UNHEALTHY,
                reason="3 consecutive failures (503)",
                at=now - timedelta(minutes=2),
                evidence=("503 at 12:00:00", "503 at 12:00:10", HOSTILE),
            )
        ]
    )


def seed_everything(store: Store, s: Settings, now: datetime, leader: bool = True) -> None:
    seed_targets(store, s, now)
    seed_health(store, now)
    seed_probes(store, now)
    if leader:
        store.try_acquire_lease("leader", "worker-1", 3600.0, now - timedelta(seconds=1))


def seed_incident(store: Store, start: datetime, healthy: bool) -> None:
    """An eastus outage at ``start``: failed probes, the verdict, a drain from every target; recovered 5 min later if ``healthy``."""
    store.add_transitions(
        [
            Transition(
                "endpoint", "eastus/gpt-4o", HealthStateName.HEALTHY, HealthStateName.UNHEALTHY, "3 of 3 failed", start - timedelta(seconds=5),
                vantage="ci-a", evidence=(f"{start - timedelta(seconds=25):%H:%M:%S} server_error 503", f"{start - timedelta(seconds=5):%H:%M:%S} timeout"),
            ),
            Transition("region", "eastus", HealthStateName.HEALTHY, HealthStateName.UNHEALTHY, "eastus/gpt-4o: 3 of 3 failed", start),
        ]
    )  # fmt: skip
    for target in ("tm-weighted", "tm-priority", "afd-prod"):
        store.record_change(
            Change(target, "eastus", f"aoai-eastus-{target}", Field.ENABLED, True, False, "eastus unhealthy: 3 of 3 failed"),
            ChangeStatus.APPLIED,
            start + timedelta(seconds=4),
            fencing_token=9,
        )
    if healthy:
        later = start + timedelta(minutes=5)
        store.add_transitions([Transition("region", "eastus", HealthStateName.UNHEALTHY, HealthStateName.HEALTHY, "recovered", later)])
        for target in ("tm-weighted", "tm-priority", "afd-prod"):
            store.record_change(
                Change(target, "eastus", f"aoai-eastus-{target}", Field.ENABLED, False, True, "eastus healthy again"),
                ChangeStatus.APPLIED,
                later + timedelta(seconds=30),
                fencing_token=9,
            )


def seed_liveness(store: Store, now: datetime, region: str = "eastus", vantage: str = "test", failed: int = 3) -> None:
    """The summary a worker stores (LivenessTally -> flag ``liveness:<vantage>``), its last check 4 s before
    ``now``: ``region``/gpt-4o ok 17 times, then ``failed`` connect errors; westeurope/gpt-4o ok."""
    last = now - timedelta(seconds=4)
    tally = LivenessTally()
    for k in range(17 + failed):
        ok = k < 17
        tally.add(
            LivenessResult(
                endpoint_id=f"{region}/gpt-4o",
                region=region,
                vantage=vantage,
                started_at=last - timedelta(seconds=5 * (16 + failed - k)),
                ok=ok,
                status_code=200 if ok else None,
                error=None if ok else "ConnectError: [Errno 111] Connection refused (waiting for response headers)",
                failure=None if ok else LivenessFailure.CONNECT_ERROR,
            )
        )
    tally.add(LivenessResult("westeurope/gpt-4o", "westeurope", vantage, last, ok=True, status_code=200, latency_ms=40.0))
    store.set_flag(FlagKind.LIVENESS, vantage, tally.flag_value(), last)
