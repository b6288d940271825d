"""The relay's claim bound and how one event's outcomes across channels decide whether it is marked relayed."""

from __future__ import annotations

from datetime import UTC, datetime

from controlplane.domain import AuditEvent, EventKind
from controlplane.notify import NotificationSettings
from controlplane.notify.notifier import ACCEPTED, DROPPED, FAILED, RETRY, SKIPPED, _Receipt, claim_timeout, send_deadline

EVENT = AuditEvent(EventKind.OVERRIDE, datetime(2026, 12, 2, tzinfo=UTC), "alice", "drained eastus", id=7)


def test_a_claim_is_stale_after_the_group_window_the_slowest_send_deadline_and_two_relay_ticks() -> None:
    defaults = NotificationSettings.model_validate({"channels": [{"kind": "slack", "name": "s", "url_env": "S"}]})
    assert send_deadline(defaults.channels[0]) == 4 * 5.0 + 1 + 2 + 4  # four attempts, three back-offs
    assert claim_timeout(defaults) == 36.0  # the figure the README and ADR 0014 quote
    slow = NotificationSettings.model_validate(
        {
            "group_wait": "1s",
            "channels": [
                {"kind": "slack", "name": "s", "url_env": "S", "retries": 0, "timeout": "2s"},
                {"kind": "webhook", "name": "w", "url_env": "W", "retries": 2, "timeout": "10s", "backoff": "20s", "max_backoff": "25s"},
            ],
        }
    )
    assert claim_timeout(slow) == 1 + (3 * 10 + 20 + 25) + 4


def outcome(*outcomes: str, channels: int | None = None) -> list[bool]:
    seen: list[bool] = []
    receipt = _Receipt(EVENT, len(outcomes) if channels is None else channels, lambda e, relayed: seen.append(relayed))
    for o in outcomes:
        receipt.settle(o)
    return seen


def test_an_event_is_marked_relayed_once_a_channel_took_it_and_left_to_retry_only_when_none_did_and_one_may_later() -> None:
    assert outcome(ACCEPTED) == [True]
    assert outcome(RETRY, ACCEPTED) == [True]  # re-sending would repeat it where it was accepted
    assert outcome(RETRY) == [False]
    assert outcome(RETRY, FAILED) == [False]
    assert outcome(FAILED) == [True]  # refused for good (a 4xx): recorded as failed, not retried
    assert outcome(SKIPPED, DROPPED) == [True]
    assert outcome() == [True]  # no channel wanted it
    assert outcome(ACCEPTED, channels=2) == []  # waits for every channel
