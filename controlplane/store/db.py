"""Engine and sessions. The schema comes from Alembic migrations only."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from controlplane.errors import Unavailable

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


class DatabaseUnavailable(Unavailable):
    """The database cannot be reached or is not migrated; message is safe to show."""

    error = "database_unavailable"


class LockTimeout(DatabaseUnavailable):
    """A lock was not granted within the wait its statement allows (PostgreSQL ``lock_timeout``): try again."""

    error = "database_busy"


IDLE_IN_TRANSACTION_S = 5.0
"""PostgreSQL ends a session that sits this long inside a transaction without sending a statement.

A stopped (SIGSTOP) or stalled client is such a session: the server does not
notice it, and without this it kept every lock it had taken (the lease row,
the override lock) for as long as it slept. Every transaction of ours sends
its statements back to back, so only a stopped or stuck process reaches it.
The worker uses a shorter one when its lease is short (LeaseTiming, docs/adr/0012)."""

MIGRATION_IDLE_IN_TRANSACTION_S = 600.0
"""The same limit for the migrations' session (migrations/env.py): a migration's Python may pause between its
statements (imports, a batch rebuild, a machine starved of CPU) for longer than the application's 5 s, and
losing its transaction halfway for that is worse than the wait; a migration that is stopped still frees its
locks after this long."""

_LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE for a lock_timeout


def make_engine(url: str, *, idle_in_transaction_s: float = IDLE_IN_TRANSACTION_S) -> Engine:
    """Engine with sane defaults for SQLite (WAL, FK, busy timeout) and PostgreSQL (pre-ping, and
    ``idle_in_transaction_session_timeout``: a client stopped inside a transaction loses it, and its locks)."""
    if not idle_in_transaction_s > 0:
        raise ValueError(f"idle_in_transaction_s must be > 0, not {idle_in_transaction_s!r}")
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            if u.database and u.database != ":memory:":
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    if u.get_backend_name() == "postgresql" and u.get_driver_name() in ("", "psycopg2"):
        u = u.set(drivername="postgresql+psycopg")
    try:
        engine = create_engine(u, pool_pre_ping=True, pool_size=5, max_overflow=5)
    except ImportError as exc:  # ModuleNotFoundError: psycopg is in the postgres extra
        raise DatabaseUnavailable(
            f"PostgreSQL needs the postgres extra ({exc.name or 'psycopg'} is not installed): pip install 'regionguard[postgres]'"
        ) from None
    if u.get_backend_name() == "postgresql":
        idle_ms = max(1, round(idle_in_transaction_s * 1000))

        @event.listens_for(engine, "connect")
        def _pg_session(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute(f"SET idle_in_transaction_session_timeout = {idle_ms}")
            cur.close()
            dbapi_conn.commit()

    return engine


def lock_timeout(session: Session, seconds: float) -> None:
    """For the rest of ``session``'s transaction, wait at most ``seconds`` for any lock (PostgreSQL; then
    :class:`LockTimeout`). SQLite waits its busy timeout instead (see docs/adr/0012 for what a stopped SQLite writer does)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"SET LOCAL lock_timeout = {max(1, round(seconds * 1000))}"))


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: Callable[[], Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on error.

    A lost or refused connection becomes :class:`DatabaseUnavailable` (the
    web answers 503 "database unavailable", the worker keeps what it can in
    memory); SQLite's "database is locked" stays what it is (a busy writer).
    """
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException as exc:
        try:
            session.rollback()
        except (OperationalError, InterfaceError):
            pass  # the connection is gone: nothing to roll back
        if isinstance(exc, OperationalError) and getattr(exc.orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE:
            raise LockTimeout("the database is busy: a lock held by another session was not granted in time; try again") from exc
        if isinstance(exc, OperationalError | InterfaceError) and "database is locked" not in str(exc):
            raise DatabaseUnavailable(f"the database is unavailable: {type(getattr(exc, 'orig', None) or exc).__name__}") from exc
        raise
    finally:
        try:
            session.close()
        except (OperationalError, InterfaceError):
            pass


def lock(session: Session, name: str) -> None:
    """Take the lock ``name`` for the rest of ``session``'s transaction (see Store.exclusive)."""
    if session.get_bind().dialect.name == "postgresql":
        key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
    else:
        # SQLite has one writer: a write statement (even one that matches no row) takes the
        # database's write lock at once and keeps it until commit, so the next block waits
        # (busy timeout) before it reads anything.
        session.execute(text("UPDATE leader_lease SET name = name WHERE 1 = 0"))


def alembic_config(url: str) -> Config:
    from alembic.config import Config  # imported when needed: only db commands and checks use Alembic

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def downgrade_steps(url: str, revision: str) -> list[tuple[str, str]]:
    """(revision, first line of its description) of every migration a downgrade to ``revision`` undoes, newest first.

    ``ValueError`` for a revision that is not one of ours or not below the current one.
    """
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config(url))
    current = current_revision(url)
    if current is None:
        return []
    known = {s.revision for s in script.walk_revisions()}
    if revision != "base" and revision not in known:
        raise ValueError(f"no migration {revision!r} (known: base, {', '.join(sorted(known))})")
    steps = []
    for s in script.iterate_revisions(current, revision if revision != "base" else "base"):
        if s.revision == revision:
            continue
        steps.append((s.revision, (s.doc or "").strip().splitlines()[0] if s.doc else ""))
    return steps


def table_row_counts(url: str, tables: tuple[str, ...]) -> dict[str, int]:
    """Rows in each of ``tables`` that exists (what a downgrade would lose)."""
    from sqlalchemy import inspect

    engine = make_engine(url)
    try:
        present = set(inspect(engine).get_table_names())
        with engine.connect() as conn:
            return {t: int(conn.execute(text(f'SELECT count(*) FROM "{t}"')).scalar_one()) for t in tables if t in present}
    finally:
        engine.dispose()


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
