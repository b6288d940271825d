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
