"""Small, general test helpers: a fake clock and builders of domain values.

Anyone may import these. They build real values (``parse_settings`` on a
dict, real dataclasses), never mocks.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from controlplane.config import Settings, parse_settings
from controlplane.domain import (
    EndpointSetting,
    HealthStateName,
    Outcome,
    Override,
    OverrideKind,
    ProbeResult,
    RegionHealth,
    TargetState,
    endpoint_id,
)

EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
REGIONS = ("eastus", "westeurope", "japaneast")


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: datetime = EPOCH) -> None:
        self._now = start

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> datetime:
        self._now += timedelta(seconds=seconds)
        return self._now

    def set(self, when: datetime) -> None:
        self._now = when


def at(seconds: float, start: datetime = EPOCH) -> datetime:
    """``start`` plus ``seconds``: handy for hand-written timelines."""
    return start + timedelta(seconds=seconds)


# ---------------------------------------------------------------- settings


def settings_dict(
    regions: Sequence[str] = REGIONS,
    endpoints_per_region: int = 1,
    *,
    targets: Sequence[str] = ("tm-weighted",),
    weights: Mapping[str, int] | None = None,
    probe: Mapping[str, Any] | None = None,
    health: Mapping[str, Any] | None = None,
    guardrails: Mapping[str, Any] | None = None,
    reconcile: Mapping[str, Any] | None = None,
    target_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A valid config as a dict, to tweak before ``parse_settings``.

    ``targets`` picks from: ``tm-weighted`` (Traffic Manager, weighted),
    ``tm-priority`` (Traffic Manager, priority in region order),
    ``afd-prod`` (Front Door Standard/Premium, weighted) and
    ``fd-classic`` (Front Door classic, weighted). ``target_options`` are
    merged into every target (e.g. ``{"failback": "manual"}``).
    """
    weights = dict(weights or {})
    regions_cfg = []
    for r in regions:
        eps = [
            {
                "name": f"gpt-{i}" if endpoints_per_region > 1 else "gpt-4o",
                "base_url": f"https://contoso-{r}.openai.azure.com",
                "deployment": f"gpt-{i}" if endpoints_per_region > 1 else "gpt-4o",
                "auth": {"kind": "api_key", "env": f"AOAI_KEY_{r.upper().replace('-', '_')}"},
            }
            for i in range(endpoints_per_region)
        ]
        regions_cfg.append({"name": r, "azure_region": r, "endpoints": eps})
    default_weights = [500, 300, 200]

    def weight(i: int, r: str) -> int:
        return weights.get(r, default_weights[i] if i < len(default_weights) else 100)

    builders = {
        "tm-weighted": lambda: {
            "name": "tm-weighted",
            "kind": "traffic_manager",
            "profile": "llm-global",
            "routing": "weighted",
            "endpoints": {r: {"name": f"aoai-{r}", "weight": weight(i, r)} for i, r in enumerate(regions)},
        },
        "tm-priority": lambda: {
            "name": "tm-priority",
            "kind": "traffic_manager",
            "profile": "llm-failover",
            "routing": "priority",
            "endpoints": {r: {"name": f"aoai-{r}", "weight": 1, "priority": i + 1} for i, r in enumerate(regions)},
        },
        "afd-prod": lambda: {
            "name": "afd-prod",
            "kind": "front_door_cdn",
            "profile": "afd-llm",
            "origin_group": "aoai-origins",
            "routing": "weighted",
            "endpoints": {r: {"origin": r, "weight": weight(i, r), "priority": 1} for i, r in enumerate(regions)},
        },
        "fd-classic": lambda: {
            "name": "fd-classic",
            "kind": "front_door",
            "front_door": "fd-llm",
            "backend_pool": "aoai",
            "routing": "weighted",
            "endpoints": {r: {"address": f"{r}.example.net", "weight": weight(i, r), "priority": 1} for i, r in enumerate(regions)},
        },
    }
    targets_cfg = []
    for name in targets:
        t = builders[name]()
        t.update({"subscription_id": "00000000-0000-0000-0000-000000000001", "resource_group": "rg-llm"})
        t.update(dict(target_options or {}))
        targets_cfg.append(t)
    data: dict[str, Any] = {
        "regions": regions_cfg,
        "probe": {"vantage": "local", **dict(probe or {})},
        "health": dict(health or {}),
        "targets": targets_cfg,
        "guardrails": dict(guardrails or {}),
        "reconcile": dict(reconcile or {}),
    }
    return copy.deepcopy(data)


def make_settings(*args: Any, **kwargs: Any) -> Settings:
    """``parse_settings(settings_dict(...))``: the default-ish config tests share."""
    return parse_settings(settings_dict(*args, **kwargs), "<test>")


# ---------------------------------------------------------------- values


def probe_result(
    eid: str = "eastus/gpt-4o",
    outcome: Outcome | str = Outcome.OK,
    when: datetime | float = 0.0,
    *,
    vantage: str = "local",
    ttft_ms: float | None = None,
    total_ms: float | None = None,
    status_code: int | None = None,
    retry_after_ms: int | None = None,
    remaining_tokens: int | None = None,
    limit_tokens: int | None = None,
    utilization_pct: float | None = None,
    error: str | None = None,
) -> ProbeResult:
    """A ProbeResult with plausible defaults for its outcome. ``when`` may be seconds after EPOCH."""
    outcome = Outcome(outcome)
    started = at(when) if isinstance(when, int | float) else when
    served = outcome in (Outcome.OK, Outcome.SLOW, Outcome.BAD_CONTENT, Outcome.CONTENT_FILTERED, Outcome.TRUNCATED)
    if status_code is None:
        status_code = {
            Outcome.THROTTLED: 429,
            Outcome.SERVER_ERROR: 503,
            Outcome.AUTH_ERROR: 401,
            Outcome.NOT_FOUND: 404,
            Outcome.BAD_REQUEST: 400,
        }.get(outcome, 200 if served else None)
    if ttft_ms is None and served:
        ttft_ms = 4000.0 if outcome is Outcome.SLOW else 400.0
    if total_ms is None and served:
        total_ms = (ttft_ms or 0.0) + 150.0
    region = eid.split("/", 1)[0]
    return ProbeResult(
        endpoint_id=eid,
        region=region,
        vantage=vantage,
        started_at=started,
        outcome=outcome,
        status_code=status_code,
        ttft_ms=ttft_ms,
        total_ms=total_ms,
        finished=served and outcome is not Outcome.TRUNCATED,
        retry_after_ms=retry_after_ms,
        remaining_tokens=remaining_tokens,
        limit_tokens=limit_tokens,
        utilization_pct=utilization_pct,
        error=error,
    )


def endpoint_ids(settings: Settings) -> list[str]:
    return [endpoint_id(r.name, e.name) for r in settings.regions for e in r.endpoints]


def results_every(
    eids: Iterable[str],
    start: float,
    stop: float,
    step: float,
    outcome: Outcome | str = Outcome.OK,
    **kwargs: Any,
) -> list[ProbeResult]:
    """One result per endpoint every ``step`` seconds in [start, stop)."""
    out = []
    eids = list(eids)
    t = start
    while t < stop:
        out += [probe_result(e, outcome, t, **kwargs) for e in eids]
        t += step
    return out


def region_health(
    region: str,
    state: HealthStateName | str = HealthStateName.HEALTHY,
    score: float | None = None,
    *,
    since: datetime | None = EPOCH,
    quota_headroom: float | None = None,
    reason: str | None = None,
) -> RegionHealth:
    state = HealthStateName(state)
    if score is None:
        score = {HealthStateName.HEALTHY: 1.0, HealthStateName.DEGRADED: 0.5, HealthStateName.UNHEALTHY: 0.0}.get(state, 1.0)
    return RegionHealth(
        region=region, state=state, score=score, reasons=(reason or state.value,), quota_headroom=quota_headroom, since=since
    )


def target_state(
    settings: Settings,
    target: str,
    *,
    enabled: Mapping[str, bool] | None = None,
    weights: Mapping[str, int] | None = None,
    priorities: Mapping[str, int] | None = None,
) -> TargetState:
    """The state Azure would report for ``target`` at its configured baseline, with tweaks."""
    t = settings.target(target)
    eps = {}
    for region, ep in t.endpoints.items():
        eps[region] = EndpointSetting(
            weight=(weights or {}).get(region, ep.weight),
            priority=(priorities or {}).get(region, ep.priority),
            enabled=(enabled or {}).get(region, True),
        )
    return TargetState(target=target, endpoints=eps)


def baseline_states(settings: Settings) -> list[TargetState]:
    return [target_state(settings, t.name) for t in settings.targets]


def override(
    kind: OverrideKind | str,
    region: str | None = None,
    target: str | None = None,
    *,
    who: str = "alice",
    why: str = "test",
    created: datetime | float = 0.0,
    expires: datetime | float | None = None,
    weight: int | None = None,
    priority: int | None = None,
    forced: bool = False,
) -> Override:
    created_at = at(created) if isinstance(created, int | float) else created
    expires_at = at(expires) if isinstance(expires, int | float) else expires
    return Override(
        kind=OverrideKind(kind),
        who=who,
        why=why,
        created_at=created_at,
        region=region,
        target=target,
        weight=weight,
        priority=priority,
        expires_at=expires_at,
        forced=forced,
    )
