"""From audit events to the bytes each channel expects. Pure functions, no I/O.

Grouping: every event belongs to one *group* — its region when it has one
(one region incident = one message thread / PagerDuty dedup key), else its
target, else its kind. A batch is the events of one group that arrived within
the grouping window; it becomes one message.

What the formatter reads from ``AuditEvent.data`` (all optional):

- ``reason``: why (health reason, plan reason, override reason);
- ``change``: ``Change.to_dict()``; ``changes``: a list of them;
- ``status`` (applied/failed), ``error`` / ``error_code``: outcome of a write;
- ``old`` / ``new``: health states of a transition (``new == "healthy"``
  resolves the incident);
- ``resolved: true``: this event ends the incident (e.g. panic cleared,
  drift resolved); kinds ``recovery`` and ``panic_cleared`` do too.

Generic webhook signing (documented for receivers): the request carries
``X-Regionguard-Timestamp: <unix seconds>`` and
``X-Regionguard-Signature: sha256=<hex>`` where hex is
``HMAC-SHA256(secret, timestamp + "." + raw_body)``. A receiver recomputes it
over the raw bytes, compares in constant time and rejects timestamps older
than a few minutes (replays). ``X-Regionguard-Delivery`` is a unique id per
message, stable across its retries.

Idempotency: ``event_ids`` lists the stored id of every event the message
stands for (each ``events[].id`` too). Delivery is at least once: a worker that
dies after a receiver accepted a message and before it recorded that may have
the message sent again by another worker, grouped differently and under a new
delivery id, so receivers de-duplicate on the event ids, not the delivery id.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any
from urllib.parse import quote

from controlplane.domain import AuditEvent, EventKind, as_jsonable
from controlplane.notify.settings import PagerDutyChannel, severity_rank

SIGNATURE_HEADER = "X-Regionguard-Signature"
TIMESTAMP_HEADER = "X-Regionguard-Timestamp"
DELIVERY_HEADER = "X-Regionguard-Delivery"

RESOLVING_KINDS = frozenset({"recovery", "panic_cleared"})
_SEVERITY_LABEL = {"info": "INFO", "warning": "WARNING", "critical": "CRITICAL"}
_PD_SEVERITY = {"info": "info", "warning": "warning", "critical": "critical"}
_SLACK_SECTION_MAX = 2900  # Slack caps a section's text at 3000 characters
_SLACK_HEADER_MAX = 150
_PD_SUMMARY_MAX = 1024


def group_key(event: AuditEvent) -> str:
    """One incident = one group: the region, else the target, else the kind."""
    if event.region:
        return f"region:{event.region}"
    if event.target:
        return f"target:{event.target}"
    return f"kind:{event.kind}"


def is_resolution(event: AuditEvent) -> bool:
    """Does this event end the incident of its group?"""
    data = event.data or {}
    if data.get("resolved") is True or event.kind in RESOLVING_KINDS:
        return True
    return event.kind == EventKind.TRANSITION and str(data.get("new", "")).lower() == "healthy"


def batch_action(events: Sequence[AuditEvent]) -> str:
    """'resolve' if the newest state-bearing event resolves, else 'trigger'.

    Info events (e.g. the traffic restore that follows a recovery) are neutral,
    so a trailing info line does not re-open a resolved incident.
    """
    action = "trigger"
    for e in events:
        if is_resolution(e):
            action = "resolve"
        elif severity_rank(e.severity) >= 1:
            action = "trigger"
    return action


def worst_severity(events: Sequence[AuditEvent]) -> str:
    return max((e.severity for e in events), key=severity_rank, default="info")


def _change_text(change: Mapping[str, Any]) -> str:
    where = f"{change.get('target', '?')}/{change.get('endpoint', '?')} ({change.get('region', '?')})"
    return f"{where}: {change.get('field', '?')} {change.get('actual')} -> {change.get('desired')}"


def event_lines(event: AuditEvent) -> list[str]:
    """Human lines for one event: summary, then reason, change(s) and error."""
    data = event.data or {}
    lines = [event.summary]
    reason = data.get("reason")
    if reason and str(reason) not in event.summary:
        lines.append(f"reason: {reason}")
    changes = list(data.get("changes") or [])
    if isinstance(data.get("change"), Mapping):
        changes.insert(0, data["change"])
    for change in changes[:10]:
        status = f" [{data['status']}]" if data.get("status") else ""
        lines.append(f"change: {_change_text(change)}{status}")
        if change.get("reason") and change.get("reason") != reason:
            lines.append(f"change reason: {change['reason']}")
    if len(changes) > 10:
        lines.append(f"... and {len(changes) - 10} more change(s)")
    error = data.get("error") or data.get("error_code")
    if error:
        lines.append(f"error: {error}")
    return lines


@dataclass(frozen=True, slots=True)
class Message:
    """One rendered batch: the neutral view every channel format starts from."""

    group: str
    action: str  # trigger | resolve
    severity: str
    region: str | None
    target: str | None
    title: str
    lines: tuple[str, ...]  # one bullet per event (joined sub-lines)
    events: tuple[AuditEvent, ...]
    omitted: int  # events not listed (max_events_per_message, or dropped from a flooded batch)
    count: int  # events the message stands for
    link: str | None = None  # the incident page (or the region's incident list) on the dashboard

    @property
    def text(self) -> str:
        body = "\n".join(f"- {line}" for line in self.lines)
        more = f"\n(+{self.omitted} more event(s))" if self.omitted else ""
        link = f"\nIncident: {self.link}" if self.link else ""
        return f"{self.title}\n{body}{more}{link}"

    @property
    def kind(self) -> str:
        """The event kind that characterises the batch (the worst, newest)."""
        worst = max(severity_rank(e.severity) for e in self.events)
        return [e for e in self.events if severity_rank(e.severity) == worst][-1].kind

    def record(self) -> dict[str, Any]:
        """What the store keeps about a delivery: no URLs, keys or raw bodies."""
        return {
            "title": self.title,
            "action": self.action,
            "severity": self.severity,
            "region": self.region,
            "target": self.target,
            "count": self.count,
            "event_ids": [e.id for e in self.events if e.id is not None][:50],
            "text": self.text[:4000],
        }


_BAD_STATES = ("degraded", "unhealthy")


def incident_link(dashboard_url: str | None, region: str | None, events: Sequence[AuditEvent]) -> str | None:
    """The dashboard page for this batch's incident.

    The incident page when the batch holds the region's opening verdict (its id is
    the region and that verdict's time); otherwise the region's incident list,
    which shows an open incident first. None without a dashboard URL or a region.
    """
    if not dashboard_url or not region:
        return None
    base = dashboard_url.rstrip("/")
    for e in events:
        old, new = e.data.get("old"), e.data.get("new")
        if e.kind == EventKind.TRANSITION and e.region == region and new in _BAD_STATES and old not in _BAD_STATES:
            return f"{base}/incident/{region}-{e.at.astimezone(UTC):%Y%m%dT%H%M%SZ}"
    return f"{base}/incidents?region={quote(region)}"


def build_message(
    group: str, events: Sequence[AuditEvent], max_events: int = 20, dropped: int = 0, dashboard_url: str | None = None
) -> Message:
    """Render a batch; ``dropped`` counts events of the batch no longer held in ``events``."""
    if not events:
        raise ValueError("a message needs at least one event")
    action = batch_action(events)
    severity = "info" if action == "resolve" else worst_severity(events)
    newest = list(events)[-1]
    region = next((e.region for e in reversed(events) if e.region), None)
    target = next((e.target for e in reversed(events) if e.target), None)
    where = region or target or newest.kind
    state = "RESOLVED" if action == "resolve" else _SEVERITY_LABEL.get(severity, severity.upper())
    headline_event = newest if action == "resolve" else [e for e in events if e.severity == severity][-1]
    title = f"[regionguard] {state} {where}: {headline_event.summary}"
    count = len(events) + dropped
    if count > 1:
        title += f" (+{count - 1} more)"
    listed = list(events)[-max_events:]
    lines = tuple(f"{_SEVERITY_LABEL.get(e.severity, e.severity)} {e.kind}: " + "; ".join(event_lines(e)) for e in listed)
    return Message(
        group=group,
        action=action,
        severity=severity,
        region=region,
        target=target,
        title=title,
        lines=lines,
        events=tuple(events),
        omitted=count - len(listed),
        count=count,
        link=incident_link(dashboard_url, region, events),
    )


# ---------------------------------------------------------------- channel payloads


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(msg: Message) -> dict[str, Any]:
    """Incoming webhook: ``text`` is the notification/fallback, blocks the layout."""
    body = "\n".join(f"• {_slack_escape(line)}" for line in msg.lines)
    if msg.omitted:
        body += f"\n_(+{msg.omitted} more event(s))_"
    if len(body) > _SLACK_SECTION_MAX:
        body = body[: _SLACK_SECTION_MAX - 1] + "…"
    header = msg.title if len(msg.title) <= _SLACK_HEADER_MAX else msg.title[: _SLACK_HEADER_MAX - 1] + "…"
    context = (
        f"region: *{_slack_escape(msg.region or '-')}* · target: *{_slack_escape(msg.target or '-')}* · group: `{_slack_escape(msg.group)}`"
    )
    if msg.link:
        context += f" · <{msg.link}|incident>"
    return {
        "text": msg.text,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": header}},
            {"type": "section", "text": {"type": "mrkdwn", "text": body}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
        ],
    }


def teams_payload(msg: Message) -> dict[str, Any]:
    """Teams workflow webhook: a message with one Adaptive Card attachment."""
    color = "Good" if msg.action == "resolve" else {"critical": "Attention", "warning": "Warning"}.get(msg.severity, "Default")
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": msg.title, "weight": "Bolder", "size": "Medium", "color": color, "wrap": True},
        {
            "type": "FactSet",
            "facts": [
                {"title": "Region", "value": msg.region or "-"},
                {"title": "Target", "value": msg.target or "-"},
                {"title": "Severity", "value": msg.severity},
                {"title": "Events", "value": str(msg.count)},
            ],
        },
    ]
    body += [{"type": "TextBlock", "text": line, "wrap": True, "spacing": "Small"} for line in msg.lines]
    if msg.omitted:
        body.append({"type": "TextBlock", "text": f"(+{msg.omitted} more event(s))", "isSubtle": True, "wrap": True})
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    }
    if msg.link:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Open the incident", "url": msg.link}]
    return {
        "type": "message",
        "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}],
    }


def pagerduty_dedup_key(channel: PagerDutyChannel, group: str) -> str:
    """``regionguard:<region>`` for a region incident; ``regionguard:target:<t>`` / ``regionguard:kind:<k>`` otherwise."""
    scope, _, name = group.partition(":")
    suffix = name if scope == "region" else group
    return f"{channel.dedup_prefix}:{suffix}"[:255]


def pagerduty_payload(msg: Message, channel: PagerDutyChannel, routing_key: str) -> dict[str, Any]:
    """Events API v2: trigger (with payload) or resolve, sharing one dedup key per incident."""
    body: dict[str, Any] = {"routing_key": routing_key, "event_action": msg.action, "dedup_key": pagerduty_dedup_key(channel, msg.group)}
    if msg.action == "resolve":
        return body
    summary = msg.title if len(msg.title) <= _PD_SUMMARY_MAX else msg.title[: _PD_SUMMARY_MAX - 1] + "…"
    newest = msg.events[-1]
    body["payload"] = {
        "summary": summary,
        "source": channel.source,
        "severity": _PD_SEVERITY.get(msg.severity, "info"),
        "timestamp": newest.at.isoformat(),
        "component": msg.region or msg.target or newest.kind,
        "group": msg.target or "regionguard",
        "class": msg.kind,
        "custom_details": {"events": list(msg.lines), "omitted": msg.omitted, "region": msg.region, "target": msg.target},
    }
    body["client"] = "regionguard"
    if msg.link:
        body["links"] = [{"href": msg.link, "text": "The incident on the regionguard dashboard"}]
    return body


def webhook_payload(msg: Message, delivery_id: str) -> dict[str, Any]:
    return {
        "version": 1,
        "delivery_id": delivery_id,
        "group": msg.group,
        "action": msg.action,
        "severity": msg.severity,
        "region": msg.region,
        "target": msg.target,
        "title": msg.title,
        "text": msg.text,
        "count": msg.count,
        "link": msg.link,
        "event_ids": [e.id for e in msg.events if e.id is not None],  # idempotency keys: a receiver drops an id it has seen
        "events": [as_jsonable(e) for e in msg.events[-50:]],
    }


# ---------------------------------------------------------------- HMAC signing


def encode_body(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>``."""
    mac = hmac.new(secret.encode("utf-8"), str(timestamp).encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(secret: str, body: bytes, headers: Mapping[str, str], now: float, tolerance_s: float = 300.0) -> bool:
    """Receiver side: the signature matches the raw body and the timestamp is fresh."""
    lowered = {k.lower(): v for k, v in headers.items()}
    signature = lowered.get(SIGNATURE_HEADER.lower(), "")
    try:
        timestamp = int(lowered.get(TIMESTAMP_HEADER.lower(), ""))
    except ValueError:
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)
