"""The ``notifications:`` config section.

Secrets never live in the file: each channel names the environment variable
that holds its webhook URL (Slack, Teams, generic webhook), its PagerDuty
routing key, or its HMAC secret. A channel whose variable is missing at start
is reported (``Notifier.problems``) and skipped; the rest keep working.

Example::

    notifications:
      group_wait: 10s
      channels:
        - kind: slack
          name: oncall-slack
          url_env: SLACK_WEBHOOK_URL
          min_severity: warning
        - kind: pagerduty
          name: pd
          routing_key_env: PD_ROUTING_KEY
          kinds: [transition, panic, change_failed]
          min_severity: critical
        - kind: webhook
          name: audit-sink
          url_env: AUDIT_WEBHOOK_URL
          secret_env: AUDIT_WEBHOOK_SECRET
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from controlplane.durations import Duration

Severity = Literal["info", "warning", "critical"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}

PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"

_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$"


def severity_rank(severity: str | None) -> int:
    """info < warning < critical; anything unknown counts as info."""
    return SEVERITY_RANK.get((severity or "info").lower(), 0)


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Channel(_Section):
    name: str = Field(pattern=_NAME)
    kinds: list[str] = Field(default_factory=list, description="event kinds to send; empty = every kind")
    min_severity: Severity = "info"
    timeout: Duration = Field(default=5.0, gt=0, description="per HTTP request (connect, read, write each)")
    retries: int = Field(default=3, ge=0, le=10, description="extra attempts after the first, on 5xx/429/timeouts")
    backoff: Duration = Field(default=1.0, ge=0, description="first retry delay; doubles each attempt")
    max_backoff: Duration = Field(default=30.0, ge=0, description="cap on one delay, Retry-After included")
    enabled: bool = True

    def wants_kind(self, kind: str) -> bool:
        return not self.kinds or kind in self.kinds

    def secret_envs(self) -> dict[str, str]:
        """role -> environment variable name of every secret this channel needs."""
        raise NotImplementedError


class SlackChannel(_Channel):
    kind: Literal["slack"]
    url_env: str = Field(pattern=_ENV_NAME, description="env var holding the incoming-webhook URL")

    def secret_envs(self) -> dict[str, str]:
        return {"url": self.url_env}


class TeamsChannel(_Channel):
    kind: Literal["teams"]
    url_env: str = Field(pattern=_ENV_NAME, description="env var holding the Teams workflow (Power Automate) webhook URL")

    def secret_envs(self) -> dict[str, str]:
        return {"url": self.url_env}


class PagerDutyChannel(_Channel):
    kind: Literal["pagerduty"]
    routing_key_env: str = Field(pattern=_ENV_NAME, description="env var holding the Events API v2 routing (integration) key")
    url: str = Field(
        default=PAGERDUTY_EVENTS_URL, pattern=r"^https?://", description="Events API v2 enqueue URL (tests point it at 127.0.0.1)"
    )
    source: str = "regionguard"
    dedup_prefix: str = Field(default="regionguard", min_length=1, max_length=60)

    def secret_envs(self) -> dict[str, str]:
        return {"routing_key": self.routing_key_env}


class WebhookChannel(_Channel):
    kind: Literal["webhook"]
    url_env: str = Field(pattern=_ENV_NAME, description="env var holding the receiver URL")
    secret_env: str | None = Field(default=None, pattern=_ENV_NAME, description="env var holding the HMAC-SHA256 key; unsigned when unset")

    def secret_envs(self) -> dict[str, str]:
        envs = {"url": self.url_env}
        if self.secret_env:
            envs["secret"] = self.secret_env
        return envs


Channel = Annotated[SlackChannel | TeamsChannel | PagerDutyChannel | WebhookChannel, Field(discriminator="kind")]


class NotificationSettings(_Section):
    channels: list[Channel] = Field(default_factory=list)
    group_wait: Duration = Field(
        default=5.0, ge=0, description="events of one incident (region) arriving within this window go out as one message"
    )
    queue_size: int = Field(
        default=1000, ge=1, le=100_000, description="events waiting per channel; the oldest is dropped (and counted) when full"
    )
    max_events_per_message: int = Field(default=20, ge=1, le=200, description="lines listed in one message; the rest are counted")
    dashboard_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="the dashboard's address as on-call opens it: messages link to the incident page",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> NotificationSettings:
        names = [c.name for c in self.channels]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"channel names must be unique: {', '.join(dupes)}")
        return self
