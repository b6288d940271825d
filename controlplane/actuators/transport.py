"""The HTTP transport every Azure SDK client gets: hard deadlines, a size cap and the write fence.

azure-core's own timeouts are per socket operation: an answer whose bytes
trickle in (one a second) never trips a 30 s read timeout, and a 500 MB body
is read into memory whole. :class:`BoundedTransport` (a ``RequestsTransport``)
adds, per request:

* a **hard wall-clock deadline**: the request's own timeout
  (``connection_timeout``/``read_timeout``, which the actuators already bound
  by the tick's deadline), capped by ``max_call_s``. A watchdog timer shuts the
  request's socket down when it passes, whatever the server is doing: in the
  handshake, the headers or the body. The call then fails with
  :class:`CallDeadlineExceeded` (a ``ServiceResponseTimeoutError``:
  transient).
* a **size cap** on the answer's body (``max_body_bytes``): a
  ``Content-Length`` over it is refused before reading, a body that grows
  past it is cut off. The call fails with :class:`ResponseTooLarge`.
* the **write fence**: right before a request that is not a GET/HEAD goes
  out, the fence installed with :func:`write_fence` for this thread is asked
  whether this worker may still write for as long as the request may take
  (the lease must outlive the request's hard deadline, see docs/adr/0012).
  If not, :class:`~controlplane.actuators.base.FencedError` is raised and
  nothing is sent.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from azure.core.exceptions import ServiceResponseError, ServiceResponseTimeoutError
from azure.core.pipeline.transport import RequestsTransport
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024  # ARM answers for one profile / Front Door are kilobytes
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_CHUNK = 64 * 1024

WriteFence = Callable[[float], None]
"""Called with a write's hard deadline (seconds) right before it is sent; raises to refuse it."""

_fence: contextvars.ContextVar[WriteFence | None] = contextvars.ContextVar("regionguard_write_fence", default=None)
_watch = threading.local()


class CallDeadlineExceeded(ServiceResponseTimeoutError):
    """The request's hard wall-clock deadline passed (the socket was shut down)."""


class ResponseTooLarge(ServiceResponseError):
    """The answer's body is over the size cap: refused, not read."""


@contextlib.contextmanager
def write_fence(fence: WriteFence | None) -> Iterator[None]:
    """Install ``fence`` for the Azure writes made in this thread (and context) inside the block."""
    token = _fence.set(fence)
    try:
        yield
    finally:
        _fence.reset(token)


def check_write_fence(seconds: float) -> None:
    """Ask the installed fence (if any) whether a write that may take ``seconds`` may start now."""
    fence = _fence.get()
    if fence is not None:
        fence(seconds)


class _Watchdog:
    """Shuts down the sockets of one request's connections when its deadline passes."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.monotonic()
        self.fired = False
        self._conns: list[Any] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def watch(self, conn: Any) -> None:
        with self._lock:
            self._conns.append(conn)
            if self.fired:
                _shutdown(conn)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            for conn in self._conns:
                _shutdown(conn)

    def __enter__(self) -> _Watchdog:
        _watch.current = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        _watch.current = None


def _shutdown(conn: Any) -> None:
    sock = getattr(conn, "sock", None)
    if sock is None:
        return
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the OS-level shutdown: unblocks a recv in another thread
    except OSError:
        pass


def _watched(conn: Any) -> None:
    watchdog: _Watchdog | None = getattr(_watch, "current", None)
    if watchdog is not None:
        watchdog.watch(conn)


def _last_check(method: Any) -> None:
    """Right before a write's bytes go out (the connection and TLS are up by now): the fence again, for
    what is left of the call. A process paused between the first check and here (SIGSTOP, a long GC,
    a starved thread) finds its lease gone, or its deadline spent, and sends nothing."""
    if str(method).upper() in SAFE_METHODS:
        return
    watchdog: _Watchdog | None = getattr(_watch, "current", None)
    if watchdog is None:
        return
    left = watchdog.seconds - (time.monotonic() - watchdog.started)
    if left <= 0 or watchdog.fired:
        raise CallDeadlineExceeded(f"{method}: not sent, the call's {watchdog.seconds:g} s deadline passed before its bytes could go out")
    check_write_fence(left)


class _WatchedHTTPPool(HTTPConnectionPool):
    def _make_request(self, conn: Any, method: Any, *args: Any, **kwargs: Any) -> Any:
        _watched(conn)
        _last_check(method)
        return super()._make_request(conn, method, *args, **kwargs)


class _WatchedHTTPSPool(HTTPSConnectionPool):
    def _validate_conn(self, conn: Any) -> None:
        _watched(conn)  # the TLS handshake happens here: it is bounded too
        super()._validate_conn(conn)

    def _make_request(self, conn: Any, method: Any, *args: Any, **kwargs: Any) -> Any:
        _watched(conn)
        _last_check(method)
        return super()._make_request(conn, method, *args, **kwargs)


class BoundedTransport(RequestsTransport):
    """``RequestsTransport`` with a hard deadline per request, a body size cap and the write fence."""

    def __init__(self, *, max_call_s: float, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, **kwargs: Any) -> None:
        if max_call_s <= 0:
            raise ValueError(f"max_call_s must be > 0, not {max_call_s!r}")
        if max_body_bytes <= 0:
            raise ValueError(f"max_body_bytes must be > 0, not {max_body_bytes!r}")
        super().__init__(**kwargs)
        self.max_call_s = max_call_s
        self.max_body_bytes = max_body_bytes

    def _init_session(self, session: Any) -> None:
        super()._init_session(session)
        for adapter in session.adapters.values():
            manager = getattr(adapter, "poolmanager", None)
            if manager is not None:
                manager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}

    def _seconds(self, kwargs: dict[str, Any]) -> float:
        connect = kwargs.get("connection_timeout", self.connection_config.timeout)
        read = kwargs.get("read_timeout", self.connection_config.read_timeout)
        asked = [float(v) for v in (connect, read) if isinstance(v, int | float) and v > 0]
        return min(self.max_call_s, max(asked)) if asked else self.max_call_s

    def send(self, request: Any, *, proxies: Any = None, **kwargs: Any) -> Any:
        seconds = self._seconds(kwargs)
        if str(request.method).upper() not in SAFE_METHODS:
            check_write_fence(seconds)
        stream = bool(kwargs.pop("stream", False))
        started = time.monotonic()
        with _Watchdog(seconds) as watchdog:
            try:
                response = super().send(request, proxies=proxies, stream=True, **kwargs)
                if not stream:
                    self._read_body(response, request)
            except (ResponseTooLarge, CallDeadlineExceeded):
                raise
            except Exception as exc:
                if watchdog.fired:
                    raise CallDeadlineExceeded(
                        f"{request.method} {_path(request)}: no complete answer within the call's hard deadline of {seconds:g} s"
                        f" (gave up after {time.monotonic() - started:.1f} s)"
                    ) from exc
                raise
        return response

    def _read_body(self, response: Any, request: Any) -> None:
        raw = response.internal_response
        length = raw.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            raw.close()
            raise ResponseTooLarge(self._too_large(request, f"Content-Length {int(length)}"))
        chunks: list[bytes] = []
        size = 0
        for chunk in raw.iter_content(_CHUNK):
            size += len(chunk)
            if size > self.max_body_bytes:
                raw.close()
                raise ResponseTooLarge(self._too_large(request, f"more than {size} bytes"))
            chunks.append(chunk)
        raw._content = b"".join(chunks)  # what requests' .content and iter_content() answer from now on
        raw._content_consumed = True
        if hasattr(response, "read"):
            response.read()  # azure.core.rest responses keep their own copy of the body

    def _too_large(self, request: Any, what: str) -> str:
        return f"{request.method} {_path(request)}: answer refused, {what} is over the {self.max_body_bytes} byte cap"


def _path(request: Any) -> str:
    url = str(getattr(request, "url", ""))
    return url.split("?", 1)[0]


__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "BoundedTransport",
    "CallDeadlineExceeded",
    "ResponseTooLarge",
    "WriteFence",
    "check_write_fence",
    "write_fence",
]
