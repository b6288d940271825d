"""Alembic environment: the only place the schema is created."""

from __future__ import annotations

import os

from alembic import context

from controlplane.store.db import MIGRATION_IDLE_IN_TRANSACTION_S, make_engine
from controlplane.store.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return os.environ.get("REGIONGUARD_DATABASE_URL") or config.get_main_option("sqlalchemy.url") or "sqlite:///regionguard.db"


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is not None:
        context.configure(connection=connectable, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(_url(), idle_in_transaction_s=MIGRATION_IDLE_IN_TRANSACTION_S)
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
