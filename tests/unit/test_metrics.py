"""Metrics: the series a scrape shows after sample results, health, targets and changes; /healthz and /readyz."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.test import Client

from controlplane.domain import (
    Change,
    ChangeStatus,
    EndpointHealth,
    EndpointSetting,
    Field,
    HealthStateName,
    Outcome,
    ProbeResult,
    RegionHealth,
    WriteStatus,
)
from controlplane.metrics import Metrics, azure_operation, evaluate_readiness, worker_http_app
from controlplane.store import TargetEndpointRecord

T0 = datetime(2026, 11, 27, 3, 0, 0, tzinfo=UTC)


def scrape(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse the exposition text the way Prometheus would: (sample name, labels) -> value."""
    body, content_type = m.render()
    assert content_type.startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def probe(region: str, outcome: Outcome, ttft_ms: float | None, total_ms: float | None, **kw: Any) -> ProbeResult:
    return ProbeResult(
        endpoint_id=f"{region}/aoai",
        region=region,
        vantage="westeurope-1",
        started_at=T0,
        outcome=outcome,
        ttft_ms=ttft_ms,
        total_ms=total_ms,
        **kw,
    )


def feed_sample(m: Metrics) -> None:
    m.observe_probe_results(
        [
            probe("eastus", Outcome.OK, 420.0, 900.0, prompt_tokens=21, completion_tokens=3, limit_tokens=1000, remaining_tokens=250),
            probe("eastus", Outcome.OK, 380.0, 850.0, prompt_tokens=21, completion_tokens=3),
            probe("westus", Outcome.TIMEOUT, None, None),
            probe("westus", Outcome.THROTTLED, None, 120.0, retry_after_ms=2000),
        ]
    )
    ep_east = EndpointHealth(endpoint_id="eastus/aoai", region="eastus", state=HealthStateName.HEALTHY, score=0.97, reason="ok")
    ep_west = EndpointHealth(
        endpoint_id="westus/aoai", region="westus", state=HealthStateName.UNHEALTHY, score=0.1, reason="timeouts", config_problem=None
    )
    m.observe_health(
        {
            "eastus": RegionHealth(
                region="eastus", state=HealthStateName.HEALTHY, score=0.97, reasons=(), endpoints=(ep_east,), quota_headroom=0.25
            ),
            "westus": RegionHealth(
                region="westus", state=HealthStateName.UNHEALTHY, score=0.1, reasons=("timeouts",), endpoints=(ep_west,)
            ),
        }
    )
    m.observe_targets(
        [
            TargetEndpointRecord(
                target="tm-prod",
                region="eastus",
                endpoint="eastus-ep",
                desired=EndpointSetting(weight=1000, enabled=True),
                actual=EndpointSetting(weight=500, enabled=True),
                applied=None,
                desired_reason=None,
                monitor_status=None,
                circuit_breakers=None,
                drift=None,
                write_status=None,
                write_error=None,
                last_change_at=None,
                read_at=None,
            ),
            TargetEndpointRecord(
                target="tm-prod",
                region="westus",
                endpoint="westus-ep",
                desired=EndpointSetting(weight=1, enabled=False),
                actual=EndpointSetting(weight=500, enabled=True),
                applied=None,
                desired_reason=None,
                monitor_status=None,
                circuit_breakers=None,
                drift="weight changed outside regionguard",
                write_status=WriteStatus.FAILED,
                write_error=None,
                last_change_at=None,
                read_at=None,
            ),
        ]
    )
    drain = Change(
        target="tm-prod", region="westus", endpoint="westus-ep", field=Field.ENABLED, actual=True, desired=False, reason="westus unhealthy"
    )
    m.observe_change(ChangeStatus.APPLIED, drain)
    m.observe_change(ChangeStatus.FAILED, drain)
    m.observe_change(ChangeStatus.APPLIED, drain)
    m.set_leader(True, token=7)
    m.set_flags(panic=["afd-prod"], frozen={"*": True}, write_budget_left=118)


def test_a_scrape_after_sample_results_health_and_changes_holds_every_series() -> None:
    m = Metrics()
    feed_sample(m)
    s = scrape(m)
    probe_labels = {"region": "eastus", "endpoint": "aoai", "vantage": "westeurope-1"}
    assert value(s, "regionguard_probe_results_total", outcome="ok", **probe_labels) == 2
    assert value(s, "regionguard_probe_results_total", region="westus", endpoint="aoai", vantage="westeurope-1", outcome="timeout") == 1
    assert value(s, "regionguard_probe_time_to_first_chunk_seconds_count", **probe_labels) == 2
    assert value(s, "regionguard_probe_time_to_first_chunk_seconds_sum", **probe_labels) == pytest.approx(0.8)
    assert value(s, "regionguard_probe_time_to_first_chunk_seconds_bucket", le="0.5", **probe_labels) == 2
    assert value(s, "regionguard_probe_time_to_first_chunk_seconds_bucket", le="0.25", **probe_labels) == 0
    assert value(s, "regionguard_probe_duration_seconds_sum", **probe_labels) == pytest.approx(1.75)
    assert value(s, "regionguard_probe_tokens_total", token_type="input", **probe_labels) == 42
    assert value(s, "regionguard_probe_tokens_total", token_type="output", **probe_labels) == 6
    assert value(s, "regionguard_probe_quota_headroom_ratio", **probe_labels) == 0.25
    assert value(s, "regionguard_region_state", region="westus", state="unhealthy") == 1
    assert value(s, "regionguard_region_state", region="westus", state="healthy") == 0
    assert value(s, "regionguard_region_score", region="eastus") == 0.97
    assert value(s, "regionguard_endpoint_state", region="eastus", endpoint="aoai", state="healthy") == 1
    tm_west = {"target": "tm-prod", "region": "westus", "endpoint": "westus-ep"}
    assert value(s, "regionguard_target_endpoint_weight", side="desired", **tm_west) == 1
    assert value(s, "regionguard_target_endpoint_weight", side="actual", **tm_west) == 500
    assert value(s, "regionguard_target_endpoint_enabled", side="desired", **tm_west) == 0
    assert value(s, "regionguard_target_endpoint_enabled", side="actual", **tm_west) == 1
    assert value(s, "regionguard_target_endpoint_drift", **tm_west) == 1
    assert value(s, "regionguard_target_endpoint_write_failed", **tm_west) == 1
    assert (
        value(s, "regionguard_target_endpoint_priority", side="desired", target="tm-prod", region="eastus", endpoint="eastus-ep") is None
    )  # unknown -> no series
    assert value(s, "regionguard_changes_total", status="applied", target="tm-prod", kind="drain") == 2
    assert value(s, "regionguard_changes_total", status="failed", target="tm-prod", kind="drain") == 1
    assert value(s, "regionguard_leader") == 1 and value(s, "regionguard_leader_fencing_token") == 7
    assert value(s, "regionguard_panic", target="afd-prod") == 1
    assert value(s, "regionguard_frozen", target="*") == 1
    assert value(s, "regionguard_write_budget_remaining") == 118


def test_flags_that_clear_drop_to_zero_and_leadership_loss_clears_the_token() -> None:
    m = Metrics()
    m.set_flags(panic=["afd-prod", "tm-prod"])
    m.set_leader(True, token=3)
    m.set_flags(panic=[])
    m.set_leader(False, token=3)
    s = scrape(m)
    assert value(s, "regionguard_panic", target="afd-prod") == 0 and value(s, "regionguard_panic", target="tm-prod") == 0
    assert value(s, "regionguard_leader") == 0 and value(s, "regionguard_leader_fencing_token") == 0


def test_each_metrics_object_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()
    a.observe_change("applied")
    assert a.registry.get_sample_value("regionguard_changes_total", {"status": "applied", "target": "", "kind": ""}) == 1
    assert b.registry.get_sample_value("regionguard_changes_total", {"status": "applied", "target": "", "kind": ""}) is None


def test_a_scrape_still_answers_when_the_store_is_down() -> None:
    class Down:
        def health(self) -> Any:
            raise ConnectionError("db gone")

    m = Metrics()
    assert m.refresh_from_store(Down()) is False
    assert m.registry.get_sample_value("regionguard_store_up") == 0


# ---------------------------------------------------------------- Azure operation names


def test_azure_operation_names_drop_resource_names_and_keep_types() -> None:
    assert (
        azure_operation(
            "put",
            "https://management.azure.com/subscriptions/s/resourceGroups/rg/providers/Microsoft.Cdn/profiles/p/originGroups/g/origins/o?api-version=2024-02-01",
        )
        == "PUT Microsoft.Cdn/profiles/originGroups/origins"
    )
    assert (
        azure_operation(
            "GET", "https://management.azure.com/subscriptions/s/providers/Microsoft.Network/locations/global/operationResults/abc"
        )
        == "GET Microsoft.Network/locations/operationResults"
    )
    assert azure_operation("GET", "https://management.azure.com/subscriptions/s/resourceGroups/rg") == "GET subscriptions/resourceGroups"


# ---------------------------------------------------------------- /readyz on the worker


def test_a_readiness_check_that_raises_means_not_ready() -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("boom")

    resp = Client(worker_http_app(broken)).get("/readyz")
    assert resp.status_code == 503 and json.loads(resp.data)["checks"] == {"error": "RuntimeError"}
    assert evaluate_readiness({"database": True, "lease": "leader", "detail": "x"})[0] is True
