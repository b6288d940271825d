"""BoundedCredential: every token fetch ends within its deadline, names the credential, and shares a hanging fetch."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from azure.core.credentials import AccessToken, AccessTokenInfo

from controlplane.actuators.base import TransientError, classify
from controlplane.actuators.credentials import BoundedCredential, TokenDeadlineExceeded

SCOPE = "https://management.azure.com/.default"


class SlowIdentity:
    """A TokenCredential whose token endpoint answers only when ``answer`` is set (or raises ``error``)."""

    def __init__(self, lifetime_s: float = 3600) -> None:
        self.answer = threading.Event()
        self.asked = 0
        self.lifetime_s = lifetime_s
        self.error: Exception | None = None

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.asked += 1
        self.answer.wait(10)
        if self.error is not None:
            raise self.error
        return AccessToken(f"token-{self.asked}", int(time.time() + self.lifetime_s))


def test_a_hanging_fetch_ends_at_the_deadline_with_an_error_naming_the_credential() -> None:
    inner = SlowIdentity()
    bounded = BoundedCredential(inner, 0.1)
    started = time.monotonic()
    with pytest.raises(TokenDeadlineExceeded) as info:
        bounded.get_token(SCOPE)
    assert time.monotonic() - started < 1.0
    assert str(info.value).startswith(f"SlowIdentity: no token for {SCOPE} within its hard deadline of 0.1 s")
    error = classify(info.value)
    assert isinstance(error, TransientError) and error.code == "TokenTimeout"  # not a bad credential: asked again next tick
    inner.answer.set()


def test_callers_share_the_fetch_still_running_and_the_next_fetch_starts_once_it_is_over() -> None:
    inner = SlowIdentity()
    bounded = BoundedCredential(inner, 0.05)
    for _ in range(3):
        with pytest.raises(TokenDeadlineExceeded):
            bounded.get_token_info(SCOPE)
    assert inner.asked == 1
    inner.answer.set()
    info = bounded.get_token_info(SCOPE)
    assert isinstance(info, AccessTokenInfo) and info.token in ("token-1", "token-2")


def test_a_hanging_refresh_keeps_handing_out_the_last_token_while_it_is_valid() -> None:
    inner = SlowIdentity()
    inner.answer.set()
    bounded = BoundedCredential(inner, 0.05)
    first = bounded.get_token(SCOPE)
    inner.answer.clear()  # the refresh hangs
    assert bounded.get_token(SCOPE) == first
    short = SlowIdentity(lifetime_s=0.01)  # a token about to expire is not handed out again
    short.answer.set()
    bounded = BoundedCredential(short, 0.05)
    bounded.get_token(SCOPE)
    short.answer.clear()
    with pytest.raises(TokenDeadlineExceeded):
        bounded.get_token(SCOPE)
    inner.answer.set()
    short.answer.set()


def test_the_credentials_own_error_reaches_the_caller_unchanged() -> None:
    inner = SlowIdentity()
    inner.error = ValueError("no such tenant")
    inner.answer.set()
    with pytest.raises(ValueError, match="no such tenant"):
        BoundedCredential(inner, 1.0).get_token(SCOPE)


def test_a_deadline_must_be_positive() -> None:
    with pytest.raises(ValueError, match="deadline_s must be > 0"):
        BoundedCredential(SlowIdentity(), 0)
