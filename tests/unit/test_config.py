"""Config validation: a bad file refuses to start and says which field and value."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from controlplane.config import ConfigError, load_settings, parse_settings
from controlplane.durations import parse_duration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "regionguard.yaml"


def example() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text())


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_settings(data, "test.yaml")
    return info.value.problems


def test_the_shipped_example_is_valid() -> None:
    s = load_settings(EXAMPLE)
    assert s.region_names == ["eastus", "westeurope", "japaneast"]
    assert [t.kind for t in s.targets] == ["traffic_manager", "front_door_cdn", "apim_backend_pool"]
    assert s.probe.interval == 15.0 and s.health.min_dwell == 60.0
    assert s.guardrails.fail_open is True


def _set(path: str, value: Any):
    def mutate(d: dict[str, Any]) -> None:
        node: Any = d
        parts = path.split(".")
        for part in parts[:-1]:
            node = node[int(part)] if part.isdigit() else node[part]
        last = parts[-1]
        if value is DELETE:
            del node[int(last) if last.isdigit() else last]
        else:
            node[int(last) if last.isdigit() else last] = value

    return mutate


DELETE = object()


def _rename_region_in_target(d: dict[str, Any]) -> None:
    eps = d["targets"][0]["endpoints"]
    eps["eastus2"] = eps.pop("eastus")


def _duplicate_region(d: dict[str, Any]) -> None:
    d["regions"].append(copy.deepcopy(d["regions"][0]))


def _priority_collision(d: dict[str, Any]) -> None:
    for region in ("eastus", "westeurope"):
        d["targets"][0]["endpoints"][region]["priority"] = 1


def _priority_routing_without_priorities(d: dict[str, Any]) -> None:
    d["targets"][0]["routing"] = "priority"


def _duplicate_target(d: dict[str, Any]) -> None:
    d["targets"][1]["name"] = d["targets"][0]["name"]


BROKEN = [
    ("unknown region in a target", _rename_region_in_target, "targets[0].endpoints.eastus2: no region named 'eastus2'"),
    ("drain fraction over 1", _set("guardrails.max_drain_fraction", 1.5), "guardrails.max_drain_fraction: 1.5"),
    (
        "Front Door priority over 5",
        _set("targets.1.endpoints.eastus.priority", 7),
        "targets[1].endpoints.eastus.priority: 7 is not between 1 and 5",
    ),
    ("weight 0", _set("targets.0.endpoints.westeurope.weight", 0), "targets[0].endpoints.westeurope.weight: 0 is not between 1 and 1000"),
    (
        "weight 1001",
        _set("targets.1.endpoints.japaneast.weight", 1001),
        "targets[1].endpoints.japaneast.weight: 1001 is not between 1 and 1000",
    ),
    ("colliding priorities", _priority_collision, "targets[0].endpoints: priority 1 is used by eastus, westeurope"),
    (
        "priority routing without priorities",
        _priority_routing_without_priorities,
        "targets[0].endpoints.eastus.priority: required when routing is 'priority'",
    ),
    ("duplicate region", _duplicate_region, "regions: duplicate region name 'eastus'"),
    ("duplicate target", _duplicate_target, "targets: duplicate target name 'tm-weighted'"),
    ("unknown target kind", _set("targets.0.kind", "tm"), "targets[0].kind: 'tm' is not one of"),
    ("bad duration", _set("probe.interval", "fast"), "probe.interval: 'fast' rejected"),
    ("api key without env name", _set("regions.0.endpoints.0.auth", {"kind": "api_key"}), "regions[0].endpoints[0].auth.env: required"),
    ("unknown key (typo)", _set("health.failure_to_down", 3), "health.failure_to_down: unknown key"),
    ("bad api style", _set("regions.1.endpoints.0.api_style", "v2"), "regions[1].endpoints[0].api_style: 'v2'"),
    ("no regions", _set("regions", []), "regions: [] rejected"),
    ("timeout longer than interval", _set("probe.timeout", "60s"), "probe.timeout: 60.0s is longer than probe.interval 15.0s"),
    ("failures to down above window", _set("health.failures_to_down", 50), "health.failures_to_down: 50 is larger than health.window 20"),
    ("min_serving above endpoint count", _set("targets.0.min_serving", 4), "targets[0].min_serving: 4 is more than the 3 endpoint(s)"),
    ("bad endpoint type", _set("targets.0.endpoints.eastus.type", "Foo"), "targets[0].endpoints.eastus.type: 'Foo'"),
    (
        "base url without scheme",
        _set("regions.0.endpoints.0.base_url", "contoso.openai.azure.com"),
        "regions[0].endpoints[0].base_url: 'contoso.openai.azure.com'",
    ),
    ("arm base url over plain http", _set("azure.arm_base_url", "http://127.0.0.1:1"), "azure.arm_base_url: 'http://127.0.0.1:1'"),
    ("missing subscription", _set("targets.1.subscription_id", DELETE), "targets[1].subscription_id: required"),
]


@pytest.mark.parametrize(("name", "mutate", "expected"), BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_config_is_refused_with_the_field_and_value_named(name: str, mutate: Any, expected: str) -> None:
    data = example()
    mutate(data)
    problems = problems_of(data)
    assert any(expected in p for p in problems), f"{expected!r} not in {problems}"


def test_every_problem_is_reported_not_just_the_first() -> None:
    data = example()
    data["guardrails"]["max_drain_fraction"] = 2
    data["probe"]["concurrency"] = 0
    assert len(problems_of(data)) == 2


@pytest.mark.parametrize(
    ("text", "seconds"), [("250ms", 0.25), ("30s", 30), ("5m", 300), ("1h", 3600), ("7d", 604800), (12, 12), ("1.5s", 1.5)]
)
def test_durations_accept_units(text: Any, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5 minutes", "-3s", True])
def test_durations_reject_nonsense(text: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_settings_are_frozen() -> None:
    s = load_settings(EXAMPLE)
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        s.guardrails.min_serving = 0  # type: ignore[misc]  # writing a frozen field is what this test checks


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "controlplane.cli", *args], capture_output=True, text=True, timeout=60)


def test_check_config_exits_0_with_a_summary_for_the_example() -> None:
    r = _cli("check-config", str(EXAMPLE))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok: 3 region(s), 3 LLM endpoint(s), 3 target(s)")


def test_check_config_exits_2_and_names_each_problem(tmp_path: Path) -> None:
    data = example()
    _rename_region_in_target(data)
    data["guardrails"]["max_drain_fraction"] = 1.5
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    r = _cli("check-config", str(bad))
    assert r.returncode == 2
    assert "guardrails.max_drain_fraction: 1.5" in r.stderr
    assert "Traceback" not in r.stderr


def test_check_config_reports_yaml_syntax_errors_with_a_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("regions:\n  - name: [unclosed\n")
    r = _cli("check-config", str(bad))
    assert r.returncode == 2
    assert "line " in r.stderr and "not valid YAML" in r.stderr
