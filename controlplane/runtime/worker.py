"""The worker: probes, and (on the leader only) evaluates, plans and applies.

Threads:

* a probe loop: an asyncio event loop running :meth:`ProbeRunner.run_forever`,
  which keeps a per-endpoint schedule (the health engine's cadence: normal
  interval, confirmations ``confirm_gap`` apart while the evidence is
  undecided, jitter so probes do not synchronise) and the zero-token
  liveness checks between LLM probes (summarised in the flag
  ``liveness:<vantage>``). **Evaluate on news:** a batch that changed this
  vantage's view of an endpoint is stored at once and the leader evaluates
  and reconciles right after (job ``reconcile-now``); the ``reconcile``
  tick stays as the backstop. One
  APScheduler job per probe would queue every endpoint behind the slowest
  probe; the runner starts each probe when it is due instead.
* APScheduler 3.x (``BackgroundScheduler``) with fixed job ids,
  ``max_instances=1`` and ``coalesce=True``: ``lease`` (take/renew the
  database lease), ``reconcile`` (leader only: tail every vantage's results
  from the store -> health -> desired -> plan -> guardrails -> apply -> read
  back -> record), ``rollup`` (per-minute aggregates, every 15 s), ``retention`` (purge
  old raw results and rollups, every ``retention.interval``), ``overrides`` (lift expired overrides) and
  ``notify`` (relay stored audit events to the notification channels).

A lease only a live loop can hold: ``lease`` renews only while the reconcile
loop makes progress. A tick that runs past its deadline plus two call
deadlines (every Azure call is cut off by then, so it is stuck elsewhere), or
no tick finishing for as long while leading, lets the lease lapse: a standby
takes over (docs/adr/0012). A loop that is alive but cannot authenticate to
Azure (every call of several ticks failed on the credential) gives the lease
up for a standby whose credential may work, and leaves it to the others for a
cool-off (docs/adr/0016, ``controlplane.runtime.stepdown``).

Stop (SIGTERM/SIGINT): stop taking new work, let an in-flight apply finish
(bounded), release the lease, return.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from concurrent import futures
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from controlplane.actuators.base import Actuator
from controlplane.config import Settings, missing_api_keys
from controlplane.domain import (
    AuditEvent,
    ChangeStatus,
    Clock,
    EventKind,
    FlagKind,
    HealthStateName,
    LivenessResult,
    ProbeResult,
    SystemClock,
)
from controlplane.engine.guardrails import RECHECK_RULE, recheck_after
from controlplane.engine.health import HealthEvaluator, HealthReport
from controlplane.runtime import loops
from controlplane.runtime.leader import LeaderElector, LeaseTiming
from controlplane.runtime.reconcile import Reconciler, TickReport
from controlplane.runtime.sizes import allocator_sizes, container_sizes
from controlplane.runtime.stepdown import CredentialWatch, StepDownTiming
from controlplane.store import Store
from controlplane.store.records import LIVENESS_SUMMARY_EVERY_S, LivenessTally
from probes.runner import ProbeRunner

log = logging.getLogger(__name__)

JOB_IDS = ("lease", "lease-at-expiry", "reconcile", "reconcile-now", "rollup", "retention", "overrides", "notify")
_SEVERITY = {HealthStateName.UNHEALTHY: "critical", HealthStateName.DEGRADED: "warning"}


RESULT_FLUSH_BATCH = 1000
RESULT_BUFFER_MINUTES = 20  # probe results kept in memory while the database is down (at the normal interval)


def result_buffer_limit(settings: Settings) -> int:
    """How many probe results the worker keeps while the database is down: every endpoint probed at
    the normal interval for 20 minutes (twice the 10 the issue asks), and never fewer than 10 000."""
    endpoints = sum(len(region.endpoints) for region in settings.regions)
    return max(10_000, int(endpoints * RESULT_BUFFER_MINUTES * 60 / max(0.1, settings.probe.interval)))


def warm_horizon(settings: Settings) -> timedelta:
    """How far back a new leader reads results to fill its windows."""
    return timedelta(seconds=max(600.0, 3 * settings.health.window * settings.probe.interval))


class Worker:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        clock: Clock | None = None,
        holder: str | None = None,
        actuators: Mapping[str, Actuator] | None = None,
        credential: Any = None,
        probe_credential: Any = None,
        notifier: Any = None,
        metrics: Any = None,
        lease_ttl_s: float = 15.0,
        environ: Mapping[str, str] | None = None,
        probe: bool = True,
        dry_run: bool = False,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock or SystemClock()
        self.metrics = metrics
        self.notifier = notifier
        self.dry_run = dry_run
        self.elector = LeaderElector(store, holder, lease_ttl_s, self.clock)
        self.timing = LeaseTiming.for_lease(lease_ttl_s, settings.azure.request_timeout)
        self.step_down_timing = StepDownTiming.for_lease(lease_ttl_s)
        self.credential = CredentialWatch(self.step_down_timing)  # did our Azure credential work on the last ticks?
        if actuators is None:
            from controlplane.actuators.factory import build_actuators

            actuators = build_actuators(
                settings,
                credential,
                policies=[metrics.azure_policy()] if metrics is not None else None,
                call_s=self.timing.call_s,
                user_agent=f"regionguard-worker/{self.elector.holder}",
            )
        self.reconciler = Reconciler(
            settings, store, actuators, self.clock, self.elector.holder, call_s=self.timing.call_s, skew_s=self.timing.skew_s
        )
        # progress of the reconcile loop (monotonic seconds): the lease is renewed only while it moves
        self._tick_started: float | None = None
        self._progress_at = time.monotonic()
        self.runner = (
            ProbeRunner(
                settings,
                sink=self._on_results,
                clock=self.clock,
                credential=probe_credential,
                environ=environ,
                liveness_sink=self._on_liveness,
                on_news=self._on_news,
            )
            if probe
            else None
        )
        self.missing_keys = missing_api_keys(settings, environ) if probe else []
        self.evaluator: HealthEvaluator | None = None
        self.last_report: HealthReport | None = None
        self.last_tick: TickReport | None = None
        self.ticks = 0
        self._high_water = 0
        self._announced_problems: set[str] = set()
        self._apply_lock = threading.Lock()
        self._stopping = threading.Event()
        self._probe_thread: threading.Thread | None = None
        self._probe_loop: asyncio.AbstractEventLoop | None = None
        self._probe_stop: asyncio.Event | None = None
        self._relay: Any = None
        # probe results the database could not take yet (it is down): oldest first, bounded
        self._pending_results: list[ProbeResult] = []
        self._buffering = False
        self.result_buffer_limit = result_buffer_limit(settings)
        self.results_dropped = 0
        self.results_flushed = 0
        self._liveness = LivenessTally()  # per endpoint: the last liveness check and the recent outcomes
        self._liveness_written = -math.inf
        self._liveness_pending: deque[LivenessResult] = deque(maxlen=10_000)  # appended on the probe loop, drained by evaluate()
        self._writer = futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="regionguard-results"
        )  # one thread keeps batches in order
        self.scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(max_workers=5)},  # reconcile ticks may hold 3 (one runs), the lease needs one
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30},
        )

    @property
    def holder(self) -> str:
        return self.elector.holder

    @property
    def running(self) -> bool:
        return bool(self.scheduler.running) and not self._stopping.is_set()

    # ------------------------------------------------------------ lifecycle

    def start(self) -> Worker:
        now = datetime.now(UTC)
        interval = self.settings.reconcile.interval
        retention = self.settings.retention.interval
        jobs = [
            ("lease", self.lease_tick, self.timing.renew_s, now),
            ("reconcile", self.reconcile_tick, interval, now + timedelta(seconds=min(interval, 1.0))),
            ("rollup", self.rollup_tick, 15.0, now + timedelta(seconds=5)),
            ("retention", self.retention_tick, retention, now + timedelta(seconds=min(300.0, retention))),
            ("overrides", self.overrides_tick, 5.0, now + timedelta(seconds=1)),
        ]
        if self.notifier is not None:
            from controlplane.notify.notifier import RELAY_INTERVAL_S, EventRelay

            self._relay = EventRelay(self.store, self.notifier, worker=self.holder, clock=self.clock)
            jobs.append(("notify", self._relay.tick, RELAY_INTERVAL_S, now + timedelta(seconds=RELAY_INTERVAL_S)))
        for job_id, func, seconds, first in jobs:
            self.scheduler.add_job(func, "interval", seconds=seconds, id=job_id, name=job_id, replace_existing=True, next_run_time=first)
        self.scheduler.start()
        if self.runner is not None:
            self._probe_thread = threading.Thread(target=self._probe_main, name="regionguard-probes", daemon=True)
            self._probe_thread.start()
        log.info("worker %s started (%d targets, %d regions)", self.holder, len(self.settings.targets), len(self.settings.regions))
        for line in self.missing_keys:
            log.error("configuration problem: %s: its endpoint is probed without a key and reported as a config problem", line)
        return self

    def stop(self, timeout: float = 8.0) -> None:
        """Stop taking new work, let an in-flight apply finish, release the lease."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        started = time.monotonic()
        if self.scheduler.running:
            for job_id in JOB_IDS:
                try:
                    self.scheduler.remove_job(job_id)
                except Exception:
                    pass
        if self._probe_loop is not None and self._probe_stop is not None:
            self._probe_loop.call_soon_threadsafe(self._probe_stop.set)
        got_lock = self._apply_lock.acquire(timeout=max(0.1, timeout - (time.monotonic() - started)))
        if got_lock:
            try:
                self.elector.release()
            finally:
                self._apply_lock.release()
        else:
            # An apply is still running: keep the lease so nobody else writes
            # while our request may still land; it expires on its own, and the
            # next leader settles the change we left pending.
            log.warning("stopping with an apply still in flight: the lease is left to expire")
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if self.credential.failing:  # a stopped worker's credential is nobody's problem on the status page
            try:
                self.store.set_flag(FlagKind.CREDENTIAL, self.holder, None, self.clock.now())
            except Exception as exc:
                log.warning("cannot clear the credential flag: %s", type(exc).__name__)
        if self._probe_thread is not None:
            self._probe_thread.join(max(0.1, timeout - (time.monotonic() - started)))
        self._writer.shutdown(wait=True)  # the last results reach the store
        if self.notifier is not None:
            self.notifier.close(max(0.1, min(2.0, timeout - (time.monotonic() - started))))
            if self._relay is not None:
                self._relay.release()  # what no channel took goes to the next worker now, not a claim timeout later
        log.info("worker %s stopped in %.1f s", self.holder, time.monotonic() - started)

    def _probe_main(self) -> None:
        loop = loops.new_event_loop()
        self._probe_loop = loop
        asyncio.set_event_loop(loop)
        self._probe_stop = asyncio.Event()
        try:
            assert self.runner is not None
            if not self._stopping.is_set():
                loop.run_until_complete(self.runner.run_forever(self._probe_stop))
        except Exception:
            log.exception("probe loop crashed")
        finally:
            try:
                assert self.runner is not None
                loop.run_until_complete(self.runner.aclose())
            finally:
                loop.close()

    # ------------------------------------------------------------ jobs

    def _on_results(self, results: list[ProbeResult]) -> None:
        """Called on the probe loop: hand the batch to the writer thread so no
        database write ever delays a probe's timing."""
        if results:
            self._writer.submit(self._store_results, list(results))

    def _on_news(self) -> None:
        """Called on the probe loop after a batch that changed this vantage's view: once the writer has
        stored it, the leader evaluates and reconciles at once instead of at its next tick."""
        self._writer.submit(self._reconcile_now)

    def _reconcile_now(self, delay: float = 0.0) -> None:
        if self._stopping.is_set() or not self.elector.is_leader or not self.scheduler.running:
            return
        try:
            run_at = datetime.now(UTC) + timedelta(seconds=delay)
            # Two instances: news that comes while a tick for news runs gets a tick right after it (waiting on
            # the apply lock), not a skip ("maximum number of running instances") and the backstop's interval.
            self.scheduler.add_job(self.reconcile_tick, "date", run_date=run_at, id="reconcile-now", replace_existing=True, max_instances=2)
        except Exception as exc:  # the scheduler is shutting down
            log.debug("cannot schedule an immediate reconcile: %s", type(exc).__name__)

    def _on_liveness(self, result: LivenessResult) -> None:
        """Called on the probe loop for each liveness check: kept as a per-endpoint summary that the
        writer thread stores as the flag ``liveness:<vantage>`` (when a check flips, else every 10 s)."""
        self._liveness_pending.append(result)  # for the leader's evaluator, at its next evaluation
        flipped = self._liveness.add(result)
        now = time.monotonic()
        if flipped or now - self._liveness_written >= LIVENESS_SUMMARY_EVERY_S:
            self._liveness_written = now
            self._writer.submit(self._store_liveness, self._liveness.flag_value(), result.started_at)

    def _store_liveness(self, value: dict[str, Any], at: datetime) -> None:
        try:
            self.store.set_flag(FlagKind.LIVENESS, self.settings.probe.vantage, value, at)
        except Exception as exc:
            log.warning("cannot store the liveness summary: %s", type(exc).__name__)

    def _store_results(self, results: list[ProbeResult]) -> None:
        """Store a batch; while the database is down, keep results in memory (bounded, oldest dropped
        first, counted) and store them, oldest first, once it answers again."""
        if self.metrics is not None:
            self.metrics.observe_probe_results(results)
        self._pending_results.extend(results)
        overflow = len(self._pending_results) - self.result_buffer_limit
        if overflow > 0:
            del self._pending_results[:overflow]
            self.results_dropped += overflow
            log.warning("probe result buffer full (%d): dropped the %d oldest", self.result_buffer_limit, overflow)
        while self._pending_results:
            batch = self._pending_results[:RESULT_FLUSH_BATCH]
            try:
                self.store.add_probe_results(batch)
            except Exception as exc:
                if not self._buffering:
                    log.warning("cannot store probe results (%s): keeping them in memory until the database is back", type(exc).__name__)
                self._buffering = True
                return
            del self._pending_results[: len(batch)]
            if self._buffering:
                self.results_flushed += len(batch)
        if self._buffering:
            log.info("database back: stored the buffered probe results (%d so far)", self.results_flushed)
            self._buffering = False

    @property
    def results_buffered(self) -> int:
        return len(self._pending_results)

    def stalled(self) -> str | None:
        """Why the reconcile loop is not making progress, or None while it is."""
        limit = self.settings.reconcile.deadline + 2 * self.timing.call_s + self.settings.reconcile.interval
        started = self._tick_started
        now = time.monotonic()
        if started is not None and now - started > limit:
            return f"a reconcile tick has been running for {now - started:.1f} s (limit {limit:g} s)"
        if started is None and self.elector.is_leader and now - self._progress_at > limit:
            return f"no reconcile tick for {now - self._progress_at:.1f} s (limit {limit:g} s)"
        return None

    def lease_tick(self) -> None:
        if self._stopping.is_set():
            return
        stalled = self.stalled()
        if stalled is not None:
            self.elector.lapse(stalled)  # not renewed: it runs out, and a standby takes over
            if self.metrics is not None:
                self.metrics.set_leader(self.elector.is_leader, self.elector.token)
            return
        was_leader = self.elector.is_leader
        state = self.elector.tick()
        if state.leader and not was_leader:
            self._progress_at = time.monotonic()  # the loop's clock starts when we lead
        if not state.leader:
            self.evaluator = None  # rebuilt warm from the store when we lead again
            self._try_again_at_expiry()
        if self.metrics is not None:
            self.metrics.set_leader(state.leader, state.token)

    def _try_again_at_expiry(self) -> None:
        """A standby tries again the moment the holder's lease runs out, not at its next poll,
        so a dead leader is replaced within one lease period of its last renewal."""
        try:
            lease = self.store.lease(self.elector.name)
        except Exception:
            return
        expires = lease.expires_at if lease else None
        if expires is None or self._stopping.is_set():
            return
        wait = (expires - self.clock.now()).total_seconds()
        if 0 <= wait < max(0.5, self.elector.ttl_s / 5):
            run_at = datetime.now(UTC) + timedelta(seconds=wait + 0.05)
            self.scheduler.add_job(self.lease_tick, "date", run_date=run_at, id="lease-at-expiry", replace_existing=True)

    def reconcile_tick(self) -> TickReport | None:
        """One leader tick. Returns the reconciler's report (None when not leader)."""
        if self._stopping.is_set():
            return None
        with self._apply_lock:
            if self._stopping.is_set() or not self.elector.is_leader:
                return None
            self._tick_started = time.monotonic()
            try:
                tick = self._reconcile_tick()
            finally:
                self._tick_started = None
                self._progress_at = time.monotonic()
            self._watch_credential(tick)  # under the apply lock: none of our writes is in flight if we step down
            return tick

    def _watch_credential(self, tick: TickReport | None) -> None:
        """Count the ticks whose every Azure call failed on our credential; step down after enough of them (docs/adr/0016)."""
        if tick is None:
            return
        was = (self.credential.failing, self.credential.error)
        now = self.clock.now()
        verdict = self.credential.observe(tick.azure_calls, tick.credential_failures, tick.credential_error, now)
        stepped = False
        if verdict is not None:
            data = {
                "reason": "credential",
                "error": verdict.error,
                "ticks": verdict.ticks,
                "cool_off_until": verdict.cool_off_until.isoformat(),
            }
            stepped = self.elector.step_down(verdict.reason(), verdict.cool_off_until, self.step_down_timing.grace_s, data)
            if stepped:
                self.credential.stepped_down(verdict, now)
                self.evaluator = None  # rebuilt warm from the store if we lead again
                if self.metrics is not None:
                    self.metrics.set_leader(False, None)
        if self.metrics is not None:
            self.metrics.set_credential(self.credential.failing, stepped)
        if verdict is not None or (self.credential.failing, self.credential.error) != was:
            self._store_credential_flag(now)

    def _store_credential_flag(self, now: datetime) -> None:
        """``credential:<holder>``: what `regionguard status` says of this worker's credential (cleared once it works)."""
        try:
            self.store.set_flag(FlagKind.CREDENTIAL, self.holder, self.credential.flag_value(now), now)
        except Exception as exc:
            log.warning("cannot store the credential flag: %s", type(exc).__name__)

    def _reconcile_tick(self) -> TickReport | None:
        report = self.evaluate()
        if report is None:
            return None
        started = time.monotonic()
        try:
            tick = self.reconciler.reconcile_once(report, fencing_token=self.elector.token, dry_run=self.dry_run)
        except Exception:
            log.exception("reconcile tick failed")
            if self.metrics is not None:
                self.metrics.observe_reconcile(time.monotonic() - started, False)
            return None
        if any(s.rule == RECHECK_RULE for s in tick.plan.skipped):
            self._reconcile_now(delay=recheck_after(self.settings))  # a drain waits for corroboration: look again soon
        if self.metrics is not None:
            self.metrics.observe_reconcile(time.monotonic() - started, True)
            subscriptions = {t.subscription_id for t in self.settings.targets}
            if subscriptions:
                self.metrics.set_flags(write_budget_left=min(self.reconciler.budget.available(s) for s in subscriptions))
        self.last_tick = tick
        self.ticks += 1
        if self.metrics is not None:
            for change in tick.applied:
                self.metrics.observe_change(ChangeStatus.APPLIED, change)
            for change, _code, _msg in tick.failed:
                self.metrics.observe_change(ChangeStatus.FAILED, change)
        return tick

    def evaluate(self) -> HealthReport | None:
        """Feed every vantage's new results to the evaluator and save the health it says."""
        now = self.clock.now()
        try:
            if self.evaluator is None:
                warm = self.store.latest_results(per_endpoint=self.settings.health.window, since=now - warm_horizon(self.settings))
                self._high_water = self.store.max_result_id()
                self.evaluator = HealthEvaluator.from_results(self.settings, warm, now)
            self._high_water, fresh = self.store.results_after(self._high_water)
            checks = [self._liveness_pending.popleft() for _ in range(len(self._liveness_pending))]
            self.evaluator.observe_with_liveness(fresh, checks)
            report = self.evaluator.evaluate(now)
            self.store.save_health(report.endpoints.values(), report.regions.values(), now)
            self.store.add_transitions(report.transitions)
            self._record_transitions(report, now)
            self._record_config_problems(report, now)
        except Exception:
            log.exception("health evaluation failed")
            return None
        self.last_report = report
        if self.metrics is not None:
            self.metrics.observe_health(report)
        return report

    def _record_transitions(self, report: HealthReport, now: datetime) -> None:
        for t in report.transitions:
            if t.subject != "region":
                continue
            self.store.add_event(
                AuditEvent(
                    kind=EventKind.TRANSITION,
                    at=t.at,
                    actor="automation",
                    summary=f"{t.key}: {t.old.value} -> {t.new.value}: {t.reason}",
                    region=t.key,
                    severity=_SEVERITY.get(t.new, "info"),
                    data={
                        "old": t.old.value,
                        "new": t.new.value,
                        "reason": t.reason,
                        "evidence": list(t.evidence),
                        "resolved": t.new is HealthStateName.HEALTHY,
                    },
                )
            )

    def _record_config_problems(self, report: HealthReport, now: datetime) -> None:
        problems = set(report.config_problems)
        for problem in sorted(problems - self._announced_problems):
            self.store.add_event(
                AuditEvent(
                    kind=EventKind.CONFIG_PROBLEM, at=now, actor="automation", summary=problem, severity="warning", data={"reason": problem}
                )
            )
        self._announced_problems = problems
        self.store.set_flag(FlagKind.CONFIG_PROBLEMS, None, {"problems": sorted(problems)} if problems else None, now)

    def rollup_tick(self) -> None:
        if not self.elector.is_leader:  # one writer of rollups, like of everything derived
            return
        now = self.clock.now()
        try:
            # the last few minutes, the current one included (it is recomputed until it is over)
            self.store.rollup(now - timedelta(minutes=3), now + timedelta(seconds=1))
        except Exception as exc:
            log.warning("rollup failed: %s", type(exc).__name__)

    def retention_tick(self) -> None:
        if not self.elector.is_leader:
            return
        now = self.clock.now()
        r = self.settings.retention
        try:
            raw, rolled = self.store.purge(now - timedelta(days=r.raw_days), now - timedelta(days=r.rollup_days))
            if raw or rolled:
                log.info("retention: purged %d raw results and %d rollups", raw, rolled)
        except Exception as exc:
            log.warning("retention failed: %s", type(exc).__name__)

    def overrides_tick(self) -> None:
        if not self.elector.is_leader:
            return
        now = self.clock.now()
        try:
            for o in self.store.expire_overrides(now):
                self.store.add_event(
                    AuditEvent(
                        kind=EventKind.OVERRIDE,
                        at=now,
                        actor="expiry",
                        summary=f"expired: {o.describe()}",
                        region=o.region,
                        target=o.target,
                        data={"override_id": o.id, "lifted": True},
                    )
                )
        except Exception as exc:
            log.warning("override expiry failed: %s", type(exc).__name__)

    # ------------------------------------------------------------ what it holds

    def memory_sizes(self) -> dict[str, int]:
        """Items in each in-memory container the worker holds (``controlplane.runtime.sizes``), and the
        scheduler's jobs, the result writer's backlog, the metric series, the probe loop's tasks and
        the interpreter's allocated blocks, and what the C allocator holds: served at ``/debug/sizes``,
        watched by ``bench/soak.py``."""
        out = {f"worker.{path}": n for path, n in container_sizes(self).items()}
        out["scheduler.jobs"] = len(self.scheduler.get_jobs()) if self.scheduler.running else 0
        out["writer.backlog"] = self._writer._work_queue.qsize()
        if self.runner is not None:
            out["probe_pool.connections"], out["probe_pool.idle"] = self.runner.pooled_connections
        if self.metrics is not None:
            out["metrics.series"] = self.metrics.series()
        loop = self._probe_loop
        if loop is not None and not loop.is_closed():
            try:
                out["probe_loop.tasks"] = len(asyncio.all_tasks(loop))
            except RuntimeError:  # the loop's task set changed while read from this thread
                pass
        out["python.allocated_blocks"] = sys.getallocatedblocks()
        out.update(allocator_sizes())
        return out

    # ------------------------------------------------------------ readiness

    def readiness(self) -> dict[str, Any]:
        try:
            self.store.check()
            database: bool | None = True
        except Exception:
            database = False
        checks: dict[str, Any] = {"database": database, "scheduler": self.running, "leader": self.elector.is_leader, "holder": self.holder}
        # probe results kept in memory while the database is down, and those the bound made us drop (information)
        checks["results_buffered"] = self.results_buffered
        checks["results_dropped"] = self.results_dropped
        reasons: list[str] = []
        if self.runner is not None:
            checks["api_keys"] = not self.missing_keys  # a prober without its keys probes nothing useful
            reasons += self.missing_keys
        # the Azure credential, as the last reconcile tick that called Azure found it (a standby calls nothing)
        watch = self.credential
        checks["azure_credential"] = "untested" if watch.worked is None else watch.worked
        if watch.failing:
            since = f" since {watch.failing_since:%H:%M:%S} UTC" if watch.failing_since else ""
            down = f"; stepped down at {watch.stepped_down_at:%H:%M:%S} UTC" if watch.stepped_down_at else ""
            reasons.append(f"Azure credential failing{since}: {watch.error}{down}")
        if reasons:
            checks["reasons"] = reasons
        return checks
