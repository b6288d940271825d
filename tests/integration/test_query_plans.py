"""No hot query reads the raw probe results table, or the rollups, from end to end (PostgreSQL, and SQLite).

At scale (3 vantages x 100 endpoints every 10 s, a week kept) the raw table
holds about 18 M rows: a sequential scan of it is seconds, not milliseconds.
This test renders every dashboard page and API read, asks the engine's
``results_after`` and runs the worker's rollup job, records each SQL statement
that reads ``probe_result``,
and runs ``EXPLAIN`` on it with sequential scans priced out
(``enable_seqscan = off``): a plan that still scans the table has no index
to use, and fails.

The per-minute rollups are kept 90 days by default: about 39 M rows at that
size. The leader's rollup tick (every 15 s), the rollup retention and the
rollups read without a region filter on ``minute_at`` alone; each of their
statements must reach it through an index that leads on it. The same holds
for the hourly rollups (migration 0010), which the tick and the retention
write and the long-range charts read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, text

from controlplane import users
from controlplane.domain import Outcome, ProbeResult
from controlplane.store import Store, open_store, queries
from tests.integration.test_web import API_GETS, PAGES, T0, FakeClock, login
from tests.integration.web_seed import cheap_hashing, default_hashing, seed_everything, settings
from web import create_app

RAW = "probe_result"
ROLLUP = "probe_rollup"
HOURLY = "probe_rollup_hour"


def _seeded(url: str) -> Iterator[Store]:
    cheap_hashing()
    store = open_store(url, migrate=True)
    seed_everything(store, settings(), T0)
    users.add_user(store, "vic", "viewer", "correct horse battery staple", T0)
    try:
        yield store
    finally:
        store.close()
        default_hashing()


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[Store]:
    yield from _seeded(postgres_url)


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Iterator[Store]:
    yield from _seeded(sqlite_url)


def _hot_statements(store: Store) -> list[tuple[str, Any]]:
    """Every read of the raw results that rendering every page and API read, the engine's reads and the rollup job make."""
    app = create_app(settings(), store, {"TESTING": True, "CLOCK": FakeClock(T0), "SECRET_KEY": "test-secret"})

    def render_everything() -> None:
        c, _ = login(app, "vic")
        for path in [*PAGES, "/region/eastus?range=24h", "/partials/overview", *API_GETS]:
            assert c.get(path).status_code == 200, path
        store.results_after(0)
        store.latest_results(since=T0 - timedelta(minutes=10))
        store.rollup(T0 - timedelta(minutes=3), T0 + timedelta(seconds=1))  # the worker's job every 15 s: an INSERT ... SELECT

    statements = _statements_touching_raw(store, render_everything, kinds=("SELECT", "INSERT INTO PROBE_ROLLUP"))
    assert statements, "no query read the raw results: the test lost its subject"
    return statements


def _statements_touching_raw(
    store: Store, work: Any, relations: tuple[str, ...] = (RAW,), kinds: tuple[str, ...] = ("SELECT",)
) -> list[tuple[str, Any]]:
    seen: list[tuple[str, Any]] = []

    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]  # SQLAlchemy's event signature
        if any(r in statement for r in relations) and statement.lstrip().upper().startswith(kinds):
            seen.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        work()
    finally:
        event.remove(store.engine, "before_cursor_execute", record)
    return seen


def _seq_scans(node: dict[str, Any]) -> list[str]:
    found = [node.get("Relation Name", "")] if node.get("Node Type") == "Seq Scan" and node.get("Relation Name") == RAW else []
    for child in node.get("Plans", []):
        found += _seq_scans(child)
    return found


def _plans(store: Store, statements: list[tuple[str, Any]], analyze: bool = False) -> Iterator[tuple[str, Any, dict[str, Any]]]:
    """(statement, parameters, its plan's root node) for each, with sequential scans priced out (PostgreSQL);
    with ``analyze``, the plan as run (EXPLAIN ANALYZE)."""
    with store.engine.connect() as conn:
        raw_conn = conn.connection.dbapi_connection
        assert raw_conn is not None
        with raw_conn.cursor() as cur:
            cur.execute("SET enable_seqscan = off")
            for statement, parameters in statements:
                cur.execute(f"EXPLAIN ({'ANALYZE, ' if analyze else ''}FORMAT JSON) " + statement, parameters)
                plan = cur.fetchone()[0]
                plan = json.loads(plan) if isinstance(plan, str) else plan
                yield statement, parameters, plan[0]["Plan"]
        raw_conn.rollback()


def _full_scans_on_sqlite(store: Store, statements: list[tuple[str, Any]], relation: str) -> list[str]:
    """Each statement whose SQLite plan reads all of ``relation`` (a table or an index from end to end), with its plan."""
    bad = []
    with store.engine.connect() as conn:
        raw_conn = conn.connection.dbapi_connection
        assert raw_conn is not None
        for statement, parameters in statements:
            steps = [row[3] for row in raw_conn.execute("EXPLAIN QUERY PLAN " + statement, parameters)]
            if any(step.startswith(f"SCAN {relation}") for step in steps):
                bad.append(" ".join(statement.split())[:300] + "\n  " + "; ".join(steps))
    return list(dict.fromkeys(bad))


@pytest.mark.postgres
def test_every_hot_query_uses_an_index_on_the_raw_results(pg_store: Store) -> None:
    bad = [" ".join(statement.split())[:300] for statement, _, plan in _plans(pg_store, _hot_statements(pg_store)) if _seq_scans(plan)]
    assert not bad, "sequential scans of probe_result:\n" + "\n".join(bad)


def test_no_hot_query_walks_the_raw_results_on_sqlite_either(sqlite_store: Store) -> None:
    """SQLite has no statistics to price a plan by: a window function's PARTITION BY region once made it walk
    the whole (region, started_at) index in order rather than read the last five minutes by start time."""
    bad = _full_scans_on_sqlite(sqlite_store, _hot_statements(sqlite_store), RAW)
    assert not bad, "full scans of probe_result:\n" + "\n".join(bad)


def _probe(at: datetime) -> ProbeResult:
    return ProbeResult("eastus/gpt-4o", "eastus", "eu", at, Outcome.OK, status_code=200, ttft_ms=100.0, total_ms=300.0)


def _rows_read(node: dict[str, Any]) -> int:
    """Rows the plan's scans of probe_result or the rollups returned or read and threw away (EXPLAIN ANALYZE); a bitmap
    scan's rows are its heap scan's (its index scan's are the same rows again)."""
    read = 0
    if node.get("Node Type") == "Bitmap Index Scan":
        pass
    elif node.get("Relation Name") in (RAW, ROLLUP, HOURLY) or node.get("Index Name", "").startswith(
        ("pk_" + RAW, "ix_" + RAW, "pk_" + ROLLUP, "ix_" + ROLLUP)  # the hourly rollups' indexes too
    ):
        read = node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0) + node.get("Rows Removed by Index Recheck", 0)
    return read + sum(_rows_read(child) for child in node.get("Plans", []))


def _rows_read_by_each(store: Store, statements: list[tuple[str, Any]]) -> list[tuple[int, str, Any]]:
    """(rows of probe_result read, statement, parameters) of each statement, replayed with EXPLAIN ANALYZE and
    priced as at scale (no sequential scans: a few thousand rows would rather be read end to end)."""
    return [
        (_rows_read(plan), " ".join(statement.split())[:200], parameters)
        for statement, parameters, plan in _plans(store, statements, analyze=True)
    ]


@pytest.mark.postgres
def test_a_region_page_reads_its_newest_probes_not_the_newer_ones_of_other_regions(postgres_url: str) -> None:
    """The region page's newest probes of a region come from its own index, however many rows other regions
    stored since: with ``region = :region`` PostgreSQL walked the start-time index backwards and read every
    newer row of every region until it had 50 of this one (the page of a region whose probes stopped an hour
    ago read an hour of the deployment; in the scale bench, the page read slowed with every row its writer
    stored)."""
    store = open_store(postgres_url, migrate=True)
    try:
        regions = ("eastus", "westus", "northeurope", "swedencentral")  # a probe of each every second, in time order

        def tick(at: datetime, names: tuple[str, ...]) -> list[ProbeResult]:
            return [ProbeResult(f"{r}/gpt-4o", r, "eu", at, Outcome.OK, status_code=200) for r in names]

        store.add_probe_results([p for i in range(1500) for p in tick(T0 - timedelta(seconds=1500 - i), regions)])
        store.add_probe_results([p for i in range(700) for p in tick(T0 + timedelta(seconds=i), regions[1:])])  # eastus stopped
        with store.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE probe_result")
            conn.commit()
        statements = _statements_touching_raw(store, lambda: queries.recent_probes(store, "eastus"))
        assert statements, "the page's newest probes made no select on the raw results: the test lost its subject"
        worst = _rows_read_by_each(store, statements)
        assert [p.started_at for p in queries.recent_probes(store, "eastus", limit=2)] == [T0 - timedelta(seconds=s) for s in (1, 2)]
    finally:
        store.close()
    assert max(worst, key=lambda w: w[0])[0] <= 60, (
        f"the newest probes of a region read other regions' rows: {max(worst, key=lambda w: w[0])}"
    )


@pytest.mark.postgres
def test_a_retention_pass_reads_only_the_rows_it_deletes(postgres_url: str) -> None:
    """Retention deletes the oldest rows of a table that is mostly newer ones: no statement of the pass may walk
    the rows it keeps. The keyset batches once ended with a select that read every row newer than the horizon
    (by id, testing each row's start time): at a week of raw results that is 15 M rows, most of the table through
    shared buffers on each pass (4 s; ADR 0015). The rollups go the same way, by minute. Each select of the pass is
    replayed afterwards with EXPLAIN ANALYZE."""
    store = open_store(postgres_url, migrate=True)
    kept = 1800  # a week kept, a day deleted: the proportions of the scale bench
    try:
        base = T0 - timedelta(days=1)
        store.add_probe_results([_probe(base + timedelta(seconds=i)) for i in range(300)])  # old: to delete
        store.add_probe_results([_probe(T0 + timedelta(seconds=i)) for i in range(kept)])  # newer: to keep
        with store.engine.connect() as conn:
            conn.execute(
                text(
                    f"INSERT INTO {ROLLUP} (endpoint_id, vantage, minute_at, region, count, ok, throttled, failed, tokens)"
                    " VALUES ('eastus/gpt-4o', 'eu', :at, 'eastus', 6, 6, 0, 0, 0)"
                ),
                [{"at": base - timedelta(minutes=300 - i)} for i in range(300)]
                + [{"at": base + timedelta(minutes=i)} for i in range(kept)],
            )
            conn.exec_driver_sql(f"ANALYZE {RAW}")
            conn.exec_driver_sql(f"ANALYZE {ROLLUP}")
            conn.commit()
        statements = _statements_touching_raw(
            store, lambda: store.purge(raw_before=T0, rollup_before=base, batch=50, pace=0), (RAW, ROLLUP)
        )
        assert {RAW, ROLLUP} == {r for r in (RAW, ROLLUP) for st, _ in statements if f"FROM {r}" in st}, "the test lost its subject"
        worst = _rows_read_by_each(store, statements)
        assert len(store.results_between(T0, T0 + timedelta(hours=1))) == kept
        assert len(store.rollups(base - timedelta(days=1))) == kept
    finally:
        store.close()
    assert max(worst, key=lambda w: w[0])[0] <= 60, f"a retention statement read kept rows: {max(worst, key=lambda w: w[0])}"


def _rollup_statements(store: Store) -> list[tuple[str, Any]]:
    """Every SELECT, DELETE and INSERT ... SELECT on the rollups, per minute and per hour, of the rollup tick, the
    rollup retention, the rollups of every region and the region page's 7-day chart (from an hour's middle)."""
    old = T0 - timedelta(days=2)
    store.add_probe_results([_probe(at + timedelta(seconds=10 * i)) for at in (old, T0 - timedelta(minutes=2)) for i in range(12)])
    store.rollup(old, old + timedelta(minutes=3))

    def work() -> None:
        store.rollup(T0 - timedelta(minutes=3), T0 + timedelta(seconds=1))  # the worker's rollup tick
        store.rollups(T0 - timedelta(hours=1))
        queries.rollup_series(store, ["eastus"], T0 - timedelta(days=7, minutes=-17), 3600)
        store.purge(raw_before=old - timedelta(days=1), rollup_before=T0 - timedelta(days=1, minutes=30), batch=1, pace=0)

    statements = _statements_touching_raw(store, work, (ROLLUP,), ("SELECT", "DELETE", "INSERT"))
    for relation in (ROLLUP, HOURLY):
        for kind in ("SELECT", "DELETE FROM", "INSERT INTO"):
            assert any(f"{kind} {relation} " in f"{s} " or (kind == "SELECT" and f"FROM {relation} " in f"{s} ") for s, _ in statements), (
                f"no {kind} of {relation}: the test lost its subject"
            )
    return statements


def _walks(node: dict[str, Any], leading: dict[str, str]) -> list[str]:
    """The scans of the rollups in a plan that read them whole: a sequential scan, or an index scan whose index's
    first column has no condition (PostgreSQL then walks the whole index, testing every entry)."""
    found = []
    if node.get("Node Type") == "Seq Scan" and node.get("Relation Name") in (ROLLUP, HOURLY):
        found.append(f"Seq Scan on {node['Relation Name']}")
    index = node.get("Index Name", "")
    if index in leading and leading[index] not in node.get("Index Cond", ""):
        found.append(f"{node['Node Type']} on {index} without a condition on {leading[index]}")
    for child in node.get("Plans", []):
        found += _walks(child, leading)
    return found


@pytest.mark.postgres
def test_every_rollup_statement_reads_by_an_index_on_the_minute(pg_store: Store) -> None:
    statements = _rollup_statements(pg_store)
    with pg_store.engine.connect() as conn:
        leading = dict(
            conn.exec_driver_sql(
                "SELECT c.relname, a.attname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]"
                f" WHERE i.indrelid IN ('{ROLLUP}'::regclass, '{HOURLY}'::regclass)"
            ).all()
        )
    bad = [
        " ".join(statement.split())[:300] + "\n  " + "; ".join(walks)
        for statement, _, plan in _plans(pg_store, statements)
        if (walks := _walks(plan, leading))
    ]
    assert not bad, "statements that read all of the rollups:\n" + "\n".join(dict.fromkeys(bad))


def test_no_rollup_statement_walks_the_rollups_on_sqlite_either(sqlite_store: Store) -> None:
    bad = _full_scans_on_sqlite(sqlite_store, _rollup_statements(sqlite_store), ROLLUP)  # probe_rollup_hour's too: the same prefix
    assert not bad, "full scans of the rollups:\n" + "\n".join(bad)


@pytest.mark.postgres
def test_the_7_day_chart_reads_the_weeks_hours_not_its_minutes(postgres_url: str) -> None:
    """The region page's 7-day chart (hour buckets) summed every per-minute rollup of the region over the week: at
    3 vantages x 100 endpoints about 151,000 rows, 262-271 ms on each cache miss. From the hourly rollups it reads
    one row per endpoint, vantage and hour, and the minutes before its first whole hour: here one endpoint seen from
    one vantage, 10,080 minutes a week, of which it may read the 43 minutes of its first, partial hour (those of
    another region too, when the plan reads them by minute alone) and 167 hours.
    Each statement is replayed with EXPLAIN ANALYZE; the per-minute reading is replayed too, to show what it cost."""
    store = open_store(postgres_url, migrate=True)
    since = T0 - timedelta(days=7, minutes=-17)
    try:
        with store.engine.connect() as conn:
            conn.execute(
                text(
                    f"INSERT INTO {ROLLUP} (endpoint_id, vantage, minute_at, region, count, ok, throttled, failed, ttft_p50_ms, tokens)"
                    " SELECT r || '/gpt-4o', 'eu', at, r, 6, 5, 1, 0, 100 + extract(minute FROM at), 0"
                    " FROM generate_series(CAST(:start AS timestamptz), CAST(:end AS timestamptz), interval '1 minute') AS m(at)"
                    " CROSS JOIN (VALUES ('eastus'), ('westus')) AS r(r)"
                ),
                {"start": T0 - timedelta(days=8), "end": T0 - timedelta(minutes=1)},
            )
            conn.commit()
        store.rollup_hours(T0 - timedelta(days=8), T0)
        with store.engine.connect() as conn:
            conn.exec_driver_sql(f"ANALYZE {ROLLUP}")
            conn.exec_driver_sql(f"ANALYZE {HOURLY}")
            conn.commit()
        hourly = _statements_touching_raw(store, lambda: queries.rollup_series(store, ["eastus"], since, 3600), (ROLLUP,))
        by_minute = _statements_touching_raw(store, lambda: queries.rollup_series(store, ["eastus"], since, 3600, hourly=False), (ROLLUP,))
        assert hourly and by_minute, "the chart read no rollups: the test lost its subject"
        read, former = (sum(n for n, _, _ in _rows_read_by_each(store, st)) for st in (hourly, by_minute))
        chart = queries.rollup_series(store, ["eastus"], since, 3600)["eastus"]
        assert chart == queries.rollup_series(store, ["eastus"], since, 3600, hourly=False)["eastus"]  # whole-minute latencies: exact sums
        assert len(chart) == 7 * 24 and sum(b.count for b in chart) == 6 * (7 * 24 * 60 - 17)
    finally:
        store.close()
    assert former >= 7 * 24 * 60 - 17, f"the per-minute reading read {former} rows: the test lost its subject"
    assert read <= 2 * 43 + 7 * 24, f"the 7-day chart read {read} rollup rows (the per-minute reading: {former})"
