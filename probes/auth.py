"""Credentials for probes: an ``api-key`` from the environment, or an Entra ID token.

Secrets never reach a log line or an error text: :class:`AuthHeaders` carries
the secret values so the probe can scrub them out of anything it reports.

Entra ID tokens come from an azure-identity ``TokenCredential`` (default
``DefaultAzureCredential``, built lazily on first use). They are cached per
scope and refreshed ``refresh_margin`` seconds before they expire. The fetch
runs in a worker thread (azure-identity is synchronous and may take seconds)
and concurrent probes share a single fetch.

A fetch has a hard deadline (``deadline_s``: the runner gives the probe's
own). A token endpoint that stalls (IMDS, workload identity) is our trouble,
not the region's: the probe is an auth error, which never counts against a
region's health, and the probe's own deadline starts once the token is in
hand. As a probe timeout it counted against every region at once. The
stalled request keeps one daemon thread, shared by the next fetches
(:class:`~controlplane.actuators.credentials.BoundedCredential`), and probes
that waited for a fetch that failed share its failure rather than queue for
a deadline each.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controlplane.actuators.credentials import BoundedCredential
from controlplane.config import ApiKeyAuth, EntraIdAuth, LLMEndpoint

log = logging.getLogger(__name__)

DEFAULT_REFRESH_MARGIN = 300.0  # seconds before expiry a token is replaced
DEFAULT_TOKEN_DEADLINE = 10.0  # seconds a token fetch may take (the default probe deadline)


class AuthFailure(Exception):
    """No usable credential for an endpoint. The message is safe to show."""


@dataclass(frozen=True, slots=True)
class AuthHeaders:
    headers: dict[str, str]
    secrets: tuple[str, ...]  # values to scrub from any text the probe reports

    def __repr__(self) -> str:  # never show the values
        return f"AuthHeaders(headers={sorted(self.headers)}, secrets=<{len(self.secrets)} redacted>)"


@dataclass(slots=True)
class _CachedToken:
    token: str
    expires_on: float  # epoch seconds


class TokenCache:
    """Bearer tokens per scope, fetched through a credential, refreshed early."""

    def __init__(
        self,
        credential: Any | None = None,
        now: Callable[[], float] = time.time,
        refresh_margin: float = DEFAULT_REFRESH_MARGIN,
        deadline_s: float = DEFAULT_TOKEN_DEADLINE,
    ) -> None:
        self._credential = credential
        self._bounded: BoundedCredential | None = None
        self._now = now
        self._margin = refresh_margin
        self._deadline = deadline_s
        self._tokens: dict[str, _CachedToken] = {}
        self._ended: dict[str, tuple[int, AuthFailure | None]] = {}  # scope -> (fetches ended, how the last ended)
        self._locks: dict[str, asyncio.Lock] = {}
        self._locks_loop: asyncio.AbstractEventLoop | None = None
        self.fetches = 0  # how many times the credential was asked

    def _fresh(self, scope: str) -> str | None:
        cached = self._tokens.get(scope)
        if cached is not None and self._now() < cached.expires_on - self._margin:
            return cached.token
        return None

    def _lock(self, scope: str) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if loop is not self._locks_loop:  # asyncio locks are bound to one loop (run_round_sync makes new ones)
            self._locks, self._locks_loop = {}, loop
        return self._locks.setdefault(scope, asyncio.Lock())

    def _credential_or_default(self) -> BoundedCredential:
        if self._bounded is None:
            if self._credential is None:
                from azure.identity import DefaultAzureCredential

                self._credential = DefaultAzureCredential()
            self._bounded = BoundedCredential(self._credential, self._deadline)
        return self._bounded

    async def token(self, scope: str) -> str:
        """A token valid for at least ``refresh_margin`` more seconds (if the IdP allows)."""
        token = self._fresh(scope)
        if token is not None:
            return token
        lock = self._lock(scope)
        ended_before = self._ended.get(scope, (0, None))[0]
        async with lock:
            token = self._fresh(scope)  # another probe may have refreshed it meanwhile
            if token is not None:
                return token
            ended, failure = self._ended.get(scope, (0, None))
            if ended != ended_before and failure is not None:
                raise failure  # the fetch this probe waited for failed: its failure, not one more deadline
            credential = self._credential_or_default()
            self.fetches += 1
            try:
                access = await asyncio.to_thread(credential.get_token, scope)
            except Exception as exc:
                log.warning("Entra ID token request for %s failed (%s)", scope, type(exc).__name__)
                failure = AuthFailure(f"Entra ID token for {scope} unavailable: {type(exc).__name__}: {exc}")
                self._ended[scope] = (ended + 1, failure)
                raise failure from None
            self._ended[scope] = (ended + 1, None)
            self._tokens[scope] = _CachedToken(access.token, float(access.expires_on))
            log.debug("Entra ID token for %s refreshed, valid for %.0fs", scope, access.expires_on - self._now())
            return access.token

    def close(self) -> None:
        close = getattr(self._credential, "close", None)
        if callable(close):
            close()


class ProbeAuth:
    """Builds the auth header of a probe request for an endpoint."""

    def __init__(self, tokens: TokenCache | None = None, environ: Any = None) -> None:
        self.tokens = tokens or TokenCache()
        self._environ = os.environ if environ is None else environ

    async def headers(self, endpoint: LLMEndpoint) -> AuthHeaders:
        """Raises :class:`AuthFailure` (with a safe message) when no credential is available."""
        auth = endpoint.auth
        if isinstance(auth, ApiKeyAuth):
            key = self._environ.get(auth.env, "")
            if not key:
                raise AuthFailure(f"environment variable {auth.env} (api key for endpoint {endpoint.name}) is not set")
            return AuthHeaders({"api-key": key}, (key,))
        if isinstance(auth, EntraIdAuth):
            token = await self.tokens.token(auth.scope)
            return AuthHeaders({"Authorization": f"Bearer {token}"}, (token,))
        raise AuthFailure(f"unsupported auth kind {getattr(auth, 'kind', auth)!r}")
