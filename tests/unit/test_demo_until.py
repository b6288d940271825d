"""``regionguard demo --until recovered``: when the headless demo may stop early (stubs for the simulator and the worker)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from controlplane.cli.demo import UNTIL_END, UNTIL_RECOVERED, Demo
from controlplane.domain import EndpointSetting, Plan, TargetState
from controlplane.runtime.reconcile import TargetResult, TickReport
from tests.fakes import make_settings

S = make_settings(targets=("tm-weighted", "tm-priority", "afd-prod"))
T0 = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)


class FakeRun:
    done = True

    def cancel(self) -> None:
        pass


class FakeSim:
    def run_timeline(self, events: Any) -> FakeRun:
        return FakeRun()

    def clear_faults(self) -> None:
        pass


@dataclass
class FakeWorker:
    """Every read of ``ticks`` is one more reconcile tick; ``last_tick`` is what the leader last saw."""

    last_tick: TickReport | None
    _ticks: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def ticks(self) -> int:
        with self.lock:
            self._ticks += 1
            return self._ticks


def tick(disabled: tuple[str, str] | None = None, plan: Plan | None = None) -> TickReport:
    targets = {}
    for t in S.targets:
        endpoints = {
            r: EndpointSetting(weight=ep.weight, priority=ep.priority, enabled=(t.name, r) != disabled) for r, ep in t.endpoints.items()
        }
        targets[t.name] = TargetResult(target=t.name, actual=TargetState(target=t.name, endpoints=endpoints))
    return TickReport(at=T0, plan=plan or Plan(), targets=targets)


def timeline(loop: bool = False) -> Any:
    event = SimpleNamespace(at_s=0.0, region="eastus", fault=SimpleNamespace(to_dict=lambda: {"fault": "none"}))
    return SimpleNamespace(events=(event,), duration_s=0.1, loop=loop)


def demo(last_tick: TickReport | None) -> Demo:
    return Demo(sim=FakeSim(), settings=S, worker=FakeWorker(last_tick), settle_s=0.2)  # type: ignore[arg-type]  # stubs


def play(d: Demo, until: str, duration_s: float, loop: bool = False) -> float:
    started = time.monotonic()
    d.play(timeline(loop), threading.Event(), duration_s, until=until)
    return time.monotonic() - started


def test_it_stops_once_every_region_serves_everywhere_and_nothing_is_left_to_do() -> None:
    d = demo(tick())
    assert d.settled()
    took = play(d, UNTIL_RECOVERED, duration_s=30.0)
    assert d.stopped_because == "recovered"
    assert took < 10.0  # far inside the 30 s upper bound


def test_a_region_still_drained_or_a_pending_change_keeps_it_running_to_the_duration() -> None:
    from controlplane.domain import Change, Field

    pending = Plan(
        (
            Change(
                target="tm-weighted",
                region="eastus",
                endpoint="aoai-eastus",
                field=Field.ENABLED,
                actual=False,
                desired=True,
                reason="healthy",
            ),
        )
    )
    for last in (tick(disabled=("tm-priority", "eastus")), tick(plan=pending), None):
        d = demo(last)
        assert not d.settled()
        play(d, UNTIL_RECOVERED, duration_s=0.6)
        assert d.stopped_because == "duration"


def test_without_until_recovered_it_runs_to_the_duration() -> None:
    for loop in (False, True):
        d = demo(tick())
        took = play(d, UNTIL_END, duration_s=0.6, loop=loop)
        assert d.stopped_because == "duration" and took >= 0.6


def test_a_looping_scenario_is_played_once_and_stops_when_recovered() -> None:
    # the default scenario (tour) loops: `make demo ARGS="--until recovered"` used to say it would
    # stop early and then ran until Ctrl-C
    d = demo(tick())
    took = play(d, UNTIL_RECOVERED, duration_s=30.0, loop=True)
    assert d.stopped_because == "recovered" and took < 10.0
