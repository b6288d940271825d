"""In-memory resources of the fake Azure Resource Manager and ARM's rules for them.

HTTP-agnostic: methods take path parameters and parsed JSON bodies and return
JSON documents; a problem is raised as :class:`ArmError` carrying ARM's status,
code and message. :mod:`simulator.arm` puts it on the wire.

Resources (their shapes follow the REST specs in azure-rest-api-specs):

- Traffic Manager profiles (``Microsoft.Network/trafficManagerProfiles``) with
  their endpoints inline; endpoint GET/PUT/PATCH (not long-running).
- Front Door classic (``Microsoft.Network/frontDoors``): GET, PUT (long-running).
- Front Door Standard/Premium origin groups and origins (``Microsoft.Cdn``):
  GET, list, PUT/PATCH (long-running).
- API Management backends (``Microsoft.ApiManagement/service/backends``), single
  and load-balanced pools: GET, HEAD, list, PUT, PATCH with ETags; the rules are
  in :mod:`simulator.arm_apim`.
"""

from __future__ import annotations

import copy
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from simulator import arm_apim
from simulator.arm_apim import ApimValidationError

logger = logging.getLogger(__name__)

JSON = dict[str, Any]

TM_API_VERSION = "2026-09-01"  # azure-mgmt-trafficmanager 2.0.0
FD_API_VERSION = "2025-10-01"  # azure-mgmt-frontdoor 2.0.0
CDN_API_VERSION = "2026-10-01"  # azure-mgmt-cdn 14.1.0

TM_ENDPOINT_TYPES = ("AzureEndpoints", "ExternalEndpoints", "NestedEndpoints")
ENABLED_STATES = ("Enabled", "Disabled")
NOT_FOUND_HELP = "For more details please go to https://aka.ms/ARMResourceNotFoundFix"

# Fields Front Door computes itself (read-only in the spec / SDK): a PUT body
# never carries them (the SDK strips them), so they survive from the stored
# resource, as on the real service.
FD_SERVER_FIELDS = frozenset(
    {
        "id",
        "name",
        "type",
        "resourceState",
        "provisioningState",
        "cname",
        "frontdoorId",
        "rulesEngines",
        "extendedProperties",
        "privateEndpointStatus",
        "customHttpsProvisioningState",
        "customHttpsProvisioningSubstate",
        "customHttpsConfiguration",
    }
)
FD_CHILD_LISTS = {
    "routingRules": "RoutingRules",
    "healthProbeSettings": "HealthProbeSettings",
    "loadBalancingSettings": "LoadBalancingSettings",
    "backendPools": "BackendPools",
    "frontendEndpoints": "FrontendEndpoints",
}
AFD_SERVER_FIELDS = ("originGroupName", "provisioningState", "deploymentStatus")

_P = r"^/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)/providers/"
_TM = _P + r"microsoft\.network/trafficmanagerprofiles"
_FD = _P + r"microsoft\.network/frontdoors/(?P<name>[^/]+)"
_AFD = _P + r"microsoft\.cdn/profiles/(?P<profile>[^/]+)/origingroups/(?P<group>[^/]+)"
_APIM = _P + r"microsoft\.apimanagement/service/(?P<service>[^/]+)/backends"
PATTERNS: dict[str, re.Pattern[str]] = {
    name: re.compile(rx, re.IGNORECASE)
    for name, rx in {
        "tm_profiles": _TM + r"/?$",
        "tm_profile": _TM + r"/(?P<profile>[^/]+)/?$",
        "tm_endpoint": _TM + r"/(?P<profile>[^/]+)/(?P<etype>[^/]+)/(?P<name>[^/]+)/?$",
        "fd": _FD + r"/?$",
        "fd_part": _FD + r"/backendpools/(?P<pool>[^/]+)(?:/backends/(?P<address>[^/]+))?/?$",
        "fd_op": _P + r"microsoft\.network/frontdooroperationresults/(?P<op>[^/]+)/?$",
        "afd_group": _AFD + r"/?$",
        "afd_origins": _AFD + r"/origins/?$",
        "afd_origin": _AFD + r"/origins/(?P<origin>[^/]+)/?$",
        "afd_op": _P + r"microsoft\.cdn/operationresults/(?P<op>[^/]+)/?$",
        "apim_backends": _APIM + r"/?$",
        "apim_backend": _APIM + r"/(?P<backend>[^/]+)/?$",
    }.items()
}


class ArmError(Exception):
    """An ARM error response: HTTP status, ``error.code`` and ``error.message``."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def body(self) -> JSON:
        return {"error": {"code": self.code, "message": self.message}}


def bad_request(message: str, code: str = "BadRequest") -> ArmError:
    return ArmError(400, code, message)


# ---------------------------------------------------------------- resource ids


def tm_profile_id(sub: str, rg: str, profile: str) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/trafficManagerProfiles/{profile}"


def tm_endpoint_type(value: str) -> str:
    """Canonical endpoint type ('externalendpoints' -> 'ExternalEndpoints')."""
    for known in TM_ENDPOINT_TYPES:
        if known.lower() == value.lower():
            return known
    raise bad_request(f"The endpoint type '{value}' is not valid. Valid values are: {', '.join(TM_ENDPOINT_TYPES)}.")


def _camel(endpoint_type: str) -> str:
    return endpoint_type[0].lower() + endpoint_type[1:]


def tm_endpoint_id(sub: str, rg: str, profile: str, endpoint_type: str, name: str) -> str:
    return f"{tm_profile_id(sub, rg, profile)}/{_camel(tm_endpoint_type(endpoint_type))}/{name}"


def front_door_id(sub: str, rg: str, name: str) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/frontDoors/{name}"


def afd_profile_id(sub: str, rg: str, profile: str) -> str:
    return f"/subscriptions/{sub}/resourcegroups/{rg}/providers/Microsoft.Cdn/profiles/{profile}"


def afd_origin_group_id(sub: str, rg: str, profile: str, group: str) -> str:
    return f"{afd_profile_id(sub, rg, profile)}/origingroups/{group}"


def afd_origin_id(sub: str, rg: str, profile: str, group: str, origin: str) -> str:
    return f"{afd_origin_group_id(sub, rg, profile, group)}/origins/{origin}"


# ---------------------------------------------------------------- validation


def _int_in_range(value: Any, field: str, lo: int, hi: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise bad_request(
            f"Invalid value {value!r} for property '{field}' of {what}. The {field} must be an integer between {lo} and {hi}."
        )


def _enum(value: Any, field: str, allowed: Sequence[str], what: str) -> str:
    if isinstance(value, str):
        for a in allowed:
            if a.lower() == value.lower():
                return a
    quoted = " and ".join(f"'{a}'" for a in allowed)
    raise bad_request(f"Invalid value {value!r} for property '{field}' of {what}. Allowed values are {quoted}.")


def _require_object(body: Any, what: str) -> JSON:
    if not isinstance(body, dict):
        raise ArmError(400, "InvalidRequestContent", f"The request content for {what} was invalid and could not be deserialized.")
    props = body.get("properties", {})
    if not isinstance(props, dict):
        raise ArmError(400, "InvalidRequestContent", f"The 'properties' of {what} must be a JSON object.")
    return body


def validate_tm_endpoint(props: JSON, name: str) -> None:
    what = f"Traffic Manager endpoint '{name}'"
    if props.get("weight") is not None:
        _int_in_range(props["weight"], "weight", 1, 1000, what)
    if props.get("priority") is not None:
        _int_in_range(props["priority"], "priority", 1, 1000, what)
    if props.get("endpointStatus") is not None:
        props["endpointStatus"] = _enum(props["endpointStatus"], "endpointStatus", ENABLED_STATES, what)


def validate_tm_unique_priorities(endpoints: Iterable[JSON], profile: str, changed: str | None = None) -> None:
    """Priorities are unique within a profile (the spec says so in prose, not schema).

    ``changed`` names the endpoint being written, so the message blames it.
    """
    by_priority: dict[int, list[str]] = {}
    for ep in endpoints:
        prio = ep.get("properties", {}).get("priority")
        if prio is not None:
            by_priority.setdefault(prio, []).append(str(ep.get("name")))
    for prio, names in by_priority.items():
        if len(names) < 2:
            continue
        offender = changed if changed in names else names[-1]
        other = next(n for n in names if n != offender)
        raise bad_request(
            f"Endpoint '{offender}' has priority {prio}, which is already used by endpoint "
            f"'{other}' in Traffic Manager profile '{profile}'. "
            "No two endpoints in a profile can share the same priority value."
        )


def validate_front_door(body: JSON, name: str) -> None:
    props = body.get("properties") or {}
    if props.get("enabledState") is not None:
        props["enabledState"] = _enum(props["enabledState"], "enabledState", ENABLED_STATES, f"Front Door '{name}'")
    pools = props.get("backendPools") or []
    if not isinstance(pools, list):
        raise bad_request("Property 'backendPools' must be an array.")
    pool_names = set()
    for pool in pools:
        pool_name = str(pool.get("name"))
        pool_names.add(pool_name.lower())
        for backend in (pool.get("properties") or {}).get("backends") or []:
            _validate_fd_backend(backend, pool_name)
    for rule in props.get("routingRules") or []:
        route = (rule.get("properties") or {}).get("routeConfiguration") or {}
        ref = (route.get("backendPool") or {}).get("id")
        if ref and ref.rstrip("/").rsplit("/", 1)[-1].lower() not in pool_names:
            raise bad_request(
                f"Routing rule '{rule.get('name')}' references backend pool '{ref.rsplit('/', 1)[-1]}', "
                f"which does not exist in Front Door '{name}'."
            )


def _validate_fd_backend(backend: JSON, pool: str) -> None:
    what = f"backend '{backend.get('address')}' in backend pool '{pool}'"
    if not backend.get("address"):
        raise bad_request(f"A backend in backend pool '{pool}' has no 'address'.")
    _validate_front_door_routing(backend, what)


def _validate_front_door_routing(props: JSON, what: str) -> None:
    """What a classic backend and a Standard/Premium origin share: priority 1-5,
    weight 1-1000, ports, and enabledState (normalised in place)."""
    if props.get("priority") is not None:
        _int_in_range(props["priority"], "priority", 1, 5, what)
    if props.get("weight") is not None:
        _int_in_range(props["weight"], "weight", 1, 1000, what)
    for port in ("httpPort", "httpsPort"):
        if props.get(port) is not None:
            _int_in_range(props[port], port, 1, 65535, what)
    if props.get("enabledState") is not None:
        props["enabledState"] = _enum(props["enabledState"], "enabledState", ENABLED_STATES, what)


def validate_afd_origin(props: JSON, name: str, creating: bool) -> None:
    what = f"origin '{name}'"
    if creating and not props.get("hostName"):
        raise bad_request(f"Property 'hostName' of {what} is required.")
    _validate_front_door_routing(props, what)


# ---------------------------------------------------------------- JSON helpers


def deep_merge(base: JSON, changes: Mapping[str, Any]) -> JSON:
    """Return ``base`` with ``changes`` merged in (objects recursively, the rest replaced)."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _match_item(item: Any, old_items: list[Any]) -> Any:
    if not isinstance(item, dict):
        return None
    for key in ("name", "address", "id"):
        value = item.get(key)
        if value is None:
            continue
        for old in old_items:
            if isinstance(old, dict) and str(old.get(key, "")).lower() == str(value).lower():
                return old
        return None
    return None


def restore_server_fields(new: Any, old: Any, server_fields: frozenset[str] = FD_SERVER_FIELDS) -> Any:
    """``new`` (a client's PUT body) with the read-only fields of ``old`` put back.

    Keys keep ``old``'s order, so sending back exactly what was read stores
    exactly what was there. List items are matched by name, address or id.
    """
    if isinstance(new, dict) and isinstance(old, dict):
        merged: JSON = {}
        for key, old_value in old.items():
            if key in new:
                merged[key] = restore_server_fields(new[key], old_value, server_fields)
            elif key in server_fields:
                merged[key] = copy.deepcopy(old_value)
        for key, value in new.items():
            if key not in merged:
                merged[key] = copy.deepcopy(value)
        return merged
    if isinstance(new, list) and isinstance(old, list):
        return [restore_server_fields(item, _match_item(item, old), server_fields) for item in new]
    return copy.deepcopy(new)


# ---------------------------------------------------------------- long-running operations


@dataclass
class Operation:
    """An ARM async operation (``Azure-AsyncOperation`` status resource)."""

    id: str
    provider: str  # "Microsoft.Network" | "Microsoft.Cdn"
    subscription: str
    resource_group: str
    resource_key: str
    started_at: float
    started_wall: float
    polls: int = 0
    status: str = "InProgress"

    def body(self) -> JSON:
        out: JSON = {"status": self.status}
        if self.provider == "Microsoft.Cdn":
            out = {"name": self.id, "status": self.status, "startTime": _iso(self.started_wall)}
        return out

    def path(self) -> str:
        if self.provider == "Microsoft.Cdn":
            return (
                f"/subscriptions/{self.subscription}/resourcegroups/{self.resource_group}"
                f"/providers/Microsoft.Cdn/operationresults/{self.id}?api-version={CDN_API_VERSION}"
            )
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Network/frontdooroperationresults/{self.id}?api-version={FD_API_VERSION}"
        )


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1e6):06d}Z"


# ---------------------------------------------------------------- the state


class ArmState:
    """Every resource the fake ARM knows, behind one lock.

    ``lro_in_progress_polls``: how many status polls answer ``InProgress``
    before ``Succeeded``; ``lro_max_s``: an operation nobody polls finishes
    after this long anyway. ``busy_retry_after``: a Front Door classic PUT
    while the previous one runs gets 429 ``RetryableErrorDueToAnotherOperation``
    with this Retry-After (None: no conflict check).
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        lro_in_progress_polls: int = 1,
        lro_max_s: float = 5.0,
        busy_retry_after: int | None = 1,
    ) -> None:
        self._lock = threading.RLock()
        self._clock = clock
        self.lro_in_progress_polls = lro_in_progress_polls
        self.lro_max_s = lro_max_s
        self.busy_retry_after = busy_retry_after
        self._rgs: dict[tuple[str, str], tuple[str, str]] = {}
        self._docs: dict[str, JSON] = {}
        self._tm_health: dict[str, str] = {}
        self._etags: dict[str, str] = {}
        self._ops: dict[str, Operation] = {}
        self._latest_op: dict[str, str] = {}
        self.writes = 0  # successful writes, client and portal alike (a figure for reports)

    # -------------------------------------------------------- basics

    def add_resource_group(self, sub: str, rg: str) -> None:
        with self._lock:
            self._rgs.setdefault((sub.lower(), rg.lower()), (sub, rg))

    def _require_rg(self, sub: str, rg: str) -> None:
        if (sub.lower(), rg.lower()) not in self._rgs:
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found.")

    def _not_found(self, type_name: str, name: str, rg: str) -> ArmError:
        return ArmError(
            404,
            "ResourceNotFound",
            f"The Resource '{type_name}/{name}' under resource group '{rg}' was not found. {NOT_FOUND_HELP}",
        )

    def _touch(self, key: str) -> None:
        self._etags[key] = f'"{uuid.uuid4()}"'
        self.writes += 1

    def etag(self, resource_id: str) -> str | None:
        with self._lock:
            return self._etags.get(resource_id.lower())

    # -------------------------------------------------------- Traffic Manager

    def _tm_profile(self, sub: str, rg: str, profile: str) -> tuple[str, JSON]:
        self._require_rg(sub, rg)
        key = tm_profile_id(sub, rg, profile).lower()
        doc = self._docs.get(key)
        if doc is None:
            raise self._not_found("Microsoft.Network/trafficmanagerprofiles", profile, rg)
        return key, doc

    def _render_tm_endpoint(self, ep: JSON) -> JSON:
        out = copy.deepcopy(ep)
        props = out.setdefault("properties", {})
        if props.get("endpointStatus") == "Disabled":
            props["endpointMonitorStatus"] = "Disabled"
        else:
            props["endpointMonitorStatus"] = self._tm_health.get(str(ep["id"]).lower(), "Online")
        return out

    def _render_tm_profile(self, doc: JSON) -> JSON:
        out = copy.deepcopy(doc)
        props = out.setdefault("properties", {})
        endpoints = [self._render_tm_endpoint(ep) for ep in props.get("endpoints", [])]
        props["endpoints"] = endpoints
        monitor = props.setdefault("monitorConfig", {})
        monitor["profileMonitorStatus"] = _profile_monitor_status(props.get("profileStatus"), endpoints)
        return out

    def tm_list_profiles(self, sub: str, rg: str) -> list[JSON]:
        with self._lock:
            self._require_rg(sub, rg)
            prefix = tm_profile_id(sub, rg, "").lower()
            return [
                self._render_tm_profile(doc) for key, doc in self._docs.items() if key.startswith(prefix) and "/" not in key[len(prefix) :]
            ]

    def tm_get_profile(self, sub: str, rg: str, profile: str) -> JSON:
        with self._lock:
            return self._render_tm_profile(self._tm_profile(sub, rg, profile)[1])

    def _tm_find(self, doc: JSON, etype: str, name: str) -> int | None:
        wanted_type = f"microsoft.network/trafficmanagerprofiles/{etype.lower()}"
        for i, ep in enumerate(doc["properties"].get("endpoints", [])):
            if str(ep.get("name", "")).lower() == name.lower() and str(ep.get("type", "")).lower() == wanted_type:
                return i
        return None

    def _tm_endpoint_not_found(self, profile: str, etype: str, name: str) -> ArmError:
        return ArmError(404, "NotFound", f"The endpoint '{name}' of type '{etype}' was not found in Traffic Manager profile '{profile}'.")

    def tm_get_endpoint(self, sub: str, rg: str, profile: str, etype: str, name: str) -> JSON:
        with self._lock:
            etype = tm_endpoint_type(etype)
            _, doc = self._tm_profile(sub, rg, profile)
            i = self._tm_find(doc, _camel(etype), name)
            if i is None:
                raise self._tm_endpoint_not_found(doc["name"], etype, name)
            return self._render_tm_endpoint(doc["properties"]["endpoints"][i])

    def tm_put_endpoint(self, sub: str, rg: str, profile: str, etype: str, name: str, body: Any) -> tuple[int, JSON]:
        """Create or replace an endpoint: (200 or 201, endpoint)."""
        with self._lock:
            etype = tm_endpoint_type(etype)
            key, doc = self._tm_profile(sub, rg, profile)
            body = _require_object(body, f"endpoint '{name}'")
            i = self._tm_find(doc, _camel(etype), name)
            props = copy.deepcopy(body.get("properties") or {})
            props.pop("endpointMonitorStatus", None)
            if not props.get("target") and not props.get("targetResourceId"):
                raise bad_request(f"Endpoint '{name}' must have a 'target' or a 'targetResourceId'.")
            if i is None:
                ep = {
                    "id": f"{doc['id']}/{_camel(etype)}/{name}",
                    "name": name,
                    "type": f"Microsoft.Network/trafficManagerProfiles/{_camel(etype)}",
                    "properties": props,
                }
            else:
                ep = copy.deepcopy(doc["properties"]["endpoints"][i])
                ep["properties"] = props
            self._tm_commit(key, doc, ep, i)
            return (201 if i is None else 200), self._render_tm_endpoint(ep)

    def tm_patch_endpoint(self, sub: str, rg: str, profile: str, etype: str, name: str, body: Any) -> JSON:
        """Partial update: the given properties are merged into the endpoint."""
        with self._lock:
            etype = tm_endpoint_type(etype)
            key, doc = self._tm_profile(sub, rg, profile)
            body = _require_object(body, f"endpoint '{name}'")
            i = self._tm_find(doc, _camel(etype), name)
            if i is None:
                raise self._tm_endpoint_not_found(doc["name"], etype, name)
            ep = copy.deepcopy(doc["properties"]["endpoints"][i])
            changes = {k: v for k, v in (body.get("properties") or {}).items() if k != "endpointMonitorStatus"}
            ep["properties"] = {**ep.get("properties", {}), **copy.deepcopy(changes)}
            self._tm_commit(key, doc, ep, i)
            return self._render_tm_endpoint(ep)

    def _tm_commit(self, key: str, doc: JSON, ep: JSON, index: int | None) -> None:
        validate_tm_endpoint(ep["properties"], ep["name"])
        endpoints = list(doc["properties"].get("endpoints", []))
        if index is None:
            endpoints.append(ep)
        else:
            endpoints[index] = ep
        validate_tm_unique_priorities(endpoints, doc["name"], changed=ep["name"])
        doc["properties"]["endpoints"] = endpoints
        self._touch(key)

    # -------------------------------------------------------- Front Door classic

    def _settle(self, resource_key: str) -> None:
        """Finish the resource's running operation if it has run out of time."""
        op_id = self._latest_op.get(resource_key)
        op = self._ops.get(op_id) if op_id else None
        if op is not None and op.status == "InProgress" and self._clock() - op.started_at >= self.lro_max_s:
            self._finish(op)

    def _finish(self, op: Operation) -> None:
        op.status = "Succeeded"
        if self._latest_op.get(op.resource_key) == op.id:
            doc = self._docs.get(op.resource_key)
            if doc is not None:
                doc.setdefault("properties", {})["provisioningState"] = "Succeeded"

    def _start_op(self, provider: str, sub: str, rg: str, key: str) -> Operation:
        op = Operation(
            id=str(uuid.uuid4()),
            provider=provider,
            subscription=sub,
            resource_group=rg,
            resource_key=key,
            started_at=self._clock(),
            started_wall=time.time(),
        )
        self._ops[op.id] = op
        self._latest_op[key] = op.id
        if len(self._ops) > 10_000:  # bounded: forget the oldest finished ones
            for old_id in [i for i, o in self._ops.items() if o.status != "InProgress"][:5_000]:
                del self._ops[old_id]
        return op

    def poll_operation(self, provider: str, op_id: str) -> JSON:
        """One status poll: ``InProgress`` for the first polls, then ``Succeeded``."""
        with self._lock:
            op = self._ops.get(op_id)
            if op is None or op.provider.lower() != provider.lower():
                raise ArmError(404, "NotFound", f"The operation '{op_id}' was not found.")
            if op.status == "InProgress":
                op.polls += 1
                if op.polls > self.lro_in_progress_polls or self._clock() - op.started_at >= self.lro_max_s:
                    self._finish(op)
            return op.body()

    def fd_get(self, sub: str, rg: str, name: str) -> JSON:
        with self._lock:
            self._require_rg(sub, rg)
            key = front_door_id(sub, rg, name).lower()
            self._settle(key)
            doc = self._docs.get(key)
            if doc is None:
                raise self._not_found("Microsoft.Network/frontDoors", name, rg)
            return copy.deepcopy(doc)

    def fd_put(self, sub: str, rg: str, name: str, body: Any) -> tuple[int, JSON, Operation]:
        """Create or replace a Front Door: (201 or 200, resource now 'Updating', operation)."""
        with self._lock:
            self._require_rg(sub, rg)
            fid = front_door_id(sub, rg, name)
            key = fid.lower()
            self._settle(key)
            old = self._docs.get(key)
            self._check_not_busy(key, name)
            body = copy.deepcopy(_require_object(body, f"Front Door '{name}'"))
            validate_front_door(body, name)
            doc = self._fd_doc_from_body(fid, name, body, old)
            doc.setdefault("properties", {})["provisioningState"] = "Updating"
            self._docs[key] = doc
            self._touch(key)
            op = self._start_op("Microsoft.Network", sub, rg, key)
            logger.debug("Front Door %s: PUT accepted, operation %s", name, op.id)
            return (200 if old is not None else 201), copy.deepcopy(doc), op

    def _check_not_busy(self, key: str, name: str) -> None:
        op_id = self._latest_op.get(key)
        op = self._ops.get(op_id) if op_id else None
        if self.busy_retry_after is None or op is None or op.status != "InProgress":
            return
        raise ArmError(
            429,
            "RetryableErrorDueToAnotherOperation",
            f"Operation on Front Door '{name}' is not allowed because another operation is in progress. "
            f"To retrieve status of the operation use uri: {op.path()}. Retry the operation later.",
            headers={"Retry-After": str(self.busy_retry_after)},
        )

    @staticmethod
    def _fd_doc_from_body(fid: str, name: str, body: JSON, old: JSON | None) -> JSON:
        if old is not None:
            doc = restore_server_fields(body, old)
            for k in ("id", "name", "type"):
                if k in old:
                    doc[k] = old[k]
        else:
            doc = {"id": fid, "name": name, "type": "Microsoft.Network/frontDoors"}
            doc.update({k: v for k, v in body.items() if k not in ("id", "name", "type")})
            props = doc.setdefault("properties", {})
            props["resourceState"] = "Enabled"  # computed by the service, whatever the body says
            props["cname"] = f"{name}.azurefd.net"
            props["frontdoorId"] = str(uuid.uuid4())
        _fill_fd_child_ids(doc, fid)
        return doc

    # -------------------------------------------------------- Front Door Standard/Premium

    def _afd_group(self, sub: str, rg: str, profile: str, group: str) -> tuple[str, JSON]:
        self._require_rg(sub, rg)
        if afd_profile_id(sub, rg, profile).lower() not in self._docs:
            raise self._not_found("Microsoft.Cdn/profiles", profile, rg)
        key = afd_origin_group_id(sub, rg, profile, group).lower()
        doc = self._docs.get(key)
        if doc is None:
            raise ArmError(404, "NotFound", f"The origin group '{group}' was not found in profile '{profile}'.")
        return key, doc

    def afd_get_group(self, sub: str, rg: str, profile: str, group: str) -> JSON:
        with self._lock:
            return copy.deepcopy(self._afd_group(sub, rg, profile, group)[1])

    def afd_list_origins(self, sub: str, rg: str, profile: str, group: str) -> list[JSON]:
        with self._lock:
            gkey, _ = self._afd_group(sub, rg, profile, group)
            prefix = gkey + "/origins/"
            out = []
            for key, doc in self._docs.items():
                if key.startswith(prefix) and "/" not in key[len(prefix) :]:
                    self._settle(key)
                    out.append(copy.deepcopy(doc))
            return out

    def afd_get_origin(self, sub: str, rg: str, profile: str, group: str, origin: str) -> JSON:
        with self._lock:
            key = self._afd_origin_key(sub, rg, profile, group, origin, must_exist=True)
            self._settle(key)
            return copy.deepcopy(self._docs[key])

    def _afd_origin_key(self, sub: str, rg: str, profile: str, group: str, origin: str, must_exist: bool) -> str:
        self._afd_group(sub, rg, profile, group)
        key = afd_origin_id(sub, rg, profile, group, origin).lower()
        if must_exist and key not in self._docs:
            raise ArmError(404, "NotFound", f"The origin '{origin}' was not found in origin group '{group}'.")
        return key

    def afd_put_origin(self, sub: str, rg: str, profile: str, group: str, origin: str, body: Any) -> tuple[int, JSON, Operation]:
        """Create or replace an origin: (200 or 201, origin now 'Updating'/'Creating', operation)."""
        with self._lock:
            key = self._afd_origin_key(sub, rg, profile, group, origin, must_exist=False)
            old = self._docs.get(key)
            body = _require_object(body, f"origin '{origin}'")
            props = copy.deepcopy(body.get("properties") or {})
            for f in AFD_SERVER_FIELDS:
                props.pop(f, None)
            validate_afd_origin(props, origin, creating=True)
            group_doc = self._docs[afd_origin_group_id(sub, rg, profile, group).lower()]
            doc = _old_or_new_origin(old, afd_origin_id(sub, rg, profile, group, origin), origin)
            server = {f: (old or {}).get("properties", {}).get(f) for f in AFD_SERVER_FIELDS}
            server["originGroupName"] = group_doc["name"]
            server["deploymentStatus"] = server["deploymentStatus"] or "NotStarted"
            server["provisioningState"] = "Updating" if old is not None else "Creating"
            doc["properties"] = {**props, **server}
            return self._afd_commit(key, doc, 200 if old is not None else 201, sub, rg)

    def afd_patch_origin(self, sub: str, rg: str, profile: str, group: str, origin: str, body: Any) -> tuple[int, JSON, Operation]:
        """Partial update of an origin: (202, origin now 'Updating', operation)."""
        with self._lock:
            key = self._afd_origin_key(sub, rg, profile, group, origin, must_exist=True)
            self._settle(key)
            body = _require_object(body, f"origin '{origin}'")
            changes = {k: v for k, v in (body.get("properties") or {}).items() if k not in AFD_SERVER_FIELDS}
            doc = copy.deepcopy(self._docs[key])
            doc["properties"] = {**doc.get("properties", {}), **copy.deepcopy(changes)}
            validate_afd_origin(doc["properties"], origin, creating=False)
            doc["properties"]["provisioningState"] = "Updating"
            return self._afd_commit(key, doc, 202, sub, rg)

    def _afd_commit(self, key: str, doc: JSON, status: int, sub: str, rg: str) -> tuple[int, JSON, Operation]:
        self._docs[key] = doc
        self._touch(key)
        op = self._start_op("Microsoft.Cdn", sub, rg, key)
        return status, copy.deepcopy(doc), op

    # -------------------------------------------------------- API Management backends

    def _apim_service(self, sub: str, rg: str, service: str) -> str:
        self._require_rg(sub, rg)
        key = arm_apim.service_id(sub, rg, service).lower()
        if key not in self._docs:
            raise self._not_found("Microsoft.ApiManagement/service", service, rg)
        return key

    def _apim_key(self, sub: str, rg: str, service: str, backend: str, must_exist: bool = True) -> str:
        self._apim_service(sub, rg, service)
        key = arm_apim.backend_id(sub, rg, service, backend).lower()
        if must_exist and key not in self._docs:
            raise ArmError(404, "ResourceNotFound", "Backend not found.")
        return key

    def _apim_exists(self, sub: str, rg: str, service: str, backend: str) -> bool:
        return arm_apim.backend_id(sub, rg, service, backend).lower() in self._docs

    def apim_list_backends(self, sub: str, rg: str, service: str) -> list[JSON]:
        with self._lock:
            prefix = self._apim_service(sub, rg, service) + "/backends/"
            return [copy.deepcopy(d) for k, d in self._docs.items() if k.startswith(prefix) and "/" not in k[len(prefix) :]]

    def apim_get_backend(self, sub: str, rg: str, service: str, backend: str) -> tuple[JSON, str]:
        """(the backend, its ETag)."""
        with self._lock:
            key = self._apim_key(sub, rg, service, backend)
            return copy.deepcopy(self._docs[key]), self._etags[key]

    def _apim_check_etag(self, key: str, if_match: str | None, required: bool) -> None:
        if if_match is None or not if_match.strip():
            if required:
                raise ArmError(
                    400,
                    "ValidationError",
                    "The 'If-Match' header is required: send the ETag of the backend from the header of a GET (or '*').",
                )
            return
        if if_match.strip() != "*" and key in self._etags and if_match.strip() != self._etags[key]:
            raise ArmError(412, "PreconditionFailed", "Resource was modified since last retrieval. Refresh entity and try again.")

    def apim_put_backend(self, sub: str, rg: str, service: str, backend: str, body: Any, if_match: str | None) -> tuple[int, JSON, str]:
        """Create or replace a backend (``Backend_CreateOrUpdate``): (201 or 200, backend, ETag)."""
        with self._lock:
            key = self._apim_key(sub, rg, service, backend, must_exist=False)
            old = self._docs.get(key)
            self._apim_check_etag(key, if_match, required=False)
            try:
                arm_apim.check_path_names(service, backend)
                props = arm_apim.validate_body(body, patch=False)
                arm_apim.check_semantics(props, backend, self._apim_exists)
            except ApimValidationError as err:
                raise ArmError(400, "ValidationError", str(err)) from None
            name = old["name"] if old is not None else backend
            self._docs[key] = arm_apim.backend_doc(sub, rg, service, name, props)
            self._touch(key)
            return (200 if old is not None else 201), copy.deepcopy(self._docs[key]), self._etags[key]

    def apim_patch_backend(self, sub: str, rg: str, service: str, backend: str, body: Any, if_match: str | None) -> tuple[JSON, str]:
        """``Backend_Update``: each property named replaces the stored one; If-Match required."""
        with self._lock:
            key = self._apim_key(sub, rg, service, backend)
            self._apim_check_etag(key, if_match, required=True)
            doc = copy.deepcopy(self._docs[key])
            try:
                changes = arm_apim.validate_body(body, patch=True)
                doc["properties"] = {**(doc.get("properties") or {}), **changes}
                arm_apim.check_semantics(doc["properties"], doc["name"], self._apim_exists)
            except ApimValidationError as err:
                raise ArmError(400, "ValidationError", str(err)) from None
            self._docs[key] = doc
            self._touch(key)
            return copy.deepcopy(doc), self._etags[key]

    def seed_apim_backends(self, sub: str, rg: str, service: str, backends: Sequence[Mapping[str, Any]]) -> list[JSON]:
        """Create (or extend) an APIM service and put backends in it, in order.

        Each spec: ``{name, url}`` for a single backend (optional ``title``,
        ``circuit_breaker`` rules) or ``{name, members: [{backend, weight, priority}]}``
        for a load-balanced pool of backends of the same service.
        """
        with self._lock:
            self.add_resource_group(sub, rg)
            arm_apim.check_path_names(service)
            skey = arm_apim.service_id(sub, rg, service).lower()
            if skey not in self._docs:
                self._docs[skey] = _new_apim_service(arm_apim.service_id(sub, rg, service), service)
                self._touch(skey)
            out = []
            for spec in backends:
                name = str(spec["name"])
                if "members" in spec:
                    services = []
                    for m in spec["members"]:
                        item: JSON = {"id": arm_apim.backend_id(sub, rg, service, str(m["backend"]))}
                        for f in ("weight", "priority"):
                            if m.get(f) is not None:
                                item[f] = m[f]
                        services.append(item)
                    props: JSON = {"title": spec.get("title"), "description": spec.get("description"), "type": "Pool"}
                    props["pool"] = {"services": services}
                else:
                    props = arm_apim.single_backend_props(
                        str(spec.get("url") or f"https://{name}.example.net/openai"),
                        title=spec.get("title"),
                        circuit_breaker=spec.get("circuit_breaker", arm_apim.DEFAULT_CIRCUIT_BREAKER),
                    )
                props = arm_apim.validate_properties(props)
                arm_apim.check_semantics(props, name, self._apim_exists)
                key = arm_apim.backend_id(sub, rg, service, name).lower()
                self._docs[key] = arm_apim.backend_doc(sub, rg, service, name, props)
                self._touch(key)
                out.append(copy.deepcopy(self._docs[key]))
            return out

    def _mutate_apim_backend(self, p: Mapping[str, str], changes: JSON, validate: bool) -> JSON:
        key = self._apim_key(p["sub"], p["rg"], p["service"], p["backend"])
        doc = copy.deepcopy(self._docs[key])
        doc["properties"] = deep_merge(doc.get("properties") or {}, changes)
        if validate:
            try:
                doc["properties"] = arm_apim.validate_properties(doc["properties"])
                arm_apim.check_semantics(doc["properties"], doc["name"], self._apim_exists)
            except ApimValidationError as err:
                raise ArmError(400, "ValidationError", str(err)) from None
        self._docs[key] = doc
        self._touch(key)
        return copy.deepcopy(doc)

    # -------------------------------------------------------- seeding

    def seed_tm_profile(
        self,
        sub: str,
        rg: str,
        profile: str,
        routing_method: str,
        endpoints: Sequence[Mapping[str, Any]],
        *,
        profile_status: str = "Enabled",
        ttl: int = 30,
        replace: bool = False,
    ) -> JSON:
        """Create (or extend) a Traffic Manager profile; endpoints keep the given order."""
        with self._lock:
            self.add_resource_group(sub, rg)
            pid = tm_profile_id(sub, rg, profile)
            key = pid.lower()
            doc = None if replace else copy.deepcopy(self._docs.get(key))
            if doc is None:
                doc = _new_tm_profile(pid, profile, routing_method, profile_status, ttl)
            existing = doc["properties"]["endpoints"]
            health: dict[str, str] = {}
            for spec in endpoints:
                ep, monitor = _tm_endpoint_from_spec(pid, spec)
                validate_tm_endpoint(ep["properties"], ep["name"])
                existing[:] = [e for e in existing if str(e["id"]).lower() != ep["id"].lower()] + [ep]
                if monitor:
                    health[ep["id"].lower()] = monitor
            _auto_priorities(existing)
            validate_tm_unique_priorities(existing, profile)
            self._docs[key] = doc
            self._tm_health.update(health)
            self._touch(key)
            return self._render_tm_profile(doc)

    def seed_front_door(self, sub: str, rg: str, name: str, body: Mapping[str, Any]) -> JSON:
        """Store a Front Door classic resource as given (ids filled in if missing)."""
        with self._lock:
            self.add_resource_group(sub, rg)
            fid = front_door_id(sub, rg, name)
            doc = copy.deepcopy(dict(body))
            validate_front_door(doc, name)
            doc.setdefault("id", fid)
            doc.setdefault("name", name)
            doc.setdefault("type", "Microsoft.Network/frontDoors")
            doc.setdefault("properties", {}).setdefault("provisioningState", "Succeeded")
            self._docs[fid.lower()] = doc
            self._latest_op.pop(fid.lower(), None)
            self._touch(fid.lower())
            return copy.deepcopy(doc)

    def seed_afd_origin_group(
        self,
        sub: str,
        rg: str,
        profile: str,
        group: str,
        origins: Sequence[Mapping[str, Any]],
        group_properties: Mapping[str, Any] | None = None,
    ) -> JSON:
        """Create (or extend) an AFD profile, origin group and its origins."""
        with self._lock:
            self.add_resource_group(sub, rg)
            pkey = afd_profile_id(sub, rg, profile).lower()
            if pkey not in self._docs:
                self._docs[pkey] = _new_afd_profile(afd_profile_id(sub, rg, profile), profile)
            gid = afd_origin_group_id(sub, rg, profile, group)
            if gid.lower() not in self._docs or group_properties:
                self._docs[gid.lower()] = _new_afd_group(gid, group, profile, group_properties)
                self._touch(gid.lower())
            for spec in origins:
                doc = _afd_origin_from_spec(gid, group, spec)
                validate_afd_origin(doc["properties"], doc["name"], creating=True)
                self._docs[doc["id"].lower()] = doc
                self._latest_op.pop(doc["id"].lower(), None)
                self._touch(doc["id"].lower())
            return copy.deepcopy(self._docs[gid.lower()])

    # -------------------------------------------------------- portal edits and reads

    def get_resource(self, resource_id: str) -> JSON | None:
        """The resource as a GET would return it (None when unknown). No checks, no log."""
        with self._lock:
            for name, rx in PATTERNS.items():
                m = rx.match(resource_id)
                if m is None:
                    continue
                try:
                    return self._get_by_pattern(name, m.groupdict())
                except ArmError:
                    return None
            return None

    def _get_by_pattern(self, name: str, p: Mapping[str, str]) -> JSON | None:
        sub, rg = p["sub"], p["rg"]
        if name == "tm_profile":
            return self.tm_get_profile(sub, rg, p["profile"])
        if name == "tm_endpoint":
            return self.tm_get_endpoint(sub, rg, p["profile"], p["etype"], p["name"])
        if name == "fd":
            return self.fd_get(sub, rg, p["name"])
        if name == "afd_group":
            return self.afd_get_group(sub, rg, p["profile"], p["group"])
        if name == "afd_origin":
            return self.afd_get_origin(sub, rg, p["profile"], p["group"], p["origin"])
        if name == "apim_backend":
            return self.apim_get_backend(sub, rg, p["service"], p["backend"])[0]
        return None

    def mutate(self, resource_id: str, changes: Mapping[str, Any], *, validate: bool = True) -> JSON:
        """A portal edit: deep-merge ``changes`` into the resource's ``properties``.

        ``resource_id`` is a Traffic Manager profile or endpoint, a Front Door
        (or ``.../backendPools/{pool}`` or ``.../backendPools/{pool}/backends/{address}``
        inside one), an AFD origin group or origin, an APIM backend (a ``pool.services``
        given replaces the whole list, as a portal save does). A Traffic Manager
        ``endpointMonitorStatus`` sets the endpoint's health as Traffic Manager sees it.
        Returns the resource as a GET would.
        """
        with self._lock:
            for name in ("tm_endpoint", "tm_profile", "fd", "fd_part", "afd_group", "afd_origin", "apim_backend"):
                m = PATTERNS[name].match(resource_id)
                if m is not None:
                    return self._mutate(name, m.groupdict(), dict(changes), validate)
            raise KeyError(f"not a resource the fake ARM can edit: {resource_id}")

    def _mutate(self, kind: str, p: Mapping[str, str], changes: JSON, validate: bool) -> JSON:
        sub, rg = p["sub"], p["rg"]
        if kind == "tm_endpoint":
            return self._mutate_tm_endpoint(p, changes, validate)
        if kind == "apim_backend":
            return self._mutate_apim_backend(p, changes, validate)
        if kind == "tm_profile":
            key, doc = self._tm_profile(sub, rg, p["profile"])
            changes.pop("endpoints", None)
            doc["properties"] = deep_merge(doc["properties"], changes)
            self._touch(key)
            return self._render_tm_profile(doc)
        if kind in ("fd", "fd_part"):
            return self._mutate_front_door(p, changes, validate)
        if kind == "afd_group":
            key, doc = self._afd_group(sub, rg, p["profile"], p["group"])
        else:
            key = self._afd_origin_key(sub, rg, p["profile"], p["group"], p["origin"], must_exist=True)
            doc = self._docs[key]
        new = deep_merge(doc, {"properties": changes})
        if validate and kind == "afd_origin":
            validate_afd_origin(new["properties"], new["name"], creating=False)
        self._docs[key] = new
        self._touch(key)
        return copy.deepcopy(new)

    def _mutate_tm_endpoint(self, p: Mapping[str, str], changes: JSON, validate: bool) -> JSON:
        etype = tm_endpoint_type(p["etype"])
        key, doc = self._tm_profile(p["sub"], p["rg"], p["profile"])
        i = self._tm_find(doc, _camel(etype), p["name"])
        if i is None:
            raise self._tm_endpoint_not_found(doc["name"], etype, p["name"])
        ep = doc["properties"]["endpoints"][i]
        monitor = changes.pop("endpointMonitorStatus", None)
        new = deep_merge(ep, {"properties": changes})
        if validate:
            validate_tm_endpoint(new["properties"], new["name"])
            others = [e for j, e in enumerate(doc["properties"]["endpoints"]) if j != i]
            validate_tm_unique_priorities([*others, new], doc["name"], changed=new["name"])
        doc["properties"]["endpoints"][i] = new
        if monitor is not None:
            self._tm_health[str(ep["id"]).lower()] = str(monitor)
        self._touch(key)
        return self._render_tm_endpoint(new)

    def _mutate_front_door(self, p: Mapping[str, str], changes: JSON, validate: bool) -> JSON:
        key = front_door_id(p["sub"], p["rg"], p["name"]).lower()
        doc = self.fd_get(p["sub"], p["rg"], p["name"])  # 404s like a GET
        props = doc.setdefault("properties", {})
        pool_name, address = p.get("pool"), p.get("address")
        if pool_name is None:
            doc["properties"] = deep_merge(props, changes)
        else:
            pool = _find_named(props.get("backendPools") or [], "name", pool_name)
            if pool is None:
                raise KeyError(f"no backend pool {pool_name!r} in Front Door {p['name']!r}")
            if address is None:
                pool["properties"] = deep_merge(pool.get("properties") or {}, changes)
            else:
                backends = (pool.get("properties") or {}).get("backends") or []
                backend = _find_named(backends, "address", address)
                if backend is None:
                    raise KeyError(f"no backend {address!r} in backend pool {pool_name!r}")
                backend.update(deep_merge(backend, changes))
        if validate:
            validate_front_door(doc, p["name"])
        self._docs[key] = doc
        self._touch(key)
        return copy.deepcopy(doc)

    # -------------------------------------------------------- persistence

    def dump(self) -> JSON:
        with self._lock:
            return {
                "format": 1,
                "resource_groups": [list(v) for v in self._rgs.values()],
                "resources": copy.deepcopy(self._docs),
                "tm_health": dict(self._tm_health),
            }

    def load(self, data: Mapping[str, Any]) -> None:
        if data.get("format") != 1:
            raise ValueError("not a fake ARM state file (format 1)")
        with self._lock:
            self._rgs = {(s.lower(), r.lower()): (s, r) for s, r in data.get("resource_groups", [])}
            self._docs = copy.deepcopy(dict(data.get("resources", {})))
            self._tm_health = dict(data.get("tm_health", {}))
            self._ops.clear()
            self._latest_op.clear()
            for key, doc in self._docs.items():
                props = doc.get("properties") or {}
                if props.get("provisioningState") in ("Updating", "Creating"):
                    props["provisioningState"] = "Succeeded"
                self._touch(key)


# ---------------------------------------------------------------- document builders


def _profile_monitor_status(profile_status: Any, endpoints: list[JSON]) -> str:
    if profile_status == "Disabled":
        return "Disabled"
    statuses = [e["properties"]["endpointMonitorStatus"] for e in endpoints if e["properties"].get("endpointStatus") != "Disabled"]
    if not statuses:
        return "Inactive"
    if "Degraded" in statuses:
        return "Degraded"
    if "Online" in statuses:
        return "Online"
    if all(s == "CheckingEndpoint" for s in statuses):
        return "CheckingEndpoints"
    return "Degraded"


def _new_tm_profile(pid: str, profile: str, routing_method: str, profile_status: str, ttl: int) -> JSON:
    return {
        "id": pid,
        "name": profile,
        "type": "Microsoft.Network/trafficManagerProfiles",
        "location": "global",
        "tags": {},
        "properties": {
            "profileStatus": profile_status,
            "trafficRoutingMethod": routing_method,
            "dnsConfig": {"relativeName": profile.lower(), "fqdn": f"{profile.lower()}.trafficmanager.net", "ttl": ttl},
            "monitorConfig": {
                "profileMonitorStatus": "Online",
                "protocol": "HTTPS",
                "port": 443,
                "path": "/health",
                "intervalInSeconds": 30,
                "timeoutInSeconds": 10,
                "toleratedNumberOfFailures": 3,
            },
            "endpoints": [],
            "trafficViewEnrollmentStatus": "Disabled",
            "maxReturn": None,
        },
    }


def _pick(spec: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    for n in names:
        if n in spec and spec[n] is not None:
            return spec[n]
    return default


def _tm_endpoint_from_spec(pid: str, spec: Mapping[str, Any]) -> tuple[JSON, str | None]:
    name = str(spec["name"])
    etype = tm_endpoint_type(str(_pick(spec, "type", "endpoint_type", default="ExternalEndpoints")))
    props: JSON = {}
    location = _pick(spec, "location", "endpoint_location", "endpointLocation")
    if location:
        props["endpointLocation"] = location
    props["endpointMonitorStatus"] = "Online"
    props["endpointStatus"] = _pick(spec, "status", "endpoint_status", "endpointStatus", default="Enabled")
    props["priority"] = _pick(spec, "priority")
    resource_id = _pick(spec, "target_resource_id", "targetResourceId")
    if resource_id:
        props["targetResourceId"] = resource_id
    props["target"] = _pick(spec, "target", default=f"{name}.example.net")
    props["weight"] = _pick(spec, "weight", default=1)
    ep = {
        "id": f"{pid}/{_camel(etype)}/{name}",
        "name": name,
        "type": f"Microsoft.Network/trafficManagerProfiles/{_camel(etype)}",
        "properties": props,
    }
    return ep, _pick(spec, "monitor_status", "endpointMonitorStatus")


def _auto_priorities(endpoints: list[JSON]) -> None:
    """Like Traffic Manager: an endpoint seeded without a priority gets the next free one."""
    used = {e["properties"]["priority"] for e in endpoints if e["properties"].get("priority") is not None}
    nxt = 1
    for ep in endpoints:
        if ep["properties"].get("priority") is None:
            while nxt in used:
                nxt += 1
            ep["properties"]["priority"] = nxt
            used.add(nxt)


def _fill_fd_child_ids(doc: JSON, fid: str) -> None:
    props = doc.get("properties") or {}
    for list_key in FD_CHILD_LISTS:
        for item in props.get(list_key) or []:
            if isinstance(item, dict) and item.get("name") and "id" not in item:
                item["id"] = f"{fid}/{list_key}/{item['name']}"


def _find_named(items: list[Any], key: str, value: str) -> JSON | None:
    for item in items:
        if isinstance(item, dict) and str(item.get(key, "")).lower() == value.lower():
            return item
    return None


def _new_apim_service(sid: str, service: str) -> JSON:
    return {
        "id": sid,
        "name": service,
        "type": "Microsoft.ApiManagement/service",
        "location": "East US",
        "sku": {"name": "Standard", "capacity": 1},
        "properties": {"provisioningState": "Succeeded", "gatewayUrl": f"https://{service.lower()}.azure-api.net"},
    }


def _new_afd_profile(pid: str, profile: str) -> JSON:
    return {
        "id": pid,
        "name": profile,
        "type": "Microsoft.Cdn/profiles",
        "location": "Global",
        "sku": {"name": "Standard_AzureFrontDoor"},
        "kind": "frontdoor",
        "properties": {"provisioningState": "Succeeded", "resourceState": "Active"},
    }


def _new_afd_group(gid: str, group: str, profile: str, extra: Mapping[str, Any] | None) -> JSON:
    props: JSON = {
        "deploymentStatus": "NotStarted",
        "healthProbeSettings": {
            "probeIntervalInSeconds": 10,
            "probePath": "/health",
            "probeProtocol": "Https",
            "probeRequestType": "HEAD",
        },
        "loadBalancingSettings": {
            "additionalLatencyInMilliseconds": 50,
            "sampleSize": 4,
            "successfulSamplesRequired": 3,
        },
        "profileName": profile,
        "provisioningState": "Succeeded",
        "sessionAffinityState": "Disabled",
        "trafficRestorationTimeToHealedOrNewEndpointsInMinutes": 10,
    }
    props.update(copy.deepcopy(dict(extra or {})))
    return {"name": group, "type": "Microsoft.Cdn/profiles/origingroups", "id": gid, "properties": props}


def _old_or_new_origin(old: JSON | None, oid: str, origin: str) -> JSON:
    if old is not None:
        return copy.deepcopy(old)
    return {"name": origin, "type": "Microsoft.Cdn/profiles/origingroups/origins", "id": oid, "properties": {}}


def _afd_origin_from_spec(gid: str, group: str, spec: Mapping[str, Any]) -> JSON:
    name = str(_pick(spec, "name", "origin"))
    host = str(_pick(spec, "host_name", "hostName", "address", default=f"{name}.example.net"))
    props: JSON = {
        "deploymentStatus": "NotStarted",
        "enabledState": _pick(spec, "enabled_state", "enabledState", "status", default="Enabled"),
        "enforceCertificateNameCheck": True,
        "hostName": host,
        "httpPort": _pick(spec, "http_port", "httpPort", default=80),
        "httpsPort": _pick(spec, "https_port", "httpsPort", default=443),
        "originGroupName": group,
        "originHostHeader": _pick(spec, "origin_host_header", "originHostHeader", default=host),
        "priority": _pick(spec, "priority", default=1),
        "provisioningState": "Succeeded",
        "sharedPrivateLinkResource": None,
        "weight": _pick(spec, "weight", default=1000),
    }
    return {
        "name": name,
        "type": "Microsoft.Cdn/profiles/origingroups/origins",
        "id": f"{gid}/origins/{name}",
        "properties": props,
    }
