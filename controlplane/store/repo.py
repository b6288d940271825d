"""Repositories: the store's API. They take and return domain values, not ORM rows.

One ``Store`` per process wraps an engine and a session factory; every method
is one short transaction, so callers never hold a session across network I/O.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import fields as dc_fields
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import Connection, CursorResult, Result, and_, case, delete, func, or_, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError, SQLAlchemyError
from sqlalchemy.orm import InstrumentedAttribute, Session

from controlplane.domain import (
    AuditEvent,
    Change,
    ChangeOrigin,
    ChangeStatus,
    EndpointHealth,
    EndpointSetting,
    EventKind,
    Field,
    FlagKind,
    HealthStateName,
    LeaseName,
    NotificationStatus,
    Outcome,
    Override,
    OverrideKind,
    Plan,
    ProbeResult,
    RegionHealth,
    TargetState,
    Transition,
    WriteStatus,
)
from controlplane.store import db
from controlplane.store.aggregates import count_where, grouped
from controlplane.store.fit import fit_row
from controlplane.store.models import (
    ApiTokenRow,
    AuditEventRow,
    ChangeRow,
    EventDeliveryRow,
    FlagRow,
    HealthStateRow,
    HealthTransitionRow,
    LeaderLeaseRow,
    LoginThrottleRow,
    NotificationChannelRow,
    NotificationRow,
    OverrideRow,
    PlanRow,
    ProbeResultRow,
    ProbeRollupHourRow,
    ProbeRollupRow,
    TargetEndpointRow,
    UserRow,
    table,
)
from controlplane.store.records import (
    ApiToken,
    ChangeRecord,
    Flag,
    Lease,
    LoginThrottle,
    NotificationRecord,
    Panic,
    PlanRecord,
    Rollup,
    TargetEndpointRecord,
    User,
    panics_of,
    parse_flag_key,
)
from controlplane.textsafe import bounded_text

log = logging.getLogger(__name__)

_PROBE_FIELDS = [f.name for f in dc_fields(ProbeResult)]
_FAILED = {o.value for o in Outcome} - {Outcome.OK.value, Outcome.THROTTLED.value}
_OUTCOMES = frozenset(o.value for o in Outcome)


def _minute_of(started_at: Any, dialect: str) -> Any:
    """SQL for ``started_at.replace(second=0, microsecond=0)``, stored exactly as a bound datetime is.

    SQLite keeps a datetime as the text SQLAlchemy writes, ``YYYY-MM-DD
    HH:MM:SS.ffffff`` in UTC: the minute is its first 16 characters and
    ``:00.000000``, the text a bound minute has, so the rollups' range and
    equality reads find it. PostgreSQL truncates the UTC wall clock, whatever
    the session's time zone.
    """
    if dialect == "sqlite":
        return func.substr(started_at, 1, 16).concat(":00.000000")
    return func.timezone("UTC", func.date_trunc("minute", func.timezone("UTC", started_at)))


def _hour_of(minute_at: Any, dialect: str) -> Any:
    """SQL for a stored minute's UTC hour, stored exactly as a bound datetime is (see :func:`_minute_of`)."""
    if dialect == "sqlite":
        return func.substr(minute_at, 1, 13).concat(":00:00.000000")
    return func.timezone("UTC", func.date_trunc("hour", func.timezone("UTC", minute_at)))


HOUR = timedelta(hours=1)
LATENCIES = ("ttft_p50", "ttft_p95", "total_p50", "total_p95")  # the rollups' averaged columns: <name>_ms per minute


def floor_hour(at: datetime) -> datetime:
    """The start of ``at``'s UTC hour."""
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def ceil_hour(at: datetime) -> datetime:
    """The first start of an hour at or after ``at``."""
    start = floor_hour(at)
    return start if start == at else start + HOUR


def _to_probe(row: ProbeResultRow) -> ProbeResult:
    values = {name: getattr(row, name) for name in _PROBE_FIELDS}
    values["outcome"] = Outcome(values["outcome"])
    return ProbeResult(**values)


def _probe_row(r: ProbeResult) -> dict[str, Any]:
    """A ProbeResult as a row that fits ``probe_result``; what had to change is noted in ``anomalies``."""
    values: dict[str, Any] = {name: getattr(r, name, None) for name in _PROBE_FIELDS}
    outcome = values["outcome"]
    values["outcome"] = outcome.value if isinstance(outcome, Outcome) else str(outcome)
    fitted, notes = fit_row(table(ProbeResultRow), values)
    if values["outcome"] not in _OUTCOMES:
        fitted["outcome"] = Outcome.BAD_CONTENT.value
        notes.append(f"outcome: {bounded_text(values['outcome'], 40)!r} is not an outcome, stored as bad_content")
    if notes:
        stored = "store: " + "; ".join(notes)
        fitted["anomalies"] = bounded_text(f"{fitted['anomalies']}; {stored}" if fitted.get("anomalies") else stored, 2000)
    return fitted


def _bare_probe_row(row: dict[str, Any]) -> dict[str, Any]:
    """The last resort for a row the database refused: identity, time and outcome, flagged."""
    bare = {k: row[k] for k in ("endpoint_id", "region", "vantage", "started_at", "outcome")}
    bare.update(output_chunks=0, finished=False, anomalies="store: the database refused this result as it was; only its outcome is kept")
    return bare


def _to_override(row: OverrideRow) -> Override:
    return Override(
        id=row.id,
        kind=OverrideKind(row.kind),
        region=row.region,
        target=row.target,
        weight=row.weight,
        priority=row.priority,
        who=row.who,
        why=row.why,
        forced=row.forced,
        created_at=row.created_at,
        expires_at=row.expires_at,
        lifted_at=row.lifted_at,
    )


def _to_event(row: AuditEventRow) -> AuditEvent:
    return AuditEvent(
        id=row.id,
        kind=EventKind(row.kind),
        at=row.at,
        actor=row.actor,
        summary=row.summary,
        region=row.region,
        target=row.target,
        severity=row.severity,
        data=row.data or {},
    )


def _undelivered(channel: str, event_ids: Sequence[int]) -> tuple[Any, ...]:
    """The event_delivery rows of these events on ``channel`` that the channel has not taken."""
    return EventDeliveryRow.channel == channel, EventDeliveryRow.event_id.in_(list(event_ids)), EventDeliveryRow.delivered_at.is_(None)


def _rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE matched, or an INSERT run with ``preserve_rowcount`` wrote (``Session.execute`` is typed as Result; for DML it is a CursorResult)."""
    if not isinstance(result, CursorResult):
        raise TypeError(f"expected the CursorResult of an UPDATE or DELETE, got {type(result).__name__}")
    return result.rowcount


def _cause(exc: SQLAlchemyError) -> BaseException:
    """The driver's exception behind a SQLAlchemy one, when there is one."""
    orig: BaseException | None = getattr(exc, "orig", None)
    return orig or exc


def _to_change(row: ChangeRow) -> ChangeRecord:
    return ChangeRecord(
        id=row.id,
        plan_id=row.plan_id,
        created_at=row.created_at,
        finished_at=row.finished_at,
        target=row.target,
        region=row.region,
        endpoint=row.endpoint,
        field=Field(row.field),
        before=row.before,
        after=row.after,
        reason=row.reason,
        actor=row.actor,
        origin=ChangeOrigin(row.origin),
        status=ChangeStatus(row.status),
        error_code=row.error_code,
        error_message=row.error_message,
        fencing_token=row.fencing_token,
    )


def _to_plan(row: PlanRow) -> PlanRecord:
    return PlanRecord(
        id=row.id,
        created_at=row.created_at,
        checksum=row.checksum,
        actor=row.actor,
        fencing_token=row.fencing_token,
        dry_run=row.dry_run,
        plan=Plan.from_dict(row.body or {}),
    )


def _setting(enabled: bool | None, weight: int | None, priority: int | None) -> EndpointSetting | None:
    return None if enabled is None else EndpointSetting(weight=weight, priority=priority, enabled=bool(enabled))


def _rules(stored: str | None) -> tuple[str, ...] | None:
    """The stored JSON list of circuit-breaker rule lines (None: the kind has none, or not read yet)."""
    if not stored:
        return None
    try:
        rules = json.loads(stored)
    except ValueError:
        return ("unreadable: " + stored[:80],)
    return tuple(str(r) for r in rules) if isinstance(rules, list) else None


def _to_target_endpoint(row: TargetEndpointRow) -> TargetEndpointRecord:
    return TargetEndpointRecord(
        target=row.target,
        region=row.region,
        endpoint=row.endpoint,
        actual=_setting(row.actual_enabled, row.actual_weight, row.actual_priority),
        desired=_setting(row.desired_enabled, row.desired_weight, row.desired_priority),
        applied=_setting(row.applied_enabled, row.applied_weight, row.applied_priority),
        desired_reason=row.desired_reason,
        monitor_status=row.monitor_status,
        circuit_breakers=_rules(row.circuit_breaker),
        drift=row.drift,
        write_status=None if row.write_status is None else WriteStatus(row.write_status),
        write_error=row.write_error,
        last_change_at=row.last_change_at,
        read_at=row.read_at,
    )


def _to_user(row: UserRow) -> User:
    return User(
        name=row.name,
        role=row.role,
        disabled=row.disabled,
        created_at=row.created_at,
        password_hash=row.password_hash,
        session_version=row.session_version or 0,
    )


PURGE_BATCH = 1000
"""Rows one retention transaction deletes (a few milliseconds of locks on either database)."""
PURGE_PACE = 1.0
"""After each retention batch, rest this many times as long as the batch took (docs/adr/0013-retention-in-batches.md)."""


LEASE_LOCK_WAIT_S = 1.0
"""The most a lease statement waits for a lock (less for a short lease: a tenth of it); see docs/adr/0012."""


def lease_lock_wait(ttl_s: float) -> float:
    return min(LEASE_LOCK_WAIT_S, ttl_s / 10)


class Store:
    def __init__(self, url: str, *, idle_in_transaction_s: float = db.IDLE_IN_TRANSACTION_S) -> None:
        self.url = url
        self.idle_in_transaction_s = idle_in_transaction_s
        self.engine = db.make_engine(url, idle_in_transaction_s=idle_in_transaction_s)
        self.sessions = db.make_sessionmaker(self.engine)
        self._exclusive: ContextVar[Session | None] = ContextVar(f"regionguard-store-{id(self)}", default=None)
        self._pinned: ContextVar[Connection | None] = ContextVar(f"regionguard-store-pinned-{id(self)}", default=None)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work; inside :meth:`exclusive`, the exclusive transaction itself (committed there);
        inside :meth:`reading`, on its connection."""
        current = self._exclusive.get()
        if current is not None:
            yield current
            return
        pinned = self._pinned.get()
        with db.session_scope(self.sessions if pinned is None else partial(self.sessions, bind=pinned)) as s:
            yield s

    def connect(self) -> AbstractContextManager[Connection]:
        """A connection for Core reads: inside :meth:`reading`, its connection (left open)."""
        pinned = self._pinned.get()
        return self.engine.connect() if pinned is None else nullcontext(pinned)

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Serve the block's store calls (one page's dozen or more reads) from one connection.

        Each call otherwise checks a connection out of the pool, pings it and
        begins and ends its own transaction: four round trips for one query,
        which on a busy machine cost more than the queries. Inside, the calls
        share one connection and one transaction (reads see what is committed
        when each runs, as before); anything written commits at the end of the
        block, or is rolled back if it raises. Nested, or inside
        :meth:`exclusive`, it changes nothing.
        """
        if self._pinned.get() is not None or self._exclusive.get() is not None:
            yield
            return
        try:
            conn = self.engine.connect()
        except SQLAlchemyError:
            yield  # unreachable: each call inside fails and says so as it would outside
            return
        conn.begin()  # the calls' sessions join it: what they write commits at the end
        token = self._pinned.set(conn)
        try:
            yield
        except BaseException:
            self._pinned.reset(token)
            conn.close()  # rolls back
            raise
        self._pinned.reset(token)
        try:
            conn.commit()
        except SQLAlchemyError as exc:
            log.warning("the end of a block of reads could not commit: %s", type(_cause(exc)).__name__)
        finally:
            conn.close()

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """Run the block as one transaction that holds the lock ``name`` across every process.

        Every store call made inside it (from this thread) joins that
        transaction: all commit together at the end, or none does. Concurrent
        blocks with the same name run one after another, whatever process or
        replica they run in: on PostgreSQL by a transaction-level advisory
        lock, on SQLite by taking the database's write lock first.

        On PostgreSQL a holder that stops inside the block (SIGSTOP, a stall)
        loses its session, and the lock, after ``idle_in_transaction_s``; a
        waiter waits at most twice that, then gets :class:`db.LockTimeout`.
        """
        if self._exclusive.get() is not None:
            raise RuntimeError(f"store.exclusive({name!r}) inside another exclusive block")
        with db.session_scope(self.sessions) as s:
            db.lock_timeout(s, 2 * self.idle_in_transaction_s)
            db.lock(s, name)
            token = self._exclusive.set(s)
            try:
                yield
            finally:
                self._exclusive.reset(token)

    # ------------------------------------------------------------ health of the store

    def check(self) -> None:
        """Raise DatabaseUnavailable (safe message) unless reachable and migrated to head."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            current = db.current_revision(self.url)
        except SQLAlchemyError as exc:
            raise db.DatabaseUnavailable(
                f"database {self.engine.url.render_as_string(hide_password=True)} unreachable: {type(_cause(exc)).__name__}: {str(_cause(exc)).splitlines()[0][:200]}"
            ) from None
        head = db.head_revision()
        if current != head:
            raise db.DatabaseUnavailable(
                f"database {self.engine.url.render_as_string(hide_password=True)} is at migration {current or 'none'}, expected {head}: run 'regionguard db upgrade'"
            )

    # ------------------------------------------------------------ probe results

    def add_probe_results(self, results: Iterable[ProbeResult]) -> int:
        """Store a batch; returns how many rows were stored.

        One bad result never costs the batch: every row is first fitted to its
        columns (numbers clamped, text escaped and cut; see :mod:`.fit`) with
        a note in ``anomalies``; should the batch still fail, rows are written
        one by one, and a row the database refuses is stored with only its
        identity and outcome, flagged. Only a database that refuses even that
        (down, full) loses rows, and then the error propagates.
        """
        rows = [_probe_row(r) for r in results]
        if not rows:
            return 0
        probe_table = table(ProbeResultRow)
        try:
            with self.session() as s:
                s.execute(probe_table.insert(), rows)
            return len(rows)
        except (SQLAlchemyError, ValueError, TypeError, OverflowError) as exc:
            log.warning("a batch of %d probe results was refused (%s): storing them one by one", len(rows), type(exc).__name__)
        stored = 0
        last: Exception | None = None
        for row in rows:
            for attempt in (row, _bare_probe_row(row)):
                try:
                    with self.session() as s:
                        s.execute(probe_table.insert(), [attempt])
                    stored += 1
                    break
                except (SQLAlchemyError, ValueError, TypeError, OverflowError) as exc:
                    last = exc
                    log.warning("probe result for %s refused: %s", str(row.get("endpoint_id"))[:160], type(exc).__name__)
        if stored == 0 and last is not None:
            raise last
        return stored

    def latest_results(
        self, per_endpoint: int = 10, region: str | None = None, endpoint_id: str | None = None, since: datetime | None = None
    ) -> list[ProbeResult]:
        """The newest N results per (endpoint, vantage), oldest first.

        Pass ``since`` on large tables: the ranking then only looks at recent
        rows (index on ``started_at``) instead of the whole history.
        """
        with self.session() as s:
            rows = select(ProbeResultRow.id, ProbeResultRow.endpoint_id, ProbeResultRow.vantage, ProbeResultRow.started_at)
            if since is not None:
                rows = rows.where(ProbeResultRow.started_at >= since)
            if region:
                rows = rows.where(ProbeResultRow.region == region)
            if endpoint_id:
                rows = rows.where(ProbeResultRow.endpoint_id == endpoint_id)
            # the matching rows first: else SQLite walks the whole (endpoint_id, started_at) index for the partition order
            c = rows.cte("matching").prefix_with("MATERIALIZED", dialect="sqlite").c
            ranked = select(c.id, func.row_number().over(partition_by=(c.endpoint_id, c.vantage), order_by=c.started_at.desc()).label("rn"))
            sub = ranked.subquery()
            q = (
                select(ProbeResultRow)
                .join(sub, sub.c.id == ProbeResultRow.id)
                .where(sub.c.rn <= per_endpoint)
                .order_by(ProbeResultRow.started_at, ProbeResultRow.id)
            )
            return [_to_probe(r) for r in s.scalars(q)]

    def results_between(
        self,
        since: datetime,
        until: datetime | None = None,
        region: str | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[ProbeResult]:
        with self.session() as s:
            q = select(ProbeResultRow).where(ProbeResultRow.started_at >= since)
            if until is not None:
                q = q.where(ProbeResultRow.started_at < until)
            if region:
                q = q.where(ProbeResultRow.region == region)
            order = (
                (ProbeResultRow.started_at.desc(), ProbeResultRow.id.desc())
                if newest_first
                else (ProbeResultRow.started_at, ProbeResultRow.id)
            )
            q = q.order_by(*order)
            if limit:
                q = q.limit(limit)
            return [_to_probe(r) for r in s.scalars(q)]

    def results_after(self, after_id: int, limit: int = 10000) -> tuple[int, list[ProbeResult]]:
        """Results stored after row id ``after_id`` (from every vantage), in id order.

        Returns the new high-water id; the leader tails this to feed its health
        evaluator with what all probers saw.
        """
        with self.session() as s:
            rows = list(s.scalars(select(ProbeResultRow).where(ProbeResultRow.id > after_id).order_by(ProbeResultRow.id).limit(limit)))
        return (rows[-1].id if rows else after_id), [_to_probe(r) for r in rows]

    def max_result_id(self) -> int:
        with self.session() as s:
            return s.scalar(select(func.max(ProbeResultRow.id))) or 0

    def last_probe_at(self, regions: Iterable[str] | None = None) -> dict[str, datetime]:
        """Newest probe start per region (for 'stale data' banners).

        With ``regions`` it is one statement of one indexed MAX per region (one
        round trip, not one per region), fast on large tables.
        """
        rows: Sequence[tuple[str, datetime | None]]
        with self.session() as s:
            if regions is None:
                rows = s.execute(select(ProbeResultRow.region, func.max(ProbeResultRow.started_at)).group_by(ProbeResultRow.region)).all()
            else:
                names = list(regions)
                newest = [select(func.max(ProbeResultRow.started_at)).where(ProbeResultRow.region == r).scalar_subquery() for r in names]
                rows = list(zip(names, s.execute(select(*newest)).one(), strict=True)) if names else []
        return {region: (at if at.tzinfo else at.replace(tzinfo=UTC)) for region, at in rows if at is not None}

    def rollup(self, since: datetime, until: datetime) -> int:
        """(Re)compute per-minute rollups for whole minutes in [since, until); returns how many rows it wrote.

        In the database, in one transaction: DELETE the window's rollups, then
        one INSERT ... SELECT that groups the window's raw results per endpoint,
        vantage and minute (the worker runs this every 15 s over the last 3
        minutes; read into Python, those thousands of rows were a burst of
        memory that the allocator kept). The percentiles are the nearest rank
        of :func:`controlplane.stats.percentile` (:func:`.aggregates.grouped`):
        TTFT over the results that have one, total time over the OK and SLOW
        ones that have one. A group's region is the smallest of its results'
        (an endpoint's results all carry its one region). Then, in the same
        transaction, the hourly rollups of the hours those minutes are in are
        summed again from their minutes (:meth:`_rollup_hours`).
        """
        start = since.replace(second=0, microsecond=0)
        t = table(ProbeResultRow)
        dialect = self.engine.dialect.name
        rows = select(
            t.c.endpoint_id,
            t.c.vantage,
            _minute_of(t.c.started_at, dialect).label("minute_at"),
            t.c.region,
            t.c.outcome,
            t.c.ttft_ms,
            case((t.c.outcome.in_((Outcome.OK.value, Outcome.SLOW.value)), t.c.total_ms)).label("total_ms"),
            (func.coalesce(t.c.prompt_tokens, 0) + func.coalesce(t.c.completion_tokens, 0)).label("tokens"),
        ).where(t.c.started_at >= start, t.c.started_at < until)
        per_minute = grouped(
            rows,
            keys=("endpoint_id", "vantage", "minute_at"),
            columns=lambda c: (
                func.min(c.region),
                func.count(),
                count_where(c.outcome == Outcome.OK.value),
                count_where(c.outcome == Outcome.THROTTLED.value),
                count_where(c.outcome.in_(sorted(_FAILED))),
                func.sum(c.tokens),
            ),
            percentiles=(("ttft_ms", 0.5), ("ttft_ms", 0.95), ("total_ms", 0.5), ("total_ms", 0.95)),
            dialect=dialect,
        )
        names = ["endpoint_id", "vantage", "minute_at", "region", "count", "ok", "throttled", "failed", "tokens"]
        names += ["ttft_p50_ms", "ttft_p95_ms", "total_p50_ms", "total_p95_ms"]
        with self.session() as s:
            s.execute(delete(ProbeRollupRow).where(ProbeRollupRow.minute_at >= start, ProbeRollupRow.minute_at < until))
            insert = table(ProbeRollupRow).insert().from_select(names, per_minute)
            written = _rowcount(s.execute(insert.execution_options(preserve_rowcount=True)))  # an INSERT's count is kept only on request
            # the hours of the minutes rewritten, from the newest hour already summed if that is older: minutes rolled
            # up by an application that had no hourly table (after migration 0010 filled it) are summed on the first run
            newest = s.scalar(select(func.max(ProbeRollupHourRow.hour_at)))
            self._rollup_hours(s, min(floor_hour(start), newest) if newest is not None else floor_hour(start), ceil_hour(until))
            return written

    def rollup_hours(self, since: datetime, until: datetime) -> int:
        """(Re)sum the hourly rollups of every hour that overlaps [since, until) from the per-minute ones; returns how many
        rows it wrote. :meth:`rollup` and the retention keep the hours current; this is for minutes stored otherwise (the
        benches' fills)."""
        with self.session() as s:
            return self._rollup_hours(s, floor_hour(since), ceil_hour(until))

    def _rollup_hours(self, s: Session, since: datetime, until: datetime) -> int:
        """In ``s``: DELETE the hourly rollups of the whole hours in [since, until), then one INSERT ... SELECT of the
        per-minute rollups of those hours grouped per endpoint, vantage, hour and region (an hour row is exactly its
        minutes' sums: of each latency, the sum and how many minutes have one)."""
        m = table(ProbeRollupRow).c
        hour = _hour_of(m.minute_at, self.engine.dialect.name).label("hour_at")
        latencies = [agg for name in LATENCIES for agg in (func.sum(m[f"{name}_ms"]), func.count(m[f"{name}_ms"]))]
        per_hour = (
            select(
                m.endpoint_id,
                m.vantage,
                hour,
                m.region,
                func.sum(m.count),
                func.sum(m.ok),
                func.sum(m.throttled),
                func.sum(m.failed),
                *latencies,
            )
            .where(m.minute_at >= since, m.minute_at < until)
            .group_by(m.endpoint_id, m.vantage, hour, m.region)
        )
        names = ["endpoint_id", "vantage", "hour_at", "region", "count", "ok", "throttled", "failed"]
        names += [f"{name}_{part}" for name in LATENCIES for part in ("sum", "n")]
        s.execute(delete(ProbeRollupHourRow).where(ProbeRollupHourRow.hour_at >= since, ProbeRollupHourRow.hour_at < until))
        insert = table(ProbeRollupHourRow).insert().from_select(names, per_hour)
        return _rowcount(s.execute(insert.execution_options(preserve_rowcount=True)))

    def rollups(self, since: datetime, region: str | None = None) -> list[Rollup]:
        with self.session() as s:
            q = select(ProbeRollupRow).where(ProbeRollupRow.minute_at >= since).order_by(ProbeRollupRow.minute_at)
            if region:
                q = q.where(ProbeRollupRow.region == region)
            return [
                Rollup(
                    endpoint_id=r.endpoint_id,
                    vantage=r.vantage,
                    minute_at=r.minute_at,
                    region=r.region,
                    count=r.count,
                    ok=r.ok,
                    throttled=r.throttled,
                    failed=r.failed,
                    ttft_p50_ms=r.ttft_p50_ms,
                    ttft_p95_ms=r.ttft_p95_ms,
                    total_p50_ms=r.total_p50_ms,
                    total_p95_ms=r.total_p95_ms,
                    tokens=r.tokens,
                )
                for r in s.scalars(q)
            ]

    def purge(self, raw_before: datetime, rollup_before: datetime, batch: int = PURGE_BATCH, pace: float = PURGE_PACE) -> tuple[int, int]:
        """Delete raw results and rollups past their horizons, ``batch`` rows per transaction.

        A day of raw results at scale is millions of rows: one DELETE would
        hold its locks (on SQLite, the whole database's write lock) for
        seconds, stalling the probe writers and the pages. Small batches, each
        committed on its own, keep every pause short (docs/adr/0013-retention-in-batches.md).

        Each batch is a range of start times that begins after the last one
        (keyset, on the ``started_at`` index): the start time of the
        ``batch``-th old row after the last batch's end, then ``DELETE`` every
        row after that end up to it (rows sharing that start time go in the
        same batch). It never re-walks the index entries of rows already
        deleted (on PostgreSQL they stay until vacuum), and every statement is
        bounded by the horizon in the index itself, so the pass reads only the
        rows it deletes: keyed on ids, its last select walked every newer row
        to learn that none was old (docs/adr/0015-retention-reads-only-what-it-deletes.md).
        After each batch the purge rests ``pace`` times as long as the batch
        took, so a long purge takes at most about half of a core and SQLite's
        waiting writers get the lock between batches instead of losing the
        race for it to the next one.

        Rollups go the same way, keyed on ``minute_at`` (its own index,
        migration 0009): a minute's rows (one per endpoint and vantage: 300 at
        3 vantages x 100 endpoints) always go in the same batch. They were
        deleted ten minutes at a time from the oldest, which took a
        ``min(minute_at)`` and one DELETE per ten minutes, each reading the
        whole table, and a batch as big as ten minutes of the deployment.
        The hourly rollups go with them, by hour; the hour the horizon falls in
        is then summed again from the minutes left of it, so each hour kept
        stays exactly the sum of its minutes (docs/adr/0017-hourly-rollups.md).
        """
        raw = self._purge_oldest(ProbeResultRow.started_at, raw_before, batch, pace)
        rolled = self._purge_oldest(ProbeRollupRow.minute_at, rollup_before, batch, pace)
        self._purge_oldest(ProbeRollupHourRow.hour_at, rollup_before, batch, pace)
        if floor_hour(rollup_before) != rollup_before:  # the horizon's own hour is summed again from the minutes it keeps
            with self.session() as s:
                self._rollup_hours(s, floor_hour(rollup_before), ceil_hour(rollup_before))
        return raw, rolled

    def _purge_oldest(self, column: InstrumentedAttribute[datetime], before: datetime, batch: int, pace: float) -> int:
        """Delete the rows of ``column``'s table whose ``column`` is before ``before``, about ``batch`` at a time (see :meth:`purge`)."""
        deleted, last = 0, None
        while True:
            started = time.monotonic()
            with self.session() as s:
                old = column < before
                after = old if last is None else and_(old, column > last)
                upto = s.scalar(select(column).where(after).order_by(column).offset(batch - 1).limit(1))
                in_range = after if upto is None else and_(after, column <= upto)
                deleted += _rowcount(s.execute(delete(column.class_).where(in_range)))
            if upto is None:  # fewer than a batch were left, and they are gone
                return deleted
            last = upto
            if pace > 0:
                time.sleep(min(pace * (time.monotonic() - started), 1.0))

    # ------------------------------------------------------------ health

    def add_transitions(self, transitions: Iterable[Transition]) -> None:
        rows = [
            dict(
                subject=t.subject,
                key=t.key,
                region=t.key.split("/", 1)[0],
                vantage=t.vantage,
                old=t.old.value,
                new=t.new.value,
                reason=t.reason,
                at=t.at,
                evidence=list(t.evidence),
            )
            for t in transitions
        ]
        if rows:
            with self.session() as s:
                s.execute(table(HealthTransitionRow).insert(), rows)

    def transitions(self, since: datetime | None = None, region: str | None = None, limit: int = 200) -> list[Transition]:
        with self.session() as s:
            q = select(HealthTransitionRow).order_by(HealthTransitionRow.at.desc(), HealthTransitionRow.id.desc()).limit(limit)
            if since is not None:
                q = q.where(HealthTransitionRow.at >= since)
            if region:
                q = q.where(HealthTransitionRow.region == region)
            return [
                Transition(
                    subject=r.subject,
                    key=r.key,
                    old=HealthStateName(r.old),
                    new=HealthStateName(r.new),
                    reason=r.reason,
                    at=r.at,
                    vantage=r.vantage,
                    evidence=tuple(r.evidence or ()),
                )
                for r in s.scalars(q)
            ]

    def save_health(self, endpoints: Iterable[EndpointHealth], regions: Iterable[RegionHealth], now: datetime) -> None:
        rows = [
            dict(
                key=e.endpoint_id,
                subject="endpoint",
                region=e.region,
                state=e.state.value,
                score=e.score,
                reason=e.reason,
                since_at=e.since,
                quota_headroom=e.quota_headroom,
                config_problem=e.config_problem,
                updated_at=now,
            )
            for e in endpoints
        ] + [
            dict(
                key=r.region,
                subject="region",
                region=r.region,
                state=r.state.value,
                score=r.score,
                reason="; ".join(r.reasons),
                since_at=r.since,
                quota_headroom=r.quota_headroom,
                config_problem=None,
                updated_at=now,
            )
            for r in regions
        ]
        with self.session() as s:
            s.execute(delete(HealthStateRow))
            if rows:
                s.execute(table(HealthStateRow).insert(), rows)

    def health(self) -> tuple[dict[str, EndpointHealth], dict[str, RegionHealth]]:
        """Latest saved health: (endpoint id -> EndpointHealth, region -> RegionHealth)."""
        with self.session() as s:
            rows = list(s.scalars(select(HealthStateRow)))
        endpoints = {
            r.key: EndpointHealth(
                endpoint_id=r.key,
                region=r.region,
                state=HealthStateName(r.state),
                score=r.score,
                reason=r.reason,
                since=r.since_at,
                quota_headroom=r.quota_headroom,
                config_problem=r.config_problem,
            )
            for r in rows
            if r.subject == "endpoint"
        }
        by_region: dict[str, list[EndpointHealth]] = {}
        for e in endpoints.values():  # grouped once: regions x endpoints is 2,000 comparisons at 20 x 100
            by_region.setdefault(e.region, []).append(e)
        regions = {}
        for r in rows:
            if r.subject == "region":
                eps = tuple(by_region.get(r.key, ()))
                regions[r.key] = RegionHealth(
                    region=r.key,
                    state=HealthStateName(r.state),
                    score=r.score,
                    reasons=tuple(x for x in r.reason.split("; ") if x),
                    endpoints=eps,
                    quota_headroom=r.quota_headroom,
                    since=r.since_at,
                )
        return endpoints, regions

    # ------------------------------------------------------------ plans and changes

    def record_plan(self, plan: Plan, actor: str, now: datetime, fencing_token: int | None = None, dry_run: bool = False) -> int:
        with self.session() as s:
            row = PlanRow(
                created_at=now, checksum=plan.checksum, actor=actor, fencing_token=fencing_token, dry_run=dry_run, body=plan.to_dict()
            )
            s.add(row)
            s.flush()
            return row.id

    def record_change(
        self,
        change: Change,
        status: ChangeStatus,
        now: datetime,
        actor: str = "automation",
        plan_id: int | None = None,
        fencing_token: int | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> int:
        with self.session() as s:
            row = ChangeRow(
                plan_id=plan_id,
                created_at=now,
                finished_at=None if status == ChangeStatus.PENDING else now,
                target=change.target,
                region=change.region,
                endpoint=change.endpoint,
                field=change.field.value,
                before=change.actual,
                after=change.desired,
                reason=change.reason,
                actor=actor,
                origin=str(change.origin),
                status=str(status),
                error_code=error_code,
                error_message=error_message,
                fencing_token=fencing_token,
            )
            s.add(row)
            s.flush()
            return row.id

    def finish_change(
        self, change_id: int, status: ChangeStatus, now: datetime, error_code: str | None = None, error_message: str | None = None
    ) -> None:
        with self.session() as s:
            s.execute(
                update(ChangeRow)
                .where(ChangeRow.id == change_id)
                .values(status=str(status), finished_at=now, error_code=error_code, error_message=error_message)
            )

    def changes(
        self,
        since: datetime | None = None,
        target: str | None = None,
        region: str | None = None,
        status: ChangeStatus | None = None,
        limit: int = 200,
    ) -> list[ChangeRecord]:
        with self.session() as s:
            q = select(ChangeRow).order_by(ChangeRow.created_at.desc(), ChangeRow.id.desc()).limit(limit)
            if since is not None:
                q = q.where(ChangeRow.created_at >= since)
            if target:
                q = q.where(ChangeRow.target == target)
            if region:
                q = q.where(ChangeRow.region == region)
            if status:
                q = q.where(ChangeRow.status == str(status))
            return [_to_change(r) for r in s.scalars(q)]

    def plans(self, limit: int = 50) -> list[PlanRecord]:
        with self.session() as s:
            q = select(PlanRow).order_by(PlanRow.created_at.desc(), PlanRow.id.desc()).limit(limit)
            return [_to_plan(r) for r in s.scalars(q)]

    # ------------------------------------------------------------ target snapshots (dashboard, drift)

    def save_target_state(
        self, target: str, names: dict[str, str], actual: TargetState | None, desired: TargetState | None, now: datetime
    ) -> None:
        """Upsert per region the last actual (read back) and desired values of a target."""
        regions = set(names)
        with self.session() as s:
            existing = {r.region: r for r in s.scalars(select(TargetEndpointRow).where(TargetEndpointRow.target == target))}
            for region in regions:
                row = existing.get(region) or TargetEndpointRow(target=target, region=region, endpoint=names[region])
                row.endpoint = names[region]
                if actual is not None and region in actual.endpoints:
                    a = actual.endpoints[region]
                    row.actual_weight, row.actual_priority, row.actual_enabled = a.weight, a.priority, a.enabled
                    row.monitor_status = actual.monitor_status.get(region)
                    rules = actual.circuit_breakers.get(region)
                    row.circuit_breaker = json.dumps(list(rules)) if rules is not None else None
                    row.read_at = now
                elif actual is not None and region in actual.read_errors:  # unreadable: no stale value may pass for actual
                    row.actual_weight = row.actual_priority = row.actual_enabled = None
                    row.monitor_status = None
                    row.read_at = now
                if desired is not None and region in desired.endpoints:
                    d = desired.endpoints[region]
                    row.desired_weight, row.desired_priority, row.desired_enabled = d.weight, d.priority, d.enabled
                    row.desired_reason = desired.reasons.get(region)
                s.add(row)

    def set_applied(self, target: str, region: str, setting: EndpointSetting, now: datetime) -> None:
        """What regionguard last wrote (or adopted): the reference for drift detection."""
        with self.session() as s:
            s.execute(
                update(TargetEndpointRow)
                .where(TargetEndpointRow.target == target, TargetEndpointRow.region == region)
                .values(
                    applied_weight=setting.weight, applied_priority=setting.priority, applied_enabled=setting.enabled, last_change_at=now
                )
            )

    def set_write_status(self, target: str, region: str, status: WriteStatus | None, error: str | None = None) -> None:
        with self.session() as s:
            s.execute(
                update(TargetEndpointRow)
                .where(TargetEndpointRow.target == target, TargetEndpointRow.region == region)
                .values(write_status=None if status is None else str(status), write_error=error)
            )

    def set_drift(self, target: str, region: str, description: str | None) -> None:
        with self.session() as s:
            s.execute(
                update(TargetEndpointRow)
                .where(TargetEndpointRow.target == target, TargetEndpointRow.region == region)
                .values(drift=description)
            )

    def applied_settings(self, target: str) -> dict[str, EndpointSetting]:
        """region -> what regionguard last applied (only regions it has applied to)."""
        with self.session() as s:
            rows = s.scalars(
                select(TargetEndpointRow).where(TargetEndpointRow.target == target, TargetEndpointRow.applied_enabled.is_not(None))
            )
            return {
                r.region: EndpointSetting(weight=r.applied_weight, priority=r.applied_priority, enabled=bool(r.applied_enabled))
                for r in rows
            }

    def target_endpoints(self, target: str | None = None) -> list[TargetEndpointRecord]:
        """Ordered by target, then region."""
        with self.session() as s:
            q = select(TargetEndpointRow).order_by(TargetEndpointRow.target, TargetEndpointRow.region)
            if target:
                q = q.where(TargetEndpointRow.target == target)
            return [_to_target_endpoint(r) for r in s.scalars(q)]

    # ------------------------------------------------------------ overrides

    def add_override(self, o: Override) -> Override:
        with self.session() as s:
            row = OverrideRow(
                kind=o.kind.value,
                region=o.region,
                target=o.target,
                weight=o.weight,
                priority=o.priority,
                who=o.who,
                why=o.why,
                forced=o.forced,
                created_at=o.created_at,
                expires_at=o.expires_at,
                lifted_at=o.lifted_at,
            )
            s.add(row)
            s.flush()
            return _to_override(row)

    def active_overrides(self, now: datetime) -> list[Override]:
        with self.session() as s:
            q = (
                select(OverrideRow)
                .where(OverrideRow.lifted_at.is_(None), or_(OverrideRow.expires_at.is_(None), OverrideRow.expires_at > now))
                .order_by(OverrideRow.created_at, OverrideRow.id)
            )
            return [_to_override(r) for r in s.scalars(q)]

    def overrides(self, since: datetime | None = None, limit: int = 200) -> list[Override]:
        with self.session() as s:
            q = select(OverrideRow).order_by(OverrideRow.created_at.desc(), OverrideRow.id.desc()).limit(limit)
            if since is not None:
                q = q.where(OverrideRow.created_at >= since)
            return [_to_override(r) for r in s.scalars(q)]

    def lift_override(self, override_id: int, who: str, now: datetime) -> Override | None:
        """Lift an active override; None if it does not exist or is no longer active (compare-and-set)."""
        with self.session() as s:
            n = _rowcount(
                s.execute(
                    update(OverrideRow)
                    .where(OverrideRow.id == override_id, OverrideRow.lifted_at.is_(None))
                    .values(lifted_at=now, lifted_by=who)
                )
            )
            row = s.get(OverrideRow, override_id) if n == 1 else None
            return None if row is None else _to_override(row)

    def expire_overrides(self, now: datetime) -> list[Override]:
        """Mark expired overrides as lifted (by 'expiry'); returns those lifted now."""
        with self.session() as s:
            rows = list(
                s.scalars(
                    select(OverrideRow).where(
                        OverrideRow.lifted_at.is_(None), OverrideRow.expires_at.is_not(None), OverrideRow.expires_at <= now
                    )
                )
            )
            lifted = []
            for row in rows:
                n = _rowcount(
                    s.execute(
                        update(OverrideRow)
                        .where(OverrideRow.id == row.id, OverrideRow.lifted_at.is_(None))
                        .values(lifted_at=now, lifted_by="expiry")
                    )
                )
                if n == 1:
                    s.refresh(row)
                    lifted.append(_to_override(row))
            return lifted

    # ------------------------------------------------------------ audit trail

    def add_event(self, e: AuditEvent) -> int:
        with self.session() as s:
            row = AuditEventRow(
                kind=str(e.kind),
                at=e.at,
                actor=e.actor,
                summary=e.summary,
                region=e.region,
                target=e.target,
                severity=e.severity,
                data=e.data,
            )
            s.add(row)
            s.flush()
            return row.id

    # ------------------------------------------------------------ the relay: each event claimed, sent and marked per channel (ADR 0018)

    def sync_channels(self, worker: str, names: Sequence[str], now: datetime, *, since: datetime) -> dict[str, int]:
        """Record the notification channels configured now; returns each channel no longer configured and how many
        deliveries it had pending (events at or after ``since`` not delivered to it), which are dropped.

        A channel seen for the first time is owed the events stored after it appeared (``since_event_id`` = the
        newest event's id), not the backlog; the channels of the very first configuration (no channel recorded yet:
        a new install, or the upgrade to migration 0011) are owed every event not yet relayed. A channel that comes
        back after it was removed is a new channel.
        """
        wanted = set(names)
        with self.session() as s:
            known = {row.name: row for row in s.scalars(select(NotificationChannelRow))}
            first = not known
            newest = 0 if first else int(s.scalar(select(func.max(AuditEventRow.id))) or 0)
            for name in sorted(wanted):
                row = known.get(name)
                if row is None:
                    s.add(NotificationChannelRow(name=name, since_event_id=newest, added_at=now, removed_at=None))
                elif row.removed_at is not None:
                    row.since_event_id, row.added_at, row.removed_at = newest, now, None
            removed: dict[str, int] = {}
            for name, row in sorted(known.items()):
                if name in wanted or row.removed_at is not None:
                    continue
                removed[name] = int(s.scalar(select(func.count()).select_from(AuditEventRow).where(*self._owed(name, since))) or 0)
                row.removed_at = now
                s.execute(delete(EventDeliveryRow).where(EventDeliveryRow.channel == name, EventDeliveryRow.delivered_at.is_(None)))
        if removed:
            self._settle_relayed(worker, now, [AuditEventRow.relayed_at.is_(None), AuditEventRow.at >= since])
        return removed

    @staticmethod
    def _owed(channel: str, since: datetime, done: Any = None) -> list[Any]:
        """Conditions on audit_event: stored at or after ``since``, owed to ``channel`` and not delivered to it (nor
        held under a claim made at or after ``done`` when given)."""
        registered = select(NotificationChannelRow.since_event_id).where(
            NotificationChannelRow.name == channel, NotificationChannelRow.removed_at.is_(None)
        )
        taken: Any = EventDeliveryRow.delivered_at.is_not(None)
        if done is not None:
            taken = or_(taken, EventDeliveryRow.claimed_at >= done)
        delivery = select(EventDeliveryRow.event_id).where(
            EventDeliveryRow.event_id == AuditEventRow.id, EventDeliveryRow.channel == channel, taken
        )
        return [
            AuditEventRow.relayed_at.is_(None),
            AuditEventRow.at >= since,
            AuditEventRow.id > registered.scalar_subquery(),
            ~delivery.exists(),
        ]

    def claim_events(
        self, worker: str, now: datetime, *, channel: str, since: datetime, stale_before: datetime, limit: int = 100
    ) -> list[AuditEvent]:
        """Events owed to ``channel`` (recorded at or after ``since``), each claimed on that channel for ``worker``, oldest first.

        An event is owed to a channel recorded by :meth:`sync_channels` when its id is above the channel's start and
        the channel has not taken it. It is free on that channel when nobody claimed it there, or when that claim was
        made before ``stale_before`` (its claimer died or gave up before marking it). A compare-and-set per event and
        channel (``UPDATE event_delivery ... WHERE delivered_at IS NULL AND (claimed_at IS NULL OR claimed_at <
        stale_before)``, row count 1 = ours, or the INSERT of its row, which the primary key lets only one worker
        make): however many workers call this at once, each free (event, channel) is handed to exactly one of them.
        The caller marks it (:meth:`mark_relayed`) only once the channel answered.
        """
        free = and_(
            EventDeliveryRow.channel == channel,
            EventDeliveryRow.delivered_at.is_(None),
            or_(EventDeliveryRow.claimed_at.is_(None), EventDeliveryRow.claimed_at < stale_before),
        )
        with self.session() as s:
            owed = select(AuditEventRow).where(*self._owed(channel, since, done=stale_before)).order_by(AuditEventRow.id).limit(limit)
            candidates = [(row.id, _to_event(row)) for row in s.scalars(owed).all()]
        claimed: list[AuditEvent] = []
        for event_id, event in candidates:
            with self.session() as s:
                mine = update(EventDeliveryRow).where(EventDeliveryRow.event_id == event_id, free)
                won = _rowcount(s.execute(mine.values(claimed_at=now, claimed_by=worker)))
            if won == 0:
                try:
                    with self.session() as s:
                        s.add(EventDeliveryRow(event_id=event_id, channel=channel, claimed_at=now, claimed_by=worker))
                        s.flush()
                    won = 1
                except IntegrityError:
                    won = 0  # another worker holds it (or took it over) on this channel
            if won == 1:
                claimed.append(event)
        return claimed

    def renew_claims(self, worker: str, event_ids: Sequence[int], now: datetime, *, channel: str) -> list[int]:
        """Move the claim time of ``worker``'s undelivered claims on ``channel`` to ``now`` (still being sent); returns
        the ids renewed (a claim another worker took over after it went stale is no longer ours)."""
        if not event_ids:
            return []
        with self.session() as s:
            rows = _undelivered(channel, event_ids)
            mine = update(EventDeliveryRow).where(*rows, EventDeliveryRow.claimed_by == worker).values(claimed_at=now)
            return sorted(s.scalars(mine.returning(EventDeliveryRow.event_id)).all())

    def release_claims(self, worker: str, event_ids: Sequence[int], now: datetime, *, channel: str) -> int:
        """Free ``worker``'s undelivered claims on ``channel`` at once (it stops and the channel is done with them); returns how many."""
        return self._update_undelivered(channel, event_ids, [EventDeliveryRow.claimed_by == worker], claimed_at=None, claimed_by=None)

    def mark_relayed(self, worker: str, event_ids: Sequence[int], now: datetime, *, channel: str) -> int:
        """Record that ``channel`` took these events (or had nothing to send); returns how many were still unmarked there.
        An event every configured channel is done with is marked relayed (``audit_event.relayed_at``)."""
        marked = self._update_undelivered(channel, event_ids, [], delivered_at=now, delivered_by=worker)
        if marked:
            self._settle_relayed(worker, now, [AuditEventRow.id.in_(list(event_ids)), AuditEventRow.relayed_at.is_(None)])
        return marked

    def _update_undelivered(self, channel: str, event_ids: Sequence[int], where: list[Any], **values: Any) -> int:
        if not event_ids:
            return 0
        with self.session() as s:
            rows = _undelivered(channel, event_ids)
            return _rowcount(s.execute(update(EventDeliveryRow).where(*rows, *where).values(**values)))

    def _settle_relayed(self, worker: str, now: datetime, where: list[Any]) -> int:
        """Mark relayed the events (of ``where``) that no configured channel is still owed."""
        undelivered = select(EventDeliveryRow.event_id).where(
            EventDeliveryRow.event_id == AuditEventRow.id,
            EventDeliveryRow.channel == NotificationChannelRow.name,
            EventDeliveryRow.delivered_at.is_not(None),
        )
        owing = select(NotificationChannelRow.name).where(
            NotificationChannelRow.removed_at.is_(None), NotificationChannelRow.since_event_id < AuditEventRow.id, ~undelivered.exists()
        )
        with self.session() as s:
            return _rowcount(s.execute(update(AuditEventRow).where(*where, ~owing.exists()).values(relayed_at=now, relayed_by=worker)))

    def events(
        self,
        since: datetime | None = None,
        kinds: Sequence[EventKind | str] | None = None,
        region: str | None = None,
        target: str | None = None,
        limit: int = 200,
    ) -> list[AuditEvent]:
        with self.session() as s:
            q = select(AuditEventRow).order_by(AuditEventRow.at.desc(), AuditEventRow.id.desc()).limit(limit)
            if since is not None:
                q = q.where(AuditEventRow.at >= since)
            if kinds:
                q = q.where(AuditEventRow.kind.in_([str(k) for k in kinds]))
            if region:
                q = q.where(AuditEventRow.region == region)
            if target:
                q = q.where(AuditEventRow.target == target)
            return [_to_event(r) for r in s.scalars(q)]

    # ------------------------------------------------------------ notification deliveries

    def add_notification(
        self,
        channel: str,
        event_kind: str,
        group_key: str | None,
        payload: Mapping[str, Any],
        now: datetime,
        status: NotificationStatus = NotificationStatus.PENDING,
    ) -> int:
        """Record a delivery about to be attempted (payload: what was said, never URLs or keys)."""
        with self.session() as s:
            row = NotificationRow(
                created_at=now,
                channel=channel,
                event_kind=event_kind,
                group_key=group_key,
                status=str(status),
                attempts=0,
                payload=dict(payload),
            )
            s.add(row)
            s.flush()
            return row.id

    def finish_notification(
        self, notification_id: int, status: NotificationStatus, now: datetime, attempts: int, error: str | None = None
    ) -> None:
        """Mark a delivery sent or failed; ``sent_at`` is stamped only when sent."""
        with self.session() as s:
            s.execute(
                update(NotificationRow)
                .where(NotificationRow.id == notification_id)
                .values(status=str(status), attempts=attempts, last_error=error, sent_at=now if status == NotificationStatus.SENT else None)
            )

    def notifications(self, since: datetime | None = None, limit: int = 200) -> list[NotificationRecord]:
        """Newest first (timeline: sent / failed per channel)."""
        with self.session() as s:
            q = select(NotificationRow).order_by(NotificationRow.created_at.desc(), NotificationRow.id.desc()).limit(limit)
            if since is not None:
                q = q.where(NotificationRow.created_at >= since)
            return [
                NotificationRecord(
                    id=r.id,
                    created_at=r.created_at,
                    channel=r.channel,
                    event_kind=r.event_kind,
                    group_key=r.group_key,
                    status=NotificationStatus(r.status),
                    attempts=r.attempts,
                    last_error=r.last_error,
                    sent_at=r.sent_at,
                    payload=r.payload or {},
                )
                for r in s.scalars(q)
            ]

    # ------------------------------------------------------------ flags

    def set_flag(self, kind: FlagKind, subject: str | None, value: Mapping[str, Any] | None, now: datetime) -> None:
        """Set (or with None, clear) a system flag, e.g. ``(FlagKind.PANIC, "<target>")``."""
        key = kind.key(subject)
        with self.session() as s:
            row = s.get(FlagRow, key)
            if value is None:
                if row is not None:
                    s.delete(row)
                return
            if row is None:
                s.add(FlagRow(key=key, value=dict(value), updated_at=now))
            else:
                row.value, row.updated_at = dict(value), now

    def flags(self, *kinds: FlagKind) -> list[Flag]:
        """Every flag of these kinds (one statement however many), ordered by key."""
        with self.session() as s:
            q = (
                select(FlagRow)
                .where(or_(*(or_(FlagRow.key == k.value, FlagRow.key.startswith(f"{k.value}:", autoescape=True)) for k in kinds)))
                .order_by(FlagRow.key)
            )
            rows = list(s.scalars(q))
        out = []
        for r in rows:
            k, subject = parse_flag_key(r.key)
            out.append(Flag(kind=k, subject=subject, value=r.value or {}, updated_at=r.updated_at))
        return out

    def panics(self) -> dict[str, Panic]:
        """Targets in fail-open: target -> why and since when."""
        return panics_of(self.flags(FlagKind.PANIC))

    # ------------------------------------------------------------ leader lease (compare-and-set)

    def try_acquire_lease(self, name: LeaseName, holder: str, ttl_s: float, now: datetime) -> int | None:
        """Take or renew the lease; return the fencing token if ``holder`` holds it now.

        A new holder gets a strictly larger fencing token; a renewal keeps it.
        Works on SQLite and PostgreSQL: a conditional UPDATE, then a row count.
        On PostgreSQL no statement here waits longer than :func:`lease_lock_wait`
        for a lock (a session stopped while holding the row's lock would otherwise
        hold the takeover up); then :class:`db.LockTimeout`, and the next tick tries again.
        """
        expires = now + timedelta(seconds=ttl_s)
        key = str(name)  # the plain value for the driver
        with self.session() as s:
            db.lock_timeout(s, lease_lock_wait(ttl_s))
            if s.get(LeaderLeaseRow, key) is None:
                try:
                    with s.begin_nested():
                        s.add(LeaderLeaseRow(name=key, holder=None, fencing_token=0))
                except IntegrityError:
                    pass  # someone else created it first
            renewed = _rowcount(
                s.execute(
                    update(LeaderLeaseRow)
                    .where(LeaderLeaseRow.name == key, LeaderLeaseRow.holder == holder, LeaderLeaseRow.expires_at > now)
                    .values(renewed_at=now, expires_at=expires)
                )
            )
            if renewed == 1:
                return s.scalar(select(LeaderLeaseRow.fencing_token).where(LeaderLeaseRow.name == key))
            taken = _rowcount(
                s.execute(
                    update(LeaderLeaseRow)
                    .where(
                        LeaderLeaseRow.name == key,
                        or_(LeaderLeaseRow.holder.is_(None), LeaderLeaseRow.expires_at.is_(None), LeaderLeaseRow.expires_at <= now),
                    )
                    .values(
                        holder=holder, fencing_token=LeaderLeaseRow.fencing_token + 1, acquired_at=now, renewed_at=now, expires_at=expires
                    )
                )
            )
            if taken == 1:
                return s.scalar(select(LeaderLeaseRow.fencing_token).where(LeaderLeaseRow.name == key))
            return None

    def release_lease(self, name: LeaseName, holder: str) -> bool:
        key = str(name)
        with self.session() as s:
            db.lock_timeout(s, LEASE_LOCK_WAIT_S)
            n = _rowcount(
                s.execute(
                    update(LeaderLeaseRow)
                    .where(LeaderLeaseRow.name == key, LeaderLeaseRow.holder == holder)
                    .values(holder=None, expires_at=None)
                )
            )
            return n == 1

    def lease(self, name: LeaseName = LeaseName.LEADER) -> Lease | None:
        with self.session() as s:
            row = s.get(LeaderLeaseRow, str(name))
            if row is None:
                return None
            return Lease(
                name=row.name,
                holder=row.holder,
                fencing_token=row.fencing_token,
                acquired_at=row.acquired_at,
                renewed_at=row.renewed_at,
                expires_at=row.expires_at,
            )

    def holds_lease(self, name: LeaseName, holder: str, token: int, now: datetime) -> bool:
        """Fencing check right before a write: still the holder with the same token?"""
        key = str(name)
        with self.session() as s:
            n = s.scalar(
                select(func.count())
                .select_from(LeaderLeaseRow)
                .where(
                    and_(
                        LeaderLeaseRow.name == key,
                        LeaderLeaseRow.holder == holder,
                        LeaderLeaseRow.fencing_token == token,
                        LeaderLeaseRow.expires_at > now,
                    )
                )
            )
            return n == 1

    # ------------------------------------------------------------ sign-in throttle (controlplane.users)

    def login_throttle(self, name_key: str) -> LoginThrottle | None:
        with self.session() as s:
            row = s.get(LoginThrottleRow, name_key)
            if row is None:
                return None
            failures = tuple(datetime.fromisoformat(t) for t in row.failures or [])
            return LoginThrottle(name_key=row.name_key, failures=failures, locked_until=row.locked_until, updated_at=row.updated_at)

    def save_login_throttle(
        self, name_key: str, failures: Sequence[datetime], locked_until: datetime | None, now: datetime, max_rows: int
    ) -> bool:
        """Store a name's recent failures and lock; a new name first makes room among at most ``max_rows``.

        Room comes from the unlocked names whose last failure is oldest; a
        locked name is never given up before its lock ends. False (nothing
        stored) when every row is a live lock.
        """
        values = {"failures": [t.isoformat() for t in failures], "locked_until": locked_until, "updated_at": now}
        with self.session() as s:
            row = s.get(LoginThrottleRow, name_key)
            if row is None:
                excess = (s.scalar(select(func.count()).select_from(LoginThrottleRow)) or 0) - max_rows + 1
                if excess > 0:
                    unlocked = or_(LoginThrottleRow.locked_until.is_(None), LoginThrottleRow.locked_until <= now)
                    oldest = select(LoginThrottleRow.name_key).where(unlocked).order_by(LoginThrottleRow.updated_at).limit(excess)
                    if _rowcount(s.execute(delete(LoginThrottleRow).where(LoginThrottleRow.name_key.in_(oldest)))) < excess:
                        return False
                s.add(LoginThrottleRow(name_key=name_key, **values))
            else:
                for column, value in values.items():
                    setattr(row, column, value)
            return True

    def expire_login_throttle(self, before: datetime, now: datetime) -> int:
        """Forget names whose last failure is older than ``before`` and that are not locked at ``now``."""
        with self.session() as s:
            unlocked = or_(LoginThrottleRow.locked_until.is_(None), LoginThrottleRow.locked_until <= now)
            return _rowcount(s.execute(delete(LoginThrottleRow).where(LoginThrottleRow.updated_at < before, unlocked)))

    def clear_login_throttle(self, name_key: str) -> None:
        with self.session() as s:
            s.execute(delete(LoginThrottleRow).where(LoginThrottleRow.name_key == name_key))

    # ------------------------------------------------------------ users and API tokens

    def add_user(self, name: str, role: str, password_hash: str, now: datetime) -> None:
        with self.session() as s:
            row = s.scalar(select(UserRow).where(UserRow.name == name))
            if row is None:
                s.add(UserRow(name=name, role=role, password_hash=password_hash, created_at=now))
            else:  # a reset: the old password's sessions end
                row.role, row.password_hash, row.disabled = role, password_hash, False
                row.session_version = (row.session_version or 0) + 1

    def end_sessions(self, name: str) -> bool:
        """Every dashboard session of ``name`` stops working (logout, password change, disable)."""
        with self.session() as s:
            result = s.execute(
                update(UserRow).where(UserRow.name == name).values(session_version=func.coalesce(UserRow.session_version, 0) + 1)
            )
            return _rowcount(result) == 1

    def set_user_disabled(self, name: str, disabled: bool) -> bool:
        with self.session() as s:
            values: dict[str, Any] = {"disabled": disabled}
            if disabled:
                values["session_version"] = func.coalesce(UserRow.session_version, 0) + 1
            return _rowcount(s.execute(update(UserRow).where(UserRow.name == name).values(**values))) == 1

    def remove_user(self, name: str) -> bool:
        with self.session() as s:
            return _rowcount(s.execute(delete(UserRow).where(UserRow.name == name))) == 1

    def api_tokens(self) -> list[ApiToken]:
        """Every token (revoked ones too), newest first; never the token itself."""
        with self.session() as s:
            rows = s.scalars(select(ApiTokenRow).order_by(ApiTokenRow.created_at.desc(), ApiTokenRow.id.desc()))
            return [
                ApiToken(
                    id=r.id,
                    name=r.name,
                    role=r.role,
                    created_by=r.created_by,
                    created_at=r.created_at,
                    last_used_at=r.last_used_at,
                    revoked_at=r.revoked_at,
                    token_hash=r.token_hash,
                )
                for r in rows
            ]

    def user(self, name: str) -> User | None:
        with self.session() as s:
            row = s.scalar(select(UserRow).where(UserRow.name == name))
            return None if row is None else _to_user(row)

    def set_password_hash(self, name: str, password_hash: str, end_sessions: bool = False) -> None:
        with self.session() as s:
            values: dict[str, Any] = {"password_hash": password_hash}
            if end_sessions:
                values["session_version"] = func.coalesce(UserRow.session_version, 0) + 1
            s.execute(update(UserRow).where(UserRow.name == name).values(**values))

    def users(self) -> list[User]:
        with self.session() as s:
            return [_to_user(r) for r in s.scalars(select(UserRow).order_by(UserRow.name))]

    def add_api_token(self, name: str, token_hash: str, role: str, created_by: str, now: datetime) -> int:
        with self.session() as s:
            row = ApiTokenRow(name=name, token_hash=token_hash, role=role, created_by=created_by, created_at=now)
            s.add(row)
            s.flush()
            return row.id

    def api_token(self, token_hash: str, now: datetime | None = None) -> ApiToken | None:
        """Find a live token by hash (and stamp last use)."""
        with self.session() as s:
            row = s.scalar(select(ApiTokenRow).where(ApiTokenRow.token_hash == token_hash, ApiTokenRow.revoked_at.is_(None)))
            if row is None:
                return None
            if now is not None:
                row.last_used_at = now
            return ApiToken(
                id=row.id,
                name=row.name,
                role=row.role,
                created_by=row.created_by,
                created_at=row.created_at,
                last_used_at=row.last_used_at,
                revoked_at=row.revoked_at,
                token_hash=row.token_hash,
            )

    def revoke_api_token(self, token_id: int, now: datetime) -> bool:
        with self.session() as s:
            return (
                _rowcount(
                    s.execute(
                        update(ApiTokenRow).where(ApiTokenRow.id == token_id, ApiTokenRow.revoked_at.is_(None)).values(revoked_at=now)
                    )
                )
                == 1
            )


def open_store(url: str, migrate: bool = False, *, idle_in_transaction_s: float = db.IDLE_IN_TRANSACTION_S) -> Store:
    """A Store on ``url``; with ``migrate`` the schema is brought to head first.

    ``idle_in_transaction_s``: how long PostgreSQL lets one of its sessions sit inside a transaction without a
    statement before it ends it (a stopped process's locks are freed then); the worker passes its lease's."""
    if migrate:
        try:
            db.upgrade(url)
        except (OperationalError, ProgrammingError) as exc:
            raise db.DatabaseUnavailable(f"cannot migrate database: {str(exc.orig or exc).splitlines()[0][:200]}") from None
    return Store(url, idle_in_transaction_s=idle_in_transaction_s)


__all__ = ["Field", "Store", "open_store"]
