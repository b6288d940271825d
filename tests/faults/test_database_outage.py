"""A PostgreSQL outage is survivable: the web answers 503, the worker loses no probe result, lease events are kept.

Issue 14, case 6: with the database stopped, every logged-in page and API
call answered 500, /healthz and /readyz did too when a session cookie was
sent, 119 probe results were dropped in 30 s, and so were the lease-loss
audit events. The database here is a private cluster (tests/faults/private_pg.py)
stopped and started for real.
"""

from __future__ import annotations

import re
import socket
import uuid
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from controlplane import users
from controlplane.domain import EventKind, LeaseName, Outcome, ProbeResult
from controlplane.runtime.leader import LeaderElector
from controlplane.runtime.worker import Worker, result_buffer_limit
from controlplane.store import Store, open_store
from controlplane.store.db import make_engine
from tests.fakes import FakeClock, probe_result
from tests.faults.private_pg import PrivatePostgres
from tests.integration.web_seed import PASSWORD, cheap_hashing, default_hashing, settings
from web.app import create_app


@pytest.fixture(scope="module")
def pg() -> Iterator[PrivatePostgres]:
    cluster = PrivatePostgres()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def pg_store(pg: PrivatePostgres) -> Iterator[Store]:
    if not _up(pg):
        pg.start()
    name = f"rg_{uuid.uuid4().hex[:10]}"
    admin = make_engine(pg.url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    store = open_store(pg.url.rsplit("/", 1)[0] + "/" + name, migrate=True)
    yield store
    if not _up(pg):
        pg.start()
    store.close()


def _up(pg: PrivatePostgres) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", pg.port)) == 0


def _login(app: Flask) -> FlaskClient:
    c = app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/login").get_data(as_text=True))
    assert token
    r = c.post("/login", data={"username": "otto", "password": PASSWORD, "csrf_token": token.group(1)})
    assert r.status_code == 302, r.get_data(as_text=True)
    return c


def test_pages_and_api_answer_503_database_unavailable_and_healthz_never_depends_on_the_session(
    pg: PrivatePostgres, pg_store: Store
) -> None:
    cheap_hashing()
    try:
        clock = FakeClock()
        users.add_user(pg_store, "otto", "operator", PASSWORD, clock.now())
        app = create_app(settings(), pg_store, {"TESTING": True, "CLOCK": clock, "SECRET_KEY": "test-secret"})
        client = _login(app)
        assert client.get("/").status_code == 200
        pg.stop()
        page = client.get("/")
        assert page.status_code == 503 and "Database unavailable" in page.get_data(as_text=True)
        api = client.get("/api/v1/regions")
        assert api.status_code == 503 and api.get_json()["error"] == "database_unavailable"
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 503
        pg.start()
        assert client.get("/").status_code == 200
        assert client.get("/readyz").status_code == 200
    finally:
        default_hashing()


def test_the_worker_keeps_probe_results_while_the_database_is_down_and_stores_them_when_it_is_back(
    pg: PrivatePostgres, pg_store: Store
) -> None:
    s = settings()
    worker = Worker(s, pg_store, actuators={}, probe=False)
    # ten minutes of 100 endpoints at the default interval fit in the buffer
    assert result_buffer_limit(s.model_copy(update={"probe": s.probe.model_copy(update={"interval": 30.0})})) >= 100 * 20
    clock = FakeClock()
    sent = 0

    def batch(n: int) -> list[ProbeResult]:
        nonlocal sent
        out = [probe_result(f"eastus/gpt-4o-{(sent + i) % 100}", Outcome.OK, clock.advance(0.3)) for i in range(n)]
        sent += n
        return out

    worker._store_results(batch(10))
    pg.stop()
    for _ in range(20):  # 2000 results: ten minutes of 100 endpoints probed every 30 s
        worker._store_results(batch(100))
    assert worker.results_buffered == 2000 and worker.results_dropped == 0
    checks = worker.readiness()
    assert checks["database"] is False and checks["results_buffered"] == 2000 and checks["results_dropped"] == 0
    pg.start()
    worker._store_results(batch(10))
    assert worker.results_buffered == 0
    _, stored = pg_store.results_after(0, limit=100_000)
    assert len(stored) == sent == 2020, "probe results were lost in the outage"
    assert [r.started_at for r in stored] == sorted(r.started_at for r in stored)  # oldest first


def test_past_its_bound_the_buffer_drops_the_oldest_and_counts_them(pg: PrivatePostgres, pg_store: Store) -> None:
    worker = Worker(settings(), pg_store, actuators={}, probe=False)
    worker.result_buffer_limit = 100
    pg.stop()
    worker._store_results([probe_result("eastus/gpt-4o", Outcome.OK, float(i)) for i in range(150)])
    assert worker.results_buffered == 100 and worker.results_dropped == 50
    pg.start()
    worker._store_results([])
    _, stored = pg_store.results_after(0)
    assert [r.started_at for r in stored] == [probe_result(when=float(i)).started_at for i in range(50, 150)]


def test_lease_loss_events_are_recorded_once_the_database_is_back(pg: PrivatePostgres, pg_store: Store) -> None:
    clock = FakeClock()
    elector = LeaderElector(pg_store, "worker-a", ttl_s=10, clock=clock)
    assert elector.tick().leader
    pg.stop()
    clock.advance(3)
    assert not elector.tick().leader  # no database: not leader, and the event cannot be written yet
    pg.start()
    clock.advance(3)
    elector.tick()
    summaries = [e.summary for e in pg_store.events(kinds=[EventKind.LEASE])]
    assert any("stopped being leader" in text for text in summaries), summaries
    lease = pg_store.lease(LeaseName.LEADER)
    assert lease is not None and lease.holder == "worker-a"
