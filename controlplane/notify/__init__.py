"""Notifications on audit events: Slack, Microsoft Teams, PagerDuty, signed webhooks.

``Notifier(settings.notifications, store, clock).publish(event)`` never blocks;
see :mod:`controlplane.notify.notifier` for delivery and
:mod:`controlplane.notify.messages` for grouping, payloads and the webhook
signature scheme.
"""

from controlplane.notify.messages import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Message,
    build_message,
    group_key,
    is_resolution,
    pagerduty_dedup_key,
    sign,
    verify_signature,
)
from controlplane.notify.notifier import DeliveryResult, EventRelay, Notifier
from controlplane.notify.settings import (
    PAGERDUTY_EVENTS_URL,
    NotificationSettings,
    PagerDutyChannel,
    SlackChannel,
    TeamsChannel,
    WebhookChannel,
    severity_rank,
)

__all__ = [
    "DELIVERY_HEADER",
    "PAGERDUTY_EVENTS_URL",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "DeliveryResult",
    "EventRelay",
    "Message",
    "NotificationSettings",
    "Notifier",
    "PagerDutyChannel",
    "SlackChannel",
    "TeamsChannel",
    "WebhookChannel",
    "build_message",
    "group_key",
    "is_resolution",
    "pagerduty_dedup_key",
    "severity_rank",
    "sign",
    "verify_signature",
]
