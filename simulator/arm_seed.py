"""Realistic starting state for the fake ARM.

:func:`classic_front_door_body` builds a Front Door classic resource shaped
like the spec's ``FrontdoorGet.json`` example: one backend pool regionguard
manages, plus pools, routing rules, frontend endpoints and a rules engine it
must never touch (and read-only fields the SDK drops on a PUT).
:func:`seed_from_config` seeds every target a regionguard config names.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from simulator.arm_state import ArmState, front_door_id

if TYPE_CHECKING:
    from controlplane.config import APIMBackendPoolTarget, FrontDoorCdnTarget, FrontDoorTarget, Settings, TrafficManagerTarget

logger = logging.getLogger(__name__)

DEFAULT_BACKENDS: tuple[Mapping[str, Any], ...] = (
    {"address": "llm-eastus.example.net", "weight": 50, "priority": 1, "enabled_state": "Enabled"},
    {"address": "llm-westeurope.example.net", "weight": 50, "priority": 1, "enabled_state": "Enabled"},
)


def _backend(spec: Mapping[str, Any]) -> dict[str, Any]:
    address = str(spec["address"])
    return {
        "address": address,
        "httpPort": spec.get("http_port", 80),
        "httpsPort": spec.get("https_port", 443),
        "enabledState": spec.get("enabled_state", spec.get("enabledState", spec.get("status", "Enabled"))),
        "weight": spec.get("weight", 50),
        "priority": spec.get("priority", 1),
        "backendHostHeader": spec.get("backend_host_header", address),
    }


def _ref(fid: str, kind: str, name: str) -> dict[str, str]:
    return {"id": f"{fid}/{kind}/{name}"}


def _routing_rules(fid: str, managed_pool: str) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{fid}/routingRules/llm-route",
            "name": "llm-route",
            "properties": {
                "frontendEndpoints": [_ref(fid, "frontendEndpoints", "api")],
                "acceptedProtocols": ["Https"],
                "patternsToMatch": ["/openai/*"],
                "routeConfiguration": {
                    "@odata.type": "#Microsoft.Azure.FrontDoor.Models.FrontdoorForwardingConfiguration",
                    "customForwardingPath": "",
                    "forwardingProtocol": "HttpsOnly",
                    "backendPool": _ref(fid, "backendPools", managed_pool),
                },
                "enabledState": "Enabled",
                "resourceState": "Enabled",
            },
        },
        {
            "id": f"{fid}/routingRules/static-route",
            "name": "static-route",
            "properties": {
                "frontendEndpoints": [_ref(fid, "frontendEndpoints", "api"), _ref(fid, "frontendEndpoints", "default")],
                "acceptedProtocols": ["Http", "Https"],
                "patternsToMatch": ["/static/*", "/docs/*"],
                "routeConfiguration": {
                    "@odata.type": "#Microsoft.Azure.FrontDoor.Models.FrontdoorForwardingConfiguration",
                    "customForwardingPath": "/",
                    "forwardingProtocol": "MatchRequest",
                    "cacheConfiguration": {
                        "queryParameterStripDirective": "StripNone",
                        "dynamicCompression": "Enabled",
                        "cacheDuration": "P1DT12H20M30S",
                    },
                    "backendPool": _ref(fid, "backendPools", "static-pool"),
                },
                "rulesEngine": _ref(fid, "rulesEngines", "static-headers"),
                "enabledState": "Enabled",
                "resourceState": "Enabled",
            },
        },
        {
            "id": f"{fid}/routingRules/http-to-https",
            "name": "http-to-https",
            "properties": {
                "frontendEndpoints": [_ref(fid, "frontendEndpoints", "api")],
                "acceptedProtocols": ["Http"],
                "patternsToMatch": ["/*"],
                "routeConfiguration": {
                    "@odata.type": "#Microsoft.Azure.FrontDoor.Models.FrontdoorRedirectConfiguration",
                    "redirectType": "Moved",
                    "redirectProtocol": "HttpsOnly",
                    "customHost": "",
                    "customPath": "",
                    "customFragment": "",
                    "customQueryString": "",
                },
                "enabledState": "Enabled",
                "resourceState": "Enabled",
            },
        },
    ]


def _pools(fid: str, managed_pool: str, backends: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    def pool(name: str, members: list[dict[str, Any]], lb: str, hp: str) -> dict[str, Any]:
        return {
            "id": f"{fid}/backendPools/{name}",
            "name": name,
            "type": "Microsoft.Network/Frontdoors/BackendPools",
            "properties": {
                "backends": members,
                "loadBalancingSettings": _ref(fid, "loadBalancingSettings", lb),
                "healthProbeSettings": _ref(fid, "healthProbeSettings", hp),
                "resourceState": "Enabled",
            },
        }

    static_backends = [
        {
            "privateLinkResourceId": "/subscriptions/subid/resourcegroups/rg1/providers/Microsoft.Network/privateLinkServices/pls1",
            "privateLinkLocation": "eastus",
            "privateEndpointStatus": "Approved",
            "privateLinkApprovalMessage": "Please approve the connection request for this Private Link",
            "address": "static.contoso.com.website-us-west-2.othercloud.net",
            "httpPort": 80,
            "httpsPort": 443,
            "enabledState": "Enabled",
            "weight": 2,
            "priority": 1,
            "backendHostHeader": "static.contoso.com",
        },
        {
            "address": "10.0.1.5",
            "httpPort": 8080,
            "httpsPort": 8443,
            "enabledState": "Disabled",
            "weight": 1,
            "priority": 3,
        },
    ]
    return [
        pool(managed_pool, [_backend(b) for b in backends], "llm-lb", "llm-probe"),
        pool("static-pool", static_backends, "static-lb", "static-probe"),
    ]


def _rules_engines(fid: str) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{fid}/rulesEngines/static-headers",
            "name": "static-headers",
            "properties": {
                "resourceState": "Enabled",
                "rules": [
                    {
                        "name": "CacheImages",
                        "priority": 1,
                        "action": {
                            "responseHeaderActions": [
                                {"headerActionType": "Overwrite", "headerName": "Cache-Control", "value": "public, max-age=31536000"}
                            ]
                        },
                        "matchConditions": [
                            {
                                "rulesEngineMatchVariable": "RequestFilenameExtension",
                                "rulesEngineOperator": "Equal",
                                "rulesEngineMatchValue": ["jpg", "png"],
                                "transforms": ["Lowercase"],
                            }
                        ],
                        "matchProcessingBehavior": "Continue",
                    }
                ],
            },
        }
    ]


def classic_front_door_body(
    subscription: str,
    resource_group: str,
    name: str,
    *,
    managed_pool: str = "llm-pool",
    backends: Sequence[Mapping[str, Any]] = DEFAULT_BACKENDS,
    location: str = "global",
) -> dict[str, Any]:
    """A realistic Front Door classic resource (GET shape, spec ``FrontdoorGet.json``).

    ``backends``: ``{address, weight, priority, enabled_state}`` for the managed pool.
    Everything else (``static-pool``, three routing rules, two frontend
    endpoints, a rules engine, health probe and load-balancing settings) is
    what an operator set up by hand and regionguard must leave alone.
    """
    fid = front_door_id(subscription, resource_group, name)
    waf_policy = (
        f"/subscriptions/{subscription}/resourceGroups/{resource_group}"
        "/providers/Microsoft.Network/frontDoorWebApplicationFirewallPolicies/policy1"
    )
    return {
        "id": fid,
        "name": name,
        "type": "Microsoft.Network/frontDoors",
        "location": location,
        "tags": {"owner": "platform-team", "env": "prod"},
        "properties": {
            "friendlyName": name,
            "routingRules": _routing_rules(fid, managed_pool),
            "healthProbeSettings": [
                _settings(fid, "healthProbeSettings", "llm-probe", _probe("/health", "Https", 30, "HEAD")),
                _settings(fid, "healthProbeSettings", "static-probe", _probe("/", "Http", 120, "GET")),
            ],
            "loadBalancingSettings": [
                _settings(fid, "loadBalancingSettings", "llm-lb", _load_balancing(0)),
                _settings(fid, "loadBalancingSettings", "static-lb", _load_balancing(200)),
            ],
            "backendPools": _pools(fid, managed_pool, backends),
            "frontendEndpoints": [
                {
                    "id": f"{fid}/frontendEndpoints/api",
                    "name": "api",
                    "properties": {
                        "hostName": "api.contoso.com",
                        "sessionAffinityEnabledState": "Disabled",
                        "sessionAffinityTtlSeconds": 0,
                        "webApplicationFirewallPolicyLink": {"id": waf_policy},
                        "resourceState": "Enabled",
                        "customHttpsProvisioningState": "Enabled",
                        "customHttpsProvisioningSubstate": "CertificateDeployed",
                    },
                },
                {
                    "id": f"{fid}/frontendEndpoints/default",
                    "name": "default",
                    "properties": {"hostName": f"{name}.azurefd.net", "resourceState": "Enabled"},
                },
            ],
            "rulesEngines": _rules_engines(fid),
            "backendPoolsSettings": {"enforceCertificateNameCheck": "Enabled", "sendRecvTimeoutSeconds": 60},
            "enabledState": "Enabled",
            "resourceState": "Enabled",
            "provisioningState": "Succeeded",
            "cname": f"{name}.azurefd.net",
            "frontdoorId": "00000000-1111-2222-3333-444444444444",
            "extendedProperties": {"flavor": "classic"},
        },
    }


def _probe(path: str, protocol: str, interval_s: int, method: str) -> dict[str, Any]:
    return {
        "path": path,
        "protocol": protocol,
        "intervalInSeconds": interval_s,
        "enabledState": "Enabled",
        "healthProbeMethod": method,
    }


def _load_balancing(additional_latency_ms: int) -> dict[str, Any]:
    return {"sampleSize": 4, "successfulSamplesRequired": 2, "additionalLatencyMilliseconds": additional_latency_ms}


def _settings(fid: str, kind: str, name: str, props: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"{fid}/{kind}/{name}", "name": name, "properties": {**props, "resourceState": "Enabled"}}


# ---------------------------------------------------------------- from a regionguard config


def _host(url: str) -> str:
    return urlparse(url).hostname or url


def _region_host(cfg: Settings, region: str, fallback: str) -> str:
    try:
        return _host(cfg.region(region).endpoints[0].base_url)
    except (KeyError, IndexError):
        return fallback


def seed_from_config(state: ArmState, cfg: Settings) -> list[str]:
    """Seed every target of a regionguard config; return the resource ids seeded.

    Traffic Manager endpoints point at the region's first LLM endpoint host;
    Front Door classic gets :func:`classic_front_door_body` with the target's
    backend pool as the managed pool (added to an existing Front Door if two
    targets share one); AFD origins get the region's host as ``hostName``.
    An APIM pool gets one single backend per region (the region's first LLM
    endpoint as its url, with a circuit breaker on 429 and 5xx) and the pool of
    them, weights as APIM holds them (regionguard's / 10).
    Every endpoint starts Enabled with the weight and priority in the config.
    """
    seeded: list[str] = []
    for target in cfg.targets:
        if target.kind == "traffic_manager":
            seeded.append(_seed_tm(state, cfg, target))
        elif target.kind == "front_door":
            seeded.append(_seed_fd(state, cfg, target))
        elif target.kind == "front_door_cdn":
            seeded.append(_seed_afd(state, cfg, target))
        elif target.kind == "apim_backend_pool":
            seeded.append(_seed_apim(state, cfg, target))
        else:  # pragma: no cover - config validation forbids it
            logger.warning("fake ARM: target %s has unknown kind %s", target.name, target.kind)
    return seeded


def _seed_tm(state: ArmState, cfg: Settings, target: TrafficManagerTarget) -> str:
    endpoints = [
        {
            "name": ep.name,
            "type": ep.type,
            "target": _region_host(cfg, region, f"{ep.name}.example.net"),
            "weight": ep.weight,
            "priority": ep.priority,
            "status": "Enabled",
            "location": _azure_region(cfg, region),
        }
        for region, ep in target.endpoints.items()
    ]
    method = "Priority" if target.routing == "priority" else "Weighted"
    doc = state.seed_tm_profile(target.subscription_id, target.resource_group, target.profile, method, endpoints)
    return str(doc["id"])


def _azure_region(cfg: Settings, region: str) -> str | None:
    try:
        return cfg.region(region).azure_region
    except KeyError:
        return None


def _seed_fd(state: ArmState, cfg: Settings, target: FrontDoorTarget) -> str:
    backends = [
        {"address": ep.address, "weight": ep.weight, "priority": ep.priority, "enabled_state": "Enabled"}
        for ep in target.endpoints.values()
    ]
    sub, rg, name = target.subscription_id, target.resource_group, target.front_door
    existing = state.get_resource(front_door_id(sub, rg, name))
    if existing is None:
        body = classic_front_door_body(sub, rg, name, managed_pool=target.backend_pool, backends=backends)
    else:
        body = _with_pool(existing, target.backend_pool, backends)
    return str(state.seed_front_door(sub, rg, name, body)["id"])


def _with_pool(doc: dict[str, Any], pool_name: str, backends: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    props = doc.setdefault("properties", {})
    pools = props.setdefault("backendPools", [])
    members = [_backend(b) for b in backends]
    for pool in pools:
        if str(pool.get("name", "")).lower() == pool_name.lower():
            pool.setdefault("properties", {})["backends"] = members
            return doc
    fid = str(doc["id"])
    pools.append(
        {
            "id": f"{fid}/backendPools/{pool_name}",
            "name": pool_name,
            "type": "Microsoft.Network/Frontdoors/BackendPools",
            "properties": {
                "backends": members,
                "loadBalancingSettings": _ref(fid, "loadBalancingSettings", "llm-lb"),
                "healthProbeSettings": _ref(fid, "healthProbeSettings", "llm-probe"),
                "resourceState": "Enabled",
            },
        }
    )
    return doc


def _seed_afd(state: ArmState, cfg: Settings, target: FrontDoorCdnTarget) -> str:
    origins = [
        {
            "name": ep.origin,
            "host_name": _region_host(cfg, region, f"{ep.origin}.example.net"),
            "weight": ep.weight,
            "priority": ep.priority,
            "enabled_state": "Enabled",
        }
        for region, ep in target.endpoints.items()
    ]
    doc = state.seed_afd_origin_group(target.subscription_id, target.resource_group, target.profile, target.origin_group, origins)
    return str(doc["id"])


def _seed_apim(state: ArmState, cfg: Settings, target: APIMBackendPoolTarget) -> str:
    from controlplane.config import APIM_WEIGHT_SCALE

    members = [
        {
            "name": ep.backend,
            "url": _region_url(cfg, region, f"https://{ep.backend}.example.net") + "/openai",
            "title": f"Azure OpenAI {region}",
        }
        for region, ep in target.endpoints.items()
    ]
    pool = {
        "name": target.pool,
        "title": f"{target.name} (load-balanced pool)",
        "members": [
            {"backend": ep.backend, "weight": ep.weight // APIM_WEIGHT_SCALE, "priority": ep.priority} for ep in target.endpoints.values()
        ],
    }
    docs = state.seed_apim_backends(target.subscription_id, target.resource_group, target.service, [*members, pool])
    return str(docs[-1]["id"])


def _region_url(cfg: Settings, region: str, fallback: str) -> str:
    try:
        return cfg.region(region).endpoints[0].base_url.rstrip("/")
    except (KeyError, IndexError):
        return fallback
