"""The store on SQLite and on a real PostgreSQL: migrations, repositories, the lease."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, event, inspect, text
from sqlalchemy.exc import IntegrityError

from controlplane.domain import (
    AuditEvent,
    Change,
    ChangeOrigin,
    ChangeStatus,
    EndpointSetting,
    EventKind,
    Field,
    FlagKind,
    HealthStateName,
    LeaseName,
    Outcome,
    Override,
    OverrideKind,
    Plan,
    ProbeResult,
    TargetState,
    Transition,
    WriteStatus,
)
from controlplane.store import DatabaseUnavailable, Panic, Store, db, open_store
from controlplane.store.models import Base
from controlplane.store.records import config_problems_of
from tests.waiting import wait_until

T0 = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return request.getfixturevalue(name)


def test_migrations_round_trip_and_match_the_models(url: str) -> None:
    db.upgrade(url)
    assert db.current_revision(url) == db.head_revision()
    db.downgrade(url, "base")
    engine = db.make_engine(url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    db.upgrade(url)
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], f"models and migrations disagree: {diff}"
        assert {"probe_result", "override", "leader_lease", "audit_event"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


ROLLUP_INSERT = text(
    "INSERT INTO probe_rollup (endpoint_id, vantage, minute_at, region, count, ok, throttled, failed, tokens)"
    " VALUES (:eid, 'eu', :at, 'eastus', 6, 6, 0, 0, 0)"
)


@pytest.mark.postgres
def test_migration_0009_builds_its_index_while_rollups_are_written(postgres_url: str) -> None:
    """The rollup index is built CONCURRENTLY: at 90 days the table is tens of millions of rows, and a plain
    CREATE INDEX holds a SHARE lock for the whole build, so the leader's rollup writes would queue behind it.
    Here a writer's transaction is still open when the upgrade starts: both builds wait for it, but only a plain
    one makes the next writer wait too (it queues behind the build's lock request; lock_timeout says so)."""
    db.upgrade(postgres_url, "0008")
    engine = db.make_engine(postgres_url, idle_in_transaction_s=60)
    failed: list[BaseException] = []

    def upgrade() -> None:
        try:
            db.upgrade(postgres_url)
        except BaseException as exc:  # reported by the test, not lost with the thread
            failed.append(exc)

    upgrading = threading.Thread(target=upgrade)
    try:
        with engine.connect() as open_writer:
            open_writer.execute(ROLLUP_INSERT, {"eid": "eastus/a", "at": T0})  # not committed yet
            upgrading.start()

            def building() -> bool:
                with engine.connect() as conn:
                    return bool(
                        conn.execute(
                            text(
                                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                " AND query LIKE 'CREATE INDEX%ix_probe_rollup_minute_at%' AND wait_event_type = 'Lock'"
                            )
                        ).scalar_one()
                    )

            wait_until(lambda: failed or building(), 30, "the index build to wait for the open writer")
            assert not failed, failed
            with engine.connect() as writer:
                writer.execute(text("SET lock_timeout = '2s'"))
                writer.execute(ROLLUP_INSERT, {"eid": "eastus/b", "at": T0})
                writer.commit()
            open_writer.commit()
        upgrading.join(timeout=60)
        assert not upgrading.is_alive() and not failed, failed
        assert db.current_revision(postgres_url) == db.head_revision()
        with engine.connect() as conn:
            valid = conn.execute(
                text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('ix_probe_rollup_minute_at')")
            ).scalar()
            assert valid is True
            assert conn.execute(text("SELECT count(*) FROM probe_rollup")).scalar_one() == 2
    finally:
        upgrading.join(timeout=60)
        engine.dispose()


@pytest.mark.postgres
def test_migration_0009_rebuilds_an_index_a_failed_concurrent_build_left_invalid(postgres_url: str) -> None:
    """A concurrent build that fails leaves its index behind, marked invalid and never used: the upgrade that
    runs again builds it anew instead of taking it for done. (A unique build over two rows of one minute fails so.)"""
    db.upgrade(postgres_url, "0008")
    engine = db.make_engine(postgres_url).execution_options(isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for eid in ("eastus/a", "eastus/b"):
                conn.execute(ROLLUP_INSERT, {"eid": eid, "at": T0})
            with pytest.raises(IntegrityError):
                conn.execute(text("CREATE UNIQUE INDEX CONCURRENTLY ix_probe_rollup_minute_at ON probe_rollup (minute_at)"))
        db.upgrade(postgres_url)
        with engine.connect() as conn:
            valid, unique = conn.execute(
                text("SELECT indisvalid, indisunique FROM pg_index WHERE indexrelid = to_regclass('ix_probe_rollup_minute_at')")
            ).one()
        assert (valid, unique) == (True, False)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_migrations_may_pause_longer_than_the_applications_idle_in_transaction_timeout(postgres_url: str) -> None:
    """The application's sessions lose a transaction they sit in for 5 s without a statement (a stopped process
    frees its locks then). A migration on a starved machine can pause that long between its statements; it must
    not be killed halfway for it. Each migration's version stamp, inside its transaction, reports the session's limit."""
    limits: list[int] = []

    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]  # SQLAlchemy's event signature
        if "alembic_version" in statement and statement.lstrip().upper().startswith(("INSERT", "UPDATE")):
            row = cursor.connection.execute("SELECT setting FROM pg_settings WHERE name = 'idle_in_transaction_session_timeout'")
            limits.append(int(row.fetchone()[0]))  # ms; 0 is none

    event.listen(Engine, "before_cursor_execute", record)
    try:
        db.upgrade(postgres_url)
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    assert limits, "no migration stamped its version: the test lost its subject"
    assert all(ms == 0 or ms >= 60_000 for ms in limits), f"migrations ran with idle_in_transaction_session_timeout {set(limits)} ms"


def test_migration_0004_keeps_each_recorded_change_origin(url: str) -> None:
    """change.manual became change.origin: operator changes stay manual, fail-open restores are told apart."""
    db.upgrade(url, "0003")
    engine = db.make_engine(url)
    try:
        with engine.begin() as conn:
            for i, (manual, reason) in enumerate(
                [(True, "drain by alice"), (False, "fail open: every endpoint of tm looks unhealthy"), (False, "eastus unhealthy")]
            ):
                conn.execute(
                    text(
                        "INSERT INTO change (id, created_at, target, region, endpoint, field, before, after, reason, actor, manual, status)"
                        " VALUES (:id, :at, 'tm', 'eastus', 'ep', 'enabled', 'true', 'false', :reason, 'automation', :manual, 'applied')"
                    ),
                    {"id": i + 1, "at": T0.replace(tzinfo=None) + timedelta(seconds=i), "reason": reason, "manual": manual},
                )
    finally:
        engine.dispose()
    db.upgrade(url)
    s = Store(url)
    try:
        by_reason = {c.reason: c.origin for c in s.changes()}
    finally:
        s.close()
    assert by_reason == {
        "drain by alice": ChangeOrigin.MANUAL,
        "fail open: every endpoint of tm looks unhealthy": ChangeOrigin.FAIL_OPEN,
        "eastus unhealthy": ChangeOrigin.AUTOMATION,
    }
    db.downgrade(url, "0003")  # and back: manual survives the round trip
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            manual = dict(conn.execute(text("SELECT reason, manual FROM change")).all())
    finally:
        engine.dispose()
    assert {k: bool(v) for k, v in manual.items()} == {
        "drain by alice": True,
        "fail open: every endpoint of tm looks unhealthy": False,
        "eastus unhealthy": False,
    }


def _result(i: int, outcome: Outcome = Outcome.OK, endpoint: str = "eastus/gpt-4o", vantage: str = "eu") -> ProbeResult:
    return ProbeResult(
        endpoint_id=endpoint,
        region=endpoint.split("/")[0],
        vantage=vantage,
        started_at=T0 + timedelta(seconds=10 * i),
        outcome=outcome,
        status_code=200,
        ttft_ms=100.0 + i,
        total_ms=300.0 + i,
    )


def test_results_come_back_as_domain_values_newest_n_per_endpoint_and_vantage(url: str) -> None:
    s = open_store(url, migrate=True)
    try:
        s.add_probe_results(
            [_result(i) for i in range(30)]
            + [_result(i, vantage="us") for i in range(3)]
            + [_result(i, Outcome.THROTTLED, "westeurope/gpt-4o") for i in range(4)]
        )
        latest = s.latest_results(per_endpoint=5)
        eu = [r for r in latest if r.endpoint_id == "eastus/gpt-4o" and r.vantage == "eu"]
        assert [r.ttft_ms for r in eu] == [125.0, 126.0, 127.0, 128.0, 129.0]
        assert len([r for r in latest if r.vantage == "us"]) == 3
        assert all(r.started_at.tzinfo is not None for r in latest)
        west = s.latest_results(per_endpoint=10, region="westeurope")
        assert {r.outcome for r in west} == {Outcome.THROTTLED}
        assert len(s.results_between(T0, T0 + timedelta(seconds=50), region="eastus")) == 5 + 3
        assert s.last_probe_at()["eastus"] == T0 + timedelta(seconds=290)
        assert s.last_probe_at(["westeurope", "nowhere", "eastus"]) == s.last_probe_at() and len(s.last_probe_at()) == 2
        assert s.last_probe_at([]) == {}
    finally:
        s.close()


def test_rollups_aggregate_per_minute_and_purge_respects_both_horizons(url: str) -> None:
    s = open_store(url, migrate=True)
    try:
        s.add_probe_results([_result(i, Outcome.OK if i % 3 else Outcome.THROTTLED) for i in range(12)])  # 2 minutes
        assert s.rollup(T0, T0 + timedelta(minutes=2)) == 2
        rows = s.rollups(T0)
        assert [r.count for r in rows] == [6, 6]
        assert [r.throttled for r in rows] == [2, 2]
        assert rows[0].ttft_p50_ms is not None
        raw, rolled = s.purge(raw_before=T0 + timedelta(minutes=1), rollup_before=T0)
        assert (raw, rolled) == (6, 0)
    finally:
        s.close()


def test_lease_is_exclusive_renewable_and_fenced(url: str) -> None:
    s = open_store(url, migrate=True)
    try:
        first = s.try_acquire_lease(LeaseName.LEADER, "worker-a", 10, T0)
        assert first == 1
        assert s.try_acquire_lease(LeaseName.LEADER, "worker-b", 10, T0 + timedelta(seconds=5)) is None
        assert s.try_acquire_lease(LeaseName.LEADER, "worker-a", 10, T0 + timedelta(seconds=5)) == 1  # renewal keeps the token
        assert s.holds_lease(LeaseName.LEADER, "worker-a", 1, T0 + timedelta(seconds=6))
        # worker-a stops renewing: b takes over after expiry with a larger fencing token
        taken = s.try_acquire_lease(LeaseName.LEADER, "worker-b", 10, T0 + timedelta(seconds=16))
        assert taken == 2
        assert not s.holds_lease(LeaseName.LEADER, "worker-a", 1, T0 + timedelta(seconds=16))
        assert s.try_acquire_lease(LeaseName.LEADER, "worker-a", 10, T0 + timedelta(seconds=17)) is None
        assert s.release_lease(LeaseName.LEADER, "worker-b")
        assert s.try_acquire_lease(LeaseName.LEADER, "worker-a", 10, T0 + timedelta(seconds=18)) == 3
        lease = s.lease(LeaseName.LEADER)
        assert lease is not None and (lease.holder, lease.fencing_token) == ("worker-a", 3)
        assert lease.holder_at(T0 + timedelta(seconds=27)) == "worker-a" and not lease.alive(T0 + timedelta(seconds=28))
    finally:
        s.close()


def test_overrides_expire_once_and_lifting_is_compare_and_set(store: Store) -> None:
    o = store.add_override(
        Override(
            kind=OverrideKind.DRAIN, who="alice", why="eastus 5xx", created_at=T0, region="eastus", expires_at=T0 + timedelta(minutes=30)
        )
    )
    pin = store.add_override(
        Override(kind=OverrideKind.PIN, who="bob", why="canary", created_at=T0, region="westeurope", target="tm-weighted", weight=10)
    )
    assert {x.id for x in store.active_overrides(T0)} == {o.id, pin.id}
    assert store.expire_overrides(T0 + timedelta(minutes=10)) == []
    lifted = store.expire_overrides(T0 + timedelta(minutes=31))
    assert [x.id for x in lifted] == [o.id]
    assert store.expire_overrides(T0 + timedelta(minutes=32)) == []
    assert store.lift_override(pin.id, "carol", T0 + timedelta(minutes=40)) is not None
    assert store.lift_override(pin.id, "dave", T0 + timedelta(minutes=41)) is None
    assert store.active_overrides(T0 + timedelta(minutes=42)) == []


def test_plans_changes_targets_events_and_flags_round_trip(store: Store) -> None:
    change = Change(
        target="tm-weighted",
        region="eastus",
        endpoint="aoai-eastus",
        field=Field.ENABLED,
        actual=True,
        desired=False,
        reason="eastus unhealthy",
    )
    plan_id = store.record_plan(Plan(changes=(change,)), actor="automation", now=T0, fencing_token=7)
    cid = store.record_change(change, ChangeStatus.PENDING, T0, plan_id=plan_id, fencing_token=7)
    store.finish_change(cid, ChangeStatus.FAILED, T0, error_code="BadRequest", error_message="weight out of range")
    rows = store.changes(target="tm-weighted")
    assert rows[0].status is ChangeStatus.FAILED and rows[0].before is True and rows[0].after is False and rows[0].fencing_token == 7
    assert rows[0].field is Field.ENABLED and rows[0].origin is ChangeOrigin.AUTOMATION and rows[0].change == change
    assert store.changes(status=ChangeStatus.PENDING) == []
    (recorded,) = store.plans()
    assert recorded.id == plan_id and recorded.plan == Plan(changes=(change,)) and recorded.checksum == Plan(changes=(change,)).checksum

    names = {"eastus": "aoai-eastus", "westeurope": "aoai-westeurope"}
    actual = TargetState(
        "tm-weighted",
        {"eastus": EndpointSetting(500, None, True), "westeurope": EndpointSetting(300, None, True)},
        monitor_status={"eastus": "Online"},
    )
    desired = TargetState(
        "tm-weighted",
        {"eastus": EndpointSetting(500, None, False), "westeurope": EndpointSetting(300, None, True)},
        reasons={"eastus": "down"},
    )
    store.save_target_state("tm-weighted", names, actual, desired, T0)
    store.set_applied("tm-weighted", "westeurope", EndpointSetting(300, None, True), T0)
    assert store.applied_settings("tm-weighted") == {"westeurope": EndpointSetting(300, None, True)}
    te = {r.region: r for r in store.target_endpoints("tm-weighted")}
    assert te["eastus"].actual == EndpointSetting(500, None, True) and te["eastus"].desired == EndpointSetting(500, None, False)
    assert te["eastus"].monitor_status == "Online" and te["eastus"].applied is None
    assert te["westeurope"].applied == EndpointSetting(300, None, True)
    store.set_write_status("tm-weighted", "eastus", WriteStatus.UNCONFIRMED, "read back enabled is not False")
    assert store.target_endpoints("tm-weighted")[0].write_status is WriteStatus.UNCONFIRMED

    store.add_event(
        AuditEvent(
            kind=EventKind.PANIC, at=T0, actor="automation", summary="all unhealthy", target="afd-prod", severity="critical", data={"n": 3}
        )
    )
    (event,) = store.events(kinds=[EventKind.PANIC])
    assert event.kind is EventKind.PANIC and event.data == {"n": 3}
    store.set_flag(FlagKind.PANIC, "afd-prod", {"reason": "all unhealthy", "since": T0.isoformat()}, T0)
    store.set_flag(FlagKind.DRIFT_REVERT, "tm-weighted/eastus", {"who": "alice"}, T0)
    store.set_flag(FlagKind.CONFIG_PROBLEMS, None, {"problems": ["auth_error at eastus/gpt-4o"]}, T0)
    assert store.panics() == {"afd-prod": Panic(target="afd-prod", reason="all unhealthy", since=T0, updated_at=T0)}
    assert [(f.kind, f.subject) for f in store.flags(FlagKind.DRIFT_REVERT)] == [(FlagKind.DRIFT_REVERT, "tm-weighted/eastus")]
    assert config_problems_of(store.flags(FlagKind.CONFIG_PROBLEMS)) == ["auth_error at eastus/gpt-4o"]
    store.set_flag(FlagKind.PANIC, "afd-prod", None, T0)
    assert store.panics() == {} and store.flags(FlagKind.PANIC) == []

    store.add_transitions(
        [
            Transition(
                "endpoint",
                "eastus/gpt-4o",
                HealthStateName.HEALTHY,
                HealthStateName.UNHEALTHY,
                "3 timeouts",
                T0,
                evidence=("timeout", "timeout"),
            )
        ]
    )
    assert store.transitions(region="eastus")[0].evidence == ("timeout", "timeout")


def test_a_store_that_is_not_migrated_says_how_to_fix_it(sqlite_url: str) -> None:
    s = Store(sqlite_url)
    try:
        with pytest.raises(DatabaseUnavailable, match="regionguard db upgrade"):
            s.check()
    finally:
        s.close()


def test_an_unreachable_database_is_a_clear_error_not_a_traceback() -> None:
    s = Store("postgresql://nobody:secret@127.0.0.1:1/none")
    try:
        with pytest.raises(DatabaseUnavailable) as info:
            s.check()
        assert "unreachable" in str(info.value) and "secret" not in str(info.value)
    finally:
        s.close()


def test_retention_deletes_in_small_batches_and_keeps_what_is_newer(url: str) -> None:
    s = open_store(url, migrate=True)
    statements: list[str] = []
    try:
        s.add_probe_results([_result(i, Outcome.OK) for i in range(25)])  # 25 results, 10 s apart
        assert s.rollup(T0, T0 + timedelta(minutes=5)) == 5
        s.add_probe_results([_result(14, vantage="late"), _result(2, vantage="late")])  # stored late: new ids, one of them old
        from sqlalchemy import event

        @event.listens_for(s.engine, "before_cursor_execute")
        def seen(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]  # SQLAlchemy's event signature
            if statement.lstrip().upper().startswith("DELETE"):
                statements.append(statement)

        raw, rolled = s.purge(raw_before=T0 + timedelta(seconds=125), rollup_before=T0 + timedelta(minutes=3), batch=4)
        assert (raw, rolled) == (14, 3)
        assert len([q for q in statements if "probe_result" in q]) == 4  # 4 + 4 + 4 + 2: no DELETE took more than a batch
        left = s.results_between(T0, T0 + timedelta(hours=1))
        assert len(left) == 13 and min(r.started_at for r in left) >= T0 + timedelta(seconds=125)
        assert [r.minute_at for r in s.rollups(T0)] == [T0 + timedelta(minutes=m) for m in (3, 4)]
    finally:
        s.close()


def test_a_block_of_reads_shares_one_connection_and_commits_or_rolls_back_what_it_wrote(url: str) -> None:
    from sqlalchemy import event

    from controlplane.store import queries

    s = open_store(url, migrate=True)
    checkouts: list[object] = []

    def checkout(*args: object) -> None:
        checkouts.append(args[0])

    try:
        s.add_probe_results([_result(i) for i in range(30)])
        event.listen(s.engine, "checkout", checkout)
        with s.reading():
            assert s.last_probe_at(["eastus"]) and s.health() is not None and s.lease() is None
            assert queries.region_stats(s, T0)["eastus"].probes == 30 and queries.vantage_cells(s, T0)
            with s.reading():  # nested: the same connection
                assert len(queries.recent_probes(s, "eastus")) == 30
        assert len(checkouts) == 1
        with s.reading():
            s.add_override(Override(kind=OverrideKind.DRAIN, who="ann", why="kept", created_at=T0, region="eastus"))
        with pytest.raises(RuntimeError), s.reading():
            s.add_override(Override(kind=OverrideKind.DRAIN, who="bob", why="rolled back", created_at=T0, region="eastus"))
            raise RuntimeError("the page failed")
        assert [o.why for o in s.overrides()] == ["kept"]
    finally:
        event.remove(s.engine, "checkout", checkout)
        s.close()
