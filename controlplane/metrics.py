"""Prometheus metrics, ``/metrics`` exposition, and the worker's ``/healthz`` / ``/readyz``.

Each process builds one :class:`Metrics` on its own ``CollectorRegistry``
(never prometheus-client's global default), so tests build fresh ones freely.
The worker feeds it as things happen (``observe_probe_results``,
``observe_health``, ``observe_targets``, ``observe_change``, ``set_leader``,
``set_flags``); the web app, which does not run the loop, calls
``refresh_from_store(store)`` before each scrape.

Names follow the spirit of OpenTelemetry's GenAI client metrics
(``gen_ai.client.operation.duration``, ``gen_ai.server.time_to_first_token``,
``gen_ai.client.token.usage``) in Prometheus form::

    regionguard_probe_results_total{region,endpoint,vantage,outcome}
    regionguard_probe_time_to_first_chunk_seconds{region,endpoint,vantage}   histogram
    regionguard_probe_duration_seconds{region,endpoint,vantage}              histogram
    regionguard_probe_tokens_total{region,endpoint,vantage,token_type=input|output}
    regionguard_probe_quota_headroom_ratio{region,endpoint,vantage}
    regionguard_probe_last_timestamp_seconds{region,endpoint,vantage}
    regionguard_region_state{region,state}            1 for the current state, 0 otherwise
    regionguard_region_score{region} / regionguard_region_quota_headroom_ratio{region}
    regionguard_endpoint_state{region,endpoint,state} / regionguard_endpoint_score{region,endpoint}
    regionguard_endpoint_config_problem{region,endpoint}
    regionguard_target_endpoint_weight{target,region,endpoint,side=desired|actual}
    regionguard_target_endpoint_priority{...,side} / regionguard_target_endpoint_enabled{...,side}
    regionguard_target_endpoint_drift{target,region,endpoint}
    regionguard_target_endpoint_write_failed{target,region,endpoint}
    regionguard_changes_total{status,target,kind}
    regionguard_azure_requests_total{operation,status_code}
    regionguard_azure_request_duration_seconds{operation}                    histogram
    regionguard_write_budget_remaining
    regionguard_leader / regionguard_leader_fencing_token
    regionguard_panic{target} / regionguard_frozen{target}   ("*" = every target)
    regionguard_reconcile_duration_seconds / regionguard_reconcile_last_success_timestamp_seconds
    regionguard_notifications_total{channel,status} / regionguard_notifications_dropped_total{channel}
    regionguard_store_up
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from azure.core.pipeline.policies import SansIOHTTPPolicy
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, make_wsgi_app

from controlplane.domain import Change, EndpointHealth, HealthStateName, OverrideKind, ProbeResult, RegionHealth, WriteStatus, utcnow

if TYPE_CHECKING:
    from controlplane.store import TargetEndpointRecord

log = logging.getLogger(__name__)

# LLM latencies: tens of milliseconds to tens of seconds.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0)
AZURE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RECONCILE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_STATES = tuple(s.value for s in HealthStateName)
_CONTEXT_KEY = "regionguard_metrics_started"

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Metrics:
    """Every regionguard series, on one dedicated registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        probe = ("region", "endpoint", "vantage")
        target = ("target", "region", "endpoint")
        self.probe_results = Counter("regionguard_probe_results", "Probe attempts by outcome", (*probe, "outcome"), registry=r)
        self.probe_ttft = Histogram(
            "regionguard_probe_time_to_first_chunk_seconds",
            "Time from request to first streamed content chunk",
            probe,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.probe_duration = Histogram(
            "regionguard_probe_duration_seconds", "Total time of a probe chat completion", probe, buckets=LATENCY_BUCKETS, registry=r
        )
        self.probe_tokens = Counter(
            "regionguard_probe_tokens", "Tokens used by probes (OpenTelemetry gen_ai.token.type)", (*probe, "token_type"), registry=r
        )
        self.probe_headroom = Gauge("regionguard_probe_quota_headroom_ratio", "Quota left from rate-limit headers, 0..1", probe, registry=r)
        self.probe_last = Gauge("regionguard_probe_last_timestamp_seconds", "Start time of the newest probe", probe, registry=r)
        self.region_state = Gauge("regionguard_region_state", "1 for the region's current health state", ("region", "state"), registry=r)
        self.region_score = Gauge("regionguard_region_score", "Region health score, 0..1", ("region",), registry=r)
        self.region_headroom = Gauge("regionguard_region_quota_headroom_ratio", "Region quota headroom, 0..1", ("region",), registry=r)
        self.endpoint_state = Gauge(
            "regionguard_endpoint_state", "1 for the endpoint's current health state", ("region", "endpoint", "state"), registry=r
        )
        self.endpoint_score = Gauge("regionguard_endpoint_score", "Endpoint health score, 0..1", ("region", "endpoint"), registry=r)
        self.endpoint_config_problem = Gauge(
            "regionguard_endpoint_config_problem",
            "1 while probes point at our own configuration (auth, deployment name)",
            ("region", "endpoint"),
            registry=r,
        )
        self.target_weight = Gauge("regionguard_target_endpoint_weight", "Weight of a target endpoint", (*target, "side"), registry=r)
        self.target_priority = Gauge("regionguard_target_endpoint_priority", "Priority of a target endpoint", (*target, "side"), registry=r)
        self.target_enabled = Gauge(
            "regionguard_target_endpoint_enabled", "1 when the target endpoint is enabled", (*target, "side"), registry=r
        )
        self.target_drift = Gauge(
            "regionguard_target_endpoint_drift", "1 while a change made outside regionguard is unresolved", target, registry=r
        )
        self.target_write_failed = Gauge(
            "regionguard_target_endpoint_write_failed", "1 while the last write to the endpoint failed", target, registry=r
        )
        self.changes = Counter("regionguard_changes", "Changes by outcome", ("status", "target", "kind"), registry=r)
        self.azure_requests = Counter(
            "regionguard_azure_requests",
            "Azure Resource Manager responses by operation and status code",
            ("operation", "status_code"),
            registry=r,
        )
        self.azure_duration = Histogram(
            "regionguard_azure_request_duration_seconds",
            "Azure Resource Manager request time",
            ("operation",),
            buckets=AZURE_BUCKETS,
            registry=r,
        )
        self.write_budget = Gauge("regionguard_write_budget_remaining", "Azure writes left in the current budget window", registry=r)
        self.leader = Gauge("regionguard_leader", "1 while this process holds the leader lease", registry=r)
        self.fencing_token = Gauge(
            "regionguard_leader_fencing_token", "Fencing token of the lease this process holds (0 when none)", registry=r
        )
        self.credential_failing = Gauge(
            "regionguard_azure_credential_failing",
            "1 while every Azure call of this worker's last reconcile tick failed on its credential (docs/adr/0016)",
            registry=r,
        )
        self.step_downs = Counter(
            "regionguard_leader_step_downs", "Leases given up because the Azure credential failed (docs/adr/0016)", registry=r
        )
        self.panic = Gauge("regionguard_panic", "1 while a target is failed open (panic)", ("target",), registry=r)
        self.frozen = Gauge("regionguard_frozen", "1 while automation is frozen for a target ('*' = every target)", ("target",), registry=r)
        self.reconcile_duration = Histogram(
            "regionguard_reconcile_duration_seconds", "Duration of a reconcile tick", buckets=RECONCILE_BUCKETS, registry=r
        )
        self.reconcile_last_success = Gauge(
            "regionguard_reconcile_last_success_timestamp_seconds", "End of the last successful reconcile tick", registry=r
        )
        self.reconcile_failures = Counter("regionguard_reconcile_failures", "Reconcile ticks that raised", registry=r)
        self.notifications = Counter("regionguard_notifications", "Notification deliveries by outcome", ("channel", "status"), registry=r)
        self.notifications_dropped = Counter(
            "regionguard_notifications_dropped", "Events dropped because a channel queue was full", ("channel",), registry=r
        )
        self.store_up = Gauge("regionguard_store_up", "1 when the last read from the database worked", registry=r)
        self._flag_targets: dict[str, set[str]] = {"panic": set(), "frozen": set()}

    # ------------------------------------------------------------ probes

    def observe_probe_results(self, results: Iterable[ProbeResult]) -> None:
        for res in results:
            labels = (res.region, res.endpoint, res.vantage)
            self.probe_results.labels(*labels, res.outcome.value).inc()
            if res.ttft_ms is not None:
                self.probe_ttft.labels(*labels).observe(res.ttft_ms / 1000.0)
            if res.total_ms is not None:
                self.probe_duration.labels(*labels).observe(res.total_ms / 1000.0)
            if res.prompt_tokens:
                self.probe_tokens.labels(*labels, "input").inc(res.prompt_tokens)
            if res.completion_tokens:
                self.probe_tokens.labels(*labels, "output").inc(res.completion_tokens)
            headroom = res.quota_headroom()
            if headroom is not None:
                self.probe_headroom.labels(*labels).set(headroom)
            self.probe_last.labels(*labels).set(res.started_at.timestamp())

    # ------------------------------------------------------------ health

    def observe_health(self, health: Any) -> None:
        """Accepts ``store.health()`` (endpoints, regions), a mapping or list of
        RegionHealth, or any object with ``regions`` (and optionally ``endpoints``)."""
        regions, endpoints = _unpack_health(health)
        for region in regions:
            for state in _STATES:
                self.region_state.labels(region.region, state).set(1.0 if region.state.value == state else 0.0)
            self.region_score.labels(region.region).set(region.score)
            if region.quota_headroom is not None:
                self.region_headroom.labels(region.region).set(region.quota_headroom)
        for ep in endpoints:
            name = ep.endpoint_id.split("/", 1)[-1]
            for state in _STATES:
                self.endpoint_state.labels(ep.region, name, state).set(1.0 if ep.state.value == state else 0.0)
            self.endpoint_score.labels(ep.region, name).set(ep.score)
            self.endpoint_config_problem.labels(ep.region, name).set(1.0 if ep.config_problem else 0.0)

    # ------------------------------------------------------------ targets

    def observe_targets(self, rows: Iterable[TargetEndpointRecord]) -> None:
        """Per target endpoint, desired and actual settings, drift and failed writes (``store.target_endpoints()``)."""
        for row in rows:
            labels = (row.target, row.region, row.endpoint or "")
            for side, setting in (("desired", row.desired), ("actual", row.actual)):
                _set_or_remove(self.target_weight, (*labels, side), setting.weight if setting else None)
                _set_or_remove(self.target_priority, (*labels, side), setting.priority if setting else None)
                _set_or_remove(self.target_enabled, (*labels, side), None if setting is None else float(setting.enabled))
            self.target_drift.labels(*labels).set(1.0 if row.drift else 0.0)
            self.target_write_failed.labels(*labels).set(1.0 if row.write_status is WriteStatus.FAILED else 0.0)

    def observe_change(self, status: str, change: Change | None = None) -> None:
        """One change attempt finished: status applied | failed | skipped | dry_run."""
        target = change.target if change is not None else ""
        kind = change.kind.value if change is not None else ""
        self.changes.labels(status, target, kind).inc()

    # ------------------------------------------------------------ loop and lease

    def set_leader(self, leader: bool, token: int | None = None) -> None:
        self.leader.set(1.0 if leader else 0.0)
        self.fencing_token.set(float(token) if leader and token is not None else 0.0)

    def set_credential(self, failing: bool, stepped_down: bool = False) -> None:
        self.credential_failing.set(1.0 if failing else 0.0)
        if stepped_down:
            self.step_downs.inc()

    def set_flags(
        self,
        panic: Iterable[str] | Mapping[str, bool] | None = None,
        frozen: Iterable[str] | Mapping[str, bool] | None = None,
        write_budget_left: int | None = None,
    ) -> None:
        """Targets in panic / frozen (an iterable of names, or name -> bool); None leaves a family as is."""
        if panic is not None:
            self._set_target_flags("panic", self.panic, panic)
        if frozen is not None:
            self._set_target_flags("frozen", self.frozen, frozen)
        if write_budget_left is not None:
            self.write_budget.set(write_budget_left)

    def _set_target_flags(self, family: str, gauge: Gauge, value: Iterable[str] | Mapping[str, bool]) -> None:
        on = {k for k, v in value.items() if v} if isinstance(value, Mapping) else set(value)
        known = self._flag_targets[family] | on | (set(value) if isinstance(value, Mapping) else set())
        for target in known:
            gauge.labels(target).set(1.0 if target in on else 0.0)
        self._flag_targets[family] = known

    def observe_reconcile(self, duration_s: float, ok: bool) -> None:
        self.reconcile_duration.observe(duration_s)
        if ok:
            self.reconcile_last_success.set(time.time())
        else:
            self.reconcile_failures.inc()

    # ------------------------------------------------------------ notifications (controlplane.notify calls these)

    def observe_notification(self, channel: str, status: str) -> None:
        self.notifications.labels(channel, status).inc()

    def observe_notification_dropped(self, channel: str, count: int = 1) -> None:
        self.notifications_dropped.labels(channel).inc(count)

    # ------------------------------------------------------------ Azure SDK

    def azure_policy(self) -> AzureCallMetricsPolicy:
        return AzureCallMetricsPolicy(self)

    # ------------------------------------------------------------ the web app's view (reads the store)

    def refresh_from_store(self, store: Any, now: datetime | None = None) -> bool:
        """Set health, target, panic and freeze series from the database. False if it is unreachable."""
        now = now or utcnow()
        try:
            self.observe_health(store.health())
            self.observe_targets(store.target_endpoints())
            panic = set(store.panics())
            frozen = {o.target or "*" for o in store.active_overrides(now) if o.kind is OverrideKind.FREEZE}
            self.set_flags(panic=panic, frozen=frozen)
        except Exception as exc:
            log.warning("metrics: cannot read the store: %s", type(exc).__name__)
            self.store_up.set(0.0)
            return False
        self.store_up.set(1.0)
        return True

    # ------------------------------------------------------------ exposition

    def series(self) -> int:
        """How many labelled children the registry holds (the soak watches it: labels from a bounded set only)."""
        total = 0
        for value in vars(self).values():
            children = getattr(value, "_metrics", None)  # prometheus_client's labelled children
            total += len(children) if isinstance(children, dict) else 0
        return total

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def wsgi_app(self) -> WSGIApp:
        return make_wsgi_app(self.registry)

    def flask_view(self, before: Callable[[], Any] | None = None) -> Callable[[], tuple[bytes, int, dict[str, str]]]:
        """A Flask view for ``/metrics``; ``before`` runs first (e.g. ``lambda: m.refresh_from_store(store)``)."""

        def metrics_view() -> tuple[bytes, int, dict[str, str]]:
            if before is not None:
                before()
            body, content_type = self.render()
            return body, 200, {"Content-Type": content_type}

        return metrics_view


def _set_or_remove(gauge: Gauge, labels: tuple[str, ...], value: float | int | None) -> None:
    if value is None:
        try:
            gauge.remove(*labels)
        except KeyError:
            pass
        return
    gauge.labels(*labels).set(float(value))


def _unpack_health(health: Any) -> tuple[list[RegionHealth], list[EndpointHealth]]:
    endpoints: Any = None
    if isinstance(health, tuple) and len(health) == 2 and all(isinstance(part, Mapping) for part in health):
        endpoints, regions = health  # store.health()
    elif hasattr(health, "regions"):
        regions, endpoints = health.regions, getattr(health, "endpoints", None)
    else:
        regions = health
    region_list = list(regions.values()) if isinstance(regions, Mapping) else list(regions)
    if endpoints is None:
        endpoint_list = [ep for region in region_list for ep in region.endpoints]
    else:
        endpoint_list = list(endpoints.values()) if isinstance(endpoints, Mapping) else list(endpoints)
    return region_list, endpoint_list


# ---------------------------------------------------------------- Azure SDK pipeline policy


def azure_operation(method: str, url: str) -> str:
    """``PATCH Microsoft.Network/trafficmanagerprofiles/AzureEndpoints`` from an ARM URL (names dropped)."""
    segments = [s for s in urlsplit(url).path.split("/") if s]
    lowered = [s.lower() for s in segments]
    if "providers" in lowered:
        i = len(lowered) - 1 - lowered[::-1].index("providers")
        namespace, rest = segments[i + 1 : i + 2], segments[i + 2 :]
        return f"{method.upper()} {'/'.join(namespace + rest[0::2])}"
    return f"{method.upper()} {'/'.join(segments[0::2]) or '/'}"


class AzureCallMetricsPolicy(SansIOHTTPPolicy[Any, Any]):  # both the legacy and azure.core.rest request types pass through
    """Counts Azure responses by operation and status code, and times them.

    Give it to the management clients: ``TrafficManagerManagementClient(cred,
    sub, per_retry_policies=[metrics.azure_policy()])`` counts every HTTP
    attempt (retries included, which is what ARM throttles on);
    ``per_call_policies=[...]`` counts one per SDK operation (its final response).
    """

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def on_request(self, request: Any) -> None:
        request.context[_CONTEXT_KEY] = time.perf_counter()

    def on_response(self, request: Any, response: Any) -> None:
        operation = azure_operation(request.http_request.method, request.http_request.url)
        self._metrics.azure_requests.labels(operation, str(response.http_response.status_code)).inc()
        self._observe_duration(request, operation)

    def on_exception(self, request: Any) -> None:
        operation = azure_operation(request.http_request.method, request.http_request.url)
        self._metrics.azure_requests.labels(operation, "error").inc()
        self._observe_duration(request, operation)

    def _observe_duration(self, request: Any, operation: str) -> None:
        started = request.context.get(_CONTEXT_KEY) if hasattr(request.context, "get") else None
        if started is not None:
            self._metrics.azure_duration.labels(operation).observe(time.perf_counter() - started)


# ---------------------------------------------------------------- /healthz and /readyz


def evaluate_readiness(checks: Mapping[str, Any]) -> tuple[bool, dict[str, Any]]:
    """Ready unless some check is False or None (unknown); other values are information."""
    ready = all(value is not None and value is not False for value in checks.values())
    return ready, {"status": "ready" if ready else "not ready", "checks": dict(checks)}


def make_readiness(
    store: Any, scheduler_running: Callable[[], bool], lease_state: Callable[[], str | None]
) -> Callable[[], dict[str, Any]]:
    """The standard readiness checks: database reachable and migrated, scheduler running, lease state known.

    ``lease_state`` returns e.g. "leader" / "follower", or None while unknown.
    """

    def readiness() -> dict[str, Any]:
        checks: dict[str, Any] = {}
        try:
            store.check()
            checks["database"] = True
        except Exception as exc:
            checks["database"] = False
            checks["database_error"] = str(exc) if type(exc).__name__ == "DatabaseUnavailable" else type(exc).__name__
        checks["scheduler"] = bool(scheduler_running())
        checks["lease"] = lease_state()
        return checks

    return readiness


def _json(start_response: Callable[..., Any], status: str, body: Mapping[str, Any]) -> list[bytes]:
    data = json.dumps(body, default=str).encode("utf-8")
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data))), ("Cache-Control", "no-store")])
    return [data]


def worker_http_app(
    readiness: Callable[[], Mapping[str, Any]], metrics: Metrics | None = None, sizes: Callable[[], Mapping[str, int]] | None = None
) -> WSGIApp:
    """WSGI app for the worker: ``/healthz`` (alive), ``/readyz`` (checks), ``/metrics``, and ``/debug/sizes``
    (items per in-memory container, ``Worker.memory_sizes``: counts only, no contents)."""
    metrics_app = metrics.wsgi_app() if metrics is not None else None

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == "/healthz":
            return _json(start_response, "200 OK", {"status": "ok"})
        if path == "/readyz":
            try:
                ready, body = evaluate_readiness(readiness())
            except Exception as exc:
                log.warning("readiness check raised %s", type(exc).__name__)
                ready, body = False, {"status": "not ready", "checks": {"error": type(exc).__name__}}
            return _json(start_response, "200 OK" if ready else "503 Service Unavailable", body)
        if path == "/metrics" and metrics_app is not None:
            return metrics_app(environ, start_response)
        if path == "/debug/sizes" and sizes is not None:
            return _json(start_response, "200 OK", {"sizes": dict(sizes())})
        return _json(start_response, "404 Not Found", {"error": "not found"})

    return app
