"""The one status read model (controlplane.status): what `regionguard status`, the dashboard and the API show."""

from __future__ import annotations

import ast
from pathlib import Path

from controlplane.cli.state import _status_text, status_json
from controlplane.domain import (
    EndpointHealth,
    EndpointSetting,
    FlagKind,
    HealthStateName,
    LeaseName,
    OverrideKind,
    RegionHealth,
    TargetState,
)
from controlplane.status import read_status
from controlplane.store import Store
from tests.fakes import EPOCH, at, make_settings, override, probe_result
from web import readmodel

ROOT = Path(__file__).resolve().parents[2]


def _seed(store: Store) -> None:
    problem = EndpointHealth("westeurope/gpt-4o", "westeurope", HealthStateName.UNKNOWN, 1.0, "auth", config_problem="auth_error: 401")
    store.save_health(
        [problem],
        [
            RegionHealth("eastus", HealthStateName.UNHEALTHY, 0.1, ("3 timeouts",), since=at(5)),
            RegionHealth("westeurope", HealthStateName.UNKNOWN, 1.0, (), endpoints=(problem,)),
        ],
        at(10),
    )
    store.add_probe_results([probe_result("eastus/gpt-4o", when=50.0)])
    desired = TargetState("tm-weighted", {"eastus": EndpointSetting(500, None, False)}, reasons={"eastus": "unhealthy"})
    actual = TargetState("tm-weighted", {"eastus": EndpointSetting(500, None, True)})
    store.save_target_state("tm-weighted", {"eastus": "aoai-eastus"}, actual, desired, at(20))
    store.add_override(override(OverrideKind.FREEZE, target="tm-weighted", why="change window"))
    store.add_override(override(OverrideKind.DRAIN, "japaneast"))
    store.set_flag(FlagKind.PANIC, "afd-prod", {"reason": "every endpoint looks unhealthy", "since": EPOCH.isoformat()}, at(30))
    store.set_flag(FlagKind.CONFIG_PROBLEMS, None, {"problems": ["auth_error at westeurope/gpt-4o"]}, at(30))
    assert store.try_acquire_lease(LeaseName.LEADER, "worker-a", 120, at(0)) == 1


def test_status_reads_regions_targets_lease_overrides_panics_and_problems_once(store: Store) -> None:
    settings = make_settings(targets=("tm-weighted", "afd-prod"))
    _seed(store)
    status = read_status(settings, store, at(60))
    assert status.leader == "worker-a" and read_status(settings, store, at(121)).leader is None
    east, west, japan = status.regions
    assert (east.state, east.score, east.reasons, east.age_s, east.stale) == (HealthStateName.UNHEALTHY, 0.1, ("3 timeouts",), 10.0, False)
    assert (west.score, west.config_problems, west.evaluated) == (None, ("westeurope/gpt-4o: auth_error: 401",), True)
    assert (japan.evaluated, japan.stale, [o.kind for o in japan.overrides]) == (False, True, [OverrideKind.DRAIN])
    tm = status.target("tm-weighted")
    row = tm.endpoints[0]
    assert [e.region for e in tm.endpoints] == [r.name for r in settings.regions]  # every configured endpoint, config order
    assert (row.known, row.in_sync, row.desired_reason) == (True, False, "unhealthy")
    assert not tm.endpoints[1].known and tm.endpoints[1].in_sync and tm.endpoints[1].endpoint == "aoai-westeurope"
    assert [o.why for o in tm.frozen_by] == ["change window"] and status.frozen == ("tm-weighted",)
    assert tm.panic is None and status.target("afd-prod").panic is not None
    assert status.panics["afd-prod"].reason == "every endpoint looks unhealthy" and status.panics["afd-prod"].since == EPOCH
    assert status.config_problems == ("auth_error at westeurope/gpt-4o",)


def test_the_cli_and_the_dashboard_present_the_same_status(store: Store) -> None:
    settings = make_settings(targets=("tm-weighted", "afd-prod"))
    _seed(store)
    status = read_status(settings, store, at(60))
    cli = status_json(status)
    page = readmodel.overview(settings, store, at(60))
    assert cli["leader"] == (page.leader.holder if page.leader else None) == "worker-a"
    assert [(r["region"], r["state"], r["score"], r["stale"]) for r in cli["regions"]] == [
        (c.name, c.state, c.score, c.stale) for c in page.cards
    ]
    assert [(t["target"], t["region"]) for t in cli["targets"]] == [("tm-weighted", "eastus")]  # what regionguard has read
    dash_rows = {(v.name, r.region): r for v in page.targets for r in v.rows}
    assert dash_rows[("tm-weighted", "eastus")].desired == {"enabled": False, "weight": 500, "priority": None}
    assert set(cli["panic"]) == {v.name for v in page.targets if v.panic} == {"afd-prod"}
    assert {b.kind for b in page.banners} == {"panic", "frozen", "stale", "config"}  # a leader holds the lease


def test_a_worker_whose_azure_credential_fails_is_in_the_status_the_cli_and_a_dashboard_banner(store: Store) -> None:
    settings = make_settings(targets=("tm-weighted",))
    _seed(store)
    value = {"error": "TokenTimeout: no token", "since": at(1).isoformat(), "stepped_down_at": at(20).isoformat(), "cool_off_until": None}
    store.set_flag(FlagKind.CREDENTIAL, "worker-b", value, at(21))
    status = read_status(settings, store, at(60))
    [problem] = status.credentials
    assert (problem.holder, problem.error, problem.since, problem.stepped_down_at) == ("worker-b", "TokenTimeout: no token", at(1), at(20))
    text = _status_text(status_json(status))
    assert "Azure credential failing on worker worker-b since " in text and "TokenTimeout: no token; stepped down at " in text
    [banner] = [b for b in readmodel.overview(settings, store, at(60)).banners if b.kind == "credential"]
    assert "worker-b" in banner.text and "TokenTimeout" in banner.text and banner.severity == "critical"


def test_the_status_command_reads_the_model_without_the_web_package() -> None:
    tree = ast.parse((ROOT / "controlplane" / "cli" / "state.py").read_text())
    imported = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    assert "controlplane.status" in imported
    assert not [m for m in imported if m == "web" or m.startswith("web.")]
    web_source = (ROOT / "web" / "readmodel.py").read_text()
    assert "sqlalchemy" not in web_source and "store.models" not in web_source and "dialect" not in web_source
