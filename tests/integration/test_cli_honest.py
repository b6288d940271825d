"""A CLI that never lies: a read failure is never shown as "nothing to do"."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controlplane.domain import AuditEvent, EventKind
from simulator.arm import FakeArm
from simulator.arm_faults import FaultRule
from tests.integration.cli_env import CliEnv, make_env, migrated_template


@pytest.fixture(autouse=True)
def _user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGIONGUARD_USER", "oncall-test")
    monkeypatch.delenv("REGIONGUARD_CONFIG", raising=False)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_template(tmp_path_factory.mktemp("cli-honest-template"))


@pytest.fixture
def env(tmp_path: Path, capsys: pytest.CaptureFixture[str], template: Path) -> Iterator[CliEnv]:
    with FakeArm() as arm:
        e = make_env(tmp_path, arm, capsys, template=template)
        yield e
        e.store.close()


def forbid(env: CliEnv, path: str) -> None:
    """Every request to ``path`` answers 403 AuthorizationFailed (permanent: no retries)."""
    env.arm.inject(FaultRule("error", count=None, status=403, code="AuthorizationFailed", message="no access", path_contains=path))


@pytest.mark.parametrize("command", ["plan", "apply"])
def test_plan_and_apply_fail_and_name_the_target_they_could_not_read(env: CliEnv, command: str) -> None:
    forbid(env, "llm-weighted")
    r = env.run(command)
    assert r.code == 1, (r.out, r.err)
    assert "ERROR: could not read Azure" in r.out and "tm-weighted" in r.out
    assert "Traceback" not in r.out + r.err
    j = env.run(command, "--json")
    assert j.code == 1
    errors = j.json()["read_errors"]
    assert list(errors) == ["tm-weighted"] and "AuthorizationFailed" in errors["tm-weighted"]
    env.arm.clear_faults()
    assert env.run("plan").code == 0


def test_a_plan_with_everything_read_still_says_no_changes_and_exits_0(env: CliEnv) -> None:
    r = env.run("plan", "--json")
    assert r.code == 0 and r.json()["read_errors"] == {} and r.json()["complete"] is True


def test_status_fails_while_the_worker_cannot_read_a_target_and_recovers_when_it_can(env: CliEnv) -> None:
    now = datetime.now(UTC)
    env.store.add_event(
        AuditEvent(
            kind=EventKind.READ_ERROR,
            at=now - timedelta(minutes=2),
            actor="worker-1",
            summary="tm-weighted: cannot read Azure state, target skipped this tick: AuthorizationFailed: no",
            target="tm-weighted",
            severity="warning",
        )
    )
    r = env.run("status")
    assert r.code == 1 and "ERROR: could not read Azure" in r.out and "tm-weighted" in r.out
    assert env.run("status", "--json").json()["read_errors"] == {
        "tm-weighted": "cannot read Azure state, target skipped this tick: AuthorizationFailed: no"
    }
    env.store.add_event(
        AuditEvent(
            kind=EventKind.READ_ERROR, at=now, actor="worker-1", summary="tm-weighted: Azure can be read again", target="tm-weighted"
        )
    )
    assert env.run("status").code == 0


# ---------------------------------------------------------------- db downgrade


def test_db_downgrade_needs_a_revision_and_yes_and_says_what_will_be_lost(env: CliEnv) -> None:
    from controlplane.store import db

    head = db.head_revision()
    env.store.add_event(AuditEvent(kind=EventKind.TRANSITION, at=datetime.now(UTC), actor="automation", summary="kept"))
    bare = env.run("db", "downgrade")
    assert bare.code == 2 and "needs a REVISION" in bare.err and "Traceback" not in bare.err
    assert db.current_revision(env.url) == head
    asked = env.run("db", "downgrade", "base")
    assert asked.code == 3, asked.err
    assert "DROPS EVERY TABLE" in asked.err and "1 audit trail events" in asked.err and "--yes" in asked.err
    assert db.current_revision(env.url) == head  # nothing changed
    unknown = env.run("db", "downgrade", "9999", "--yes")
    assert unknown.code == 2 and "no migration '9999'" in unknown.err
    one_step = env.run("db", "downgrade", "0001", "--yes")
    assert one_step.code == 0, one_step.err
    assert "0002: probe_result.anomalies" in one_step.out and "database at 0001" in one_step.out
    assert env.run("db", "upgrade").code == 0


# ---------------------------------------------------------------- wording


def test_unfreeze_says_what_it_did_not_what_it_will_do(env: CliEnv) -> None:
    assert env.run("freeze", "--reason", "change window", "--yes").code == 0
    r = env.run("unfreeze", "--reason", "window over", "--yes")
    assert r.code == 0, r.err
    assert r.out.startswith("done: lifted ") and "this will" not in r.out.lower()


def test_a_bad_for_names_the_flag_the_operator_typed(env: CliEnv) -> None:
    r = env.run("drain", "eastus", "--reason", "region is down", "--for", "10x", "--yes")
    assert r.code == 2
    assert r.err.startswith("error: --for: '10x'") and "expires_in" not in r.err


def test_history_of_an_unknown_kind_is_an_error_naming_the_kinds(env: CliEnv) -> None:
    with pytest.raises(SystemExit) as exc:
        env.run("history", "--kind", "bogus")
    assert exc.value.code == 2
    err = env.capsys.readouterr().err
    assert "--kind" in err and "'bogus'" in err and "transition" in err


def test_no_config_file_says_how_to_give_one(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from controlplane.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["status"]) == 2
    err = capsys.readouterr().err
    assert "no config file at 'regionguard.yaml'" in err and "--config" in err and "REGIONGUARD_CONFIG" in err


def test_sim_llm_help_names_the_command_the_user_typed(capsys: pytest.CaptureFixture[str]) -> None:
    from controlplane.cli import main

    with pytest.raises(SystemExit):
        main(["sim", "llm", "--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: regionguard sim llm") and "python -m" not in out


def test_web_installs_the_same_secret_scrubbing_log_handler_as_run(env: CliEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    from controlplane.cli import run as run_module
    from controlplane.logging_setup import SecretScrubber

    class Server:
        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", 1)

        def run(self) -> None:
            logging.getLogger("web").warning("login for api-key: s3cret-value-123 by token:s-operator")

        def close(self) -> None:
            pass

    monkeypatch.setattr(run_module, "wsgi_server", lambda *a, **k: Server())
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        r = env.run("web", "--port", "0")
        assert r.code == 0, r.err
        ours = [h for h in root.handlers if any(isinstance(f, SecretScrubber) for f in h.filters)]
        assert ours, root.handlers
        err = r.err
    finally:
        for h in list(root.handlers):
            if h not in before:
                root.removeHandler(h)
    assert "token:s-operator" in err and "s3cret-value-123" not in err


# ---------------------------------------------------------------- drift


def _drifted(env: CliEnv) -> None:
    from controlplane.domain import EndpointSetting

    now = datetime.now(UTC)
    env.seed_actual("tm-weighted", now)  # Azure: eastus at weight 500 (the config's)
    env.store.set_applied("tm-weighted", "eastus", EndpointSetting(weight=900, enabled=True), now)  # we last wrote 900
    env.store.set_drift("tm-weighted", "eastus", "weight 900 -> 500 changed outside regionguard")


def test_drift_list_shows_unresolved_drift(env: CliEnv) -> None:
    assert env.run("drift", "list").out.strip() == "no unresolved drift"
    _drifted(env)
    listed = env.run("drift", "list", "--json").json()
    assert listed == [
        {"target": "tm-weighted", "region": "eastus", "endpoint": "aoai-eastus", "drift": "weight 900 -> 500 changed outside regionguard"}
    ]


def test_drift_adopt_previews_then_keeps_azures_value_as_a_pin_with_an_audit_event(env: CliEnv) -> None:
    _drifted(env)
    preview = env.run("drift", "adopt", "tm-weighted", "eastus", "--preview")
    assert preview.code == 0 and "this will keep eastus in tm-weighted" in preview.out and "500" in preview.out
    assert env.store.active_overrides(datetime.now(UTC)) == []
    assert env.run("drift", "adopt", "tm-weighted", "eastus", "--yes").code == 2  # no reason
    done = env.run("drift", "adopt", "tm-weighted", "eastus", "--reason", "the portal edit was right", "--yes")
    assert done.code == 0, done.err
    (pin,) = env.store.active_overrides(datetime.now(UTC))
    assert (pin.kind.value, pin.target, pin.region, pin.weight) == ("pin", "tm-weighted", "eastus", 500)
    assert env.run("drift", "list").out.strip() == "no unresolved drift"
    (event,) = env.store.events(kinds=[EventKind.DRIFT])
    assert event.summary.endswith("the portal edit was right") and event.actor == "cli:oncall-test"


def test_drift_revert_asks_the_worker_to_write_desired_state(env: CliEnv) -> None:
    from controlplane.domain import FlagKind

    _drifted(env)
    preview = env.run("drift", "revert", "tm-weighted", "eastus", "--preview")
    assert preview.code == 0 and preview.out.startswith("the worker will write enabled, weight 900")
    done = env.run("drift", "revert", "tm-weighted", "eastus", "--reason", "nobody should edit the portal", "--yes")
    assert done.code == 0, done.err
    assert env.store.flags(FlagKind.DRIFT_REVERT)
    assert env.run("drift", "revert", "tm-weighted", "westeurope", "--reason", "x", "--yes").code == 2  # no drift there


# ---------------------------------------------------------------- users and tokens


def test_user_list_disable_enable_passwd_remove(env: CliEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import sys

    from controlplane import users

    monkeypatch.setattr(sys, "stdin", io.StringIO("a long enough passphrase\n"))
    assert env.run("user", "add", "oscar", "--role", "operator", "--password-stdin").code == 0
    assert "oscar" in env.run("user", "list").out and "enabled" in env.run("user", "list").out
    before = users.session_version(env.store, "oscar")
    assert env.run("user", "disable", "oscar").code == 0
    assert "DISABLED" in env.run("user", "list").out and users.session_version(env.store, "oscar") == before + 1
    assert users.authenticate(env.store, "oscar", "a long enough passphrase") is None
    assert env.run("user", "enable", "oscar").code == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO("another long passphrase\n"))
    r = env.run("user", "passwd", "oscar", "--password-stdin")
    assert r.code == 0 and "every session" in r.out
    assert users.authenticate(env.store, "oscar", "another long passphrase") is not None
    assert env.run("user", "remove", "oscar").code == 0
    assert env.run("user", "remove", "oscar").code == 2
    assert env.run("user", "disable").code == 2  # no NAME


def test_token_list_and_revoke(env: CliEnv) -> None:
    from controlplane import users

    token = env.run("token", "create", "--name", "deploy-bot", "--role", "operator", "--json").json()["token"]
    listed = env.run("token", "list", "--json").json()
    assert [(t["name"], t["revoked_at"]) for t in listed] == [("deploy-bot", None)]
    assert "rg_" not in env.run("token", "list").out  # never the token itself
    r = env.run("token", "revoke", "--name", "deploy-bot")
    assert r.code == 0 and "deploy-bot" in r.out
    assert users.authenticate_token(env.store, token, datetime.now(UTC)) is None
    assert env.run("token", "revoke", "--name", "deploy-bot").code == 2  # nothing live left
    assert env.run("token", "revoke").code == 2
