"""APIM against Microsoft's own REST spec (``Microsoft.ApiManagement`` 2024-05-01).

The spec files are read from ``shared/azure-rest-api-specs`` (see its
PROVENANCE.md), beside the repository. Three things are checked:

1. every request the fake ARM received for APIM while the actuator drained,
   restored, re-weighted and re-prioritised a pool (412 race included)
   conforms to the spec: a path and method the spec defines, its api-version,
   ``If-Match`` always sent and never ``*``, and a body in which every field
   is one the schema defines, writable, of its type and in its range;
2. the fake ARM's hand-written rules (simulator/arm_apim.py) are the spec's:
   the same property names, the same ranges and limits;
3. the fake ARM answers the spec's own examples as they say.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlplane.actuators.credentials import StaticTokenCredential
from controlplane.actuators.factory import build_actuators
from controlplane.domain import Change, Field, Plan
from simulator import arm_apim
from simulator.arm import FakeArm
from tests.integration.test_actuator_contract import FAST_RETRY, _names, apim_portal_edit, pool_id, seed_arm, settings_for

API_VERSION = "2024-05-01"
SPEC_REL = "specification/apimanagement/resource-manager/Microsoft.ApiManagement/ApiManagement/stable/2024-05-01"


def _find_specs() -> Path | None:
    env = os.environ.get("REGIONGUARD_SPECS_DIR")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve()
    candidates += [parent / "shared" / "azure-rest-api-specs" for parent in here.parents[:6]]
    return next((c for c in candidates if (c / SPEC_REL / "apimbackends.json").is_file()), None)


@pytest.fixture(scope="module")
def specs() -> Path:
    found = _find_specs()
    if found is None:
        message = "shared/azure-rest-api-specs not found beside the repository (or REGIONGUARD_SPECS_DIR)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found / SPEC_REL


class Spec:
    """Just enough of a Swagger 2.0 reader: $ref across files, allOf, and the checks the schema states."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._files: dict[Path, Any] = {}

    def load(self, path: Path) -> Any:
        path = path.resolve()
        if path not in self._files:
            self._files[path] = json.loads(path.read_text(encoding="utf-8"))
        return self._files[path]

    def resolve(self, ref: str, base: Path) -> tuple[Any, Path]:
        file_part, _, pointer = ref.partition("#")
        path = (base.parent / file_part).resolve() if file_part else base
        node = self.load(path)
        for part in [p for p in pointer.split("/") if p]:
            node = node[part]
        return node, path

    def flatten(self, schema: Any, base: Path) -> tuple[dict[str, Any], Path]:
        """One schema with its $ref and allOf folded in: properties (with their base file), required, the rest."""
        while "$ref" in schema:
            schema, base = self.resolve(schema["$ref"], base)
        out: dict[str, Any] = {k: v for k, v in schema.items() if k not in ("allOf", "properties", "required")}
        props: dict[str, tuple[Any, Path]] = {}
        required = list(schema.get("required", []))
        for part in schema.get("allOf", []):
            sub, _ = self.flatten(part, base)
            props.update(sub.get("_props", {}))
            required += sub.get("required", [])
            for k, v in sub.items():
                if k not in ("_props", "required"):
                    out.setdefault(k, v)
        for name, prop in schema.get("properties", {}).items():
            props[name] = (prop, base)
        out["_props"] = props
        out["required"] = required
        return out, base

    def check(self, value: Any, schema: Any, base: Path, where: str, problems: list[str]) -> None:
        flat, base = self.flatten(schema, base)
        props = flat["_props"]
        kind = flat.get("type") or ("object" if props else None)
        if value is None:
            return  # null: "not specified"
        if kind == "object":
            if not isinstance(value, dict):
                problems.append(f"{where}: not an object")
                return
            extra = flat.get("additionalProperties")
            for key, item in value.items():
                if key in props:
                    prop, prop_base = props[key]
                    if prop.get("readOnly"):
                        problems.append(f"{where}.{key}: read-only in the spec, sent anyway")
                    inner = (
                        prop if prop.get("x-ms-client-flatten") is None else {k: v for k, v in prop.items() if k != "x-ms-client-flatten"}
                    )
                    self.check(item, inner, prop_base, f"{where}.{key}", problems)
                elif isinstance(extra, dict):
                    self.check(item, extra, base, f"{where}.{key}", problems)
                else:
                    problems.append(f"{where}.{key}: not a field the spec defines")
            for key in flat["required"]:
                if key not in value:
                    problems.append(f"{where}.{key}: required by the spec, missing")
        elif kind == "array":
            if not isinstance(value, list):
                problems.append(f"{where}: not an array")
                return
            if "minItems" in flat and len(value) < flat["minItems"]:
                problems.append(f"{where}: {len(value)} items, the spec wants at least {flat['minItems']}")
            if "maxItems" in flat and len(value) > flat["maxItems"]:
                problems.append(f"{where}: {len(value)} items, the spec allows at most {flat['maxItems']}")
            for i, item in enumerate(value):
                self.check(item, flat["items"], base, f"{where}[{i}]", problems)
        elif kind == "integer":
            if isinstance(value, bool) or not isinstance(value, int):
                problems.append(f"{where}: {value!r} is not an integer")
            elif not flat.get("minimum", value) <= value <= flat.get("maximum", value):
                problems.append(f"{where}: {value} is outside {flat.get('minimum')}-{flat.get('maximum')}")
        elif kind == "string":
            if not isinstance(value, str):
                problems.append(f"{where}: {value!r} is not a string")
            elif "enum" in flat and value not in flat["enum"]:
                problems.append(f"{where}: {value!r} is not one of {flat['enum']}")
            elif not flat.get("minLength", 0) <= len(value) <= flat.get("maxLength", len(value)):
                problems.append(f"{where}: length {len(value)} is outside {flat.get('minLength')}-{flat.get('maxLength')}")
        elif kind == "boolean" and not isinstance(value, bool):
            problems.append(f"{where}: {value!r} is not a boolean")


def _operation(spec: Spec, backends: Path, method: str, path: str) -> tuple[dict[str, Any], str] | None:
    doc = spec.load(backends)
    for template, ops in doc["paths"].items():
        rx = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "/?$"
        if re.match(rx, path, re.IGNORECASE) and method.lower() in ops:
            return ops[method.lower()], template
    return None


def _body_schema(spec: Spec, backends: Path, op: dict[str, Any]) -> Any:
    for param in op["parameters"]:
        node, _ = spec.resolve(param["$ref"], backends) if "$ref" in param else (param, backends)
        if node.get("in") == "body":
            return node["schema"]
    return None


def _if_match(spec: Spec, backends: Path, op: dict[str, Any]) -> dict[str, Any] | None:
    for param in op["parameters"]:
        node, _ = spec.resolve(param["$ref"], backends) if "$ref" in param else (param, backends)
        if node.get("in") == "header" and node.get("name") == "If-Match":
            return node
    return None


def conformance_problems(spec_dir: Path, log: list[Any]) -> list[str]:
    spec = Spec(spec_dir)
    backends = (spec_dir / "apimbackends.json").resolve()
    problems: list[str] = []
    for entry in log:
        where = f"{entry.method} {entry.path}"
        found = _operation(spec, backends, entry.method, entry.path)
        if found is None:
            problems.append(f"{where}: no such operation in the spec")
            continue
        op, _template = found
        if entry.api_version != API_VERSION:
            problems.append(f"{where}: api-version {entry.api_version}")
        header = _if_match(spec, backends, op)
        sent = entry.headers.get("If-Match")
        if header is not None and header.get("required") and not sent:
            problems.append(f"{where}: If-Match is required ({op['operationId']}) and was not sent")
        if entry.method in ("PATCH", "PUT", "DELETE") and (not sent or sent.strip() == "*"):
            problems.append(f"{where}: a write without the ETag just read (If-Match {sent!r})")
        schema = _body_schema(spec, backends, op)
        if schema is not None:
            spec.check(entry.body, schema, backends, f"{where} body", problems)
        elif entry.body:
            problems.append(f"{where}: a body the operation does not take")
    return problems


# ---------------------------------------------------------------- 1. what the actuator sends


@pytest.fixture
def arm() -> Iterator[FakeArm]:
    with FakeArm(token="contract-token") as fake:
        yield fake


def test_every_apim_request_the_actuator_makes_conforms_to_the_spec(specs: Path, arm: FakeArm) -> None:
    settings = settings_for(arm, next(_names))
    seed_arm(arm, settings)
    target = settings.targets[3]
    actuator = build_actuators(settings, StaticTokenCredential("contract-token"), retry=FAST_RETRY)[target.name]
    arm.clear_log()

    def apply(*changes: Change) -> Any:
        return actuator.apply(target, Plan(changes=changes), deadline=time.monotonic() + 10)

    def change(region: str, f: Field, actual: Any, desired: Any) -> Change:
        return Change(target.name, region, target.endpoints[region].backend, f, actual, desired, "spec test")

    actuator.read_actual(target)
    assert apply(change("eastus", Field.ENABLED, True, False), change("westeurope", Field.WEIGHT, 300, 10)).ok  # drain, weight to APIM's 1
    assert apply(change("japaneast", Field.WEIGHT, 200, 1000), change("japaneast", Field.PRIORITY, 1, 100)).ok  # APIM's maxima
    assert apply(change("westeurope", Field.PRIORITY, 1, 0)).ok  # APIM's minimum priority
    raced: list[str] = []

    def portal_edit_first(method: str, path: str) -> None:
        if method == "PATCH" and not raced:
            raced.append(path)
            apim_portal_edit(arm, target, "japaneast", priority=99)

    arm.before_write.append(portal_edit_first)
    report = apply(
        change("eastus", Field.ENABLED, False, True), change("eastus", Field.WEIGHT, None, 500), change("eastus", Field.PRIORITY, None, 1)
    )
    assert report.ok, report.failed
    log = [e for e in arm.request_log if "/microsoft.apimanagement/" in e.path.lower()]
    patches = [e for e in log if e.method == "PATCH"]
    assert [e.status for e in patches] == [200, 200, 200, 412, 200]
    assert {e.method for e in log} == {"GET", "PATCH"}
    assert conformance_problems(specs, log) == []
    weights = [s.get("weight") for e in patches for s in e.body["properties"]["pool"]["services"]]
    assert 1 in weights and 100 in weights and all(w is None or 0 <= w <= 100 for w in weights)


def test_the_checker_finds_what_the_spec_forbids(specs: Path) -> None:
    """The conformance check can fail: out-of-range values, undefined fields, a missing or blind If-Match."""
    from simulator.arm_faults import LoggedRequest

    path = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ApiManagement/service/apim/backends/pool"
    member = path.rsplit("/", 1)[0] + "/m"

    def patch(body: Any, if_match: str | None) -> LoggedRequest:
        headers = {"If-Match": if_match} if if_match is not None else {}
        return LoggedRequest("PATCH", path, API_VERSION, body, 200, 0.0, "r", headers=headers)

    bad = [
        patch({"properties": {"pool": {"services": [{"id": member, "weight": 101}]}}}, '"e"'),
        patch({"properties": {"pool": {"services": [{"id": member, "priority": -1}]}}}, '"e"'),
        patch({"properties": {"pool": {"services": [{"id": member, "enabled": False}]}}}, '"e"'),
        patch({"properties": {"pool": {"services": []}}}, '"e"'),
        patch({"properties": {"pool": {"services": [{"weight": 5}]}}}, '"e"'),
        patch({"properties": {"pool": {"services": [{"id": member}]}}, "etag": "x"}, '"e"'),
        patch({"properties": {"pool": {"services": [{"id": member}]}}}, None),
        patch({"properties": {"pool": {"services": [{"id": member}]}}}, "*"),
    ]
    for entry in bad:
        assert conformance_problems(specs, [entry]), entry
    assert (
        conformance_problems(specs, [patch({"properties": {"pool": {"services": [{"id": member, "weight": 0, "priority": 100}]}}}, '"e"')])
        == []
    )


# ---------------------------------------------------------------- 2. the fake's tables are the spec's


def test_the_fake_arms_rules_are_the_specs(specs: Path) -> None:
    spec = Spec(specs)
    defs_file = (specs / "definitions.json").resolve()
    defs = spec.load(defs_file)["definitions"]

    def props(name: str) -> set[str]:
        flat, _ = spec.flatten(defs[name], defs_file)
        return set(flat["_props"])

    assert set(arm_apim.BACKEND_PROPERTIES) == props("BackendUpdateParameterProperties") == props("BackendContractProperties")
    assert set(arm_apim.POOL_PROPERTIES) == props("BackendPool")
    assert set(arm_apim.POOL_ITEM_PROPERTIES) == props("BackendPoolItem")
    assert set(arm_apim.TLS_PROPERTIES) == props("BackendTlsProperties")
    assert set(arm_apim.PROXY_PROPERTIES) == props("BackendProxyContract")
    assert set(arm_apim.CREDENTIALS_PROPERTIES) == props("BackendCredentialsContract")
    assert set(arm_apim.CIRCUIT_BREAKER_PROPERTIES) == props("BackendCircuitBreaker")
    assert set(arm_apim.RULE_PROPERTIES) == props("CircuitBreakerRule")
    assert set(arm_apim.FAILURE_CONDITION_PROPERTIES) == props("CircuitBreakerFailureCondition")
    assert set(arm_apim.STATUS_RANGE_PROPERTIES) == props("FailureStatusCodeRange")
    item = defs["BackendPoolItem"]["properties"]
    assert arm_apim.POOL_WEIGHT_RANGE == (item["weight"]["minimum"], item["weight"]["maximum"])
    assert arm_apim.POOL_PRIORITY_RANGE == (item["priority"]["minimum"], item["priority"]["maximum"])
    assert defs["BackendPool"]["properties"]["services"]["minItems"] == 1
    assert arm_apim.MAX_RULES == defs["BackendCircuitBreaker"]["properties"]["rules"]["maxItems"]
    cond = defs["CircuitBreakerFailureCondition"]["properties"]
    assert (arm_apim.MAX_STATUS_RANGES, arm_apim.MAX_ERROR_REASONS) == (
        cond["statusCodeRanges"]["maxItems"],
        cond["errorReasons"]["maxItems"],
    )
    base = defs["BackendBaseParameters"]["properties"]
    for name, (lo, hi) in arm_apim.STRING_LENGTHS.items():
        source = base.get(name) or defs["BackendContractProperties"]["properties"][name]
        assert (lo, hi) == (source["minLength"], source["maxLength"]), name
    assert set(arm_apim.ENUMS["type"]) == set(base["type"]["enum"])
    params = spec.load((specs / "apimanagement.json").resolve())["parameters"]
    assert arm_apim.SERVICE_NAME.pattern == params["ServiceNameParameter"]["pattern"]
    assert params["IfMatchRequiredParameter"]["required"] is True


# ---------------------------------------------------------------- 3. the spec's examples


def test_the_fake_arm_answers_the_specs_create_examples(specs: Path, arm: FakeArm) -> None:
    example_dir = specs / "examples"
    sub = "00000000-0000-0000-0000-000000000000"
    arm.seed_apim_backends(sub, "rg1", "apimService1", [{"name": "backend-1"}, {"name": "backend-2"}])
    tls = ssl.create_default_context(cafile=arm.ca_bundle)
    with httpx.Client(verify=tls, headers={"Authorization": "Bearer contract-token"}, timeout=10) as raw:
        for name in ("ApiManagementCreateBackendProxyBackend.json", "ApiManagementCreateBackendWithWeightedLoadBalancer.json"):
            example = json.loads((example_dir / name).read_text(encoding="utf-8"))
            p = example["parameters"]
            url = (
                f"{arm.base_url}/subscriptions/{p['subscriptionId']}/resourceGroups/{p['resourceGroupName']}"
                f"/providers/Microsoft.ApiManagement/service/{p['serviceName']}/backends/{p['backendId']}?api-version={p['api-version']}"
            )
            created = raw.put(url, json=p["parameters"])
            assert created.status_code == 201, created.text
            assert created.headers.get("ETag")
            want = example["responses"]["201"]["body"]
            got = created.json()
            assert {k: got[k] for k in ("id", "type", "name")} == {k: want[k] for k in ("id", "type", "name")}
            sent = p["parameters"]["properties"]
            for key, value in sent.items():
                if key != "tls":  # the example's answer shows the service's defaults for tls, not what was sent
                    assert got["properties"][key] == value == want["properties"][key], key
            again = raw.put(url, json=p["parameters"])
            assert again.status_code == 200 and again.headers["ETag"] != created.headers["ETag"]
            stale = raw.patch(url, json={"properties": {"description": "x"}}, headers={"If-Match": created.headers["ETag"]})
            assert stale.status_code == 412
            assert stale.json()["error"]["code"] == "PreconditionFailed"
            missing = raw.patch(url, json={"properties": {"description": "x"}})
            assert missing.status_code == 400 and "If-Match" in missing.json()["error"]["message"]
        listed = raw.get(url.rsplit("/", 1)[0].split("?")[0] + f"?api-version={API_VERSION}")
        assert {b["name"] for b in listed.json()["value"]} >= {"proxybackend", "weighted-load-balancer"}
    assert pool_id  # the contract suite's helper is the one these tests share
