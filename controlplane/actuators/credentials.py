"""The one place Azure credentials are built.

Production uses azure-identity's DefaultAzureCredential (managed identity,
workload identity, Azure CLI ...). The simulator's fake ARM accepts any
bearer token, so tests and the demo use :class:`StaticTokenCredential`.
Tokens never reach a log line or an exception message.

Token fetches get a hard wall-clock deadline (:class:`BoundedCredential`):
the SDK asks for a token before the request reaches the transport, so the
transport's deadline (controlplane/actuators/transport.py) does not cover
it, and azure-identity's own HTTP timeouts are per socket operation (300 s)
and retried. A hanging token endpoint would hold a tick for as long as it
hangs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.exceptions import ClientAuthenticationError

log = logging.getLogger(__name__)

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


class TokenDeadlineExceeded(ClientAuthenticationError):
    """A credential did not produce a token within its hard deadline (transient: the next tick asks again)."""


_Token = TypeVar("_Token", AccessToken, AccessTokenInfo)


class _Fetch(Generic[_Token]):
    """One token request running in its own daemon thread; every caller waiting for the same token shares it."""

    def __init__(self, fn: Callable[[], _Token]) -> None:
        self.done = threading.Event()
        self.result: _Token | None = None
        self.error: BaseException | None = None
        self._fn: Callable[[], _Token] = fn

    def run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as exc:  # handed to the caller, raised in its thread
            self.error = exc
        finally:
            self.done.set()


class BoundedCredential:
    """A TokenCredential whose token fetches end within ``deadline_s`` seconds, however the token endpoint behaves.

    The fetch runs in a daemon thread; the caller waits for it at most
    ``deadline_s``, then gets :class:`TokenDeadlineExceeded`, which names the
    credential. A fetch still hanging is shared by the next callers that ask
    for the same token, never started again beside it, so a hanging endpoint
    costs one thread. If the token this credential last handed out for the
    same request is still valid for longer than the deadline, that token is
    returned instead (azure-identity refreshes tokens minutes before they
    expire: a hanging refresh does not stop the calls its old token still serves).
    """

    def __init__(self, inner: Any, deadline_s: float) -> None:
        if deadline_s <= 0:
            raise ValueError(f"deadline_s must be > 0, not {deadline_s!r}")
        self.inner = inner
        self.deadline_s = deadline_s
        self.name = type(inner).__name__
        self._lock = threading.Lock()
        self._running: dict[tuple[Any, ...], _Fetch[Any]] = {}
        self._last: dict[tuple[Any, ...], Any] = {}

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        def fetch() -> AccessToken:
            token: AccessToken = self.inner.get_token(*scopes, **kwargs)
            return token

        return self._bounded(("get_token", scopes, _key(kwargs)), fetch, scopes)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        def fetch() -> AccessTokenInfo:
            if hasattr(self.inner, "get_token_info"):
                info: AccessTokenInfo = self.inner.get_token_info(*scopes, options=options)
                return info
            wanted = {k: v for k, v in dict(options or {}).items() if k in ("claims", "tenant_id", "enable_cae")}
            token = self.inner.get_token(*scopes, **wanted)
            return AccessTokenInfo(token.token, token.expires_on)

        return self._bounded(("get_token_info", scopes, _key(dict(options or {}))), fetch, scopes)

    def _bounded(self, key: tuple[Any, ...], fn: Callable[[], _Token], scopes: tuple[str, ...]) -> _Token:
        with self._lock:
            fetch: _Fetch[_Token] | None = self._running.get(key)
            if fetch is None or fetch.done.is_set():  # none running (a finished one is never handed out again)
                fetch = self._running[key] = _Fetch(fn)
                threading.Thread(target=self._run, args=(key, fetch), name=f"token-{self.name}", daemon=True).start()
        if fetch.done.wait(self.deadline_s):
            if fetch.error is not None:
                raise fetch.error
            if fetch.result is None:  # pragma: no cover - run() sets one or the other
                raise TokenDeadlineExceeded(f"{self.name}: the token request ended without a token")
            self._last[key] = fetch.result
            return fetch.result
        last: _Token | None = self._last.get(key)
        if last is not None and last.expires_on - time.time() > self.deadline_s:
            log.warning("%s: no new token within %g s; the last one is still valid, using it", self.name, self.deadline_s)
            return last
        raise TokenDeadlineExceeded(
            f"{self.name}: no token for {' '.join(scopes)} within its hard deadline of {self.deadline_s:g} s"
            " (the token endpoint hangs or is too slow); asked again next tick"
        )

    def _run(self, key: tuple[Any, ...], fetch: _Fetch[Any]) -> None:
        fetch.run()
        with self._lock:
            if self._running.get(key) is fetch:
                del self._running[key]

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if callable(close):
            close()

    def __repr__(self) -> str:
        return f"BoundedCredential({self.name}, deadline {self.deadline_s:g} s)"


def _key(options: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, repr(v)) for k, v in options.items()))


def build_credential(kind: str) -> Any:
    """Build the credential named by config ``azure.credential``."""
    if kind == "static_token":
        return StaticTokenCredential()
    if kind == "default":
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential()
    raise ValueError(f"azure.credential: unknown kind {kind!r} (expected 'default' or 'static_token')")
