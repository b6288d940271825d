"""The worker's own jobs as configured, and what it reports about what it holds (a real SQLite store)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from controlplane.config import parse_settings
from controlplane.runtime.worker import Worker
from controlplane.store import Store
from tests.fakes import settings_dict
from tests.waiting import wait_until


def test_the_retention_pass_runs_every_retention_interval_and_first_within_one(store: Store) -> None:
    settings = parse_settings({**settings_dict(), "retention": {"raw_days": 1, "interval": "90s"}})
    worker = Worker(settings, store, actuators={}, probe=False).start()
    try:
        job = worker.scheduler.get_job("retention")
        assert job is not None
        assert job.trigger.interval.total_seconds() == 90
        assert 0 < (job.next_run_time - datetime.now(UTC)).total_seconds() <= 90
    finally:
        worker.stop(timeout=2)


def test_the_worker_reports_the_items_it_holds_per_container(store: Store) -> None:
    worker = Worker(parse_settings(settings_dict()), store, actuators={}).start()
    try:
        sizes = worker.memory_sizes()
    finally:
        worker.stop(timeout=2)
    assert sizes["worker.runner._schedules"] == 3  # one per endpoint
    assert sizes["worker.reconciler._mine"] == 0
    assert {"scheduler.jobs", "writer.backlog", "probe_pool.connections", "python.allocated_blocks"} <= set(sizes)


def test_news_that_comes_while_a_tick_for_news_runs_gets_its_own_tick_after_it(store: Store) -> None:
    """A second ``reconcile-now`` while the first still runs used to be skipped by the scheduler (one instance
    per job): the news waited for the backstop tick, a whole ``reconcile.interval`` later."""
    settings = parse_settings({**settings_dict(), "reconcile": {"interval": "300s"}})  # the backstop: once at start, then not
    worker = Worker(settings, store, actuators={}, probe=False)
    calls: list[int] = []
    release = threading.Event()

    def tick() -> None:
        calls.append(len(calls))
        if len(calls) == 2:  # the first tick for news: holds until released
            release.wait(10)

    worker._reconcile_tick = tick  # type: ignore[method-assign]  # what a tick does is not the point: when ticks run is
    worker.start()
    try:
        wait_until(lambda: calls, 10, "the backstop's first tick")
        worker._reconcile_now()
        wait_until(lambda: len(calls) == 2, 5, "the tick for the first news")
        worker._reconcile_now()  # news while that tick runs
        wait_until(lambda: worker.scheduler.get_job("reconcile-now") is None, 5, "the scheduler to take the second news")
        release.set()
        wait_until(lambda: len(calls) == 3, 5, "a tick for the second news")
    finally:
        release.set()
        worker.stop(timeout=2)
