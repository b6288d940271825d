"""The one place Azure credentials are built.

Production uses azure-identity's DefaultAzureCredential (managed identity,
workload identity, Azure CLI ...). The simulator's fake ARM accepts any
bearer token, so tests and the demo use :class:`StaticTokenCredential`.
Tokens never reach a log line or an exception message.
"""

from __future__ import annotations

import time
from typing import Any

from azure.core.credentials import AccessToken, AccessTokenInfo

ARM_SCOPE = "https://management.azure.com/.default"
COGNITIVE_SCOPE = "https://cognitiveservices.azure.com/.default"


class StaticTokenCredential:
    """A TokenCredential that hands out one fixed token (for the simulator)."""

    def __init__(self, token: str = "regionguard-sim-token", lifetime_s: int = 3600) -> None:
        self._token = token
        self._lifetime_s = lifetime_s
        self.requests = 0  # how many tokens were asked for; tests read it

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.requests += 1
        return AccessToken(self._token, int(time.time()) + self._lifetime_s)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        self.requests += 1
        return AccessTokenInfo(self._token, int(time.time()) + self._lifetime_s)

    def close(self) -> None:  # TokenCredential protocol
        pass

    def __repr__(self) -> str:  # never show the token
        return "StaticTokenCredential(<redacted>)"


def build_credential(kind: str) -> Any:
    """Build the credential named by config ``azure.credential``."""
    if kind == "static_token":
        return StaticTokenCredential()
    if kind == "default":
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential()
    raise ValueError(f"azure.credential: unknown kind {kind!r} (expected 'default' or 'static_token')")
