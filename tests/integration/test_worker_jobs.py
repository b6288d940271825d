"""The worker's own jobs as configured, and what it reports about what it holds (a real SQLite store)."""

from __future__ import annotations

from datetime import UTC, datetime

from controlplane.config import parse_settings
from controlplane.runtime.worker import Worker
from controlplane.store import Store
from tests.fakes import settings_dict


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
