"""Operator actions are atomic and serialized: no race lets two drains break min_serving, no button makes duplicates.

Each test reproduces a case found by pressing buttons in parallel (issue 14):
the preview and the write of two actions interleaved, so each passed a check
the other invalidated. A barrier holds every thread right after it has read
the world; without serialization they all read before anyone writes.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from controlplane import actions
from controlplane.actions import Action, ActionRefused, ActionRequest
from controlplane.domain import OverrideKind
from controlplane.store import Store, open_store
from controlplane.users import Principal
from tests.integration.web_seed import seed_health, seed_targets, settings

T0 = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
OPERATOR = Principal("otto", "operator")


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url"))


@pytest.fixture
def seeded_url(url: str) -> str:
    store = open_store(url, migrate=True)
    try:
        s = settings(min_serving=2)
        seed_targets(store, s, T0)
        seed_health(store, T0)
    finally:
        store.close()
    return url


def _race(url: str, requests: list[ActionRequest], monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str]]:
    """Run each request in its own thread with its own Store; returns (successes, refusals)."""
    s = settings(min_serving=2)
    barrier = threading.Barrier(len(requests))
    real_load = actions._load

    def load_then_wait(*args: Any, **kwargs: Any) -> Any:
        world = real_load(*args, **kwargs)
        try:
            barrier.wait(timeout=2.0)  # bounded: under serialization the others cannot get here yet
        except threading.BrokenBarrierError:
            pass
        return world

    monkeypatch.setattr(actions, "_load", load_then_wait)
    ok: list[str] = []
    refused: list[str] = []
    lock = threading.Lock()

    def press(req: ActionRequest) -> None:
        store = Store(url)
        try:
            actions.execute(s, store, req, OPERATOR, T0)
            with lock:
                ok.append(req.region or "")
        except ActionRefused as exc:
            with lock:
                refused.append(exc.reason)
        finally:
            store.close()

    threads = [threading.Thread(target=press, args=(r,)) for r in requests]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive(), "an action hung"
    return ok, refused


def _drains(url: str) -> list[tuple[str | None, str | None]]:
    store = Store(url)
    try:
        return sorted((o.region, o.target) for o in store.active_overrides(T0) if o.kind is OverrideKind.DRAIN)
    finally:
        store.close()


def test_two_operators_draining_different_regions_cannot_together_break_min_serving(
    seeded_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reqs = [ActionRequest(action=Action.DRAIN, region=r, target="tm-weighted", reason="region on fire") for r in ("eastus", "westeurope")]
    ok, refused = _race(seeded_url, reqs, monkeypatch)
    assert len(ok) == 1, (ok, refused)
    assert len(refused) == 1 and "min_serving is 2" in refused[0]
    assert len(_drains(seeded_url)) == 1


def test_one_button_pressed_from_four_threads_makes_one_override(seeded_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    reqs = [ActionRequest(action=Action.DRAIN, region="eastus", target="tm-weighted", reason="region on fire") for _ in range(4)]
    ok, refused = _race(seeded_url, reqs, monkeypatch)
    assert ok == ["eastus"], (ok, refused)
    assert len(refused) == 3 and all("already drained" in r for r in refused)
    assert _drains(seeded_url) == [("eastus", "tm-weighted")]


def test_a_failed_write_inside_an_action_leaves_nothing_half_done(seeded_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(min_serving=1)
    store = Store(seeded_url)
    try:
        first = actions.execute(
            s, store, ActionRequest(action=Action.FAILOVER, region="westeurope", target="tm-priority", reason="move it"), OPERATOR, T0
        )

        def broken_event(*args: Any, **kwargs: Any) -> int:
            raise RuntimeError("the audit write failed")

        monkeypatch.setattr(Store, "add_event", broken_event)
        with pytest.raises(RuntimeError, match="audit write failed"):
            actions.execute(
                s, store, ActionRequest(action=Action.FAILOVER, region="japaneast", target="tm-priority", reason="move it"), OPERATOR, T0
            )
        monkeypatch.undo()
        # the old failover was not lifted and nothing replaced it: all or nothing
        assert [(o.id, o.region) for o in store.active_overrides(T0)] == [(first.added[0].id, "westeurope")]
        assert len(store.events(kinds=["override"])) == 1
    finally:
        store.close()
