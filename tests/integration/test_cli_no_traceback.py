"""Every command, given broken inputs, answers with a clear error and an exit code, never a Python traceback.

Commands run in-process through ``controlplane.cli.main``: an exception
escaping ``main`` is what a user would see as a traceback, so it fails the
test like a printed one does. The list of commands comes from the parser,
so a new command without broken inputs here fails
``test_every_command_has_broken_inputs_here``.
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.cli.main import build_parser, main
from tests.integration.cli_env import config_dict, write_config

UNREACHABLE_PG = "postgresql://rg:pw@127.0.0.1:1/none"


def commands() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return list(sub.choices)  # type: ignore[attr-defined]  # argparse keeps its subparsers in a private action


# argv after the command name, for each command: what it needs to get past argparse
ARGS: dict[str, list[str]] = {
    "check-config": [],  # the file is appended
    "db": ["current"],
    "run": [],
    "web": [],
    "demo": [],
    "sim": ["arm"],
    "probe": [],
    "replay": ["region-outage"],
    "status": [],
    "plan": [],
    "apply": [],
    "history": [],
    "drain": ["eastus", "--reason", "test"],
    "restore": ["eastus", "--reason", "test"],
    "failover": ["tm-priority", "--to", "eastus", "--reason", "test"],
    "pin": ["tm-weighted", "eastus", "--weight", "10", "--reason", "test"],
    "freeze": ["--reason", "test"],
    "unfreeze": ["--reason", "test"],
    "drift": ["list"],
    "user": ["add", "someone", "--role", "viewer", "--password-stdin"],
    "token": ["create", "--name", "t", "--role", "viewer"],
}
NEEDS_NO_CONFIG = {"demo", "sim"}  # they build their own world


@pytest.fixture
def broken(tmp_path: Path) -> dict[str, Path]:
    """Config files, each broken in one way."""
    from simulator.arm import FakeArm

    with FakeArm() as arm:
        good = config_dict(arm, UNREACHABLE_PG)
    not_yaml = tmp_path / "not-yaml.yaml"
    not_yaml.write_text("regions: [unclosed\n  - : :\n")
    nonsense = dict(good, probe={"interval": float("nan")}, retention={"raw_days": 1e300})
    no_psycopg = dict(good, database={"url": "postgresql://rg:pw@127.0.0.1:1/none"})
    return {
        "missing": tmp_path / "does-not-exist.yaml",
        "not-yaml": not_yaml,
        "nonsense": write_config(tmp_path / "nonsense.yaml", nonsense),
        "unreachable-db": write_config(tmp_path / "unreachable.yaml", good),
        "no-psycopg": write_config(tmp_path / "no-psycopg.yaml", no_psycopg),
        "empty": write_config(tmp_path / "empty.yaml", {}),
    }


def run(argv: list[str], capsys: pytest.CaptureFixture[str], stdin: str = "") -> tuple[int, str, str]:
    capsys.readouterr()
    old = sys.stdin
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    sys.stdin = io.StringIO(stdin)
    try:
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's own usage errors
            code = exc.code if isinstance(exc.code, int) else 2
    finally:
        sys.stdin = old
        for h in list(root.handlers):  # main() installs handlers on this test's captured stream: not for the next test
            if h not in handlers:
                root.removeHandler(h)
        root.setLevel(level)
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean_failure(argv: list[str], code: int, out: str, err: str) -> None:
    assert "Traceback" not in out + err, (argv, out, err)
    assert code != 0, (argv, out, err)
    assert err.strip(), (argv, "no message on stderr", out)


def test_every_command_has_broken_inputs_here() -> None:
    assert set(commands()) == set(ARGS), "add the new command to ARGS with the arguments it needs"


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("REGIONGUARD_USER", "oncall-test")
    monkeypatch.delenv("REGIONGUARD_CONFIG", raising=False)
    monkeypatch.delenv("REGIONGUARD_PASSWORD", raising=False)
    yield


@pytest.mark.parametrize("which", ["missing", "not-yaml", "nonsense", "unreachable-db", "empty"])
@pytest.mark.parametrize("command", [c for c in ARGS if c not in NEEDS_NO_CONFIG])
def test_a_broken_config_or_database_is_one_clear_error(
    command: str, which: str, broken: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    if command in ("check-config",):
        argv = [command, str(broken[which])]
        if which == "unreachable-db":
            pytest.skip("check-config does not connect to the database")
    else:
        argv = [command, *ARGS[command], "--config", str(broken[which])]
    if command in ("replay", "probe") and which == "unreachable-db":
        pytest.skip(f"{command} needs no database")
    code, out, err = run(argv, capsys)
    assert_clean_failure(argv, code, out, err)


@pytest.mark.parametrize("command", [c for c in ARGS if c not in NEEDS_NO_CONFIG | {"check-config", "replay", "probe"}])
def test_postgresql_without_the_postgres_extra_says_how_to_install_it(
    command: str, broken: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg now raises ModuleNotFoundError
    monkeypatch.setitem(sys.modules, "psycopg2", None)
    argv = [command, *ARGS[command], "--config", str(broken["no-psycopg"])]
    code, out, err = run(argv, capsys)
    assert_clean_failure(argv, code, out, err)
    assert "pip install 'regionguard[postgres]'" in err, (argv, err)


BAD_VALUES: list[tuple[str, list[str]]] = [
    ("drain", ["eastus", "--reason", "x", "--for", "10x"]),
    ("drain", ["eastus", "--reason", "x", "--for", "1e300"]),
    ("drain", ["eastus", "--reason", "x", "--for", "999999999999d"]),
    ("drain", ["mars", "--reason", "x"]),
    ("pin", ["tm-weighted", "eastus", "--weight", "99999999999999999999999", "--reason", "x"]),
    ("pin", ["tm-weighted", "eastus", "--weight", "-5", "--reason", "x"]),
    ("pin", ["tm-weighted", "eastus", "--reason", "x"]),
    ("history", ["--since", "1e300"]),
    ("history", ["--since", "yesterday"]),
    ("history", ["--kind", "bogus"]),
    ("history", ["--limit", "-1"]),
    ("history", ["--limit", "99999999999999999999999"]),
    ("history", ["--region", "mars"]),
    ("history", ["--target", "nope"]),
    ("replay", ["no-such-scenario"]),
    ("replay", ["--from-db", "--since", "1e300"]),
    ("probe", ["--region", "mars"]),
    ("db", ["downgrade"]),
    ("db", ["downgrade", "nope", "--yes"]),
    ("user", ["add", "someone", "--role", "viewer", "--password-stdin"]),  # stdin at EOF
    ("token", ["create", "--name", "", "--role", "viewer"]),
    ("freeze", ["--target", "nope", "--reason", "x"]),
    ("failover", ["tm-weighted", "--to", "eastus", "--reason", "x"]),
    ("drift", ["adopt"]),
    ("drift", ["adopt", "tm-weighted", "eastus", "--reason", "x", "--yes"]),
    ("drift", ["revert", "nope", "eastus", "--reason", "x", "--yes"]),
    ("drift", ["revert", "tm-weighted", "eastus", "--yes"]),
]


@pytest.fixture
def good_env(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    from simulator.arm import FakeArm
    from tests.integration.cli_env import make_env

    with FakeArm() as arm:
        env = make_env(tmp_path, arm, capsys)
        yield env
        env.store.close()


@pytest.mark.parametrize(("command", "rest"), BAD_VALUES, ids=[f"{c} {' '.join(r)}" for c, r in BAD_VALUES])
def test_bad_values_are_one_clear_error(command: str, rest: list[str], good_env: Any, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [command, *rest, "--config", str(good_env.config)]
    code, out, err = run(argv, capsys)
    assert_clean_failure(argv, code, out, err)


def test_sim_and_demo_with_bad_options_fail_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["sim", "llm", "--no-such-flag"],
        ["sim", "arm", "--port", "notaport"],
        ["demo", "--scenario", "no-such-scenario", "--port", "0"],
    ):
        code, out, err = run(argv, capsys)
        assert_clean_failure(argv, code, out, err)


def test_the_config_files_used_here_are_yaml_the_cli_can_read(broken: dict[str, Path]) -> None:
    assert yaml.safe_load(broken["unreachable-db"].read_text())["database"]["url"] == UNREACHABLE_PG
