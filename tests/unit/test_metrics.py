"""Metrics: the series a scrape shows after sample results, health, targets and changes; /healthz and /readyz."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from azure.core import PipelineClient
from azure.core.exceptions import ServiceRequestError
from azure.core.pipeline.policies import RetryPolicy
from azure.core.rest import HttpRequest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.test import Client

from controlplane.domain import (
    Change,
    EndpointHealth,
    EndpointSetting,
    Field,
    HealthStateName,
    Outcome,
    Override,
    OverrideKind,
    ProbeResult,
    RegionHealth,
    TargetState,
)
from controlplane.metrics import Metrics, azure_operation, evaluate_readiness, make_readiness, worker_http_app
from controlplane.store import Store

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
            {
                "target": "tm-prod",
                "region": "eastus",
                "endpoint": "eastus-ep",
                "desired_weight": 1000,
                "actual_weight": 500,
                "desired_enabled": True,
                "actual_enabled": True,
                "desired_priority": None,
                "actual_priority": None,
                "drift": None,
                "write_status": None,
            },
            {
                "target": "tm-prod",
                "region": "westus",
                "endpoint": "westus-ep",
                "desired_weight": 1,
                "actual_weight": 500,
                "desired_enabled": False,
                "actual_enabled": True,
                "drift": "weight changed outside regionguard",
                "write_status": "failed",
            },
        ]
    )
    drain = Change(
        target="tm-prod", region="westus", endpoint="westus-ep", field=Field.ENABLED, actual=True, desired=False, reason="westus unhealthy"
    )
    m.observe_change("applied", drain)
    m.observe_change("failed", drain)
    m.observe_change("applied", drain)
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


def test_the_web_app_view_reads_health_targets_panic_and_freeze_from_the_store(store: Store) -> None:
    ep = EndpointHealth(
        endpoint_id="eastus/aoai",
        region="eastus",
        state=HealthStateName.DEGRADED,
        score=0.6,
        reason="slow",
        config_problem="auth_error: 401",
    )
    store.save_health(
        [ep], [RegionHealth(region="eastus", state=HealthStateName.DEGRADED, score=0.6, reasons=("slow",), endpoints=(ep,))], T0
    )
    desired = TargetState(target="tm-prod", endpoints={"eastus": EndpointSetting(weight=300, enabled=True)})
    actual = TargetState(target="tm-prod", endpoints={"eastus": EndpointSetting(weight=500, enabled=True)})
    store.save_target_state("tm-prod", {"eastus": "eastus-ep"}, actual, desired, T0)
    store.set_flag("panic:afd-prod", {"reason": "all regions unhealthy"}, T0)
    store.add_override(
        Override(
            kind=OverrideKind.FREEZE, who="alice", why="incident 42", created_at=T0, target="tm-prod", expires_at=T0 + timedelta(hours=1)
        )
    )
    m = Metrics()
    app = Flask(__name__)
    app.add_url_rule("/metrics", view_func=m.flask_view(before=lambda: m.refresh_from_store(store, now=T0 + timedelta(minutes=1))))
    resp = app.test_client().get("/metrics")
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/plain")
    s = {
        (x.name, tuple(sorted(x.labels.items()))): x.value
        for f in text_string_to_metric_families(resp.get_data(as_text=True))
        for x in f.samples
    }
    assert value(s, "regionguard_region_state", region="eastus", state="degraded") == 1
    assert value(s, "regionguard_endpoint_config_problem", region="eastus", endpoint="aoai") == 1
    assert value(s, "regionguard_target_endpoint_weight", target="tm-prod", region="eastus", endpoint="eastus-ep", side="desired") == 300
    assert value(s, "regionguard_target_endpoint_weight", target="tm-prod", region="eastus", endpoint="eastus-ep", side="actual") == 500
    assert value(s, "regionguard_panic", target="afd-prod") == 1
    assert value(s, "regionguard_frozen", target="tm-prod") == 1
    assert value(s, "regionguard_store_up") == 1


def test_a_scrape_still_answers_when_the_store_is_down() -> None:
    class Down:
        def health(self) -> Any:
            raise ConnectionError("db gone")

    m = Metrics()
    assert m.refresh_from_store(Down()) is False
    assert m.registry.get_sample_value("regionguard_store_up") == 0


# ---------------------------------------------------------------- Azure SDK policy (a real azure-core pipeline over HTTP)


@pytest.fixture
def arm() -> Iterator[str]:
    replies = [(429, {"Retry-After": "0"}), (200, {})]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, headers = replies.pop(0) if replies else (200, {})
            body = b"{}"
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


ENDPOINT_PATH = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.Network/trafficmanagerprofiles/tm-prod/AzureEndpoints/eastus-ep"


def test_the_azure_policy_counts_every_attempt_by_operation_and_status(arm: str) -> None:
    m = Metrics()
    client = PipelineClient(base_url=arm, policies=[RetryPolicy(retry_total=2, retry_backoff_factor=0.01), m.azure_policy()])
    with client:
        resp = client.send_request(HttpRequest("GET", arm + ENDPOINT_PATH + "?api-version=2022-04-01"))
    assert resp.status_code == 200
    op = "GET Microsoft.Network/trafficmanagerprofiles/AzureEndpoints"
    assert m.registry.get_sample_value("regionguard_azure_requests_total", {"operation": op, "status_code": "429"}) == 1
    assert m.registry.get_sample_value("regionguard_azure_requests_total", {"operation": op, "status_code": "200"}) == 1
    assert m.registry.get_sample_value("regionguard_azure_request_duration_seconds_count", {"operation": op}) == 2


def test_the_azure_policy_counts_transport_errors() -> None:
    m = Metrics()
    probe_server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = probe_server.server_address[1]
    probe_server.server_close()  # nothing listens there now
    client = PipelineClient(base_url=f"http://127.0.0.1:{port}", policies=[RetryPolicy(retry_total=0), m.azure_policy()])
    with client, pytest.raises(ServiceRequestError):
        client.send_request(HttpRequest("PATCH", f"http://127.0.0.1:{port}{ENDPOINT_PATH}"))
    assert (
        m.registry.get_sample_value(
            "regionguard_azure_requests_total",
            {"operation": "PATCH Microsoft.Network/trafficmanagerprofiles/AzureEndpoints", "status_code": "error"},
        )
        == 1
    )


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


# ---------------------------------------------------------------- /healthz, /readyz, /metrics on the worker


def test_readyz_is_200_only_when_database_scheduler_and_lease_are_known(store: Store) -> None:
    state: dict[str, Any] = {"scheduler": False, "lease": None}
    m = Metrics()
    m.set_leader(False)
    app = worker_http_app(make_readiness(store, lambda: state["scheduler"], lambda: state["lease"]), metrics=m)
    client = Client(app)
    assert client.get("/healthz").status_code == 200
    resp = client.get("/readyz")
    assert resp.status_code == 503
    assert json.loads(resp.data) == {"status": "not ready", "checks": {"database": True, "scheduler": False, "lease": None}}
    state.update(scheduler=True, lease="follower")
    resp = client.get("/readyz")
    assert resp.status_code == 200 and json.loads(resp.data)["checks"]["lease"] == "follower"
    metrics_resp = client.get("/metrics")
    assert metrics_resp.status_code == 200 and b"regionguard_leader 0.0" in metrics_resp.data
    assert client.get("/nope").status_code == 404


def test_readyz_is_503_when_the_database_is_unreachable(tmp_path: Any) -> None:
    from controlplane.store import open_store

    unmigrated = open_store("sqlite:///" + str(tmp_path / "empty.db"))
    try:
        app = worker_http_app(make_readiness(unmigrated, lambda: True, lambda: "leader"))
        resp = Client(app).get("/readyz")
        body = json.loads(resp.data)
        assert resp.status_code == 503 and body["checks"]["database"] is False
        assert "expected" in body["checks"]["database_error"]  # the store's safe message
    finally:
        unmigrated.close()


def test_a_readiness_check_that_raises_means_not_ready() -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("boom")

    resp = Client(worker_http_app(broken)).get("/readyz")
    assert resp.status_code == 503 and json.loads(resp.data)["checks"] == {"error": "RuntimeError"}
    assert evaluate_readiness({"database": True, "lease": "leader", "detail": "x"})[0] is True
