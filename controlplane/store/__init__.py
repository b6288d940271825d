"""SQL store: models, engine/session, repositories returning domain values and typed records."""

from controlplane.store.db import DatabaseUnavailable
from controlplane.store.records import (
    ApiToken,
    Bucket,
    ChangeRecord,
    Flag,
    Lease,
    LivenessRecord,
    NotificationRecord,
    Panic,
    PlanRecord,
    RegionStats,
    Rollup,
    TargetEndpointRecord,
    User,
)
from controlplane.store.repo import Store, open_store

__all__ = [
    "ApiToken",
    "Bucket",
    "ChangeRecord",
    "DatabaseUnavailable",
    "Flag",
    "Lease",
    "LivenessRecord",
    "NotificationRecord",
    "Panic",
    "PlanRecord",
    "RegionStats",
    "Rollup",
    "Store",
    "TargetEndpointRecord",
    "User",
    "open_store",
]
