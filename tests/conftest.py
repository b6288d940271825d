"""Shared fixtures: a migrated SQLite store, and a fresh PostgreSQL database when one is available.

PostgreSQL tests need REGIONGUARD_TEST_POSTGRES_URL (an admin URL, e.g.
postgresql://regionguard:regionguard@127.0.0.1:5432/postgres; `.ci/run` sets it).
Without it they are skipped, unless REGIONGUARD_REQUIRE_POSTGRES=1 turns the
skip into a failure (CI sets that, so a broken PostgreSQL never passes silently).
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from controlplane.store import Store, open_store

if TYPE_CHECKING:
    from sqlalchemy import Engine

# Under pytest-xdist (`make test`, one file per worker at a time: --dist loadfile) the
# files that take longest, most of them starting real processes, servers or a browser,
# are handed out first, so no worker starts one near the end while the others sit idle.
# Longest first, from the per-file figures of a parallel run. Order only; a plain
# run keeps the files' order.
RUN_FIRST = (
    "tests/integration/test_cli.py",
    "tests/integration/test_demo.py",
    "tests/faults/test_notify_failover.py",
    "tests/integration/test_oidc.py",
    "tests/integration/test_cli_no_traceback.py",
    "tests/integration/test_browser.py",
    "tests/integration/test_web.py",
    "tests/integration/test_benches_run.py",
    "tests/integration/test_reconcile.py",
    "tests/integration/test_actuator_contract.py",
    "tests/integration/test_worker_ha.py",
    "tests/faults/test_paused_leader.py",
    "tests/integration/test_cli_honest.py",
    "tests/integration/test_missing_keys.py",
    "tests/faults/test_database_outage.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return

    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return RUN_FIRST.index(path) if path in RUN_FIRST else len(RUN_FIRST)

    items.sort(key=rank)  # stable: each module keeps its own order


@pytest.fixture(autouse=True)
def _process_left_as_found() -> Iterator[None]:
    """What a test's in-process `regionguard web`, `run` or demo changes in this whole
    process is put back, so no later test in the same pytest (xdist) process starts
    from it: the start-up heap they freeze (controlplane.cli.common.freeze_startup_heap;
    a frozen heap once failed test_startup_heap on CI), the SIGTERM/SIGINT handlers
    they install, the environment variables they set (the demo's secret key), the
    root logger's level."""
    environ = dict(os.environ)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    level = logging.getLogger().level
    yield
    if gc.get_freeze_count():
        gc.unfreeze()
    if os.environ != environ:
        os.environ.clear()
        os.environ.update(environ)
    for sig, handler in handlers.items():
        if signal.getsignal(sig) is not handler:
            signal.signal(sig, handler)
    logging.getLogger().setLevel(level)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return "sqlite:///" + str(tmp_path / "regionguard-test.db")


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty SQLite database migrated to head, once per test process, for :func:`store` to copy."""
    path = tmp_path_factory.mktemp("template") / "migrated.db"
    s = open_store("sqlite:///" + str(path), migrate=True)
    with s.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the one file we copy
    s.close()
    return path


@pytest.fixture
def store(sqlite_url: str, migrated_sqlite: Path) -> Iterator[Store]:
    """A Store on a fresh copy of the migrated database (the same schema as migrating each time, without its cost)."""
    shutil.copyfile(migrated_sqlite, sqlite_url.removeprefix("sqlite:///"))
    s = open_store(sqlite_url)
    yield s
    s.close()


def _require(flag: str, reason: str) -> None:
    if os.environ.get(flag) == "1":
        pytest.fail(f"{reason} (and {flag}=1 forbids skipping)")
    pytest.skip(reason)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """URL of a brand-new, empty PostgreSQL database, dropped afterwards."""
    admin = os.environ.get("REGIONGUARD_TEST_POSTGRES_URL")
    if not admin:
        _require("REGIONGUARD_REQUIRE_POSTGRES", "REGIONGUARD_TEST_POSTGRES_URL is not set: no PostgreSQL to test against")
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from controlplane.store.db import make_engine

    name = f"rg_test_{uuid.uuid4().hex[:12]}"
    admin_engine = make_engine(admin).execution_options(isolation_level="AUTOCOMMIT")
    try:
        with admin_engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin_engine.dispose()
        _require("REGIONGUARD_REQUIRE_POSTGRES", f"PostgreSQL at REGIONGUARD_TEST_POSTGRES_URL unusable: {exc}")
    url = make_url(admin).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        _drop_database(admin_engine, name)
        admin_engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db_store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """A migrated Store on each database in turn: a fresh SQLite file, then a fresh PostgreSQL database."""
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    s = open_store(url, migrate=True)
    try:
        yield s
    finally:
        s.close()


def _drop_database(admin_engine: Engine, name: str, timeout: float = 10.0) -> None:
    """DROP DATABASE ... WITH (FORCE), again while an autovacuum worker is in it.

    FORCE terminates the database's sessions, but a role without pg_signal_backend
    may not terminate an autovacuum worker (it has no role): PostgreSQL refuses
    with InsufficientPrivilege. The worker is done with a test-sized database in
    moments, so try again until ``timeout``.
    """
    from psycopg.errors import InsufficientPrivilege
    from sqlalchemy import text
    from sqlalchemy.exc import ProgrammingError

    deadline = time.monotonic() + timeout
    while True:
        try:
            with admin_engine.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            return
        except ProgrammingError as exc:
            if not isinstance(exc.orig, InsufficientPrivilege) or time.monotonic() >= deadline:
                raise
        time.sleep(0.1)


def browser_path() -> str:
    path = "/usr/bin/chromium"
    if not os.path.exists(path):
        _require("REGIONGUARD_REQUIRE_BROWSER", f"{path} is missing: install Debian's chromium")
    return path
