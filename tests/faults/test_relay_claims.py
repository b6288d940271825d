"""Notifications: each stored event is relayed once, across workers (separate connection pools) on PostgreSQL.

Issue 14, case 7: every worker relayed every event with an in-memory cursor
(each page twice with two workers), and events written during a failover
were never sent.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

from controlplane.domain import AuditEvent, EventKind
from controlplane.store import open_store

T0 = datetime(2026, 12, 2, 11, 0, tzinfo=UTC)


def test_four_workers_claiming_at_once_each_get_distinct_events_and_together_all(postgres_url: str) -> None:
    stores = [open_store(postgres_url, migrate=(i == 0)) for i in range(4)]
    try:
        ids = [
            stores[0].add_event(AuditEvent(kind=EventKind.TRANSITION, at=T0, actor="automation", summary=f"event {i}")) for i in range(60)
        ]
        stores[0].add_event(AuditEvent(kind=EventKind.TRANSITION, at=T0 - timedelta(hours=2), actor="automation", summary="history"))
        stores[0].sync_channels("w0", ["pager"], T0, since=T0 - timedelta(minutes=15))
        claimed: dict[str, list[str]] = {}
        start = threading.Barrier(len(stores))

        def worker(i: int) -> None:
            start.wait(10)
            got: list[str] = []
            for _ in range(20):  # bounded: a few small batches each
                batch = stores[i].claim_events(
                    f"w{i}", T0, channel="pager", since=T0 - timedelta(minutes=15), stale_before=T0 - timedelta(minutes=1), limit=7
                )
                if not batch:
                    break
                got.extend(e.summary for e in batch)
            claimed[f"w{i}"] = got

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(stores))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        every = Counter(s for got in claimed.values() for s in got)
        assert [s for s, n in every.items() if n > 1] == [], "an event was handed to two workers"
        assert set(every) == {f"event {i}" for i in range(len(ids))}, "an event was handed to nobody"
        assert (
            stores[1].claim_events("w1", T0, channel="pager", since=T0 - timedelta(minutes=15), stale_before=T0 - timedelta(minutes=1))
            == []
        )
    finally:
        for s in stores:
            s.close()
