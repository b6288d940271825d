"""The README and the commands agree: every command in its table answers --help, every flag it shows exists,
the --json sentence is true, and every environment variable the code reads is documented."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from controlplane.cli.main import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    for action in parser._actions:  # argparse keeps subcommands in a private action type
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def _section(title: str) -> str:
    start = README.index(f"## {title}")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def _table_spans() -> list[str]:
    """The code spans of the first column of the Commands table."""
    spans: list[str] = []
    started = False
    for line in _section("Commands").splitlines():
        if line.startswith("| command |"):
            started = True
        elif started and not line.startswith("|"):
            break  # the end of the first table
        elif started and line.startswith("| `"):
            first = re.split(r"(?<!\\)\|", line)[1]
            spans += re.findall(r"`([^`]+)`", first)
    return spans


def _command_and_flags(span: str) -> tuple[str | None, list[str]]:
    words = span.replace("\\|", "|").split()
    if words and words[0] == "regionguard":
        words = words[1:]
    command = words[0] if words and not words[0].startswith("-") else None
    flags = [w.strip("[]").split("=")[0] for w in words if w.strip("[").startswith("--")]
    return command, flags


SPANS = _table_spans()
COMMANDS = sorted({c for c in (_command_and_flags(s)[0] for s in SPANS) if c})


def test_the_table_lists_every_command() -> None:
    assert set(COMMANDS) == set(_subparsers()), "the README's Commands table and the parser disagree"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_in_the_readme_answers_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: regionguard {command}")


@pytest.mark.parametrize("span", [s for s in SPANS if _command_and_flags(s)[1]])
def test_every_flag_the_readme_shows_exists(span: str) -> None:
    command, flags = _command_and_flags(span)
    parsers = _subparsers()
    assert command is not None or flags, span
    options = {o for a in parsers[command]._actions for o in a.option_strings} if command else set()
    if command is None:  # a span of flags only: they belong to the row's commands; any command may have them
        options = {o for p in parsers.values() for a in p._actions for o in a.option_strings}
    missing = [f for f in flags if f not in options]
    assert not missing, f"{span!r}: {missing} not options of {command}"


def test_the_json_sentence_is_true() -> None:
    text = " ".join(_section("Commands").split())
    said = re.search(r"`--json` is on (.+?); (.+?) have no JSON output", text)
    assert said, "the README says which commands take --json"
    parsers = _subparsers()
    with_json = re.findall(r"`([a-z -]+)`", said.group(1))
    without = re.findall(r"`([a-z-]+)`", said.group(2))
    for name in with_json:
        if name == "the on-call actions":
            continue
        command = name.split()[0]
        assert "--json" in {o for a in parsers[command]._actions for o in a.option_strings}, name
    for command in without:
        assert "--json" not in {o for a in parsers[command]._actions for o in a.option_strings}, command
    for action in ("drain", "restore", "failover", "pin", "freeze", "unfreeze"):
        assert "--json" in {o for a in parsers[action]._actions for o in a.option_strings}


def test_every_environment_variable_the_code_reads_is_documented() -> None:
    read: set[str] = set()
    reads = re.compile(r"""(?:environ(?:\.get)?\(\s*|environ\[\s*|getenv\(\s*)["'](REGIONGUARD_[A-Z_]+)""")
    for folder in ("controlplane", "web", "probes", "simulator", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            read |= set(reads.findall(path.read_text(encoding="utf-8")))
    assert {"REGIONGUARD_CONFIG", "REGIONGUARD_PASSWORD", "REGIONGUARD_TEST_POSTGRES_URL"} <= read  # the scan sees reads
    documented = set(re.findall(r"\b(REGIONGUARD_[A-Z_]+)\b", _section("Commands")))
    assert read - documented == set(), "add these to the README's environment variables table"


def test_the_sign_in_limits_the_readme_gives_are_the_code_s() -> None:
    from controlplane.config import Web
    from controlplane.durations import parse_duration
    from controlplane.users import LOGIN_THROTTLE_MAX_NAMES
    from web.security import LoginLimiter

    (row,) = [line for line in README.splitlines() if line.startswith("| `web.lockout_after`")]
    after, lock_for, per_minute = re.findall(r"`([^`]+)`", row.rstrip(" |").rsplit("|", 1)[1])
    web = Web()
    assert (int(after), parse_duration(lock_for), int(per_minute)) == (web.lockout_after, web.lockout_for, web.login_attempts_per_minute)
    assert f"at most {LOGIN_THROTTLE_MAX_NAMES:,} names" in row
    limiter = LoginLimiter(7)
    assert "five times that per address" in row and limiter.per_ip == 5 * limiter.per_minute
