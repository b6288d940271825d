"""Build one actuator per configured target from ``settings.azure``.

SDK clients are made here, one per (kind, subscription), all with: the ARM
base URL (any ARM-compatible endpoint works, e.g. the simulator), the CA
bundle to trust (``connection_verify``), the LRO polling interval, and
``retry_total=0`` -- :func:`controlplane.actuators.base.call_with_retry` is
the one retry loop, bounded by the tick's deadline -- and its own
:class:`~controlplane.actuators.transport.BoundedTransport`: a hard
wall-clock deadline per call (``call_s``, at most the request timeout), a
size cap on answers and the write fence. The credential is wrapped in a
:class:`~controlplane.actuators.credentials.BoundedCredential`: a token
fetch gets the same hard deadline.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from controlplane.actuators.apim import ApimBackendPoolActuator
from controlplane.actuators.base import Actuator, RetryPolicy
from controlplane.actuators.credentials import BoundedCredential, build_credential
from controlplane.actuators.frontdoor import FrontDoorClassicActuator
from controlplane.actuators.frontdoor_cdn import FrontDoorCdnActuator
from controlplane.actuators.trafficmanager import TrafficManagerActuator
from controlplane.actuators.transport import DEFAULT_MAX_BODY_BYTES, BoundedTransport
from controlplane.config import Settings

log = logging.getLogger(__name__)

CREDENTIAL_SCOPES = {
    "public": "https://management.azure.com/.default",
    "china": "https://management.chinacloudapi.cn/.default",
    "usgov": "https://management.usgovcloudapi.net/.default",
}


def client_kwargs(
    settings: Settings, policies: list[Any] | None = None, *, call_s: float | None = None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> dict[str, Any]:
    """Keyword arguments every azure-mgmt-* client gets (``policies``: extra per-retry policies, e.g. metrics).

    ``call_s``: the hard deadline of one call (default: the request timeout);
    :func:`transport_for` makes each client's transport from these.
    """
    az = settings.azure
    timeout = min(az.request_timeout, call_s) if call_s is not None else az.request_timeout
    kwargs: dict[str, Any] = {
        "base_url": settings.arm_base_url,
        "credential_scopes": [CREDENTIAL_SCOPES[az.cloud]],
        "retry_total": 0,
        "connection_timeout": timeout,
        "read_timeout": timeout,
        "max_body_bytes": max_body_bytes,
    }
    if az.polling_interval is not None:
        kwargs["polling_interval"] = az.polling_interval
    if az.ca_bundle:
        kwargs["connection_verify"] = az.ca_bundle
    if policies:
        kwargs["per_retry_policies"] = list(policies)
    return kwargs


def with_transport(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The client's keyword arguments with a fresh :class:`BoundedTransport` (one per client: a client closes its own)."""
    out = {k: v for k, v in kwargs.items() if k != "max_body_bytes"}
    transport_options = {k: out[k] for k in ("connection_timeout", "read_timeout", "connection_verify") if k in out}
    out["transport"] = BoundedTransport(max_call_s=float(out["read_timeout"]), max_body_bytes=kwargs["max_body_bytes"], **transport_options)
    return out


class _Clients:
    """Lazily built, cached SDK clients per subscription (thread-safe)."""

    def __init__(self, make: Callable[[str], Any]) -> None:
        self._make = make
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __call__(self, subscription_id: str) -> Any:
        with self._lock:
            client = self._clients.get(subscription_id)
            if client is None:
                client = self._clients[subscription_id] = self._make(subscription_id)
            return client


def build_actuators(
    settings: Settings,
    credential: Any = None,
    *,
    retry: RetryPolicy | None = None,
    policies: list[Any] | None = None,
    call_s: float | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    user_agent: str | None = None,
) -> dict[str, Actuator]:
    """target name -> the actuator for its kind (one instance per kind, shared).

    ``call_s``: the hard deadline of any one Azure call, and of any one token
    fetch (the worker passes its lease timing's, shorter than the lease:
    docs/adr/0012). ``user_agent``:
    prefixed to every request's User-Agent (the worker passes its holder id).
    """
    if not settings.targets:
        return {}
    credential = credential if credential is not None else build_credential(settings.azure.credential)
    base = client_kwargs(settings, policies, call_s=call_s, max_body_bytes=max_body_bytes)
    # a token fetch happens before the request reaches the transport: it gets the same hard deadline
    credential = BoundedCredential(credential, float(base["read_timeout"]))
    if user_agent:
        base["user_agent"] = user_agent  # prefixed to the SDK's: ARM's activity log names the worker that wrote
    timeout = float(base["read_timeout"])
    by_kind: dict[str, Actuator] = {}

    def actuator(kind: str) -> Actuator:
        if kind in by_kind:
            return by_kind[kind]
        if kind == "traffic_manager":
            from azure.mgmt.trafficmanager import TrafficManagerManagementClient

            made: Actuator = TrafficManagerActuator(
                _Clients(lambda sub: TrafficManagerManagementClient(credential, sub, **with_transport(base))),
                request_timeout=timeout,
                retry=retry,
            )
        elif kind == "front_door":
            from azure.mgmt.frontdoor import FrontDoorManagementClient

            made = FrontDoorClassicActuator(
                _Clients(lambda sub: FrontDoorManagementClient(credential, sub, **with_transport(base))),
                request_timeout=timeout,
                retry=retry,
            )
        elif kind == "front_door_cdn":
            from azure.mgmt.cdn import CdnManagementClient

            made = FrontDoorCdnActuator(
                _Clients(lambda sub: CdnManagementClient(credential, sub, **with_transport(base))), request_timeout=timeout, retry=retry
            )
        elif kind == "apim_backend_pool":
            from azure.mgmt.apimanagement import ApiManagementClient

            made = ApimBackendPoolActuator(
                _Clients(lambda sub: ApiManagementClient(credential, sub, **with_transport(base))), request_timeout=timeout, retry=retry
            )
        else:  # pragma: no cover - config validation forbids it
            raise ValueError(f"no actuator for target kind {kind!r}")
        by_kind[kind] = made
        return made

    return {t.name: actuator(t.kind) for t in settings.targets}
