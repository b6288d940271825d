"""Delivery: a bounded queue and one worker thread per channel.

``Notifier.publish(event)`` only appends to each interested channel's queue
and returns: the control loop never waits on Slack, Teams, PagerDuty or a
webhook. When a queue is full the oldest event is dropped and counted.

Each channel's worker groups events by incident (see ``messages.group_key``):
the first event of a group opens a window of ``group_wait`` seconds, and every
event of that group arriving in the window goes out in the same message. The
message is POSTed with a per-request timeout; 5xx, 429, 408 and transport
errors are retried with exponential backoff (``Retry-After`` honoured, capped
at ``max_backoff``), other 4xx are not. Each delivery is recorded in the
store's ``notification`` table (pending -> sent | failed) for the dashboard.

A resolution (region back to healthy, panic cleared) is sent on a channel only
when that channel announced the incident (PagerDuty: always, since resolving an
unknown dedup key is harmless and the incident may predate a restart).

``publish(event, on_settled)`` reports back once per event, when every channel
that took it is done with it: ``on_settled(event, True)`` when a channel
accepted it (or none had anything to send, or it was dropped or refused for
good), ``False`` when no channel accepted it and one gave up on a retryable
error (or stopped). The :class:`EventRelay` publishes each event to one
channel at a time (``publish(..., channel=name)``) and marks it delivered on
that channel only on ``True``; otherwise it sends it again on that channel on
its next tick (docs/adr/0018).
A channel gives up on one message after its *send deadline*
(:func:`send_deadline`), so a claim held longer than :func:`claim_timeout` by a
worker that stopped renewing it is its to lose.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx

from controlplane.domain import AuditEvent, Clock, NotificationStatus, SystemClock
from controlplane.logging_setup import register_secret, scrub
from controlplane.notify import messages
from controlplane.notify.settings import NotificationSettings, PagerDutyChannel, SlackChannel, TeamsChannel, WebhookChannel, severity_rank
from controlplane.retry_after import retry_after_seconds

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 425, 429})
_USER_AGENT = "regionguard-notifier/1"


class NotificationMetrics(Protocol):
    def observe_notification(self, channel: str, status: str) -> None: ...

    def observe_notification_dropped(self, channel: str, count: int = 1) -> None: ...


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    ok: bool
    attempts: int
    status_code: int | None = None
    error: str | None = None
    retryable: bool = False  # a failure that another try later might get through (5xx, 429, timeout, shutting down)


RELAY_INTERVAL_S = 2.0  # how often each worker's EventRelay ticks (claims, renews its claims, marks what was sent)


def send_deadline(channel: SlackChannel | TeamsChannel | PagerDutyChannel | WebhookChannel) -> float:
    """Seconds a channel may spend on one message: every attempt's timeout plus the back-offs between them."""
    backoffs = sum(min(channel.backoff * 2**i, channel.max_backoff) for i in range(channel.retries))
    return (channel.retries + 1) * channel.timeout + backoffs


def claim_timeout(settings: NotificationSettings) -> float:
    """Seconds after which an event claimed but not marked relayed is stale: the group window, the
    slowest channel's send deadline, and two relay ticks of margin (a live claimer renews every tick)."""
    slowest = max((send_deadline(c) for c in settings.channels if c.enabled), default=0.0)
    return settings.group_wait + slowest + 2 * RELAY_INTERVAL_S


# how a channel finished with one event
ACCEPTED, SKIPPED, DROPPED, FAILED, RETRY = "accepted", "skipped", "dropped", "failed", "retry"


class _Receipt:
    """One published event's outcome across the channels that took it; calls back once all are done."""

    __slots__ = ("_callback", "_lock", "_outcomes", "_remaining", "event")

    def __init__(self, event: AuditEvent, channels: int, callback: Callable[[AuditEvent, bool], None]) -> None:
        self.event = event
        self._callback = callback
        self._remaining = channels
        self._outcomes: set[str] = set()
        self._lock = threading.Lock()
        if channels == 0:
            self._fire()

    def settle(self, outcome: str) -> None:
        with self._lock:
            self._remaining -= 1
            self._outcomes.add(outcome)
            done = self._remaining == 0
        if done:
            self._fire()

    def _fire(self) -> None:
        relayed = ACCEPTED in self._outcomes or RETRY not in self._outcomes
        try:
            self._callback(self.event, relayed)
        except Exception:
            log.exception("notification delivery callback failed")


@dataclass(frozen=True, slots=True)
class Rendered:
    url: str
    body: bytes
    headers: Callable[[], dict[str, str]]  # called per attempt (fresh signature timestamp)


@dataclass(slots=True)
class _Batch:
    group: str
    deadline: float  # monotonic
    events: list[AuditEvent] = field(default_factory=list)
    dropped: int = 0
    receipts: list[_Receipt] = field(default_factory=list)  # every event that joined (shed ones too): settled with the batch

    def settle(self, outcome: str) -> None:
        receipts, self.receipts = self.receipts, []
        for receipt in receipts:
            receipt.settle(outcome)


class _ChannelWorker:
    """One channel: inbox -> grouped batches -> rendered POSTs with retries."""

    def __init__(
        self,
        channel: SlackChannel | TeamsChannel | PagerDutyChannel | WebhookChannel,
        secrets: Mapping[str, str],
        settings: NotificationSettings,
        store: Any,
        clock: Clock,
        metrics: NotificationMetrics | None,
        transport: httpx.BaseTransport | None,
    ) -> None:
        self.channel = channel
        self.name = channel.name
        self._secrets = dict(secrets)
        self._settings = settings
        self._store = store
        self._clock = clock
        self._metrics = metrics
        self._cond = threading.Condition()
        self._inbox: deque[tuple[AuditEvent, _Receipt | None]] = deque()
        self._pending: dict[str, _Batch] = {}
        self._open_groups: set[str] = set()
        self._busy = False
        self._force = False
        self._stopping = False
        self._abort_at: float | None = None
        self._abort = threading.Event()
        self._batch_cap = max(100, 5 * settings.max_events_per_message)
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._client = httpx.Client(
            timeout=httpx.Timeout(channel.timeout), transport=transport, follow_redirects=False, headers={"User-Agent": _USER_AGENT}
        )
        self._thread = threading.Thread(target=self._run, name=f"notify-{channel.name}", daemon=True)

    # ------------------------------------------------------------ caller side (must never block)

    def start(self) -> None:
        self._thread.start()

    def wants(self, event: AuditEvent) -> bool:
        if not self.channel.wants_kind(event.kind):
            return False
        return severity_rank(event.severity) >= severity_rank(self.channel.min_severity) or messages.is_resolution(event)

    def offer(self, event: AuditEvent, receipt: _Receipt | None = None) -> None:
        dropped = 0
        lost: _Receipt | None = None
        with self._cond:
            if self._stopping:
                lost = receipt
            else:
                if len(self._inbox) >= self._settings.queue_size:
                    _, lost = self._inbox.popleft()
                    self.dropped += 1
                    dropped = self.dropped
                self._inbox.append((event, receipt))
                self._cond.notify()
        if lost is not None:
            lost.settle(RETRY if self._stopping else DROPPED)
        if dropped:
            self._count_drop(dropped)

    def _count_drop(self, total: int) -> None:
        if self._metrics is not None:
            self._metrics.observe_notification_dropped(self.name)
        if total == 1 or total % 100 == 0:
            log.warning(
                "notification queue of channel %s is full: dropped the oldest event (%d dropped so far)",
                self.name,
                total,
                extra={"channel": self.name, "dropped": total},
            )

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._inbox) + sum(len(b.events) for b in self._pending.values())

    def _idle_locked(self) -> bool:
        return not self._inbox and not self._pending and not self._busy

    def flush(self, timeout: float) -> bool:
        """Send every waiting batch now (ignore the window) and wait until idle."""
        with self._cond:
            self._force = True
            self._cond.notify_all()
            done = self._cond.wait_for(self._idle_locked, timeout)
            self._force = False
            return done

    def stop(self, deadline: float) -> None:
        with self._cond:
            self._stopping = True
            self._abort_at = deadline
            self._cond.notify_all()

    def join(self, deadline: float) -> bool:
        self._thread.join(max(0.0, deadline - time.monotonic()))
        alive = self._thread.is_alive()
        if alive:
            self._abort.set()
            log.warning(
                "notification channel %s did not finish before the close timeout; abandoning its queue",
                self.name,
                extra={"channel": self.name},
            )
        else:
            self._client.close()
        return not alive

    # ------------------------------------------------------------ worker thread

    def _run(self) -> None:
        while True:
            with self._cond:
                due = self._wait_for_due_locked()
                if due is None:
                    self._cond.notify_all()
                    return
                self._busy = True
            for batch in due:
                try:
                    self._deliver(batch)
                except Exception:
                    log.exception("notification channel %s failed to deliver a batch", self.name, extra={"channel": self.name})
                finally:
                    batch.settle(FAILED)  # no-op when _deliver settled it
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def _wait_for_due_locked(self) -> list[_Batch] | None:
        """Batches to send now; None when stopping with nothing left."""
        while True:
            self._drain_inbox_locked()
            now = time.monotonic()
            send_all = self._force or self._stopping
            due = [b for b in self._pending.values() if send_all or b.deadline <= now]
            if due:
                for b in due:
                    del self._pending[b.group]
                return due
            if self._stopping:
                return None
            wait = min((b.deadline for b in self._pending.values()), default=None)
            self._cond.notify_all()  # flush() waiters may be watching for idleness
            self._cond.wait(None if wait is None else max(0.001, wait - now))

    def _drain_inbox_locked(self) -> None:
        while self._inbox:
            event, receipt = self._inbox.popleft()
            key = messages.group_key(event)
            batch = self._pending.get(key)
            if batch is None:
                batch = self._pending[key] = _Batch(group=key, deadline=time.monotonic() + self._settings.group_wait)
            batch.events.append(event)
            if receipt is not None:
                batch.receipts.append(receipt)
            if len(batch.events) > self._batch_cap:
                self._shed(batch)

    @staticmethod
    def _shed(batch: _Batch) -> None:
        """A flooded batch keeps its newest and most severe events; the rest are counted."""
        lowest = min(severity_rank(e.severity) for e in batch.events)
        for i, e in enumerate(batch.events):
            if severity_rank(e.severity) == lowest:
                del batch.events[i]
                batch.dropped += 1
                return

    def _relevant(self, batch: _Batch) -> list[AuditEvent]:
        """Drop resolutions below min_severity for incidents this channel never announced."""
        announced = batch.group in self._open_groups or isinstance(self.channel, PagerDutyChannel)
        floor = severity_rank(self.channel.min_severity)
        return [e for e in batch.events if severity_rank(e.severity) >= floor or announced]

    def _deliver(self, batch: _Batch) -> None:
        events = self._relevant(batch)
        if not events:
            batch.settle(SKIPPED)
            return
        msg = messages.build_message(
            batch.group, events, self._settings.max_events_per_message, dropped=batch.dropped, dashboard_url=self._settings.dashboard_url
        )
        rendered = self._render(msg)
        record_id = self._record_start(msg)
        result = self._send(rendered)
        batch.settle(ACCEPTED if result.ok else RETRY if result.retryable else FAILED)
        self._record_finish(record_id, result)
        if result.ok:
            self.sent += 1
            if msg.action == "resolve":
                self._open_groups.discard(msg.group)
            else:
                self._open_groups.add(msg.group)
            log.info(
                "notification sent on %s: %s",
                self.name,
                msg.title,
                extra={"channel": self.name, "group": msg.group, "attempts": result.attempts},
            )
        else:
            self.failed += 1
            log.warning(
                "notification on %s failed after %d attempt(s): %s",
                self.name,
                result.attempts,
                result.error,
                extra={"channel": self.name, "group": msg.group},
            )
        if self._metrics is not None:
            self._metrics.observe_notification(self.name, "sent" if result.ok else "failed")

    def _render(self, msg: messages.Message) -> Rendered:
        ch = self.channel
        json_headers = {"Content-Type": "application/json"}
        if isinstance(ch, SlackChannel):
            return Rendered(self._secrets["url"], messages.encode_body(messages.slack_payload(msg)), lambda: dict(json_headers))
        if isinstance(ch, TeamsChannel):
            return Rendered(self._secrets["url"], messages.encode_body(messages.teams_payload(msg)), lambda: dict(json_headers))
        if isinstance(ch, PagerDutyChannel):
            return Rendered(
                ch.url, messages.encode_body(messages.pagerduty_payload(msg, ch, self._secrets["routing_key"])), lambda: dict(json_headers)
            )
        delivery_id = uuid.uuid4().hex
        body = messages.encode_body(messages.webhook_payload(msg, delivery_id))
        secret = self._secrets.get("secret")

        def signed_headers() -> dict[str, str]:
            headers = dict(json_headers, **{messages.DELIVERY_HEADER: delivery_id})
            if secret:
                ts = int(self._clock.now().timestamp())
                headers[messages.TIMESTAMP_HEADER] = str(ts)
                headers[messages.SIGNATURE_HEADER] = messages.sign(secret, ts, body)
            return headers

        return Rendered(self._secrets["url"], body, signed_headers)

    def _send(self, rendered: Rendered) -> DeliveryResult:
        """POST with retries, within the channel's send deadline (a Retry-After never stretches it)."""
        ch = self.channel
        give_up_at = time.monotonic() + send_deadline(ch)
        attempt = 0
        while True:
            attempt += 1
            status, error, retryable, retry_after = self._attempt(rendered)
            if error is None:
                return DeliveryResult(True, attempt, status)
            if not retryable or attempt > ch.retries:
                return DeliveryResult(False, attempt, status, error, retryable)
            delay = min(max(ch.backoff * (2 ** (attempt - 1)), retry_after or 0.0), ch.max_backoff)
            if time.monotonic() + delay + ch.timeout > give_up_at:
                return DeliveryResult(False, attempt, status, f"{error} (gave up: send deadline)", True)
            if not self._sleep(delay):
                return DeliveryResult(False, attempt, status, f"{error} (gave up: shutting down)", True)

    def _attempt(self, rendered: Rendered) -> tuple[int | None, str | None, bool, float | None]:
        """One POST: (status, error or None, retryable, retry-after seconds)."""
        try:
            resp = self._client.post(rendered.url, content=rendered.body, headers=rendered.headers())
        except httpx.TimeoutException as exc:
            return None, f"timeout after {self.channel.timeout:g}s ({type(exc).__name__})", True, None
        except httpx.TransportError as exc:
            return None, f"transport error ({type(exc).__name__})", True, None
        except Exception as exc:
            return None, f"request failed ({type(exc).__name__})", False, None
        if 200 <= resp.status_code < 300:
            return resp.status_code, None, False, None
        detail = scrub(resp.text[:200].strip().replace("\n", " "))
        retryable = resp.status_code >= 500 or resp.status_code in RETRYABLE_STATUS
        return (
            resp.status_code,
            f"HTTP {resp.status_code}" + (f": {detail}" if detail else ""),
            retryable,
            retry_after_seconds(resp.headers),
        )

    def _sleep(self, delay: float) -> bool:
        """Back off; False when closing leaves no time for it."""
        if self._abort_at is not None and time.monotonic() + delay > self._abort_at:
            return False
        return not self._abort.wait(delay)

    # ------------------------------------------------------------ delivery records

    def _record_start(self, msg: messages.Message) -> int | None:
        if self._store is None:
            return None
        try:
            return self._store.add_notification(
                channel=self.name, event_kind=msg.kind[:32], group_key=msg.group[:160], payload=msg.record(), now=self._clock.now()
            )
        except Exception as exc:
            log.warning("cannot record notification on %s: %s", self.name, type(exc).__name__, extra={"channel": self.name})
            return None

    def _record_finish(self, record_id: int | None, result: DeliveryResult) -> None:
        if self._store is None or record_id is None:
            return
        try:
            self._store.finish_notification(
                record_id,
                status=NotificationStatus.SENT if result.ok else NotificationStatus.FAILED,
                now=self._clock.now(),
                attempts=result.attempts,
                error=result.error,
            )
        except Exception as exc:
            log.warning("cannot record notification outcome on %s: %s", self.name, type(exc).__name__, extra={"channel": self.name})


class Notifier:
    """Fan audit events out to the configured channels without ever blocking the caller."""

    def __init__(
        self,
        settings: NotificationSettings,
        store: Any = None,
        clock: Clock | None = None,
        metrics: NotificationMetrics | None = None,
        env: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.problems: list[str] = []
        self._closed = False
        env = os.environ if env is None else env
        clock = clock or SystemClock()
        self._workers: list[_ChannelWorker] = []
        for channel in settings.channels:
            if not channel.enabled:
                continue
            envs = channel.secret_envs()
            missing = [var for var in envs.values() if not env.get(var)]
            if missing:
                problem = f"notifications.channels.{channel.name}: environment variable {', '.join(missing)} is not set; channel disabled"
                self.problems.append(problem)
                log.warning(problem)
                continue
            secrets = {role: env[var] for role, var in envs.items()}
            for value in secrets.values():
                register_secret(value)
            self._workers.append(_ChannelWorker(channel, secrets, settings, store, clock, metrics, transport))
        for worker in self._workers:
            worker.start()

    @property
    def channels(self) -> list[str]:
        return [w.name for w in self._workers]

    def publish(
        self, event: AuditEvent, on_settled: Callable[[AuditEvent, bool], None] | None = None, *, channel: str | None = None
    ) -> None:
        """Queue the event for every channel that wants it (only ``channel``, when named). Never blocks, never raises.

        ``on_settled(event, relayed)`` is called once, from a channel's thread (or
        this one), when every channel that took the event is done with it; see the
        module doc for what ``relayed`` means.
        """
        if self._closed:
            log.debug("notifier closed; event %s not sent", event.kind)
            if on_settled is not None:
                on_settled(event, False)
            return
        workers = self._workers if channel is None else [w for w in self._workers if w.name == channel]
        if not workers:
            if on_settled is not None:
                on_settled(event, False)  # not a channel of ours (the relay only claims for ours)
            return
        wanting = []
        for worker in workers:
            try:
                if worker.wants(event):
                    wanting.append(worker)
            except Exception:
                log.exception("could not queue a notification for channel %s", worker.name)
        receipt = None if on_settled is None else _Receipt(event, len(wanting), on_settled)
        for worker in wanting:
            try:
                worker.offer(event, receipt)
            except Exception:
                log.exception("could not queue a notification for channel %s", worker.name)
                if receipt is not None:
                    receipt.settle(FAILED)

    def flush(self, timeout: float = 10.0) -> bool:
        """Send what is waiting now (ignoring group windows); True when every channel went idle."""
        deadline = time.monotonic() + timeout
        return all([w.flush(max(0.0, deadline - time.monotonic())) for w in self._workers])

    def close(self, timeout: float = 5.0) -> bool:
        """Send what is queued within ``timeout`` seconds, then stop. True when all finished."""
        self._closed = True
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.stop(deadline)
        return all([w.join(deadline) for w in self._workers])

    def stats(self) -> dict[str, dict[str, int]]:
        return {w.name: {"sent": w.sent, "failed": w.failed, "dropped": w.dropped, "queued": w.queued} for w in self._workers}

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


RELAY_HORIZON = timedelta(minutes=15)  # older unrelayed events are history, not news to page about


class EventRelay:
    """Publishes audit events written to the store by any process (e.g. overrides made in the web app).

    Every worker runs one and calls ``tick()`` every :data:`RELAY_INTERVAL_S`.
    Claim, send, then mark, per event *and channel* (docs/adr/0018): on each of
    its channels, each event is claimed in the store (``Store.claim_events``: a
    compare-and-set on the (event, channel) row that records the claimer and the
    time), handed to that channel, and marked delivered there
    (``Store.mark_relayed``) only when the channel accepted it (or had nothing
    to send, or refused it for good). A channel that gave up on a retryable
    error gets it again on the next tick, on its own, until the horizon; a
    channel that accepted is never sent it again. While a channel still holds
    an event (or it is to be sent again), each tick renews that claim; a claim
    not renewed for ``stale_after`` (default :func:`claim_timeout`: the group
    window, the slowest channel's send deadline and a margin) is stale, and any
    worker takes it over by compare-and-set. So an event goes out once per
    channel across any number of workers and across a leader change, and a
    worker killed between its claim and the channel's answer loses nothing:
    another sends it once the claim is stale. The one duplicate left: a worker
    that dies after a channel accepted an event and before the mark; webhooks
    carry each event's id so a receiver can drop it. Events older than
    ``horizon`` are history and are not sent. On its first tick the relay
    records the configured channels (``Store.sync_channels``): a new channel is
    owed only the events stored after it appeared, a removed channel's pending
    deliveries are dropped (logged). Use the relay *or* call
    ``Notifier.publish`` directly for the same events, not both.
    """

    def __init__(
        self,
        store: Any,
        notifier: Notifier,
        batch: int = 500,
        *,
        worker: str = "relay",
        clock: Any = None,
        horizon: timedelta = RELAY_HORIZON,
        stale_after: timedelta | None = None,
    ) -> None:
        self._store = store
        self._notifier = notifier
        self._batch = batch
        self._worker = worker
        self._now = clock.now if clock is not None else (lambda: datetime.now(UTC))
        self._horizon = horizon
        self.stale_after = stale_after if stale_after is not None else timedelta(seconds=claim_timeout(notifier.settings))
        self._configured = [c.name for c in notifier.settings.channels if c.enabled]
        self._synced = False
        self._lock = threading.Lock()
        # keys are (event id, channel)
        self._held: dict[tuple[int, str], datetime] = {}  # in the channel's hands (-> when we claimed it), renewed each tick
        self._again: dict[tuple[int, str], AuditEvent] = {}  # the channel gave up on it (retryable): ours, sent again next tick
        self._to_mark: list[tuple[int, str]] = []  # accepted by the channel, not yet marked in the store
        self.marked = 0

    def tick(self) -> int:
        """Mark what the channels accepted, renew our claims, publish again what a channel gave up on and what we
        newly claimed; returns how many (event, channel) were published. Never raises."""
        now = self._now()
        if not self._sync(now):
            return 0
        self._mark(now)
        since = now - self._horizon
        with self._lock:
            again = {k: e for k, e in self._again.items() if e.at >= since}
            self._again.clear()  # past the horizon: history, given up (the claim goes stale; nobody claims it again)
            renew = [k for k, claimed in self._held.items() if now - claimed < self._horizon] + list(again)
            for k in again:
                self._held[k] = now
        try:
            ours: set[tuple[int, str]] = set()
            for channel, ids in _by_channel(renew).items():
                ours.update((i, channel) for i in self._store.renew_claims(self._worker, ids, now, channel=channel))
            for k in [k for k in again if k not in ours]:
                del again[k]  # another worker took it over after our claim went stale (we were paused): its to send
                with self._lock:
                    self._held.pop(k, None)
            claimed = [
                (event, channel)
                for channel in self._notifier.channels
                for event in self._store.claim_events(
                    self._worker, now, channel=channel, since=since, stale_before=now - self.stale_after, limit=self._batch
                )
            ]
        except Exception as exc:
            log.warning("event relay cannot read the store: %s", type(exc).__name__)
            with self._lock:
                for k, e in again.items():  # not lost: sent again on a later tick
                    self._held.pop(k, None)
                    self._again[k] = e
            return 0
        published = 0
        for (_, channel), event in again.items():
            self._publish(event, channel)
            published += 1
        for event, channel in claimed:
            if event.id is None:
                continue
            with self._lock:
                if (event.id, channel) in self._held:  # ours already (a renewal was missed): the channel still has it
                    continue
                self._held[(event.id, channel)] = now
            self._publish(event, channel)
            published += 1
        return published

    def _sync(self, now: datetime) -> bool:
        """Once: record the configured channels; log each removed one whose pending deliveries were dropped."""
        if self._synced:
            return True
        try:
            removed = self._store.sync_channels(self._worker, self._configured, now, since=now - self._horizon)
        except Exception as exc:
            log.warning("event relay cannot record the notification channels: %s", type(exc).__name__)
            return False
        self._synced = True
        for name, pending in sorted(removed.items()):
            log.warning(
                "notification channel %s is no longer configured: dropped its %d pending deliver%s",
                name,
                pending,
                "y" if pending == 1 else "ies",
                extra={"channel": name, "dropped": pending},
            )
        return True

    def _publish(self, event: AuditEvent, channel: str) -> None:
        self._notifier.publish(event, lambda e, relayed: self._settled(e, channel, relayed), channel=channel)

    def _settled(self, event: AuditEvent, channel: str, relayed: bool) -> None:
        """From the channel's thread: mark it now (the window for a duplicate is between the answer and this mark)."""
        if event.id is None:
            return
        key = (event.id, channel)
        with self._lock:
            self._held.pop(key, None)
            if relayed:
                self._to_mark.append(key)
            else:
                self._again[key] = event  # still claimed by us: sent again on the next tick, or freed by release()
        if relayed:
            self._mark(self._now())

    def _mark(self, now: datetime) -> None:
        with self._lock:
            keys, self._to_mark = self._to_mark, []
        if not keys:
            return
        failed: list[tuple[int, str]] = []
        for channel, ids in _by_channel(keys).items():
            try:
                self._store.mark_relayed(self._worker, ids, now, channel=channel)
            except Exception as exc:
                log.warning(
                    "event relay cannot mark %d event(s) delivered on %s: %s; trying again next tick", len(ids), channel, type(exc).__name__
                )
                failed.extend((i, channel) for i in ids)
        with self._lock:
            self.marked += len(keys) - len(failed)
            self._to_mark.extend(failed)

    def release(self) -> int:
        """On a graceful stop, after the notifier closed: mark what the channels accepted, and free the claims
        of the (event, channel) the channel gave up on, so the next worker sends them on its next tick rather
        than after the claim timeout. Those still in a channel's hands (the close timed out) keep their claims: a
        request still out may yet be delivered. Returns how many were freed. Never raises."""
        now = self._now()
        self._mark(now)
        with self._lock:
            keys = sorted(self._again)
        if not keys:
            return 0
        freed = 0
        for channel, ids in _by_channel(keys).items():
            try:
                freed += int(self._store.release_claims(self._worker, ids, now, channel=channel))
            except Exception as exc:
                log.warning(
                    "event relay cannot release %d undelivered event(s) on %s: %s; they go stale instead",
                    len(ids),
                    channel,
                    type(exc).__name__,
                )
                continue
            with self._lock:
                for i in ids:
                    self._again.pop((i, channel), None)
        log.info("event relay released %d undelivered event(s) for the next worker", freed)
        return freed

    @property
    def in_flight(self) -> int:
        """(event, channel) in a channel's hands or accepted and not yet marked (not those to be sent again)."""
        with self._lock:
            return len(self._held) + len(self._to_mark)


def _by_channel(keys: list[tuple[int, str]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for event_id, channel in keys:
        out.setdefault(channel, []).append(event_id)
    return out
