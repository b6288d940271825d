"""Notifications against real HTTP receivers on 127.0.0.1: payloads, retries, signatures, grouping, hangs."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from controlplane.domain import AuditEvent, Change, Field, NotificationStatus, as_jsonable
from controlplane.metrics import Metrics
from controlplane.notify import EventRelay, NotificationSettings, Notifier, verify_signature
from controlplane.store import Store
from tests.waiting import wait_until

T0 = datetime(2026, 11, 27, 3, 0, 0, tzinfo=UTC)
SLACK_URL_ENV = "TEST_SLACK_URL"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    status: int = 200  # what the receiver answered

    def event_ids(self) -> list[int]:
        return [int(i) for i in self.json().get("event_ids", [])]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A scripted HTTP receiver: answers from ``script`` in order, then 200; or hangs."""

    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    hang: bool = False
    down: bool = False  # answer every request with a 503 (the script is kept for later)
    requests: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    cond: threading.Condition = field(default_factory=threading.Condition)
    url: str = ""

    def wait_for(self, n: int, timeout: float = 5.0) -> list[Received]:
        with self.cond:
            self.cond.wait_for(lambda: len(self.requests) >= n, timeout)
            return list(self.requests)

    def accepted(self) -> Counter[int]:
        """How many times each event id arrived in a request this receiver answered 2xx."""
        with self.cond:
            return Counter(i for r in self.requests if 200 <= r.status < 300 for i in r.event_ids())


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    """A :class:`Receiver` served on 127.0.0.1 (a free port) until the block ends."""
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with rec.cond:
                if rec.down:
                    status, headers = 503, {}
                else:
                    status, headers = rec.script.pop(0) if rec.script else (202 if "enqueue" in self.path else 200, {})
                rec.requests.append(Received(self.path, dict(self.headers.items()), body, time.monotonic(), status))
                rec.cond.notify_all()
            if rec.hang:
                rec.release.wait(10)
            payload = b'{"status":"success"}' if status < 300 else b'{"error":"no"}'
            try:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:
                pass  # the client gave up (timeout test)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield rec
    finally:
        rec.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as rec:
        yield rec


def settings(*channels: dict[str, Any], group_wait: float = 0.0, queue_size: int = 1000) -> NotificationSettings:
    base = {"timeout": 2.0, "retries": 3, "backoff": 0.01, "max_backoff": 2.0}
    return NotificationSettings.model_validate(
        {"group_wait": group_wait, "queue_size": queue_size, "channels": [dict(base, **c) for c in channels]}
    )


def slack(**kw: Any) -> dict[str, Any]:
    return dict({"kind": "slack", "name": "slack", "url_env": SLACK_URL_ENV}, **kw)


def drain_event(region: str = "eastus", at: datetime = T0, severity: str = "critical", summary: str | None = None) -> AuditEvent:
    change = Change(
        target="tm-prod",
        region=region,
        endpoint=f"{region}-aoai",
        field=Field.ENABLED,
        actual=True,
        desired=False,
        reason=f"{region} unhealthy: 5/5 probes timed out",
    )
    return AuditEvent(
        kind="change",
        at=at,
        actor="automation",
        summary=summary or f"drained {region} from tm-prod",
        region=region,
        target="tm-prod",
        severity=severity,
        data={"reason": "5/5 probes timed out after 10s", "change": change.to_dict(), "status": "applied"},
    )


def transition(region: str, new: str, severity: str, at: datetime = T0) -> AuditEvent:
    return AuditEvent(
        kind="transition",
        at=at,
        actor="automation",
        summary=f"{region} is {new}",
        region=region,
        severity=severity,
        data={"old": "healthy" if new != "healthy" else "unhealthy", "new": new, "reason": "error ratio 0.8 over 2m"},
    )


@pytest.fixture
def notifiers() -> Iterator[list[Notifier]]:
    made: list[Notifier] = []
    yield made
    for n in made:
        n.close(timeout=1.0)


def make(notifiers: list[Notifier], s: NotificationSettings, receiver: Receiver, **kw: Any) -> Notifier:
    env = {
        SLACK_URL_ENV: receiver.url + "/slack/T000/B000/secretpath",
        "TEST_TEAMS_URL": receiver.url + "/teams?sig=abc123secret",
        "TEST_PD_KEY": "R0UT1NGKEY0123456789abcdef012345",
        "TEST_HOOK_URL": receiver.url + "/hook",
        "TEST_HOOK_SECRET": "hmac-secret-value-42",
    }
    n = Notifier(s, env=env, **kw)
    notifiers.append(n)
    return n


# ---------------------------------------------------------------- payload shapes


def test_slack_message_text_names_region_reason_and_change(receiver: Receiver, notifiers: list[Notifier]) -> None:
    n = make(notifiers, settings(slack()), receiver)
    n.publish(drain_event("eastus"))
    assert n.flush(5)
    [req] = receiver.wait_for(1)
    body = req.json()
    assert req.path == "/slack/T000/B000/secretpath"
    assert req.headers["Content-Type"] == "application/json"
    assert "eastus" in body["text"]
    assert "5/5 probes timed out after 10s" in body["text"]  # the reason
    assert "tm-prod/eastus-aoai (eastus): enabled True -> False" in body["text"]  # the change
    assert [b["type"] for b in body["blocks"]] == ["header", "section", "context"]
    assert "tm-prod/eastus-aoai" in body["blocks"][1]["text"]["text"]


def test_teams_gets_an_adaptive_card_naming_region_reason_and_change(receiver: Receiver, notifiers: list[Notifier]) -> None:
    n = make(notifiers, settings({"kind": "teams", "name": "teams", "url_env": "TEST_TEAMS_URL"}), receiver)
    n.publish(drain_event("westeurope"))
    assert n.flush(5)
    [req] = receiver.wait_for(1)
    body = req.json()
    assert body["type"] == "message"
    [attachment] = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    texts = " ".join(b.get("text", "") for b in card["body"])
    facts = {f["title"]: f["value"] for b in card["body"] if b["type"] == "FactSet" for f in b["facts"]}
    assert facts["Region"] == "westeurope" and facts["Target"] == "tm-prod"
    assert "westeurope" in texts and "5/5 probes timed out after 10s" in texts
    assert "enabled True -> False" in texts


def test_pagerduty_trigger_and_resolve_share_the_region_dedup_key(receiver: Receiver, notifiers: list[Notifier], store: Store) -> None:
    pd = {
        "kind": "pagerduty",
        "name": "pd",
        "routing_key_env": "TEST_PD_KEY",
        "url": receiver.url + "/v2/enqueue",
        "min_severity": "warning",
    }
    n = make(notifiers, settings(pd), receiver, store=store)
    n.publish(transition("eastus", "unhealthy", "critical"))
    assert n.flush(5)
    n.publish(transition("eastus", "healthy", "info", at=T0 + timedelta(minutes=5)))
    assert n.flush(5)
    trigger, resolve = (r.json() for r in receiver.wait_for(2))
    assert trigger["event_action"] == "trigger" and resolve["event_action"] == "resolve"
    assert trigger["dedup_key"] == resolve["dedup_key"] == "regionguard:eastus"
    assert trigger["routing_key"] == resolve["routing_key"] == "R0UT1NGKEY0123456789abcdef012345"
    payload = trigger["payload"]
    assert payload["severity"] == "critical" and payload["source"] == "regionguard"
    assert "eastus" in payload["summary"] and payload["component"] == "eastus"
    assert "error ratio 0.8 over 2m" in " ".join(payload["custom_details"]["events"])
    rows = store.notifications()
    assert [r.status for r in rows] == [NotificationStatus.SENT, NotificationStatus.SENT]
    assert {r.group_key for r in rows} == {"region:eastus"}
    assert "R0UT1NGKEY" not in json.dumps([as_jsonable(r) for r in rows])  # the routing key is a secret


def test_a_resolution_is_not_sent_where_the_incident_was_never_announced(receiver: Receiver, notifiers: list[Notifier]) -> None:
    n = make(notifiers, settings(slack(min_severity="critical")), receiver)
    n.publish(transition("eastus", "healthy", "info"))  # never announced here: stay quiet
    assert n.flush(5)
    n.publish(transition("westus", "unhealthy", "critical"))
    assert n.flush(5)
    n.publish(transition("westus", "healthy", "info"))
    assert n.flush(5)
    texts = [r.json()["text"] for r in receiver.wait_for(2)]
    assert len(texts) == 2
    assert texts[0].startswith("[regionguard] CRITICAL westus") and texts[1].startswith("[regionguard] RESOLVED westus")


# ---------------------------------------------------------------- retries


def test_it_retries_500s_then_succeeds_and_records_sent(receiver: Receiver, notifiers: list[Notifier], store: Store) -> None:
    receiver.script = [(500, {}), (503, {})]
    metrics = Metrics()
    n = make(notifiers, settings(slack()), receiver, store=store, metrics=metrics)
    n.publish(drain_event())
    assert n.flush(5)
    assert len(receiver.wait_for(3)) == 3
    [row] = store.notifications()
    assert (row.status, row.attempts, row.channel, row.event_kind) == (NotificationStatus.SENT, 3, "slack", "change")
    assert row.sent_at is not None and row.payload["region"] == "eastus"
    assert metrics.registry.get_sample_value("regionguard_notifications_total", {"channel": "slack", "status": "sent"}) == 1.0


def test_it_honours_retry_after_on_429(receiver: Receiver, notifiers: list[Notifier]) -> None:
    receiver.script = [(429, {"Retry-After": "1"})]
    n = make(notifiers, settings(slack()), receiver)
    n.publish(drain_event())
    assert n.flush(5)
    first, second = receiver.wait_for(2)
    assert second.at - first.at >= 0.95  # backoff alone would be 10 ms


def test_it_does_not_retry_a_400_and_records_the_failure(receiver: Receiver, notifiers: list[Notifier], store: Store) -> None:
    receiver.script = [(400, {})]
    n = make(notifiers, settings(slack()), receiver, store=store)
    n.publish(drain_event())
    assert n.flush(5)  # idle: nothing is waiting to be retried
    assert len(receiver.requests) == 1
    [row] = store.notifications()
    assert row.status is NotificationStatus.FAILED and row.attempts == 1 and row.sent_at is None
    assert (row.last_error or "").startswith("HTTP 400")
    assert "secretpath" not in json.dumps(row, default=str)
    assert n.stats()["slack"]["failed"] == 1


def test_it_gives_up_after_the_configured_retries(receiver: Receiver, notifiers: list[Notifier], store: Store) -> None:
    receiver.script = [(502, {})] * 10
    n = make(notifiers, settings(slack(retries=2)), receiver, store=store)
    n.publish(drain_event())
    assert n.flush(5)
    assert len(receiver.requests) == 3
    [row] = store.notifications()
    assert (row.status, row.attempts) == (NotificationStatus.FAILED, 3)


# ---------------------------------------------------------------- signed webhook


def test_the_webhook_signature_verifies_over_the_raw_body_and_timestamp(receiver: Receiver, notifiers: list[Notifier]) -> None:
    hook = {"kind": "webhook", "name": "hook", "url_env": "TEST_HOOK_URL", "secret_env": "TEST_HOOK_SECRET"}
    n = make(notifiers, settings(hook), receiver)
    n.publish(drain_event("eastus"))
    assert n.flush(5)
    [req] = receiver.wait_for(1)
    now = time.time()
    assert req.headers["X-Regionguard-Signature"].startswith("sha256=")
    assert verify_signature("hmac-secret-value-42", req.body, req.headers, now)
    assert not verify_signature("another-secret", req.body, req.headers, now)
    assert not verify_signature("hmac-secret-value-42", req.body.replace(b"eastus", b"westus"), req.headers, now)
    assert not verify_signature("hmac-secret-value-42", req.body, req.headers, now + 3600)  # replayed an hour later
    body = req.json()
    assert body["action"] == "trigger" and body["region"] == "eastus" and body["count"] == 1
    assert body["delivery_id"] == req.headers["X-Regionguard-Delivery"]
    assert body["events"][0]["data"]["change"]["endpoint"] == "eastus-aoai"


# ---------------------------------------------------------------- never block the caller


@pytest.mark.serial
def test_a_hanging_receiver_does_not_delay_publish_and_the_worker_gives_up_at_its_timeout(
    receiver: Receiver, notifiers: list[Notifier], store: Store
) -> None:
    receiver.hang = True
    n = make(notifiers, settings(slack(timeout=0.3, retries=0), group_wait=0.05), receiver, store=store)
    started = time.perf_counter()
    for i in range(200):
        n.publish(drain_event("eastus", at=T0 + timedelta(seconds=i)))
    publish_s = time.perf_counter() - started
    assert publish_s < 0.05, f"publishing 200 events took {publish_s * 1000:.1f} ms"
    receiver.wait_for(1)
    t0 = time.monotonic()
    assert n.flush(5)
    [row] = store.notifications()
    assert row.status is NotificationStatus.FAILED and (row.last_error or "").startswith("timeout after 0.3s")
    assert time.monotonic() - t0 < 2.0


@pytest.mark.serial
def test_close_returns_at_its_timeout_even_while_a_receiver_hangs(receiver: Receiver) -> None:
    receiver.hang = True
    n = Notifier(settings(slack(timeout=5.0, retries=0)), env={SLACK_URL_ENV: receiver.url + "/slack"})
    n.publish(drain_event())
    receiver.wait_for(1)
    started = time.monotonic()
    assert n.close(timeout=0.2) is False
    assert time.monotonic() - started < 0.5
    n.publish(drain_event())  # after close: ignored, never raises


def test_a_full_queue_drops_the_oldest_events_and_counts_them(receiver: Receiver, notifiers: list[Notifier]) -> None:
    receiver.hang = True
    metrics = Metrics()
    n = make(notifiers, settings(slack(timeout=5.0, retries=0), queue_size=5), receiver, metrics=metrics)
    n.publish(drain_event("eastus", summary="event first"))
    receiver.wait_for(1)  # the worker is now stuck on the hanging receiver
    for i in range(20):
        n.publish(drain_event("eastus", summary=f"event {i:02d}"))
    assert n.stats()["slack"]["dropped"] == 15
    assert metrics.registry.get_sample_value("regionguard_notifications_dropped_total", {"channel": "slack"}) == 15.0
    receiver.hang = False
    receiver.release.set()
    assert n.flush(5)
    second = receiver.wait_for(2)[1].json()["text"]
    assert "event 19" in second and "event 15" in second and "event 14" not in second


# ---------------------------------------------------------------- grouping and filters


def test_a_burst_of_ten_events_for_one_region_becomes_one_message(receiver: Receiver, notifiers: list[Notifier], store: Store) -> None:
    # A window far longer than the test: every event of the burst lands inside it however
    # slowly this thread runs; flush() then sends each group's batch and waits until idle.
    n = make(notifiers, settings(slack(), group_wait=60.0), receiver, store=store)
    for i in range(10):
        n.publish(drain_event("eastus", at=T0 + timedelta(seconds=i), summary=f"eastus step {i}"))
    for i in range(3):
        n.publish(drain_event("westus", at=T0 + timedelta(seconds=i)))
    assert receiver.requests == []  # held for the window
    assert n.flush(5)
    requests = receiver.wait_for(2, timeout=5)
    assert len(receiver.requests) == 2  # idle after flush: nothing else is on its way
    by_region = {r.json()["text"].split()[2].rstrip(":"): r.json()["text"] for r in requests}
    assert set(by_region) == {"eastus", "westus"}
    assert all(f"eastus step {i}" in by_region["eastus"] for i in range(10))
    assert "(+9 more)" in by_region["eastus"]
    assert sorted(r.payload["count"] for r in store.notifications()) == [3, 10]


def test_channel_filters_keep_only_wanted_kinds_at_or_above_the_floor(receiver: Receiver, notifiers: list[Notifier]) -> None:
    n = make(notifiers, settings(slack(kinds=["transition", "panic"], min_severity="warning")), receiver)
    n.publish(transition("eastus", "degraded", "info"))  # below the floor
    n.publish(drain_event("westus", severity="critical"))  # kind not wanted
    n.publish(transition("centralus", "unhealthy", "critical"))
    assert n.flush(5)  # idle: everything wanted has been sent
    [req] = receiver.requests
    assert "centralus" in req.json()["text"] and "westus" not in req.json()["text"]


def test_a_channel_without_its_environment_variable_is_disabled_and_reported(receiver: Receiver, notifiers: list[Notifier]) -> None:
    s = settings(slack(), {"kind": "slack", "name": "other", "url_env": "TEST_UNSET_VARIABLE"})
    n = make(notifiers, s, receiver)
    assert n.channels == ["slack"]
    assert n.problems == ["notifications.channels.other: environment variable TEST_UNSET_VARIABLE is not set; channel disabled"]
    n.publish(drain_event())
    assert n.flush(5)
    assert len(receiver.wait_for(1)) == 1


def test_the_relay_publishes_events_other_processes_stored_once_and_not_older_history(
    receiver: Receiver, notifiers: list[Notifier], store: Store
) -> None:
    store.add_event(transition("eastus", "unhealthy", "critical", at=T0 - timedelta(hours=1)))  # history: not news
    n = make(notifiers, settings(slack()), receiver)
    relay = EventRelay(store, n, worker="w1", clock=FixedClock(T0))
    override = AuditEvent(
        kind="override",
        at=T0,
        actor="alice",
        summary="alice drained westus from tm-prod: incident 42",
        region="westus",
        target="tm-prod",
        severity="warning",
        data={"reason": "incident 42"},
    )
    store.add_event(override)
    assert relay.tick() == 1
    assert relay.tick() == 0
    assert n.flush(5)
    [req] = receiver.wait_for(1)
    assert "alice drained westus" in req.json()["text"] and "eastus" not in req.json()["text"]


class FixedClock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at


def test_each_stored_event_is_relayed_by_exactly_one_of_many_workers(receiver: Receiver, notifiers: list[Notifier], store: Store) -> None:
    n = make(notifiers, settings(slack()), receiver)
    relays = [EventRelay(store, n, worker=f"w{i}", clock=FixedClock(T0)) for i in range(4)]
    for i in range(20):
        store.add_event(transition(f"region-{i}", "unhealthy", "critical"))
    counts: list[int] = []
    threads = [threading.Thread(target=lambda r=r: counts.append(r.tick())) for r in relays]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sum(counts) == 20, counts
    assert sum(r.tick() for r in relays) == 0


def test_settings_refuse_inline_urls_and_duplicate_channel_names() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="url_env"):
        NotificationSettings.model_validate({"channels": [{"kind": "slack", "name": "s", "url": "https://hooks.slack.com/services/T/B/x"}]})
    with pytest.raises(ValidationError, match="unique"):
        NotificationSettings.model_validate({"channels": [slack(), slack()]})
    parsed = NotificationSettings.model_validate(
        {"group_wait": "250ms", "channels": [{"kind": "pagerduty", "name": "pd", "routing_key_env": "PD_KEY", "timeout": "3s"}]}
    )
    assert parsed.group_wait == 0.25 and parsed.channels[0].timeout == 3.0
    assert parsed.channels[0].url == "https://events.pagerduty.com/v2/enqueue"


def test_the_relay_marks_an_event_relayed_only_once_a_channel_accepted_it_and_a_stale_claim_goes_out_again(
    receiver: Receiver, notifiers: list[Notifier], store: Store
) -> None:
    receiver.script = [(503, {}), (503, {})]  # the first message fails its two attempts: given up, retryable
    n = make(notifiers, settings(slack(retries=1), group_wait=0.2), receiver)
    clock = FixedClock(T0)
    relay = EventRelay(store, n, worker="w1", clock=clock, stale_after=timedelta(seconds=30))
    other = EventRelay(store, n, worker="w2", clock=clock, stale_after=timedelta(seconds=30))
    burst = [store.add_event(drain_event("eastus", summary=f"drained eastus from target {i}")) for i in range(3)]
    assert relay.tick() == 3
    wait_until(lambda: relay.in_flight == 0, 5, "the channel to give up on the message")
    assert len(receiver.requests) == 2  # grouping still works: one message for the three, tried twice
    assert "(+2 more)" in json.loads(receiver.requests[0].body)["text"]
    clock.at = T0 + timedelta(seconds=20)
    assert other.tick() == 0  # w1's claims are not stale yet (given up, no longer renewed)
    clock.at = T0 + timedelta(seconds=31)
    assert other.tick() == 3  # stale: w2 takes them over and sends them again
    wait_until(lambda: other.marked == 3, 5, "w2 to mark the three events relayed once the channel accepted them")
    assert len(receiver.requests) == 3
    clock.at = T0 + timedelta(minutes=5)
    assert relay.tick() == 0 and other.tick() == 0  # relayed: never claimed again
    assert sorted(burst) == sorted(e.id for e in store.events() if e.id is not None)


def test_a_worker_renews_the_claims_its_channels_still_hold(receiver: Receiver, notifiers: list[Notifier], store: Store) -> None:
    receiver.hang = True  # the receiver answers nothing until released
    n = make(notifiers, settings(slack(timeout=5.0, retries=0)), receiver)
    clock = FixedClock(T0)
    relay = EventRelay(store, n, worker="w1", clock=clock, stale_after=timedelta(seconds=30))
    other = EventRelay(store, n, worker="w2", clock=clock, stale_after=timedelta(seconds=30))
    store.add_event(drain_event())
    assert relay.tick() == 1
    receiver.wait_for(1)
    for step in (20, 40, 60):  # w1 ticks every 20 s: its claim stays fresh
        clock.at = T0 + timedelta(seconds=step)
        assert relay.tick() == 0
        assert other.tick() == 0
    receiver.release.set()
    wait_until(lambda: relay.marked == 1, 5, "the held event to be accepted and marked")
    assert len(receiver.requests) == 1


def test_each_webhook_message_names_its_events_ids_for_idempotency(receiver: Receiver, notifiers: list[Notifier]) -> None:
    n = make(notifiers, settings({"kind": "webhook", "name": "hook", "url_env": SLACK_URL_ENV}, group_wait=0.2), receiver)
    for i in range(3):
        n.publish(replace(drain_event(summary=f"drained eastus ({i})"), id=40 + i))
    assert n.flush(5)
    [req] = receiver.wait_for(1)
    body = req.json()
    assert body["event_ids"] == [40, 41, 42]
    assert [e["id"] for e in body["events"]] == [40, 41, 42]
