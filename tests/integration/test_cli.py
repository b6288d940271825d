"""Every on-call CLI command, its success path and its error paths.

Most commands run in-process (``controlplane.cli.main`` with ``capsys``) against
a real config file, a real migrated SQLite database, the fake ARM through the
real Azure SDKs, and simulated LLM regions. A few run as real processes to
prove the exit codes and that errors never come out as a traceback.

Exit codes: 0 ok, 1 failed, 2 bad input or config, 3 refused, 4 database unavailable.
"""

from __future__ import annotations

import io
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from controlplane import users
from controlplane.cli.demo import DEMO_KEY_ENV
from controlplane.domain import AuditEvent, ChangeStatus, EventKind, FlagKind, HealthStateName, LeaseName, OverrideKind
from simulator.arm import FakeArm
from simulator.llm import DEFAULT_API_KEY, LLMSimulator, default_regions
from tests.integration.cli_env import ACTOR, REGIONS, USER, CliEnv, Run, ago, make_env, migrated_template, write_config
from tests.integration.web_seed import seed_liveness
from tests.waiting import PROCESS_START_S, wait_until

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED, EXIT_DB = 0, 1, 2, 3, 4
UNREACHABLE_PG = "postgresql://rguser:s3cret-pw@127.0.0.1:1/none"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _cli_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("REGIONGUARD_USER", USER)
    monkeypatch.setenv(DEMO_KEY_ENV, DEFAULT_API_KEY)
    monkeypatch.delenv("REGIONGUARD_CONFIG", raising=False)
    users.set_hasher(PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    yield
    users.set_hasher(PasswordHasher())


@pytest.fixture
def arm() -> Iterator[FakeArm]:
    with FakeArm() as a:
        yield a


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_template(tmp_path_factory.mktemp("cli-template"))


@pytest.fixture
def env(tmp_path: Path, arm: FakeArm, capsys: pytest.CaptureFixture[str], template: Path) -> Iterator[CliEnv]:
    e = make_env(tmp_path, arm, capsys, template=template)
    yield e
    e.store.close()


@pytest.fixture
def strict_env(tmp_path: Path, arm: FakeArm, capsys: pytest.CaptureFixture[str], template: Path) -> Iterator[CliEnv]:
    """Every target must keep two endpoints serving."""
    e = make_env(tmp_path, arm, capsys, template=template, guardrails={"min_serving": 2})
    yield e
    e.store.close()


def now() -> datetime:
    return datetime.now(UTC)


def one_error_line(r: Run) -> str:
    """The error output: exactly one line, no traceback."""
    assert "Traceback" not in r.err and "Traceback" not in r.out
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err
    return lines[0]


# ---------------------------------------------------------------- check-config, db


def test_check_config_summarises_a_valid_file(env: CliEnv) -> None:
    r = env.run_raw("check-config", str(env.config))
    assert r.code == EXIT_OK, r.err
    assert "ok: 3 region(s), 6 LLM endpoint(s), 4 target(s)" in r.out
    assert "database sqlite" in r.out


def test_check_config_names_the_bad_key_and_exits_2(env: CliEnv) -> None:
    bad = env.other_config("bad.yaml", guardrails={"min_serving": "lots"})
    r = env.run_raw("check-config", str(bad))
    assert r.code == EXIT_USAGE
    assert "invalid configuration" in r.err and "min_serving" in r.err
    assert "Traceback" not in r.err
    missing = env.run_raw("check-config", str(env.directory / "nope.yaml"))
    assert missing.code == EXIT_USAGE and "cannot read" in missing.err


def test_db_current_asks_for_an_upgrade_then_upgrade_and_downgrade_move_the_revision(env: CliEnv) -> None:
    fresh = env.other_config("fresh.yaml", database={"url": "sqlite:///" + str(env.directory / "fresh.db")})
    before = env.run("db", "current", config=fresh)
    assert before.code == EXIT_OK
    assert "current none" in before.out and "run: regionguard db upgrade" in before.out

    up = env.run("db", "upgrade", config=fresh)
    assert up.code == EXIT_OK, up.err
    at_head = env.run("db", "current", "--json", config=fresh).json()
    assert at_head["current"] == at_head["head"] and at_head["head"]
    assert f"database at {at_head['head']}" in up.out

    assert env.run("status", config=fresh).code == EXIT_OK
    down = env.run("db", "downgrade", "base", "--yes", config=fresh)
    assert down.code == EXIT_OK and "database at base" in down.out
    after = env.run("status", config=fresh)
    assert after.code == EXIT_DB
    assert "run 'regionguard db upgrade'" in one_error_line(after)


# ---------------------------------------------------------------- the database is not there


DB_COMMANDS = [
    ("status",),
    ("history", "--since", "1h"),
    ("plan",),
    ("apply",),
    ("drain", "eastus", "--reason", "region is down"),
    ("freeze", "--reason", "investigating"),
    ("token", "create", "--name", "ci", "--role", "viewer"),
    ("db", "current"),
    ("db", "upgrade"),
]


@pytest.mark.parametrize("argv", DB_COMMANDS, ids=lambda a: "-".join(a[:2]))
@pytest.mark.parametrize("where", ["postgres-refused", "sqlite-missing-dir"])
def test_an_unreachable_database_is_one_clear_line_and_exit_4(env: CliEnv, argv: tuple[str, ...], where: str) -> None:
    url = UNREACHABLE_PG if where == "postgres-refused" else "sqlite:///" + str(env.directory / "no" / "such" / "dir" / "t.db")
    cfg = env.other_config(f"{where}.yaml", database={"url": url})
    r = env.run(*argv, config=cfg)
    assert r.code == EXIT_DB, (r.out, r.err)
    line = one_error_line(r)
    assert line.startswith("error: database")
    assert (
        ("Connection refused" in line or "connection" in line.lower())
        if where == "postgres-refused"
        else "unable to open database file" in line
    )
    assert "s3cret-pw" not in r.err + r.out  # the password never shows
    assert env.arm.request_log == []  # nothing went to Azure either


@pytest.mark.parametrize(
    "argv", [("status",), ("plan",), ("drain", "eastus", "--reason", "region is down"), ("history",)], ids=lambda a: a[0]
)
def test_a_database_that_is_not_migrated_says_run_db_upgrade(env: CliEnv, argv: tuple[str, ...]) -> None:
    cfg = env.other_config("empty.yaml", database={"url": "sqlite:///" + str(env.directory / "empty.db")})
    r = env.run(*argv, config=cfg)
    assert r.code == EXIT_DB
    line = one_error_line(r)
    assert "is at migration none" in line and "run 'regionguard db upgrade'" in line


# ---------------------------------------------------------------- status


def _seed_status_world(env: CliEnv) -> datetime:
    t = now()
    env.seed_health(
        t,
        eastus=(HealthStateName.HEALTHY, 0.98, "6 of last 6 probes ok"),
        westeurope=(HealthStateName.UNHEALTHY, 0.05, "3 consecutive connect errors"),
    )
    env.seed_probe("eastus", ago(t, 1))  # fresh
    env.seed_probe("westeurope", ago(t, 600))  # stale: the demo probes every 4 s
    desired = env.baseline("tm-weighted", disabled=["westeurope"])
    desired = type(desired)(
        target=desired.target, endpoints=desired.endpoints, reasons={"westeurope": "unhealthy: 3 consecutive connect errors"}
    )
    env.seed_actual("tm-weighted", t, desired=desired)
    env.store.set_flag(FlagKind.PANIC, "tm-priority", {"reason": "every region looks unhealthy: failing open"}, t)
    assert env.run("freeze", "--target", "afd-prod", "--reason", "change window for the edge", "--yes").code == EXIT_OK
    return t


def test_status_text_shows_regions_targets_flags_and_freshness(env: CliEnv) -> None:
    _seed_status_world(env)
    r = env.run("status")
    assert r.code == EXIT_OK, r.err
    lines = r.out.splitlines()
    assert lines[0] == "leader: NONE (no worker holds the lease)"
    assert "PANIC tm-priority: every region looks unhealthy: failing open" in r.out
    assert "automation frozen: afd-prod" in r.out
    east = next(line for line in lines if line.startswith("eastus "))
    west = next(line for line in lines if line.startswith("westeurope "))
    japan = next(line for line in lines if line.startswith("japaneast "))
    assert "healthy" in east and "0.98" in east and "STALE" not in east
    assert "unhealthy" in west and "STALE" in west and "3 consecutive connect errors" in west
    assert "unknown" in japan and "never" in japan and "no health evaluated yet" in japan
    weighted_west = next(line for line in lines if line.startswith("tm-weighted") and " westeurope " in line)
    assert "enabled w=300" in weighted_west and "DISABLED w=300" in weighted_west
    assert f"freeze all regions in afd-prod by {ACTOR}: change window for the edge" in r.out


def test_status_json_has_desired_vs_actual_panic_freeze_and_staleness(env: CliEnv) -> None:
    _seed_status_world(env)
    r = env.run("status", "--json")
    assert r.code == EXIT_OK, r.err
    d = r.json()
    assert d["leader"] is None
    regions = {x["region"]: x for x in d["regions"]}
    assert list(regions) == list(REGIONS)
    assert regions["eastus"]["state"] == "healthy" and regions["eastus"]["stale"] is False and regions["eastus"]["last_probe_age_s"] < 60
    assert (
        regions["westeurope"]["state"] == "unhealthy"
        and regions["westeurope"]["stale"] is True
        and regions["westeurope"]["last_probe_age_s"] >= 600
    )
    assert regions["japaneast"] == {
        "region": "japaneast",
        "state": "unknown",
        "score": None,
        "config_problems": [],
        "reasons": ["no health evaluated yet"],
        "last_probe_age_s": None,
        "stale": True,
        "liveness": [],
    }
    rows = {(t["target"], t["region"]): t for t in d["targets"]}
    west = rows[("tm-weighted", "westeurope")]
    assert (west["actual_enabled"], west["desired_enabled"], west["actual_weight"], west["endpoint"]) == (
        True,
        False,
        300,
        "aoai-westeurope",
    )
    assert west["desired_reason"] == "unhealthy: 3 consecutive connect errors"
    assert rows[("tm-weighted", "eastus")]["desired_enabled"] is True
    assert list(d["panic"]) == ["tm-priority"] and d["panic"]["tm-priority"]["reason"] == "every region looks unhealthy: failing open"
    assert d["frozen"] == ["afd-prod"]
    assert [(o["kind"], o["target"], o["who"]) for o in d["overrides"]] == [("freeze", "afd-prod", ACTOR)]


def test_status_shows_failed_liveness_checks_with_reason_age_and_recent_failures(env: CliEnv) -> None:
    t = _seed_status_world(env)
    seed_liveness(env.store, t, region="eastus", vantage="westus-prober", failed=3)
    r = env.run("status")
    assert r.code == EXIT_OK, r.err
    failed = [line for line in r.out.splitlines() if line.startswith("liveness ")]
    # only the failing check is listed; westeurope's ok check is in --json, not in the text
    assert len(failed) == 1, r.out
    assert "eastus/gpt-4o from westus-prober: connect error" in failed[0] and "3 of last 20 failed" in failed[0]
    assert re.search(r"\b[45]s ago", failed[0]), failed[0]
    d = env.run("status", "--json").json()
    east = {c["endpoint"]: c for c in next(x for x in d["regions"] if x["region"] == "eastus")["liveness"]}
    assert east["eastus/gpt-4o"]["ok"] is False and east["eastus/gpt-4o"]["failure"] == "connect_error"
    assert (east["eastus/gpt-4o"]["recent_checks"], east["eastus/gpt-4o"]["recent_failed"]) == (20, 3)
    west = next(x for x in d["regions"] if x["region"] == "westeurope")["liveness"]
    assert [(c["endpoint"], c["ok"], c["vantage"]) for c in west] == [("westeurope/gpt-4o", True, "westus-prober")]


def test_status_names_the_worker_that_holds_the_lease(env: CliEnv) -> None:
    assert env.store.try_acquire_lease(LeaseName.LEADER, "worker-a:42", 60.0, now()) is not None
    d = env.run("status", "--json").json()
    assert d["leader"] == "worker-a:42"
    assert env.run("status").out.splitlines()[0] == "leader: worker-a:42"


def test_status_does_not_name_a_leader_whose_lease_expired(env: CliEnv) -> None:
    assert env.store.try_acquire_lease(LeaseName.LEADER, "worker-gone", 5.0, ago(now(), 60)) is not None
    assert env.run("status", "--json").json()["leader"] is None


# ---------------------------------------------------------------- history


def test_history_lists_recent_events_and_filters_by_kind(env: CliEnv) -> None:
    t = now()
    env.store.add_event(
        AuditEvent(kind="transition", at=ago(t, 2 * 3600), actor="automation", summary="old: eastus unhealthy", region="eastus")
    )
    env.store.add_event(
        AuditEvent(kind="transition", at=ago(t, 60), actor="automation", summary="recent: westeurope degraded", region="westeurope")
    )
    assert env.run("drain", "japaneast", "--reason", "quota exhausted", "--yes").code == EXIT_OK

    recent = env.run("history", "--since", "1h")
    assert recent.code == EXIT_OK, recent.err
    assert "recent: westeurope degraded" in recent.out and "old: eastus unhealthy" not in recent.out
    assert f"{ACTOR} drain japaneast: quota exhausted" in recent.out
    assert recent.out.index("drain japaneast") < recent.out.index("recent: westeurope")  # newest first

    only = env.run("history", "--kind", "transition", "--json").json()
    assert [e["summary"] for e in only] == ["recent: westeurope degraded", "old: eastus unhealthy"]
    assert env.run("history", "--kind", "lease").out.strip() == "no events"
    by_region = env.run("history", "--region", "japaneast", "--json").json()
    assert [e["kind"] for e in by_region] == ["override"]


def test_history_rejects_a_since_that_is_neither_a_duration_nor_a_time(env: CliEnv) -> None:
    r = env.run("history", "--since", "yesterday")
    assert r.code == EXIT_USAGE
    assert "'yesterday' is neither a duration" in one_error_line(r)
    iso = env.run("history", "--since", (now() - timedelta(minutes=5)).isoformat())
    assert iso.code == EXIT_OK


# ---------------------------------------------------------------- plan and apply


def test_plan_reads_azure_with_gets_only_and_records_nothing(env: CliEnv) -> None:
    nothing = env.run("plan", "--json")
    assert nothing.code == EXIT_OK, nothing.err
    assert nothing.json()["changes"] == []

    assert env.run("drain", "eastus", "--reason", "region is down", "--yes").code == EXIT_OK
    env.arm.clear_log()
    r = env.run("plan", "--json")
    assert r.code == EXIT_OK, r.err
    plan = r.json()
    assert {(c["target"], c["region"], c["field"], c["actual"], c["desired"], c["manual"]) for c in plan["changes"]} == {
        (t, "eastus", "enabled", True, False, True) for t in ("tm-weighted", "tm-priority", "afd-prod", "apim-pool")
    }
    assert len(plan["checksum"]) >= 8
    assert env.arm_methods() == {"GET"}  # read the actual state of every target, wrote nothing
    paths = " ".join(e.path for e in env.arm.request_log)
    assert "llm-weighted" in paths and "llm-priority" in paths and "aoai-origins" in paths and "aoai-pool" in paths
    assert env.store.plans() == [] and env.store.changes() == []

    text = env.run("plan")
    assert f"Plan {plan['checksum']}: 4 change(s)" in text.out
    assert "tm-weighted/aoai-eastus (eastus): enabled True -> False" in text.out


def test_apply_with_a_checksum_that_is_not_the_plan_is_refused_and_writes_nothing(env: CliEnv) -> None:
    assert env.run("drain", "eastus", "--reason", "region is down", "--yes").code == EXIT_OK
    reviewed = env.run("plan", "--json").json()["checksum"]
    env.arm.clear_log()
    r = env.run("apply", "--checksum", "0000000000000000")
    assert r.code == EXIT_REFUSED
    assert f"refused: the plan is now {reviewed}, not the reviewed 0000000000000000" in r.out
    assert env.arm_writes() == []
    assert env.store.changes() == []
    assert any("not the reviewed 0000000000000000" in e.summary for e in env.store.events(kinds=["plan"]))


def test_apply_with_the_reviewed_checksum_writes_the_plan_and_converges(env: CliEnv) -> None:
    assert env.run("drain", "eastus", "--reason", "region is down", "--yes").code == EXIT_OK
    checksum = env.run("plan", "--json").json()["checksum"]
    env.arm.clear_log()

    r = env.run("apply", "--checksum", checksum, "--json")
    assert r.code == EXIT_OK, (r.out, r.err)
    d = r.json()
    assert d["refused"] is None and d["failed"] == [] and d["dry_run"] is False
    assert {(c["target"], c["region"], c["desired"]) for c in d["applied"]} == {
        (t, "eastus", False) for t in ("tm-weighted", "tm-priority", "afd-prod", "apim-pool")
    }
    writes = env.arm_writes()
    assert writes and all(200 <= w.status < 300 for w in writes)
    assert {w.method for w in writes} <= {"PUT", "PATCH"}
    pool = [w for w in writes if w.path.endswith("/backends/aoai-pool")]
    assert all("eastus" in w.path for w in writes if w not in pool)  # only the drained region's endpoints were touched
    (pool_patch,) = pool  # the APIM pool: one PATCH of its member list, without eastus
    assert [m["id"].rsplit("/", 1)[-1] for m in pool_patch.body["properties"]["pool"]["services"]] == ["aoai-westeurope", "aoai-japaneast"]
    applied = env.store.changes(status=ChangeStatus.APPLIED)
    assert len(applied) == 4 and all(c.fencing_token is not None for c in applied)
    lease = env.store.lease(LeaseName.LEADER)
    assert lease is not None and lease.holder is None  # the CLI gave the lease back

    again = env.run("plan", "--json").json()
    assert again["changes"] == []  # Azure now says what was desired
    assert env.run("apply", "--checksum", checksum).code == EXIT_REFUSED  # that plan is done: its checksum is stale


def test_apply_is_refused_while_a_worker_holds_the_lease(env: CliEnv) -> None:
    assert env.run("drain", "eastus", "--reason", "region is down", "--yes").code == EXIT_OK
    assert env.store.try_acquire_lease(LeaseName.LEADER, "worker-a:42", 60.0, now()) is not None
    env.arm.clear_log()
    r = env.run("apply")
    assert r.code == EXIT_REFUSED
    line = one_error_line(r)
    assert "a worker holds the lease (worker-a:42)" in line
    assert env.arm.request_log == []
    assert env.store.changes() == []
    lease = env.store.lease(LeaseName.LEADER)
    assert lease is not None and lease.holder == "worker-a:42"


def test_apply_dry_run_records_the_plan_and_writes_nothing_to_azure(env: CliEnv) -> None:
    assert env.run("drain", "westeurope", "--reason", "region is down", "--yes").code == EXIT_OK
    env.arm.clear_log()
    r = env.run("apply", "--dry-run", "--json")
    assert r.code == EXIT_OK, r.err
    d = r.json()
    assert d["dry_run"] is True and d["applied"] == [] and len(d["plan"]["changes"]) == 4
    assert env.arm_writes() == []


# ---------------------------------------------------------------- drain and restore


def test_drain_stores_an_override_and_an_audit_event(env: CliEnv) -> None:
    r = env.run("drain", "eastus", "--reason", "region is down", "--for", "30m", "--yes")
    assert r.code == EXIT_OK, r.err
    assert r.out.startswith(
        "done: the worker will now disable eastus in tm-weighted, tm-priority, afd-prod and apim-pool; 2 of 3 stay serving"
    )
    (o,) = env.store.active_overrides(now())
    assert (o.kind, o.region, o.target, o.who, o.why, o.forced) == (OverrideKind.DRAIN, "eastus", None, ACTOR, "region is down", False)
    assert o.expires_at is not None and timedelta(minutes=29) < o.expires_at - now() <= timedelta(minutes=30)
    (event,) = env.store.events(kinds=["override"])
    assert (event.actor, event.region, event.severity) == (ACTOR, "eastus", "warning")
    assert event.data["action"] == "drain" and event.data["via"] == "cli" and event.data["override_ids"] == [o.id]
    assert env.arm.request_log == []  # the worker applies overrides, not the CLI

    twice = env.run("drain", "eastus", "--reason", "region is down", "--yes")
    assert twice.code == EXIT_REFUSED and "already drained" in one_error_line(twice)


def test_drain_of_an_unknown_region_or_target_exits_2_naming_it(env: CliEnv) -> None:
    r = env.run("drain", "mars", "--reason", "region is down", "--yes")
    assert r.code == EXIT_USAGE
    assert "region: 'mars' is not a configured region (eastus, westeurope, japaneast)" in one_error_line(r)
    t = env.run("drain", "eastus", "--target", "tm-nope", "--reason", "region is down", "--yes")
    assert t.code == EXIT_USAGE and "target: 'tm-nope' is not a configured target" in one_error_line(t)
    short = env.run("drain", "eastus", "--reason", "x", "--yes")
    assert short.code == EXIT_USAGE and "reason" in one_error_line(short)
    assert env.store.active_overrides(now()) == [] and env.store.events() == []


def test_drain_without_a_reason_is_a_usage_error_but_its_preview_needs_none(env: CliEnv) -> None:
    r = env.run("drain", "eastus", "--yes")
    assert r.code == EXIT_USAGE
    assert one_error_line(r).startswith("error: --reason: required")
    assert env.store.active_overrides(now()) == []
    preview = env.run("drain", "eastus", "--preview")
    assert preview.code == EXIT_OK and "disable eastus" in preview.out


def test_a_drain_refused_by_min_serving_exits_3_with_the_reason(strict_env: CliEnv) -> None:
    env = strict_env
    env.seed_actual("tm-weighted", now(), disabled=["eastus"])  # Azure: eastus already out of tm-weighted
    r = env.run("drain", "westeurope", "--target", "tm-weighted", "--reason", "region is slow", "--yes")
    assert r.code == EXIT_REFUSED
    line = one_error_line(r)
    assert line.startswith("error: refused: ") and "refused: refused" not in line
    assert "tm-weighted" in line and "min_serving is 2" in line
    assert "an admin may force it" in line
    assert env.store.active_overrides(now()) == [] and env.store.events() == []

    preview = env.run("drain", "westeurope", "--target", "tm-weighted", "--reason", "region is slow", "--preview", "--json")
    assert preview.code == EXIT_REFUSED
    p = preview.json()
    assert p["allowed"] is False and p["forceable"] is True and "min_serving is 2" in p["refusal"]


def test_a_forced_drain_needs_the_region_name_typed_and_is_audited_as_critical(strict_env: CliEnv) -> None:
    env = strict_env
    env.seed_actual("tm-weighted", now(), disabled=["eastus"])
    args = ("drain", "westeurope", "--target", "tm-weighted", "--reason", "region is slow", "--force", "--yes")
    no_confirm = env.run(*args)
    assert no_confirm.code == EXIT_USAGE and "confirm: None must be the region name 'westeurope'" in one_error_line(no_confirm)
    wrong = env.run(*args, "--confirm", "eastus")
    assert wrong.code == EXIT_USAGE and "must be the region name 'westeurope'" in one_error_line(wrong)
    assert env.store.active_overrides(now()) == []

    forced = env.run(*args, "--confirm", "westeurope")
    assert forced.code == EXIT_OK, forced.err
    assert forced.out.rstrip().endswith("(forced)")
    (o,) = env.store.active_overrides(now())
    assert o.forced is True and o.region == "westeurope" and o.target == "tm-weighted"
    (event,) = env.store.events(kinds=["override"])
    assert event.severity == "critical" and "FORCED" in event.summary and "min_serving is 2" in event.data["refusal_overridden"]


def test_drain_preview_changes_nothing(env: CliEnv) -> None:
    r = env.run("drain", "japaneast", "--reason", "quota exhausted", "--preview", "--json")
    assert r.code == EXIT_OK, r.err
    p = r.json()
    assert p["allowed"] is True and p["refusal"] is None
    assert {i["target"]: (i["serving_before"], i["serving_after"]) for i in p["impacts"]} == {
        t: (3, 2) for t in ("tm-weighted", "tm-priority", "afd-prod", "apim-pool")
    }
    assert env.store.active_overrides(now()) == [] and env.store.events() == []


def test_restore_lifts_the_drain_and_is_refused_when_nothing_is_drained(env: CliEnv) -> None:
    nothing = env.run("restore", "westeurope", "--reason", "back to normal", "--yes")
    assert nothing.code == EXIT_REFUSED and "westeurope has no active drain" in one_error_line(nothing)

    assert env.run("drain", "westeurope", "--target", "tm-weighted", "--reason", "region is down", "--yes").code == EXIT_OK
    r = env.run("restore", "westeurope", "--reason", "back to normal", "--yes")
    assert r.code == EXIT_OK, r.err
    assert "westeurope returns to serving in tm-weighted" in r.out
    assert env.store.active_overrides(now()) == []
    assert [e.data["action"] for e in env.store.events(kinds=["override"])] == ["restore", "drain"]
    unknown = env.run("restore", "mars", "--reason", "back to normal", "--yes")
    assert unknown.code == EXIT_USAGE and "'mars'" in one_error_line(unknown)


# ---------------------------------------------------------------- failover and pin


def test_failover_sends_a_priority_target_to_the_region(env: CliEnv) -> None:
    r = env.run("failover", "tm-priority", "--to", "westeurope", "--reason", "eastus is flaky", "--json", "--yes")
    assert r.code == EXIT_OK, r.err
    assert r.json()["preview"]["sentence"].startswith("tm-priority's traffic goes to westeurope")
    (o,) = env.store.active_overrides(now())
    assert (o.kind, o.target, o.region) == (OverrideKind.FAILOVER, "tm-priority", "westeurope")
    plan = env.run("plan", "--json").json()
    assert plan["changes"] and {c["target"] for c in plan["changes"]} == {"tm-priority"}


def test_failover_of_a_weighted_target_or_to_a_foreign_region_is_invalid(env: CliEnv) -> None:
    weighted = env.run("failover", "tm-weighted", "--to", "westeurope", "--reason", "eastus is flaky", "--yes")
    assert weighted.code == EXIT_USAGE
    assert "'tm-weighted' routes by weight: fail over only applies to priority targets" in one_error_line(weighted)
    foreign = env.run("failover", "tm-priority", "--to", "mars", "--reason", "eastus is flaky", "--yes")
    assert foreign.code == EXIT_USAGE and "'mars'" in one_error_line(foreign)
    assert env.store.active_overrides(now()) == []


def test_failover_to_an_unhealthy_region_is_refused(env: CliEnv) -> None:
    env.seed_health(now(), westeurope=(HealthStateName.UNHEALTHY, 0.0, "3 consecutive connect errors"))
    r = env.run("failover", "tm-priority", "--to", "westeurope", "--reason", "eastus is flaky", "--yes")
    assert r.code == EXIT_REFUSED
    assert "westeurope is unhealthy (3 consecutive connect errors)" in one_error_line(r)
    assert env.store.active_overrides(now()) == []


def test_pin_stores_a_weight_and_rejects_values_out_of_range(env: CliEnv) -> None:
    for weight in ("1001", "0"):
        r = env.run("pin", "tm-weighted", "eastus", "--weight", weight, "--reason", "hold it steady", "--yes")
        assert r.code == EXIT_USAGE
        assert f"weight: {weight} is not between 1 and 1000 for a traffic_manager target" in one_error_line(r)
    neither = env.run("pin", "tm-weighted", "eastus", "--reason", "hold it steady", "--yes")
    assert neither.code == EXIT_USAGE and "--weight or --priority" in one_error_line(neither)
    priority_on_weighted = env.run("pin", "tm-weighted", "eastus", "--priority", "2", "--reason", "hold it steady", "--yes")
    assert priority_on_weighted.code == EXIT_USAGE and "routes by weight" in one_error_line(priority_on_weighted)
    assert env.store.active_overrides(now()) == []

    ok = env.run("pin", "tm-weighted", "eastus", "--weight", "100", "--reason", "hold it steady", "--yes")
    assert ok.code == EXIT_OK, ok.err
    assert "set eastus's weight to 100 (now 500) in tm-weighted" in ok.out
    (o,) = env.store.active_overrides(now())
    assert (o.kind, o.target, o.region, o.weight, o.priority) == (OverrideKind.PIN, "tm-weighted", "eastus", 100, None)


# ---------------------------------------------------------------- freeze and unfreeze


def test_freeze_for_a_while_then_unfreeze(env: CliEnv) -> None:
    r = env.run("freeze", "--target", "tm-weighted", "--for", "30m", "--reason", "change window", "--yes")
    assert r.code == EXIT_OK, r.err
    assert "done: froze automation for tm-weighted" in r.out
    (o,) = env.store.active_overrides(now())
    assert (o.kind, o.target) == (OverrideKind.FREEZE, "tm-weighted") and o.expires_at is not None
    assert env.run("status", "--json").json()["frozen"] == ["tm-weighted"]
    again = env.run("freeze", "--target", "tm-weighted", "--reason", "change window", "--yes")
    assert again.code == EXIT_REFUSED and "already frozen" in one_error_line(again)

    lifted = env.run("unfreeze", "--target", "tm-weighted", "--reason", "window over", "--yes")
    assert lifted.code == EXIT_OK, lifted.err
    assert env.store.active_overrides(now()) == []
    assert env.run("status", "--json").json()["frozen"] == []
    not_frozen = env.run("unfreeze", "--target", "tm-weighted", "--reason", "window over", "--yes")
    assert not_frozen.code == EXIT_REFUSED
    assert one_error_line(not_frozen) == "error: refused: automation is not frozen for tm-weighted"


def test_freeze_everything_and_bad_durations(env: CliEnv) -> None:
    bad = env.run("freeze", "--for", "soon", "--reason", "change window", "--yes")
    assert bad.code == EXIT_USAGE and "--for: 'soon' is not a duration" in one_error_line(bad)
    too_long = env.run("freeze", "--for", "90d", "--reason", "change window", "--yes")
    assert too_long.code == EXIT_USAGE and "at most 30d" in one_error_line(too_long)
    unknown = env.run("freeze", "--target", "tm-nope", "--reason", "change window", "--yes")
    assert unknown.code == EXIT_USAGE and "'tm-nope'" in one_error_line(unknown)
    everything = env.run("freeze", "--reason", "change window", "--yes")
    assert everything.code == EXIT_OK and "automation frozen: all targets" in env.run("status").out


def test_a_drain_on_a_frozen_target_is_a_manual_override_and_still_applies(env: CliEnv) -> None:
    """actions.py: a freeze stops automation only; manual overrides still apply while frozen."""
    freeze = env.run("freeze", "--target", "tm-weighted", "--reason", "change window", "--json", "--yes")
    assert freeze.code == EXIT_OK
    assert "manual overrides (drain, pin, failover) still apply while frozen" in freeze.json()["preview"]["notes"]

    r = env.run("drain", "eastus", "--target", "tm-weighted", "--reason", "region is down", "--yes")
    assert r.code == EXIT_OK, r.err
    kinds = sorted(o.kind.value for o in env.store.active_overrides(now()))
    assert kinds == ["drain", "freeze"]
    plan = env.run("plan", "--json").json()
    assert [(c["target"], c["region"], c["desired"], c["manual"]) for c in plan["changes"]] == [("tm-weighted", "eastus", False, True)]
    applied = env.run("apply", "--checksum", plan["checksum"], "--json")
    assert applied.code == EXIT_OK, applied.err
    assert [(c["target"], c["region"]) for c in applied.json()["applied"]] == [("tm-weighted", "eastus")]
    assert env.arm_writes() and all("llm-weighted" in w.path for w in env.arm_writes())


# ---------------------------------------------------------------- users and tokens


def test_user_add_reads_the_password_from_stdin_and_it_logs_in(env: CliEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    password = "correct horse battery staple"
    monkeypatch.setattr(sys, "stdin", io.StringIO(password + "\n"))
    r = env.run("user", "add", "otto", "--role", "operator", "--password-stdin")
    assert r.code == EXIT_OK, r.err
    assert r.out.strip() == "user otto (operator) saved"
    assert password not in r.out + r.err
    principal = users.authenticate(env.store, "otto", password)
    assert principal is not None and principal.role == "operator"
    assert users.authenticate(env.store, "otto", "wrong password!") is None

    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    short = env.run("user", "add", "vic", "--role", "viewer", "--password-stdin")
    assert short.code == EXIT_USAGE and "password: must be at least 10 characters" in one_error_line(short)
    monkeypatch.setattr(sys, "stdin", io.StringIO(password + "\n"))
    bad_name = env.run("user", "add", "bad name!", "--role", "viewer", "--password-stdin")
    assert bad_name.code == EXIT_USAGE and "'bad name!'" in one_error_line(bad_name)
    assert env.store.user("vic") is None


def test_token_create_json_gives_a_token_that_authenticates(env: CliEnv) -> None:
    r = env.run("token", "create", "--name", "ci-bot", "--role", "operator", "--json")
    assert r.code == EXIT_OK, r.err
    d = r.json()
    assert (d["name"], d["role"]) == ("ci-bot", "operator")
    principal = users.authenticate_token(env.store, d["token"], now())
    assert principal is not None and (principal.name, principal.role, principal.via) == ("token:ci-bot", "operator", "token")
    assert users.authenticate_token(env.store, d["token"] + "x", now()) is None

    text = env.run("token", "create", "--name", "ci-reader", "--role", "viewer")
    assert text.code == EXIT_OK and "shown once" in text.out
    token = text.out.strip().splitlines()[-1]
    principal = users.authenticate_token(env.store, token, now())
    assert principal is not None and principal.role == "viewer"
    bad = env.run("token", "create", "--name", "no spaces", "--role", "viewer")
    assert bad.code == EXIT_USAGE and "'no spaces'" in one_error_line(bad)


# ---------------------------------------------------------------- probe


@pytest.fixture
def sim_env(tmp_path: Path, arm: FakeArm, capsys: pytest.CaptureFixture[str], template: Path) -> Iterator[tuple[CliEnv, LLMSimulator]]:
    regions = default_regions(3, 2, ttft_ms=5, per_token_ms=1, jitter_ms=0)
    with LLMSimulator(regions, seed=3, admin_port=None) as sim:
        e = make_env(tmp_path, arm, capsys, region_urls={r.name: sim.base_url(r.name) for r in regions}, template=template)
        yield e, sim
        e.store.close()


def test_probe_runs_one_round_against_every_simulated_endpoint(sim_env: tuple[CliEnv, LLMSimulator]) -> None:
    env, _sim = sim_env
    r = env.run("probe")
    assert r.code == EXIT_OK, (r.out, r.err)
    assert "6 endpoint(s) from vantage demo: 6 ok" in r.out
    for region in REGIONS:
        assert f"{region}/gpt-4o " in r.out and f"{region}/gpt-4o-mini " in r.out

    one = env.run("probe", "--region", "westeurope", "--json")
    assert one.code == EXIT_OK
    results = one.json()
    assert [(x["endpoint_id"], x["outcome"], x["status_code"]) for x in results] == [
        ("westeurope/gpt-4o", "ok", 200),
        ("westeurope/gpt-4o-mini", "ok", 200),
    ]
    assert env.store.latest_results() == []  # a manual probe round is printed, not stored


def test_probe_exits_1_when_a_region_is_down(sim_env: tuple[CliEnv, LLMSimulator]) -> None:
    env, sim = sim_env
    sim.set_fault("japaneast", "down")
    r = env.run("probe", "--json")
    assert r.code == EXIT_FAILED
    outcomes = {x["endpoint_id"]: x["outcome"] for x in r.json()}
    assert {k for k, v in outcomes.items() if v != "ok"} == {"japaneast/gpt-4o", "japaneast/gpt-4o-mini"}
    assert outcomes["japaneast/gpt-4o"] == "connect_error"


def test_probe_of_an_unknown_region_exits_2(env: CliEnv) -> None:
    r = env.run("probe", "--region", "mars")
    assert r.code == EXIT_USAGE
    assert one_error_line(r) == "error: --region: no region named 'mars' (one of eastus, westeurope, japaneast)"


# ---------------------------------------------------------------- replay


def test_replay_of_the_built_in_region_outage_drains_and_restores_the_first_region(env: CliEnv) -> None:
    r = env.run("replay", "region-outage", "--json")
    assert r.code == EXIT_OK, r.err
    d = r.json()
    assert d["scenario"] == "region-outage" and d["summary"]["flaps"] == 0 and d["summary"]["false_changes"] == 0
    drains = {c["target"] for c in d["changes"] if c["region"] == "eastus" and c["field"] == "enabled" and c["to"] is False}
    assert drains == {"tm-weighted", "tm-priority", "afd-prod", "apim-pool"}
    assert all(c["at"] >= 15 for c in d["changes"])  # nothing before the fault at 15 s
    assert all(state["eastus"]["enabled"] for state in d["final"].values())
    assert env.arm.request_log == []  # simulated time: Azure is never touched

    text = env.run("replay", "region-outage")
    assert text.code == EXIT_OK and "eastus" in text.out


def test_replay_of_a_bad_timeline_exits_2_naming_the_field(env: CliEnv) -> None:
    bad = env.directory / "bad-timeline.yaml"
    bad.write_text("duration: 60s\nevents:\n  - {at: 5s, region: eastus, fault: melt}\n")
    r = env.run("replay", str(bad))
    assert r.code == EXIT_USAGE
    assert "Traceback" not in r.err
    assert "events[0].fault: unknown kind 'melt'" in r.err

    region = env.directory / "bad-region.yaml"
    region.write_text("duration: 60s\nevents:\n  - {at: 5s, region: mars, fault: down}\n")
    r2 = env.run("replay", str(region))
    assert r2.code == EXIT_USAGE and "events[0].region" in r2.err and "mars" in r2.err

    unknown = env.run("replay", "no-such-scenario")
    assert unknown.code == EXIT_USAGE and "no built-in scenario or file named 'no-such-scenario'" in unknown.err
    missing = env.run("replay")
    assert missing.code == EXIT_USAGE and "replay needs a TIMELINE" in one_error_line(missing)


def test_replay_from_the_database_needs_a_time_range_with_results(env: CliEnv) -> None:
    no_since = env.run("replay", "--from-db")
    assert no_since.code == EXIT_USAGE and "--from-db needs --since" in one_error_line(no_since)
    empty = env.run("replay", "--from-db", "--since", "1h")
    assert empty.code == EXIT_FAILED and "no stored probe results" in one_error_line(empty)


# ---------------------------------------------------------------- sim and demo (in-process)


@pytest.fixture
def keep_signal_handlers() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.mark.usefixtures("keep_signal_handlers")
def test_sim_llm_serves_simulated_regions_for_its_duration(env: CliEnv) -> None:
    r = env.run_raw("sim", "llm", "--regions", "2", "--deployments", "1", "--duration", "0.2", "--zero-latency")
    assert r.code == EXIT_OK, r.err
    ready = json.loads(r.out.strip().splitlines()[0])
    assert set(ready["regions"]) == {"eastus", "westeurope"}
    assert all(u.startswith("http://127.0.0.1:") for u in ready["regions"].values())
    bad = env.run_raw("sim", "llm", "--timeline", str(env.directory / "missing.yaml"))
    assert bad.code == EXIT_USAGE and bad.err.startswith("error:")


@pytest.mark.usefixtures("keep_signal_handlers")
def test_demo_with_an_unknown_scenario_exits_2_naming_it(env: CliEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGIONGUARD_SECRET_KEY", "test-only-secret")
    r = env.run_raw("demo", "--scenario", "no-such-scenario", "--port", "0", "--duration", "1")
    assert r.code == EXIT_USAGE
    assert "no built-in scenario or file named 'no-such-scenario'" in r.err
    assert "Traceback" not in r.err


# ---------------------------------------------------------------- real processes


def _cli(*argv: str) -> subprocess.Popen[str]:
    environ = {**os.environ, "REGIONGUARD_USER": USER, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "controlplane.cli", *argv], cwd=ROOT, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_errors_from_real_processes_have_real_exit_codes_and_no_traceback(strict_env: CliEnv) -> None:
    env = strict_env
    env.seed_actual("tm-weighted", now(), disabled=["eastus"])
    bad_db = env.other_config("pg.yaml", database={"url": UNREACHABLE_PG})
    bad_cfg = write_config(env.directory / "broken.yaml", {"regions": "not a list"})
    cases = [
        (("status", "--config", str(bad_db)), EXIT_DB, "error: database postgresql://rguser:***@127.0.0.1:1/none unreachable"),
        (
            ("drain", "westeurope", "--target", "tm-weighted", "--reason", "region is slow", "--config", str(env.config)),
            EXIT_REFUSED,
            "error: refused: ",
        ),
        (
            ("drain", "mars", "--reason", "region is down", "--config", str(env.config)),
            EXIT_USAGE,
            "error: region: 'mars' is not a configured region",
        ),
        (("history", "--since", "yesterday", "--config", str(env.config)), EXIT_USAGE, "error: --since/--until"),
        (("status", "--config", str(bad_cfg)), EXIT_USAGE, "invalid configuration"),
    ]
    procs = [(_cli(*argv), code, first) for argv, code, first in cases]  # side by side: one interpreter start-up of wall time
    for proc, code, first in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == code, (proc.args, out, err)
        assert "Traceback" not in err and "Traceback" not in out
        assert first in err.splitlines()[0], err
        assert "s3cret-pw" not in err


class _Lines:
    """A child's stdout, line by line, read on a thread; wait_for has a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float = PROCESS_START_S) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r} from {self.proc.args}: {self.seen}")

    def rest(self, timeout: float = 5.0) -> str:
        """Everything printed after what wait_for consumed, up to the end of the stream."""
        lines = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            lines.append(line)
        return "\n".join(lines)


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.read().decode()


def _stop(proc: subprocess.Popen[str], timeout: float = 10.0) -> tuple[int, str]:
    """SIGTERM, then the exit code and stderr (stdout belongs to the _Lines pump)."""
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"{proc.args} did not stop within {timeout} s of SIGTERM") from None
    assert proc.stderr is not None
    return code, proc.stderr.read()


def test_run_web_and_sim_arm_serve_then_stop_cleanly_on_sigterm(env: CliEnv) -> None:
    config = str(env.config)
    worker = _cli("run", "--config", config, "--dry-run", "--holder", "cli-test-worker", "--health-port", "0", "--lease-ttl", "5")
    web = _cli("web", "--config", config, "--port", "0")
    sim_arm = _cli("sim", "arm", "--config", config)
    procs = [worker, web, sim_arm]
    try:
        worker_out, web_out, arm_out = _Lines(worker), _Lines(web), _Lines(sim_arm)
        worker_out.wait_for("regionguard worker cli-test-worker running (dry run, 4 target(s))")
        health_url = next(line for line in worker_out.seen if line.startswith("health on http://")).split(" on ", 1)[1]
        web_url = web_out.wait_for("regionguard dashboard on http://").split(" on ", 1)[1]
        arm_url = arm_out.wait_for("fake ARM: https://").split(": ", 1)[1]
        assert any(line.startswith("seeded 4 resource(s)") for line in arm_out.seen)

        assert not web_url.endswith(":0/")  # the port it really listens on, not the one asked for
        assert _get(web_url + "healthz")[0] == 200
        assert _get(health_url + "healthz")[0] == 200
        assert arm_url.startswith("https://127.0.0.1:")
        # "running" is printed once the worker's jobs are scheduled, not once its first lease tick ran:
        # the lease events asserted below need it to have led before it is stopped
        wait_until(
            lambda: (lease := env.store.lease(LeaseName.LEADER)) and lease.holder == "cli-test-worker",
            PROCESS_START_S,
            "the worker to take the lease",
        )

        for proc, out, farewell in (
            (worker, worker_out, "regionguard worker stopped"),
            (web, web_out, "regionguard dashboard stopped"),
            (sim_arm, arm_out, ""),
        ):
            code, err = _stop(proc)
            assert code == EXIT_OK, (proc.args, err[-2000:])
            assert farewell in out.rest()
            assert "Traceback" not in err
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    lease_events = env.store.events(kinds=[EventKind.LEASE])
    assert {e.actor for e in lease_events} == {"worker:cli-test-worker"}  # it led (dry run), then gave the lease back
    lease = env.store.lease(LeaseName.LEADER)
    assert lease is not None and lease.holder is None


class _Hook:
    """A webhook receiver on 127.0.0.1 that records every POST body."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.bodies: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with hook.cond:
                    hook.bodies.append(json.loads(body))
                    hook.cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for body in self.bodies:
                    if predicate(body):
                        return body
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no webhook POST matched within {timeout} s: {self.bodies}")
                self.cond.wait(left)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_run_with_a_notification_channel_starts_notifies_and_stops_on_sigterm(env: CliEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    hook = _Hook()
    notifications = {"group_wait": 0, "channels": [{"kind": "webhook", "name": "audit-sink", "url_env": "TEST_RUN_HOOK_URL"}]}
    config = str(env.other_config("notify.yaml", notifications=notifications))
    monkeypatch.setenv("TEST_RUN_HOOK_URL", hook.url)
    worker = _cli("run", "--config", config, "--dry-run", "--holder", "notify-test-worker", "--lease-ttl", "5")
    try:
        out = _Lines(worker)
        try:
            out.wait_for("regionguard worker notify-test-worker running (dry run, 4 target(s))")
        except AssertionError:
            worker.kill()
            worker.wait()
            assert worker.stderr is not None
            raise AssertionError(f"the worker did not start: {worker.stderr.read()[-2000:]}") from None
        # the worker's relay sends the audit event of taking the lease to the channel
        body = hook.wait_for(lambda b: any(e.get("kind") == "lease" for e in b.get("events", [])))
        assert body["events"]
        code, err = _stop(worker)
        assert code == EXIT_OK, err[-2000:]
        assert "regionguard worker stopped" in out.rest()
        assert "Traceback" not in err
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        hook.close()


# ---------------------------------------------------------------- nothing changes without a confirmed preview


class _Terminal(io.StringIO):
    """Standard input that says it is a terminal, with the operator's answer typed in."""

    def isatty(self) -> bool:
        return True


def test_an_action_without_a_terminal_needs_yes_and_changes_nothing(env: CliEnv) -> None:
    r = env.run("drain", "japaneast", "--reason", "quota exhausted")
    assert r.code == EXIT_USAGE and "--yes" in one_error_line(r)
    assert env.store.active_overrides(now()) == [] and env.store.events() == []


def test_the_prompt_shows_the_preview_and_only_yes_proceeds(env: CliEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", _Terminal("n\n"))
    no = env.run("drain", "japaneast", "--reason", "quota exhausted")
    assert no.code == EXIT_REFUSED and "disable japaneast" in no.out and "Proceed? [y/N]" in no.out
    assert env.store.active_overrides(now()) == []
    monkeypatch.setattr(sys, "stdin", _Terminal("y\n"))
    yes = env.run("drain", "japaneast", "--reason", "quota exhausted")
    assert yes.code == EXIT_OK, yes.err
    assert [o.region for o in env.store.active_overrides(now())] == ["japaneast"]


def test_a_digest_from_an_earlier_preview_confirms_it_unless_the_situation_changed(env: CliEnv) -> None:
    first = env.run("drain", "japaneast", "--reason", "quota exhausted", "--preview", "--json").json()["digest"]
    stale = env.run("drain", "westeurope", "--reason", "region is down", "--preview", "--json").json()["digest"]
    assert env.run("drain", "japaneast", "--reason", "quota exhausted", "--digest", first).code == EXIT_OK
    r = env.run("drain", "westeurope", "--reason", "region is down", "--digest", stale)
    assert r.code == EXIT_REFUSED and "changed since the preview" in one_error_line(r)
    assert [o.region for o in env.store.active_overrides(now())] == ["japaneast"]
