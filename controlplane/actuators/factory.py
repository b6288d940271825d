"""Build one actuator per configured target from ``settings.azure``.

SDK clients are made here, one per (kind, subscription), all with: the ARM
base URL (any ARM-compatible endpoint works, e.g. the simulator), the CA
bundle to trust (``connection_verify``), the LRO polling interval, and
``retry_total=0`` -- :func:`controlplane.actuators.base.call_with_retry` is
the one retry loop, bounded by the tick's deadline.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from controlplane.actuators.apim import ApimBackendPoolActuator
from controlplane.actuators.base import Actuator, RetryPolicy
from controlplane.actuators.credentials import build_credential
from controlplane.actuators.frontdoor import FrontDoorClassicActuator
from controlplane.actuators.frontdoor_cdn import FrontDoorCdnActuator
from controlplane.actuators.trafficmanager import TrafficManagerActuator
from controlplane.config import Settings

log = logging.getLogger(__name__)

CREDENTIAL_SCOPES = {
    "public": "https://management.azure.com/.default",
    "china": "https://management.chinacloudapi.cn/.default",
    "usgov": "https://management.usgovcloudapi.net/.default",
}


def client_kwargs(settings: Settings, policies: list[Any] | None = None) -> dict[str, Any]:
    """Keyword arguments every azure-mgmt-* client gets (``policies``: extra per-retry policies, e.g. metrics)."""
    az = settings.azure
    kwargs: dict[str, Any] = {
        "base_url": settings.arm_base_url,
        "credential_scopes": [CREDENTIAL_SCOPES[az.cloud]],
        "retry_total": 0,
        "connection_timeout": az.request_timeout,
        "read_timeout": az.request_timeout,
    }
    if az.polling_interval is not None:
        kwargs["polling_interval"] = az.polling_interval
    if az.ca_bundle:
        kwargs["connection_verify"] = az.ca_bundle
    if policies:
        kwargs["per_retry_policies"] = list(policies)
    return kwargs


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
    settings: Settings, credential: Any = None, *, retry: RetryPolicy | None = None, policies: list[Any] | None = None
) -> dict[str, Actuator]:
    """target name -> the actuator for its kind (one instance per kind, shared)."""
    if not settings.targets:
        return {}
    credential = credential if credential is not None else build_credential(settings.azure.credential)
    kwargs = client_kwargs(settings, policies)
    timeout = settings.azure.request_timeout
    by_kind: dict[str, Actuator] = {}

    def actuator(kind: str) -> Actuator:
        if kind in by_kind:
            return by_kind[kind]
        if kind == "traffic_manager":
            from azure.mgmt.trafficmanager import TrafficManagerManagementClient

            made: Actuator = TrafficManagerActuator(
                _Clients(lambda sub: TrafficManagerManagementClient(credential, sub, **kwargs)), request_timeout=timeout, retry=retry
            )
        elif kind == "front_door":
            from azure.mgmt.frontdoor import FrontDoorManagementClient

            made = FrontDoorClassicActuator(
                _Clients(lambda sub: FrontDoorManagementClient(credential, sub, **kwargs)), request_timeout=timeout, retry=retry
            )
        elif kind == "front_door_cdn":
            from azure.mgmt.cdn import CdnManagementClient

            made = FrontDoorCdnActuator(
                _Clients(lambda sub: CdnManagementClient(credential, sub, **kwargs)), request_timeout=timeout, retry=retry
            )
        elif kind == "apim_backend_pool":
            from azure.mgmt.apimanagement import ApiManagementClient

            made = ApimBackendPoolActuator(
                _Clients(lambda sub: ApiManagementClient(credential, sub, **kwargs)), request_timeout=timeout, retry=retry
            )
        else:  # pragma: no cover - config validation forbids it
            raise ValueError(f"no actuator for target kind {kind!r}")
        by_kind[kind] = made
        return made

    return {t.name: actuator(t.kind) for t in settings.targets}
