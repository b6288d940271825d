"""Metrics fed from real sources: the web view reading a SQLite store, the Azure SDK policy over HTTP, /readyz with a database.

The pure series tests are in tests/unit/test_metrics.py.
"""

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
    EndpointHealth,
    EndpointSetting,
    FlagKind,
    HealthStateName,
    Override,
    OverrideKind,
    RegionHealth,
    TargetState,
)
from controlplane.metrics import Metrics, make_readiness, worker_http_app
from controlplane.store import Store

T0 = datetime(2026, 11, 27, 3, 0, 0, tzinfo=UTC)


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


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
    store.set_flag(FlagKind.PANIC, "afd-prod", {"reason": "all regions unhealthy"}, T0)
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


# ---------------------------------------------------------------- /readyz on the worker, with a database


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
