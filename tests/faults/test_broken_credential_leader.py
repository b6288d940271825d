"""A leader whose Azure credential gets no token steps down, and a standby whose credential works drains the region.

Left open by issue 14: ``BoundedCredential`` ends each token fetch within the
call deadline (``TokenTimeout``), so the leader's ticks finish, with errors,
and a finished tick renews the lease (ADR 0012, rule 3). A leader that could
not authenticate to Azure at all therefore kept the lease for good, and a
standby whose credential worked never took over: no drain reached Azure while
a region was down.

What is injected, for real: two `regionguard run` processes on PostgreSQL.
worker-a's config asks for ``DefaultAzureCredential``, kept to a managed
identity whose endpoint on 127.0.0.1 holds every token request
(tests/faults/authority.py); worker-b's config uses the simulator's token,
which the fake ARM takes. worker-a leads first, then a simulated region goes
down, and the test waits for the drain to reach the fake ARM.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.config import load_settings
from controlplane.domain import EventKind
from controlplane.status import read_status
from tests.faults.authority import HangingIdentityEndpoint
from tests.integration.test_worker_ha import World, _drained_everywhere, _world, wait_for
from tests.waiting import PROCESS_START_S

REGION = "eastus"


def _edit(data: dict[str, Any]) -> None:
    # a failing tick ends within its reads' deadline (a third of the tick's, at least 1 s): short ticks, a short test
    data["reconcile"].update(interval="0.5s", deadline="3s")


@pytest.fixture
def world(postgres_url: str, tmp_path: Path) -> Iterator[World]:
    yield from _world(postgres_url, tmp_path, _edit)


@pytest.fixture
def identity() -> Iterator[HangingIdentityEndpoint]:
    endpoint = HangingIdentityEndpoint()
    try:
        yield endpoint
    finally:
        endpoint.close()


def _broken_config(w: World) -> Path:
    """The world's config, with DefaultAzureCredential instead of the simulator's token."""
    data = yaml.safe_load(w.config.read_text())
    data["azure"]["credential"] = "default"
    path = w.config.with_name("broken-credential.yaml")
    path.write_text(yaml.safe_dump(data))
    return path


def _requests_by(w: World, holder: str) -> list[Any]:
    return [e for e in w.arm.request_log if f"regionguard-worker/{holder}" in e.headers.get("User-Agent", "")]


def _health_url(w: World, holder: str) -> str | None:
    for line in w.output.get(holder, []):
        if m := re.search(r"health on (http://\S+/)", line):
            return m.group(1)
    return None


def _readyz(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url + "readyz", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_a_leader_without_a_token_steps_down_and_the_standby_drains_the_failed_region(
    world: World, identity: HangingIdentityEndpoint
) -> None:
    w = world
    started = datetime.now(UTC)
    w.worker("worker-a", config=_broken_config(w), env=identity.environ(dict(os.environ)), extra=("--health-port", "0"))
    wait_for(lambda: w.holder() == "worker-a", PROCESS_START_S, "worker-a to take the lease")
    b = w.worker("worker-b")
    wait_for(lambda: w.started("worker-b"), PROCESS_START_S, "worker-b to start")

    w.sim.set_fault(REGION, "down")
    wait_for(lambda: _drained_everywhere(w, REGION), 45, f"{REGION}'s drain to reach the fake ARM")

    assert _requests_by(w, "worker-a") == [], "worker-a reached ARM without a token"
    assert identity.token_requests >= 1, "worker-a never asked its managed identity for a token"
    writes = Counter((e.path, json.dumps(e.body, sort_keys=True)) for e in w.writes())
    assert [x for x, n in writes.items() if n > 1] == [], "a write reached ARM twice"
    assert all("regionguard-worker/worker-b" in e.headers.get("User-Agent", "") for e in w.writes())
    assert b.poll() is None, "the standby died"

    # why worker-a stepped down: on the audit trail (the dashboard's timeline, `regionguard history`), oldest first.
    # (That it never takes the lease from a live holder is tests/integration/test_credential_step_down.py's, on a fake clock.)
    lease_events = w.store.events(since=started, kinds=[EventKind.LEASE])[::-1]
    stepped = [e for e in lease_events if e.actor == "worker:worker-a" and e.data.get("stepped_down")]
    assert stepped, [e.summary for e in lease_events]
    assert all("TokenTimeout" in e.summary and "credential" in e.summary for e in stepped), [e.summary for e in stepped]
    taken_by_a = [e for e in lease_events if e.actor == "worker:worker-a" and e.data.get("token") is not None]

    # worker-a says its credential fails: /readyz and `regionguard status`
    url = wait_for(lambda: _health_url(w, "worker-a"), 5, "worker-a's health port")
    status, body = _readyz(url)
    assert status == 503 and body["checks"]["azure_credential"] is False, body
    assert any("TokenTimeout" in r for r in body["checks"]["reasons"]), body
    credentials = read_status(load_settings(w.config), w.store, datetime.now(UTC)).credentials
    failing = [c for c in credentials if c.holder == "worker-a"]
    assert len(failing) == 1 and failing[0].stepped_down_at is not None and "TokenTimeout" in failing[0].error, credentials
    print(
        f"worker-a led at {taken_by_a[0].at:%H:%M:%S.%f}, stepped down at {stepped[0].at:%H:%M:%S.%f}"
        f" ({(stepped[0].at - taken_by_a[0].at).total_seconds():.1f} s); drain written by worker-b"
    )
