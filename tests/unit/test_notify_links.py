"""Notifications link to the incident page on the dashboard (notifications.dashboard_url)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from controlplane.domain import AuditEvent, EventKind
from controlplane.notify import messages
from controlplane.notify.settings import NotificationSettings

T0 = datetime(2026, 11, 27, 12, 0, 30, tzinfo=UTC)


def transition(at: datetime, old: str, new: str) -> AuditEvent:
    return AuditEvent(
        EventKind.TRANSITION,
        at,
        "automation",
        f"eastus: {old} -> {new}",
        region="eastus",
        severity="critical",
        data={"old": old, "new": new},
    )


def test_a_batch_with_the_opening_verdict_links_to_that_incident_page_in_every_channel() -> None:
    change = AuditEvent(
        EventKind.CHANGE, T0 + timedelta(seconds=4), "automation", "drained", region="eastus", target="tm", severity="warning"
    )
    msg = messages.build_message("eastus", [transition(T0, "healthy", "unhealthy"), change], dashboard_url="https://rg.example.test/")
    assert msg.link == "https://rg.example.test/incident/eastus-20261127T120030Z"
    assert msg.text.endswith("\nIncident: https://rg.example.test/incident/eastus-20261127T120030Z")
    assert "<https://rg.example.test/incident/eastus-20261127T120030Z|incident>" in str(messages.slack_payload(msg))
    card = messages.teams_payload(msg)["attachments"][0]["content"]
    assert card["actions"][0]["url"] == msg.link
    assert messages.webhook_payload(msg, "d1")["link"] == msg.link


def test_later_batches_link_to_the_regions_incident_list_and_no_url_means_no_link() -> None:
    later = [transition(T0, "degraded", "unhealthy")]
    assert messages.build_message("eastus", later, dashboard_url="https://rg.example.test").link == (
        "https://rg.example.test/incidents?region=eastus"
    )
    assert messages.build_message("eastus", later).link is None
    assert "Incident:" not in messages.build_message("eastus", later).text


def test_the_dashboard_url_must_be_an_http_address() -> None:
    with pytest.raises(ValidationError, match="dashboard_url"):
        NotificationSettings(dashboard_url="javascript:alert(1)")
    assert NotificationSettings(dashboard_url="https://rg.example.test/dash").dashboard_url == "https://rg.example.test/dash"
