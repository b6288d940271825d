"""What the CLI prints when stored text is hostile: no control character, escape sequence or bidi override reaches a terminal."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controlplane.domain import AuditEvent, HealthStateName
from simulator.arm import FakeArm
from tests.integration.cli_env import CliEnv, make_env, migrated_template

HOSTILE = "evil\x1b[2J\x1b]0;owned\x07\u202etxt.exe\x00\x9b1m"


@pytest.fixture(autouse=True)
def _user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGIONGUARD_USER", "oncall-test")
    monkeypatch.delenv("REGIONGUARD_CONFIG", raising=False)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_template(tmp_path_factory.mktemp("cli-hostile-template"))


@pytest.fixture
def env(tmp_path: Path, capsys: pytest.CaptureFixture[str], template: Path) -> Iterator[CliEnv]:
    with FakeArm() as arm:
        e = make_env(tmp_path, arm, capsys, template=template)
        yield e
        e.store.close()


def bad_chars(text: str) -> list[str]:
    return [c for c in text if unicodedata.category(c) in ("Cc", "Cf", "Cs") and c not in "\n"]


def test_status_and_history_escape_control_characters_and_bidi_overrides_from_the_store(env: CliEnv) -> None:
    now = datetime.now(UTC)
    env.seed_health(now, eastus=(HealthStateName.DEGRADED, 0.5, "reason " + HOSTILE))
    env.store.add_event(AuditEvent(kind="transition", at=now, actor="automation " + HOSTILE, summary="summary " + HOSTILE))
    for argv in (("status",), ("history",), ("status", "--json"), ("history", "--json")):
        r = env.run(*argv)
        assert r.code == 0, r.err
        assert "evil" in r.out
        assert not bad_chars(r.out), (argv, bad_chars(r.out))
    text = env.run("history").out
    assert "evil\\x1b[2J\\x1b]0;owned\\x07\\u202etxt.exe" in text


def test_status_shows_a_region_whose_endpoints_have_a_config_problem_as_a_problem_without_a_score(env: CliEnv) -> None:
    from controlplane.domain import EndpointHealth, RegionHealth

    now = datetime.now(UTC)
    problem = "auth_error in 1 of last 1 probes: AOAI_KEY is not set"
    eps = tuple(
        EndpointHealth(f"eastus/{d}", "eastus", HealthStateName.UNKNOWN, 1.0, "waiting", config_problem=problem)
        for d in ("gpt-4o", "gpt-4o-mini")
    )
    env.store.save_health(eps, [RegionHealth("eastus", HealthStateName.UNKNOWN, 1.0, (f"config problem: gpt-4o: {problem}",), eps)], now)
    text = env.run("status").out
    east = next(line for line in text.splitlines() if line.startswith("eastus "))
    assert east.split()[1:3] == ["PROBLEM", "-"], east
    region = next(r for r in env.run("status", "--json").json()["regions"] if r["region"] == "eastus")
    assert region["score"] is None and region["state"] == "unknown" and len(region["config_problems"]) == 2
