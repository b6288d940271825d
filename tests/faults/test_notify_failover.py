"""Two real `regionguard run` workers on PostgreSQL with a webhook: every event arrives once, across a leader's death.

Issue 14, case 7: each worker relayed every stored event from an in-memory
cursor, so with two workers each page went out twice, and the events written
while leadership moved were never sent.
"""

from __future__ import annotations

import json
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.cli.demo import demo_config
from controlplane.config import parse_settings
from controlplane.domain import EventKind
from controlplane.store import open_store
from simulator.arm import FakeArm
from simulator.llm import LLMSimulator, default_regions
from tests.integration.test_worker_ha import World, wait_for

HOOK_ENV = "REGIONGUARD_TEST_HOOK_URL"


class Hook:
    """A webhook receiver on 127.0.0.1 that keeps every event id it is sent."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                payload = json.loads(body)
                with hook.lock:
                    hook.ids.extend(int(e["id"]) for e in payload.get("events", []) if e.get("id") is not None)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, name="hook", daemon=True).start()

    def received(self) -> Counter[int]:
        with self.lock:
            return Counter(self.ids)


@pytest.fixture
def world(postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[World, Hook]]:
    hook = Hook()
    monkeypatch.setenv(HOOK_ENV, hook.url)
    regions = default_regions(3, 2)
    sim = LLMSimulator(regions, seed=5).start()
    arm = FakeArm().start()
    data = demo_config({r.name: sim.base_url(r.name) for r in regions}, [d.name for d in regions[0].deployments], arm, postgres_url, 0)
    data["probe"].update(interval="2s", fast_interval="0.5s", timeout="1.5s")
    data["health"].update(min_dwell="2s", successes_to_up=2)
    data["guardrails"].update(cooldown="1s")
    data["reconcile"].update(interval="1s")
    data["notifications"] = {"group_wait": "0s", "channels": [{"kind": "webhook", "name": "hook", "url_env": HOOK_ENV}]}
    settings = parse_settings(data)
    arm.seed_from_config(settings)
    config = tmp_path / "regionguard.yaml"
    config.write_text(yaml.safe_dump(data))
    store = open_store(postgres_url, migrate=True)
    w = World(sim, arm, config, store, [])
    try:
        yield w, hook
    finally:
        for p in w.procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
            if p.stdout:
                p.stdout.close()
        store.close()
        sim.stop()
        arm.stop()
        hook.server.shutdown()


def test_each_event_reaches_the_webhook_exactly_once_across_two_workers_and_a_killed_leader(world: tuple[World, Hook]) -> None:
    w, hook = world
    a = w.worker("worker-a")
    wait_for(lambda: w.holder() == "worker-a", 30, "worker-a to take the lease")
    w.worker("worker-b")
    wait_for(lambda: w.started("worker-b"), 30, "worker-b to start")
    w.sim.set_fault("eastus", "down")
    wait_for(lambda: w.store.events(kinds=[EventKind.CHANGE]), 40, "the leader to drain eastus")
    a.send_signal(signal.SIGKILL)  # mid-incident: the leader dies without a word
    a.wait(10)
    wait_for(lambda: w.holder() == "worker-b", 30, "worker-b to take over")
    w.sim.clear_faults("eastus")  # the incident ends under the new leader: more events
    wait_for(
        lambda: any(e.actor.startswith("worker:worker-b") or "worker-b" in e.summary for e in w.store.events(kinds=[EventKind.LEASE])),
        20,
        "worker-b's lease event",
    )
    stored = {e.id for e in w.store.events(limit=10_000) if e.id is not None}

    def all_arrived() -> bool:
        return stored <= set(hook.received())

    wait_for(all_arrived, 30, "every stored event to reach the webhook")
    got = hook.received()
    assert [i for i, n in got.items() if n > 1] == [], "an event was sent twice"
    assert stored - set(got) == set(), "an event was never sent"
