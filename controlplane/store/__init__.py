"""SQL store: models, engine/session, repositories returning domain values."""

from controlplane.store.db import DatabaseUnavailable
from controlplane.store.repo import Store, open_store

__all__ = ["DatabaseUnavailable", "Store", "open_store"]
