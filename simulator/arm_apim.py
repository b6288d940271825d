"""API Management backends in the fake ARM, as ``Microsoft.ApiManagement`` 2024-05-01 says.

The rules come from the REST spec (``apimbackends.json``, ``definitions.json``,
``apimanagement.json``; see ``azure-rest-api-specs/PROVENANCE.md``), written
out by hand here so the simulator needs no spec files at run time; a test
checks these tables against the spec files themselves.

- ``Backend_Get`` / ``Backend_GetEntityTag`` (HEAD) / ``Backend_ListByService``:
  the backend and its ``ETag`` header.
- ``Backend_CreateOrUpdate`` (PUT, ``BackendContract``): ``If-Match`` optional.
- ``Backend_Update`` (PATCH, ``BackendUpdateParameters``): ``If-Match`` required
  (the spec's ``IfMatchRequiredParameter``); a stale ETag answers 412
  ``PreconditionFailed``. A PATCH replaces each property it names (``pool``
  with its whole ``services`` array) and leaves every other one as it was.

Validation (400 ``ValidationError``, naming the property and the value): no
property the schema does not define, types, string lengths, enums, pool
weight and priority 0-100, ``services`` 1 or more items each with an ``id``,
circuit-breaker limits (15 rules, 10 status-code ranges within 200-599, 10
error reasons); and what the spec says in words: a pool member must be an
existing backend of the same service, a ``Pool`` backend needs a pool, and
a ``Single`` one a ``url`` and ``protocol``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any

APIM_API_VERSION = "2024-05-01"  # azure-mgmt-apimanagement 5.0.0
BACKEND_TYPE = "Microsoft.ApiManagement/service/backends"

JSON = dict[str, Any]

# ---------------------------------------------------------------- the schema, by hand from definitions.json

# BackendContractProperties / BackendUpdateParameterProperties = BackendBaseParameters + url, protocol
BACKEND_PROPERTIES: Mapping[str, str] = {
    "title": "string",
    "description": "string",
    "resourceId": "string",
    "properties": "object",  # BackendProperties
    "credentials": "object",  # BackendCredentialsContract
    "proxy": "object",  # BackendProxyContract
    "tls": "object",  # BackendTlsProperties
    "circuitBreaker": "object",  # BackendCircuitBreaker
    "pool": "object",  # BackendPool
    "type": "string",
    "url": "string",
    "protocol": "string",
}
STRING_LENGTHS: Mapping[str, tuple[int, int]] = {"title": (1, 300), "description": (1, 2000), "resourceId": (1, 2000), "url": (1, 2000)}
ENUMS: Mapping[str, tuple[str, ...]] = {"type": ("Single", "Pool"), "protocol": ("http", "soap")}
POOL_PROPERTIES = frozenset({"services"})
POOL_ITEM_PROPERTIES = frozenset({"id", "weight", "priority"})
POOL_WEIGHT_RANGE = (0, 100)
POOL_PRIORITY_RANGE = (0, 100)
TLS_PROPERTIES = frozenset({"validateCertificateChain", "validateCertificateName"})
PROXY_PROPERTIES = frozenset({"url", "username", "password"})
CREDENTIALS_PROPERTIES = frozenset({"certificateIds", "certificate", "query", "header", "authorization"})
AUTHORIZATION_PROPERTIES = frozenset({"scheme", "parameter"})
SERVICE_FABRIC_PROPERTIES = frozenset(
    {
        "clientCertificateId",
        "clientCertificatethumbprint",
        "maxPartitionResolutionRetries",
        "managementEndpoints",
        "serverCertificateThumbprints",
        "serverX509Names",
    }
)
CIRCUIT_BREAKER_PROPERTIES = frozenset({"rules"})
RULE_PROPERTIES = frozenset({"name", "failureCondition", "tripDuration", "acceptRetryAfter"})
FAILURE_CONDITION_PROPERTIES = frozenset({"count", "percentage", "interval", "statusCodeRanges", "errorReasons"})
STATUS_RANGE_PROPERTIES = frozenset({"min", "max"})
MAX_RULES = 15
MAX_STATUS_RANGES = 10
MAX_ERROR_REASONS = 10
# ProxyResource (common-types v2): read-only id, name, type; a PUT body may echo them back.
RESOURCE_READ_ONLY = frozenset({"id", "name", "type"})
SERVICE_NAME = re.compile(r"^[a-zA-Z](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?$")  # ServiceNameParameter, 1-50
_ARM_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.ApiManagement/service/(?P<service>[^/]+)"
    r"/backends/(?P<backend>[^/]+)/?$",
    re.IGNORECASE,
)


class ApimValidationError(ValueError):
    """A request APIM refuses: 400 ``ValidationError`` with this message."""


def service_id(sub: str, rg: str, service: str) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ApiManagement/service/{service}"


def backend_id(sub: str, rg: str, service: str, backend: str) -> str:
    return f"{service_id(sub, rg, service)}/backends/{backend}"


def parse_backend_id(value: str) -> dict[str, str] | None:
    """The parts of a backend's ARM id (sub, rg, service, backend), or None when it is not one."""
    m = _ARM_ID.match(value)
    return m.groupdict() if m else None


def check_path_names(service: str, backend: str | None = None) -> None:
    if not (1 <= len(service) <= 50 and SERVICE_NAME.match(service)):
        raise ApimValidationError(f"The service name '{service}' is invalid: 1-50 letters, digits and hyphens, starting with a letter.")
    if backend is not None and not 1 <= len(backend) <= 80:
        raise ApimValidationError(f"The backend id '{backend}' is invalid: it must be 1-80 characters long.")


# ---------------------------------------------------------------- validation


def _fail(path: str, message: str) -> ApimValidationError:
    return ApimValidationError(f"'{path}': {message}")


def _object(value: Any, path: str, allowed: frozenset[str] | Mapping[str, str]) -> JSON:
    if not isinstance(value, dict):
        raise _fail(path, f"expected an object, got {type(value).__name__}")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise _fail(path, f"property '{unknown[0]}' is not defined by the schema")
    return value


def _int(value: Any, path: str, lo: int | None = None, hi: int | None = None, nullable: bool = False) -> None:
    if value is None and nullable:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(path, f"expected an integer, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise _fail(path, f"{value} is out of range; it must be between {lo} and {hi}")


def _str(value: Any, path: str, lengths: tuple[int, int] | None = None) -> None:
    if not isinstance(value, str):
        raise _fail(path, f"expected a string, got {value!r}")
    if lengths is not None and not lengths[0] <= len(value) <= lengths[1]:
        raise _fail(path, f"length {len(value)} is not between {lengths[0]} and {lengths[1]}")


def _bool(value: Any, path: str) -> None:
    if not isinstance(value, bool):
        raise _fail(path, f"expected true or false, got {value!r}")


def _array(value: Any, path: str, min_items: int = 0, max_items: int | None = None) -> list[Any]:
    if not isinstance(value, list):
        raise _fail(path, f"expected an array, got {type(value).__name__}")
    if len(value) < min_items:
        raise _fail(path, f"has {len(value)} item(s); at least {min_items} required")
    if max_items is not None and len(value) > max_items:
        raise _fail(path, f"has {len(value)} items; at most {max_items} allowed")
    return value


def validate_properties(props: Any, path: str = "properties") -> JSON:
    """Schema checks of a backend's ``properties`` (PUT and PATCH alike). Returns it, enums normalised."""
    props = _object(props, path, BACKEND_PROPERTIES)
    for key, value in props.items():
        if value is None:
            continue  # null: "not specified"
        where = f"{path}.{key}"
        if BACKEND_PROPERTIES[key] == "string":
            _str(value, where, STRING_LENGTHS.get(key))
            if key in ENUMS:
                match = next((e for e in ENUMS[key] if e.lower() == value.lower()), None)
                if match is None:
                    raise _fail(where, f"'{value}' is not one of {', '.join(ENUMS[key])}")
                props[key] = match
    if props.get("pool") is not None:
        validate_pool(props["pool"], f"{path}.pool")
    if props.get("circuitBreaker") is not None:
        validate_circuit_breaker(props["circuitBreaker"], f"{path}.circuitBreaker")
    if props.get("tls") is not None:
        for key, value in _object(props["tls"], f"{path}.tls", TLS_PROPERTIES).items():
            _bool(value, f"{path}.tls.{key}")
    if props.get("proxy") is not None:
        proxy = _object(props["proxy"], f"{path}.proxy", PROXY_PROPERTIES)
        if "url" not in proxy:
            raise _fail(f"{path}.proxy.url", "is required")
        _str(proxy["url"], f"{path}.proxy.url", (1, 2000))
    if props.get("credentials") is not None:
        creds = _object(props["credentials"], f"{path}.credentials", CREDENTIALS_PROPERTIES)
        for key in ("certificateIds", "certificate"):
            if creds.get(key) is not None:
                _array(creds[key], f"{path}.credentials.{key}", max_items=32)
        if creds.get("authorization") is not None:
            auth = _object(creds["authorization"], f"{path}.credentials.authorization", AUTHORIZATION_PROPERTIES)
            for key, lengths in (("scheme", (1, 100)), ("parameter", (1, 300))):
                if key not in auth:
                    raise _fail(f"{path}.credentials.authorization.{key}", "is required")
                _str(auth[key], f"{path}.credentials.authorization.{key}", lengths)
    if props.get("properties") is not None:
        inner = _object(props["properties"], f"{path}.properties", frozenset({"serviceFabricCluster"}))
        if inner.get("serviceFabricCluster") is not None:
            cluster = _object(inner["serviceFabricCluster"], f"{path}.properties.serviceFabricCluster", SERVICE_FABRIC_PROPERTIES)
            if "managementEndpoints" not in cluster:
                raise _fail(f"{path}.properties.serviceFabricCluster.managementEndpoints", "is required")
    return props


def validate_pool(pool: Any, path: str) -> None:
    pool = _object(pool, path, POOL_PROPERTIES)
    if pool.get("services") is None:
        return
    for i, item in enumerate(_array(pool["services"], f"{path}.services", min_items=1)):
        where = f"{path}.services[{i}]"
        item = _object(item, where, POOL_ITEM_PROPERTIES)
        if "id" not in item or item["id"] is None:
            raise _fail(f"{where}.id", "is required")
        _str(item["id"], f"{where}.id", (1, 2000))
        if parse_backend_id(item["id"]) is None:
            raise _fail(f"{where}.id", f"'{item['id']}' is not the ARM id of an API Management backend")
        _int(item.get("weight"), f"{where}.weight", *POOL_WEIGHT_RANGE, nullable=True)
        _int(item.get("priority"), f"{where}.priority", *POOL_PRIORITY_RANGE, nullable=True)


def validate_circuit_breaker(cb: Any, path: str) -> None:
    cb = _object(cb, path, CIRCUIT_BREAKER_PROPERTIES)
    for i, rule in enumerate(_array(cb.get("rules") or [], f"{path}.rules", max_items=MAX_RULES)):
        where = f"{path}.rules[{i}]"
        rule = _object(rule, where, RULE_PROPERTIES)
        for key in ("name", "tripDuration"):
            if rule.get(key) is not None:
                _str(rule[key], f"{where}.{key}")
        if rule.get("acceptRetryAfter") is not None:
            _bool(rule["acceptRetryAfter"], f"{where}.acceptRetryAfter")
        cond = rule.get("failureCondition")
        if cond is None:
            continue
        cond = _object(cond, f"{where}.failureCondition", FAILURE_CONDITION_PROPERTIES)
        for key in ("count", "percentage"):
            _int(cond.get(key), f"{where}.failureCondition.{key}", nullable=True)
        if cond.get("interval") is not None:
            _str(cond["interval"], f"{where}.failureCondition.interval")
        ranges = _array(cond.get("statusCodeRanges") or [], f"{where}.failureCondition.statusCodeRanges", max_items=MAX_STATUS_RANGES)
        for j, rng in enumerate(ranges):
            at = f"{where}.failureCondition.statusCodeRanges[{j}]"
            rng = _object(rng, at, STATUS_RANGE_PROPERTIES)
            for key in ("min", "max"):
                _int(rng.get(key), f"{at}.{key}", 200, 599, nullable=True)
        reasons = _array(cond.get("errorReasons") or [], f"{where}.failureCondition.errorReasons", max_items=MAX_ERROR_REASONS)
        for j, reason in enumerate(reasons):
            _str(reason, f"{where}.failureCondition.errorReasons[{j}]", (0, 200))


def validate_body(body: Any, *, patch: bool) -> JSON:
    """A PUT (``BackendContract``) or PATCH (``BackendUpdateParameters``) body: its ``properties``."""
    if not isinstance(body, dict):
        raise ApimValidationError("The request body must be a JSON object.")
    allowed = {"properties"} if patch else {"properties", *RESOURCE_READ_ONLY}
    _object(body, "(body)", frozenset(allowed))
    return validate_properties(copy.deepcopy(body.get("properties") or {}))


def check_semantics(props: JSON, name: str, exists: Any) -> None:
    """What the spec says in words: members exist in the same service; Pool needs a pool; Single a url and protocol.

    ``exists(sub, rg, service, backend)`` says whether a backend exists.
    """
    kind = props.get("type") or ("Pool" if props.get("pool") else "Single")
    if kind == "Pool":
        services = (props.get("pool") or {}).get("services")
        if not services:
            raise ApimValidationError(f"Backend '{name}' is of type 'Pool' and needs 'pool.services' with at least one backend.")
        seen: set[str] = set()
        for i, item in enumerate(services):
            parts = parse_backend_id(item["id"]) or {}
            if parts.get("backend", "").lower() == name.lower():
                raise ApimValidationError(f"'properties.pool.services[{i}].id': a pool cannot contain itself.")
            if not exists(parts["sub"], parts["rg"], parts["service"], parts["backend"]):
                raise ApimValidationError(
                    f"'properties.pool.services[{i}].id': backend '{item['id']}' does not exist; "
                    "a pool member must be an existing backend entity."
                )
            key = item["id"].lower().rstrip("/")
            if key in seen:
                raise ApimValidationError(f"'properties.pool.services[{i}].id': backend '{item['id']}' is in the pool twice.")
            seen.add(key)
    else:
        for key in ("url", "protocol"):
            if not props.get(key):
                raise ApimValidationError(f"'properties.{key}' is required when the backend type is 'Single'.")


# ---------------------------------------------------------------- documents


def backend_doc(sub: str, rg: str, service: str, name: str, props: JSON) -> JSON:
    return {"id": backend_id(sub, rg, service, name), "type": BACKEND_TYPE, "name": name, "properties": props}


def single_backend_props(url: str, *, title: str | None = None, circuit_breaker: Sequence[Mapping[str, Any]] | None = None) -> JSON:
    props: JSON = {"title": title, "description": None, "type": "Single", "url": url, "protocol": "http"}
    props["tls"] = {"validateCertificateChain": True, "validateCertificateName": True}
    props["credentials"] = {"header": {"api-key": ["{{aoai-key}}"]}}
    if circuit_breaker is not None:
        props["circuitBreaker"] = {"rules": [copy.deepcopy(dict(r)) for r in circuit_breaker]}
    return props


DEFAULT_CIRCUIT_BREAKER: tuple[Mapping[str, Any], ...] = (
    {
        "name": "aoai-throttled",
        "failureCondition": {
            "count": 3,
            "interval": "PT1M",
            "statusCodeRanges": [{"min": 429, "max": 429}, {"min": 500, "max": 599}],
        },
        "tripDuration": "PT1M",
        "acceptRetryAfter": True,
    },
)
