"""Configs that refuse nonsense: each bad value is one line naming the field and the value.

The values come from a hostile review: durations that overflow later, Azure
names that escape the resource path, credentials in URLs, booleans where
numbers belong, names that differ only in case, empty env var names and
database URLs nobody can parse.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from controlplane.config import ConfigError, parse_settings, redact_url
from tests.unit.test_config import example

FRONT_DOOR = {
    "name": "fd-classic",
    "kind": "front_door",
    "subscription_id": "00000000-0000-0000-0000-000000000001",
    "resource_group": "rg-fd",
    "front_door": "fd-llm",
    "backend_pool": "llm-pool",
    "endpoints": {
        "eastus": {"address": "contoso-eastus.openai.azure.com", "weight": 50},
        "westeurope": {"address": "contoso-westeurope.openai.azure.com", "weight": 30},
    },
}


def with_front_door() -> dict[str, Any]:
    data = example()
    data["targets"].append(copy.deepcopy(FRONT_DOOR))
    return data


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_settings(data, "test.yaml")
    return info.value.problems


def yaml_value(text: str) -> Any:
    """A value as YAML reads it: '.nan' is a float NaN, '1e300' a float."""
    return yaml.safe_load(f"v: {text}")["v"]


def set_path(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    node: Any = data
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    node[int(parts[-1]) if parts[-1].isdigit() else parts[-1]] = value
    return data


FD = len(example()["targets"])  # the Front Door classic target is appended after the example's

# path, value as written in YAML, what the one line must contain
CASES = [
    ("probe.interval", ".nan", "probe.interval"),
    ("probe.timeout", "1e300", "probe.timeout"),
    ("reconcile.interval", "999999999999d", "reconcile.interval"),
    ("health.min_dwell", ".inf", "health.min_dwell"),
    ("retention.raw_days", "1e300", "retention.raw_days"),
    ("retention.rollup_days", ".nan", "retention.rollup_days"),
    ("regions.0.endpoints.0.pricing.input_per_1m", ".inf", "pricing.input_per_1m"),
    ("probe.jitter", ".nan", "probe.jitter"),
    ("targets.0.resource_group", "../../providers/Microsoft.Authorization", "targets[0].resource_group"),
    ("targets.0.resource_group", "rg-llm.", "targets[0].resource_group"),
    ("targets.0.resource_group", "r" * 91, "targets[0].resource_group"),
    ("targets.0.profile", "llm/global", "targets[0].profile"),
    ("targets.0.profile", "-llm", "targets[0].profile"),
    ("targets.0.subscription_id", "../00000000", "targets[0].subscription_id"),
    ("targets.0.endpoints.eastus.name", "aoai/../../x", "targets[0].endpoints.eastus.name"),
    ("targets.1.profile", "afd_llm", "targets[1].profile"),
    ("targets.1.origin_group", "aoai/origins", "targets[1].origin_group"),
    ("targets.1.endpoints.eastus.origin", "o" * 51, "targets[1].endpoints.eastus.origin"),
    (f"targets.{FD}.front_door", "fd", f"targets[{FD}].front_door"),
    (f"targets.{FD}.backend_pool", "pool/../x", f"targets[{FD}].backend_pool"),
    (f"targets.{FD}.endpoints.eastus.address", "host/../../x", f"targets[{FD}].endpoints.eastus.address"),
    ("targets.0.endpoints.eastus.weight", "true", "targets[0].endpoints.eastus.weight"),
    ("targets.1.endpoints.eastus.priority", "false", "targets[1].endpoints.eastus.priority"),
    ("health.window", "true", "health.window"),
    ("guardrails.max_drain_fraction", "true", "guardrails.max_drain_fraction"),
    ("web.secret_key_env", '""', "web.secret_key_env"),
    ("web.secret_key_env", "'MY KEY'", "web.secret_key_env"),
    ("database.url", "'not a url'", "database.url"),
    ("database.url", "'mysql://u@h/db'", "database.url"),
    ("database.url", "'postgresql://u:p@h:notaport/db'", "database.url"),
]


@pytest.mark.parametrize(("path", "text", "field"), CASES, ids=[f"{p}={t[:30]}" for p, t, _f in CASES])
def test_a_nonsense_value_is_refused_in_one_line_naming_the_field_and_the_value(path: str, text: str, field: str) -> None:
    value = yaml_value(text)
    problems = problems_of(set_path(with_front_door(), path, value))
    assert len(problems) == 1, problems
    line = problems[0]
    assert "\n" not in line
    assert field in line, line
    shown = str(value) if not isinstance(value, str) else redact_url(value)[:20] if path.endswith("url") else value[:20]
    assert shown.lower() in line.lower(), line


@pytest.mark.parametrize(
    "url",
    [
        "https://user:s3cret-pw@contoso-eastus.openai.azure.com",
        "https://contoso-eastus.openai.azure.com/?api-key=s3cret-pw",
        "https://contoso-eastus.openai.azure.com/openai?x=1&api-key=s3cret-pw",
        "https://contoso-eastus.openai.azure.com/#s3cret-pw",
    ],
)
def test_a_base_url_with_credentials_or_a_query_is_refused_without_echoing_the_secret(url: str) -> None:
    problems = problems_of(set_path(example(), "regions.0.endpoints.0.base_url", url))
    assert len(problems) == 1, problems
    assert problems[0].startswith("regions[0].endpoints[0].base_url:")
    assert "s3cret-pw" not in problems[0]
    assert "contoso-eastus.openai.azure.com" in problems[0]


def test_region_names_that_differ_only_in_case_are_refused() -> None:
    data = example()
    data["regions"][1]["name"] = "EastUS"
    problems = problems_of(data)
    assert any("regions" in p and "'EastUS'" in p and "'eastus'" in p for p in problems), problems


def test_a_database_url_password_is_never_echoed() -> None:
    problems = problems_of(set_path(example(), "database.url", "mysql://rg:hunter2-pw@db.example.net/rg"))
    assert len(problems) == 1 and "hunter2-pw" not in problems[0] and "mysql" in problems[0]


def test_the_valid_names_azure_allows_still_pass() -> None:
    data = with_front_door()
    data["targets"][0]["resource_group"] = "rg_LLM-(prod).eu"
    data["targets"][0]["profile"] = "llm.global-1"
    data["targets"][1]["profile"] = "a" * 260
    data["targets"][FD]["endpoints"]["eastus"]["address"] = "10.0.0.4"
    data["database"]["url"] = "postgresql+psycopg://rg:pw@db.example.net:5432/rg"
    parse_settings(data, "test.yaml")
