"""Workers whose Azure credential fails, over simulated minutes: who leads, how often the lease changes hands (docs/adr/0016).

Two real ``Worker`` objects on one SQLite store, their jobs called by hand on
a fake clock (the lease every fifth of a lease period, a reconcile tick every
``reconcile.interval``), each with its own in-memory actuator: one whose
every read fails the way a credential without a token fails, one that works,
or one behind an ARM that answers 503 to everyone.
tests/faults/test_broken_credential_leader.py runs the same with real
processes, real credentials and the fake ARM.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from controlplane.actuators.base import PermanentError, TransientError
from controlplane.actuators.memory import MemoryActuator
from controlplane.config import Settings, parse_settings
from controlplane.domain import EventKind, FlagKind, LeaseName
from controlplane.metrics import Metrics
from controlplane.runtime.worker import Worker
from controlplane.store import Store
from tests.fakes import FakeClock, settings_dict

L = 15.0  # the default lease period: renewals every 3 s
INTERVAL = 10.0  # the default reconcile interval
NO_TOKEN = PermanentError("DefaultAzureCredential failed to retrieve a token from the included credentials", code="AuthenticationFailed")
ARM_BUSY = TransientError("The service is unavailable.", code="ServiceUnavailable", status=503)


@pytest.fixture
def settings() -> Settings:
    return parse_settings(settings_dict(reconcile={"interval": f"{INTERVAL:g}s"}))


def _actuator(settings: Settings, fails: BaseException | None) -> MemoryActuator:
    actuator = MemoryActuator()
    for t in settings.targets:
        actuator.seed(t)
    if fails is not None:
        actuator.fail_reads(fails, count=10**9)
    return actuator


@dataclass
class Cluster:
    """Workers on one store and one fake clock; :meth:`run` plays their lease and reconcile jobs second by second."""

    settings: Settings
    store: Store
    clock: FakeClock = field(default_factory=FakeClock)
    workers: dict[str, Worker] = field(default_factory=dict)
    alive: set[str] = field(default_factory=set)
    holders: list[tuple[float, str | None]] = field(default_factory=list)  # (seconds, holder) at each second
    t: float = 0.0

    def add(self, holder: str, fails: BaseException | None) -> Worker:
        actuators = {t.name: _actuator(self.settings, fails) for t in self.settings.targets}
        worker = Worker(
            self.settings, self.store, clock=self.clock, holder=holder, actuators=actuators, probe=False, lease_ttl_s=L, metrics=Metrics()
        )
        self.workers[holder] = worker
        self.alive.add(holder)
        return worker

    def holder(self) -> str | None:
        lease = self.store.lease(LeaseName.LEADER)
        return lease.holder_at(self.clock.now()) if lease else None

    def run(self, seconds: float) -> None:
        for _ in range(int(seconds)):
            renew = round(self.t / (L / 5), 6).is_integer()
            reconcile = round(self.t / INTERVAL, 6).is_integer()
            for name, worker in self.workers.items():
                if name not in self.alive:
                    continue
                if renew:
                    worker.lease_tick()
                if reconcile:
                    worker.reconcile_tick()
            self.holders.append((self.t, self.holder()))
            self.clock.advance(1.0)
            self.t += 1.0

    def stints(self) -> list[tuple[str | None, float]]:
        """Who held the lease for how long, in order (None: nobody)."""
        out: list[tuple[str | None, float]] = []
        for _, h in self.holders:
            if out and out[-1][0] == h:
                out[-1] = (h, out[-1][1] + 1.0)
            else:
                out.append((h, 1.0))
        return out


@pytest.fixture
def cluster(settings: Settings, store: Store) -> Iterator[Cluster]:
    c = Cluster(settings, store)
    yield c
    for worker in c.workers.values():
        worker.scheduler.remove_all_jobs()  # the at-expiry tries it queued (never started: nothing runs them)


def test_a_leader_without_a_token_steps_down_and_a_standby_whose_credential_works_leads_for_good(cluster: Cluster) -> None:
    a = cluster.add("worker-a", NO_TOKEN)
    cluster.run(1)
    assert cluster.holder() == "worker-a"
    b = cluster.add("worker-b", None)
    cluster.run(10 * L)

    stints = cluster.stints()
    assert [h for h, _ in stints if h] == ["worker-a", "worker-b"], stints
    assert L <= stints[0][1] <= 3 * INTERVAL + 1, stints  # three ticks that lasted a lease period, then the release
    assert all(s <= L / 5 for h, s in stints if h is None), stints  # the standby took it at its next renewal
    assert a.credential.failing and a.readiness()["azure_credential"] is False
    assert a.metrics.registry.get_sample_value("regionguard_azure_credential_failing") == 1
    assert a.metrics.registry.get_sample_value("regionguard_leader_step_downs_total") == 1
    assert b.metrics.registry.get_sample_value("regionguard_azure_credential_failing") == 0
    assert b.credential.worked is True and b.readiness()["azure_credential"] is True
    events = [e for e in cluster.store.events(kinds=[EventKind.LEASE]) if e.data.get("stepped_down")]
    assert [e.actor for e in events] == ["worker:worker-a"] and "AuthenticationFailed" in events[0].summary
    flags = {f.subject: f.value for f in cluster.store.flags(FlagKind.CREDENTIAL)}
    assert set(flags) == {"worker-a"} and flags["worker-a"]["stepped_down_at"] is not None

    cluster.alive.discard("worker-b")  # the good worker dies: leading with a broken credential beats nobody leading
    cluster.run(2 * L)
    assert cluster.holder() == "worker-a"


def test_two_workers_whose_credentials_both_fail_hand_the_lease_over_less_and_less_often(cluster: Cluster) -> None:
    cluster.add("worker-a", NO_TOKEN)
    cluster.run(1)
    cluster.add("worker-b", NO_TOKEN)
    cluster.run(40 * L)  # 10 minutes

    stints = cluster.stints()
    print(f"stints (holder, seconds): {stints}")
    held = [(h, s) for h, s in stints[:-1] if h is not None]  # the last one is cut short by the end of the run
    assert len(held) <= 10, stints
    # never every tick: each holds it for at least a lease period, each time longer, up to 8 lease periods
    assert min(s for _, s in held) >= L, stints
    for name in ("worker-a", "worker-b"):
        mine = [s for h, s in held if h == name]
        assert mine == sorted(mine), stints
    assert held[-1][1] >= 8 * L, stints
    # the lease lies free at most for the grace period (the other one may take it) and a renewal period
    assert max(s for h, s in stints if h is None) <= L + L / 5 + 1, stints


def test_a_leader_behind_an_arm_that_answers_503_to_everyone_keeps_the_lease(cluster: Cluster) -> None:
    a = cluster.add("worker-a", ARM_BUSY)
    cluster.run(1)
    cluster.add("worker-b", ARM_BUSY)
    cluster.run(6 * L)  # nine ticks, each 503 on every call (a credential that failed would be gone after three)
    assert cluster.stints() == [("worker-a", 6 * L + 1)]
    assert not a.credential.failing and a.readiness()["azure_credential"] is True
    assert cluster.store.flags(FlagKind.CREDENTIAL) == []
