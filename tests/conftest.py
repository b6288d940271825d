"""Shared fixtures: a migrated SQLite store, and a fresh PostgreSQL database when one is available.

PostgreSQL tests need REGIONGUARD_TEST_POSTGRES_URL (an admin URL, e.g.
postgresql://regionguard:regionguard@127.0.0.1:5432/postgres; `.ci/run` sets it).
Without it they are skipped, unless REGIONGUARD_REQUIRE_POSTGRES=1 turns the
skip into a failure (CI sets that, so a broken PostgreSQL never passes silently).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.store import Store, open_store


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return "sqlite:///" + str(tmp_path / "regionguard-test.db")


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    s = open_store(sqlite_url, migrate=True)
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
        with admin_engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin_engine.dispose()


def browser_path() -> str:
    path = "/usr/bin/chromium"
    if not os.path.exists(path):
        _require("REGIONGUARD_REQUIRE_BROWSER", f"{path} is missing: install Debian's chromium")
    return path
