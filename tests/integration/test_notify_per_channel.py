"""Delivery at least once per channel: two real receivers on 127.0.0.1, one of them down while the other accepts.

ADR 0014 claimed and marked an event once for all its channels: when one
channel accepted it and another gave up after its retries (its receiver down
for a minute), the event was marked relayed and never sent to the one that
failed: a page lost. Each (event, channel) is now claimed, sent and marked on
its own (docs/adr/0018-notifications-at-least-once-per-channel.md).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from controlplane.notify import EventRelay, NotificationSettings, Notifier
from controlplane.store import Store, db, open_store
from controlplane.store.models import AuditEventRow, table
from tests.integration.test_notify import T0, FixedClock, Receiver, drain_event, running_receiver
from tests.waiting import wait_until

TICK = timedelta(seconds=2)  # the relay's interval, as the worker ticks it


@pytest.fixture
def pager() -> Iterator[Receiver]:
    with running_receiver() as rec:
        yield rec


@pytest.fixture
def chat() -> Iterator[Receiver]:
    with running_receiver() as rec:
        yield rec


def hook(name: str) -> dict[str, Any]:
    return {"kind": "webhook", "name": name, "url_env": f"TEST_HOOK_{name.upper()}", "timeout": 2.0, "retries": 1, "backoff": 0.01}


class Run:
    """One worker's notifier and relay over some of the channels (a `regionguard run` with that config)."""

    def __init__(self, store: Store, clock: FixedClock, receivers: dict[str, Receiver], worker: str = "w1") -> None:
        settings = NotificationSettings.model_validate({"group_wait": 0.0, "channels": [hook(name) for name in receivers]})
        env = {f"TEST_HOOK_{name.upper()}": rec.url + "/hook" for name, rec in receivers.items()}
        self.clock = clock
        self.notifier = Notifier(settings, store=store, env=env)
        self.relay = EventRelay(store, self.notifier, worker=worker, clock=clock)

    def tick(self) -> int:
        self.clock.at += TICK
        return self.relay.tick()

    def settled(self) -> bool:
        """The channels are done with everything this run published (accepted or given up)."""
        return self.notifier.flush(5) and self.relay.in_flight == 0

    def close(self) -> None:
        self.notifier.close(2)
        self.relay.release()


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    made: list[Run] = []
    yield made
    for run in made:
        run.close()


def start(runs: list[Run], store: Store, clock: FixedClock, receivers: dict[str, Receiver], worker: str = "w1") -> Run:
    run = Run(store, clock, receivers, worker)
    runs.append(run)
    return run


def event(store: Store, clock: FixedClock, region: str = "eastus") -> int:
    return store.add_event(drain_event(region, at=clock.at, summary=f"drained {region} ({clock.at:%H:%M:%S})"))


def test_a_channel_whose_receiver_was_down_gets_the_event_once_it_is_back_and_nobody_gets_it_twice(
    store: Store, pager: Receiver, chat: Receiver, runs: list[Run]
) -> None:
    clock = FixedClock(T0)
    pager.down = True  # the paging system's receiver answers 503 for a while
    run = start(runs, store, clock, {"chat": chat, "pager": pager})
    page = event(store, clock)
    run.tick()
    wait_until(lambda: chat.accepted()[page] == 1, 5, "chat to accept the event")
    wait_until(lambda: len(pager.requests) >= 2, 5, "the pager channel to try twice (one retry) and give up")
    wait_until(run.settled, 5, "the channels to be done with the event")
    pager.down = False  # back after a minute

    def paged() -> bool:
        run.tick()  # the worker's relay ticks on
        return pager.accepted()[page] >= 1

    wait_until(paged, 15, "the event to reach the pager once its receiver is back", step=0.05)
    for _ in range(30):  # a minute of ticks, past any claim timeout: nothing more goes out
        run.tick()
    assert run.settled()
    assert chat.accepted() == {page: 1}, "chat got the event again"
    assert pager.accepted() == {page: 1}, "the pager got the event twice"


def test_each_channel_retries_on_its_own_until_the_horizon_then_gives_up(
    store: Store, pager: Receiver, chat: Receiver, runs: list[Run]
) -> None:
    clock = FixedClock(T0)
    pager.down = chat.down = True
    run = start(runs, store, clock, {"chat": chat, "pager": pager})
    page = event(store, clock)
    run.tick()
    wait_until(lambda: len(chat.requests) >= 2 and len(pager.requests) >= 2, 5, "both channels to fail once")
    wait_until(run.settled, 5, "both channels to give up on their first message")
    chat.down = False  # chat is back, the pager is not

    def chatted() -> bool:
        run.tick()
        return chat.accepted()[page] >= 1

    wait_until(chatted, 15, "chat to get the event on a later tick", step=0.05)
    assert run.settled()
    tries = len(pager.requests)
    run.tick()
    wait_until(lambda: len(pager.requests) > tries, 5, "the pager channel to try again on the next tick")
    assert run.settled()
    clock.at = T0 + timedelta(minutes=16)  # past the horizon: history, given up
    pager.down = False
    tries = len(pager.requests)
    for _ in range(5):
        run.tick()
    assert run.settled()
    assert len(pager.requests) == tries and pager.accepted() == {}
    assert chat.accepted() == {page: 1}


def test_a_channel_added_to_the_config_gets_only_the_events_stored_after_it_appeared(
    store: Store, pager: Receiver, chat: Receiver, runs: list[Run]
) -> None:
    clock = FixedClock(T0)
    chat.down = True
    first = start(runs, store, clock, {"chat": chat})
    old = event(store, clock, "eastus")  # chat cannot take it yet: still owed to chat
    first.tick()
    wait_until(first.settled, 5, "chat to give up on its first message")
    first.close()
    chat.down = False
    second = start(runs, store, clock, {"chat": chat, "pager": pager}, worker="w2")  # the pager is new in the config
    second.tick()
    new = event(store, clock, "westus")
    for _ in range(3):
        second.tick()
    wait_until(lambda: pager.accepted()[new] == 1 and chat.accepted()[new] == 1, 5, "the new event on both channels")
    assert second.settled()
    assert chat.accepted() == {old: 1, new: 1}, "chat is owed what it failed to take"
    assert pager.accepted() == {new: 1}, "the new channel got the backlog"


def test_a_channel_removed_from_the_config_has_its_pending_deliveries_dropped_with_a_log_line(
    store: Store, pager: Receiver, chat: Receiver, runs: list[Run], caplog: pytest.LogCaptureFixture
) -> None:
    clock = FixedClock(T0)
    pager.down = True
    first = start(runs, store, clock, {"chat": chat, "pager": pager})
    page = event(store, clock)
    first.tick()
    wait_until(lambda: chat.accepted()[page] == 1 and len(pager.requests) >= 2, 5, "chat to take it, the pager to fail")
    wait_until(first.settled, 5, "the channels to be done with the first message")
    first.close()
    pager.down = False
    with caplog.at_level(logging.WARNING, logger="controlplane.notify.notifier"):
        second = start(runs, store, clock, {"chat": chat}, worker="w2")  # the pager is no longer configured
        for _ in range(3):
            second.tick()
    assert second.settled()
    assert [r.getMessage() for r in caplog.records if "no longer configured" in r.getMessage()] == [
        "notification channel pager is no longer configured: dropped its 1 pending delivery"
    ]
    third = start(runs, store, clock, {"chat": chat, "pager": pager}, worker="w3")  # back in the config: a new channel
    for _ in range(3):
        third.tick()
    assert third.settled()
    assert pager.accepted() == {} and chat.accepted() == {page: 1}


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_migration_0011_keeps_relayed_events_relayed_and_owes_the_unrelayed_ones_to_every_channel(
    request: pytest.FixtureRequest, database: str, pager: Receiver, chat: Receiver, runs: list[Run]
) -> None:
    url = request.getfixturevalue("sqlite_url" if database == "sqlite" else "postgres_url")
    db.upgrade(url, "0010")
    engine = db.make_engine(url)
    event = table(AuditEventRow)
    row = {"kind": "override", "actor": "alice", "severity": "warning", "data": {}, "region": "eastus", "target": None}
    try:
        with engine.begin() as conn:
            conn.execute(
                event.insert(),
                [
                    dict(row, at=T0 - timedelta(minutes=2), summary="relayed before the upgrade", claimed_at=T0, claimed_by="old",
                         relayed_at=T0, relayed_by="old"),
                    dict(row, at=T0 - timedelta(minutes=1), summary="claimed by a worker on the former code", claimed_at=T0,
                         claimed_by="old", relayed_at=None, relayed_by=None),
                    dict(row, at=T0, summary="not claimed yet", claimed_at=None, claimed_by=None, relayed_at=None, relayed_by=None),
                ],
            )  # fmt: skip
            ids = {summary: i for i, summary in conn.execute(select(event.c.id, event.c.summary))}
    finally:
        engine.dispose()
    db.upgrade(url)
    store = open_store(url)
    run = start(runs, store, FixedClock(T0 + timedelta(minutes=1)), {"chat": chat, "pager": pager})
    try:
        owed = {ids["claimed by a worker on the former code"]: 1, ids["not claimed yet"]: 1}

        def both() -> bool:
            run.tick()
            return chat.accepted() == owed and pager.accepted() == owed

        wait_until(both, 10, "the events not relayed before the upgrade on both channels", step=0.05)
        for _ in range(3):
            run.tick()
        assert run.settled()
        assert chat.accepted() == owed and pager.accepted() == owed  # and the relayed one on neither
        with store.session() as s:
            assert s.scalar(select(func.count()).select_from(AuditEventRow).where(AuditEventRow.relayed_at.is_(None))) == 0
    finally:
        run.close()
        store.close()


@pytest.mark.parametrize("url", ["sqlite:///offline.db", "postgresql+psycopg://offline/regionguard"])
def test_migration_0011_renders_as_an_sql_script(url: str) -> None:
    from alembic import command

    cfg = db.alembic_config(url)
    cfg.output_buffer = io.StringIO()
    command.upgrade(cfg, "0010:0011", sql=True)
    script = cfg.output_buffer.getvalue()
    assert "CREATE TABLE notification_channel" in script and "CREATE TABLE event_delivery" in script
    assert "REFERENCES audit_event (id) ON DELETE CASCADE" in script
    assert "UPDATE alembic_version SET version_num='0011'" in script
