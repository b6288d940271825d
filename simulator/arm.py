"""A fake Azure Resource Manager that the real Azure SDK clients talk to over HTTPS.

Start it in-process (tests, demo) or as ``regionguard sim arm``::

    with FakeArm(token="t") as arm:
        arm.seed_traffic_manager_profile("sub", "rg", "tm", "Weighted", [{"name": "eastus", "weight": 500}])
        client = TrafficManagerManagementClient(
            StaticTokenCredential("t"), "sub", **arm.sdk_kwargs()
        )  # base_url, connection_verify (the CA bundle path), polling_interval=0

What it serves, the ARM way (``x-ms-request-id`` on every answer, ARM error
bodies ``{"error": {"code", "message"}}``, the api-versions the SDKs send):
Traffic Manager profiles and endpoints, Front Door classic (PUT long-running
with ``Azure-AsyncOperation``), Front Door Standard/Premium origin groups and
origins (PUT/PATCH long-running, ETags), API Management backends and
load-balanced pools (ETags; PATCH needs If-Match, a stale one is 412). See
:mod:`.arm_state` and :mod:`.arm_apim` for the rules.

Test hooks: fault injection (429 with/without Retry-After, 429
``RetryableErrorDueToAnotherOperation``, 5xx, latency, hang, hold until
released, garbage, trickle, huge), portal edits
(:meth:`FakeArm.mutate`), a per-subscription write token bucket, and the
request log; all also over a JSON admin API under ``/_arm/`` (no auth: the
simulator binds to 127.0.0.1).
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import os
import re
import shutil
import signal
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from aiohttp import web

from simulator import arm_seed
from simulator.arm_apim import APIM_API_VERSION
from simulator.arm_faults import LOGGED_HEADERS, FaultBook, FaultRule, HeldRequest, LoggedRequest, RequestLog, WriteLimiter
from simulator.arm_state import (
    CDN_API_VERSION,
    FD_API_VERSION,
    PATTERNS,
    TM_API_VERSION,
    ArmError,
    ArmState,
    Operation,
    afd_origin_group_id,
    afd_origin_id,
)

if TYPE_CHECKING:
    from controlplane.config import Settings

logger = logging.getLogger(__name__)

WRITE_METHODS = frozenset({"PUT", "PATCH", "POST", "DELETE"})
DEFAULT_TOKEN_HINT = "regionguard-sim-token"


@dataclass(frozen=True)
class _Route:
    name: str
    methods: frozenset[str]
    api_version: str
    type_name: str


ROUTES: tuple[_Route, ...] = (
    _Route("tm_profiles", frozenset({"GET"}), TM_API_VERSION, "trafficmanagerprofiles"),
    _Route("tm_profile", frozenset({"GET"}), TM_API_VERSION, "trafficmanagerprofiles"),
    _Route("tm_endpoint", frozenset({"GET", "PUT", "PATCH"}), TM_API_VERSION, "trafficmanagerprofiles"),
    _Route("fd", frozenset({"GET", "PUT"}), FD_API_VERSION, "frontDoors"),
    _Route("fd_op", frozenset({"GET"}), FD_API_VERSION, "frontdooroperationresults"),
    _Route("afd_group", frozenset({"GET"}), CDN_API_VERSION, "profiles/origingroups"),
    _Route("afd_origins", frozenset({"GET"}), CDN_API_VERSION, "profiles/origingroups/origins"),
    _Route("afd_origin", frozenset({"GET", "PUT", "PATCH"}), CDN_API_VERSION, "profiles/origingroups/origins"),
    _Route("afd_op", frozenset({"GET"}), CDN_API_VERSION, "operationresults"),
    _Route("apim_backends", frozenset({"GET"}), APIM_API_VERSION, "service/backends"),
    _Route("apim_backend", frozenset({"GET", "HEAD", "PUT", "PATCH"}), APIM_API_VERSION, "service/backends"),
)
_API_VERSION_SHAPE = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
_PROVIDER_PATH = re.compile(r"/providers/(?P<ns>[^/]+)/(?P<type>[^/?]+)", re.IGNORECASE)


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # a body sent as is (garbage)
    trickle_s: float = 0.0  # send the body one byte every trickle_s
    huge_bytes: int = 0  # a streamed body of this many bytes instead


def _error_reply(err: ArmError) -> Reply:
    return Reply(err.status, err.body(), dict(err.headers))


def _parse_body(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return raw.decode("utf-8", errors="replace")


class FakeArm:
    """The fake ARM server: an aiohttp HTTPS app on its own thread and event loop.

    ``token``: when set, only ``Authorization: Bearer <token>`` is accepted
    (any other token: 401 ``InvalidAuthenticationToken``); when None, any
    bearer token is. No ``Authorization``: 401 ``AuthenticationFailed``.
    ``state_file``: loaded at start if it exists, saved after every write and at stop.
    ``lro_in_progress_polls`` / ``lro_max_s`` / ``lro_retry_after``: how
    long-running operations progress (see :class:`ArmState`); Retry-After on
    async-operation answers is left out by default so ``polling_interval`` rules.
    ``write_capacity`` / ``write_refill_per_s``: the per-subscription write
    bucket (ARM's real one is 200 refilling 10/s; the default here is large).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        state_file: str | os.PathLike[str] | None = None,
        *,
        tls: bool = True,
        lro_in_progress_polls: int = 1,
        lro_max_s: float = 5.0,
        lro_retry_after: int | None = None,
        busy_retry_after: int | None = 1,
        write_capacity: float = 10_000,
        write_refill_per_s: float = 1_000.0,
        fault_seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self._requested_port = port
        self._token = token
        self._state_file = Path(state_file) if state_file is not None else None
        self._tls = tls
        self._lro_retry_after = lro_retry_after
        self.state = ArmState(
            clock=clock,
            lro_in_progress_polls=lro_in_progress_polls,
            lro_max_s=lro_max_s,
            busy_retry_after=busy_retry_after,
        )
        self.faults = FaultBook(seed=fault_seed)
        self.write_limiter = WriteLimiter(write_capacity, write_refill_per_s, clock)
        self.log = RequestLog()
        # test hooks: called with (method, path) for every write request, after its faults and before it is
        # handled (e.g. a portal edit that lands between a client's GET and its PATCH)
        self.before_write: list[Callable[[str, str], None]] = []
        self._held: list[HeldRequest] = []  # requests a ``hold`` fault keeps waiting (see release())
        self._held_lock = threading.Lock()
        self.port: int | None = None
        self._tmpdir: str | None = None
        self._ca_bundle: str | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._stopping = threading.Event()
        self._startup_error: BaseException | None = None

    # ------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("FakeArm is not started")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self._tls else 'http'}://{host}:{self.port}"

    @property
    def ca_bundle(self) -> str:
        """Path to the PEM file of the throwaway CA that signed the server certificate."""
        if self._ca_bundle is None:
            raise RuntimeError("FakeArm is not started (or runs without TLS)")
        return self._ca_bundle

    def sdk_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for an azure-mgmt-* client to use this fake ARM."""
        out: dict[str, Any] = {"base_url": self.base_url, "polling_interval": 0}
        if self._tls:
            out["connection_verify"] = self.ca_bundle
        return out

    def start(self) -> FakeArm:
        if self._thread is not None:
            raise RuntimeError("FakeArm already started")
        if self._state_file is not None and self._state_file.exists():
            self.load(self._state_file)
        ssl_context = self._make_tls() if self._tls else None
        self._stopping.clear()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready, ssl_context), name="fake-arm", daemon=True)
        self._thread.start()
        if not ready.wait(15) or self._startup_error is not None:
            err = self._startup_error
            self.stop()
            raise RuntimeError(f"fake ARM did not start: {err!r}") from err
        logger.info("fake ARM listening on %s", self.base_url)
        return self

    def stop(self) -> None:
        thread, loop = self._thread, self._loop
        self._stopping.set()
        if thread is not None and loop is not None and loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            try:
                future.result(timeout=10)
            except Exception:
                logger.warning("fake ARM: unclean shutdown", exc_info=True)
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=10)
        self._thread = None
        self._loop = None
        if self._state_file is not None and self.port is not None:
            self.save(self._state_file)
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
            self._ca_bundle = None

    def __enter__(self) -> FakeArm:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def _make_tls(self) -> ssl.SSLContext:
        import trustme

        ca = trustme.CA(organization_name="regionguard fake ARM")
        names = ["127.0.0.1", "localhost", "::1"]
        if self.host not in names and self.host not in ("0.0.0.0", ""):
            names.append(self.host)
        cert = ca.issue_cert(*names)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)
        self._tmpdir = tempfile.mkdtemp(prefix="fake-arm-")
        self._ca_bundle = os.path.join(self._tmpdir, "ca.pem")
        ca.cert_pem.write_to_path(self._ca_bundle)
        return ctx

    def _run(self, ready: threading.Event, ssl_context: ssl.SSLContext | None) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(ssl_context))
        except BaseException as exc:
            self._startup_error = exc
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _serve(self, ssl_context: ssl.SSLContext | None) -> None:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        self._add_admin_routes(app)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._requested_port, ssl_context=ssl_context)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------ the ARM request path

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        received = time.time()
        raw = await request.read()
        body = _parse_body(raw)
        request_id = str(uuid.uuid4())
        reply = Reply(499)
        fault: str | None = None
        try:
            reply, fault = await self._dispatch(request, body, received)
        except ArmError as err:
            reply = _error_reply(err)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("fake ARM: unhandled error on %s %s", request.method, request.path)
            reply = _error_reply(ArmError(500, "InternalServerError", "Encountered internal server error."))
        finally:
            self.log.append(
                LoggedRequest(
                    method=request.method,
                    path=request.path,
                    api_version=request.query.get("api-version"),
                    body=body,
                    status=reply.status,
                    time=time.time(),
                    request_id=request_id,
                    query=dict(request.query),
                    fault=fault,
                    duration_ms=round((time.perf_counter() - started) * 1000, 3),
                    headers={h: request.headers[h] for h in LOGGED_HEADERS if h in request.headers},
                    received=received,
                )
            )
        if reply.trickle_s or reply.huge_bytes:
            return await self._stream(reply, request, request_id)
        return self._to_response(reply, request, request_id)

    async def _stream(self, reply: Reply, request: web.Request, request_id: str) -> web.StreamResponse:
        """A trickled or huge answer: headers first, then the body bit by bit, until done or the client leaves."""
        plain = self._to_response(reply, request, request_id)
        response = web.StreamResponse(status=reply.status, headers={k: v for k, v in plain.headers.items() if k != "Content-Length"})
        response.content_type = "application/json"
        body = json.dumps(reply.body).encode() if reply.body is not None else b""
        if reply.huge_bytes:
            response.content_length = reply.huge_bytes
        else:
            response.content_length = len(body)
        await response.prepare(request)
        try:
            if reply.huge_bytes:
                chunk = b'{"pad": "' + b"x" * (1024 * 1024)
                sent = 0
                while sent < reply.huge_bytes and not self._stopping.is_set():
                    part = chunk[: reply.huge_bytes - sent]
                    await response.write(part)
                    sent += len(part)
            else:
                for i in range(len(body)):
                    if self._stopping.is_set() or request.transport is None or request.transport.is_closing():
                        break
                    await response.write(body[i : i + 1])
                    await asyncio.sleep(reply.trickle_s)
        except (ConnectionResetError, ConnectionError):
            pass  # the client gave up: what a trickle is for
        return response

    def _to_response(self, reply: Reply, request: web.Request, request_id: str) -> web.Response:
        headers = {
            "x-ms-request-id": request_id,
            "x-ms-correlation-request-id": request.headers.get("x-ms-correlation-request-id", request_id),
            "x-ms-routing-request-id": f"LOCAL:{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}:{request_id}",
            "Cache-Control": "no-cache",
            **reply.headers,
        }
        client_request_id = request.headers.get("x-ms-client-request-id")
        if client_request_id:
            headers["x-ms-client-request-id"] = client_request_id
        if reply.raw is not None:
            return web.Response(status=reply.status, body=reply.raw, content_type="application/json", headers=headers)
        if reply.body is None:
            return web.Response(status=reply.status, headers=headers)
        return web.Response(
            status=reply.status,
            body=json.dumps(reply.body).encode(),
            content_type="application/json",
            charset="utf-8",
            headers=headers,
        )

    async def _dispatch(self, request: web.Request, body: Any, received: float) -> tuple[Reply, str | None]:
        self._authenticate(request)
        decision = self.faults.decide(request.method, request.path)
        if decision.latency_s:
            await self._sleep(decision.latency_s)
        if decision.terminal is not None and decision.terminal.kind == "hold":
            await self._wait_for_release(
                HeldRequest(request.method, request.path, received, request.headers.get("User-Agent")), decision.terminal.hang_s
            )
        elif decision.terminal is not None and decision.terminal.kind != "trickle":
            return await self._fault_reply(request, decision.terminal), decision.labels
        for hook in list(self.before_write if request.method in WRITE_METHODS else ()):
            hook(request.method, request.path)
        route, params = self._route(request.path)
        if request.method not in route.methods:
            raise ArmError(
                405,
                "MethodNotAllowed",
                f"The fake Azure Resource Manager does not implement '{request.method}' on '{route.type_name}'.",
            )
        self._check_api_version(request.query.get("api-version"), route)
        extra_headers: dict[str, str] = {}
        if request.method in WRITE_METHODS:
            extra_headers.update(self._take_write_token(params["sub"]))
            if not isinstance(body, dict):
                raise ArmError(400, "InvalidRequestContent", "The request content was invalid and could not be deserialized.")
        reply = self._call(route.name, request, params, body)
        reply.headers.update(extra_headers)
        if decision.terminal is not None and decision.terminal.kind == "trickle":  # handled, and the answer dribbles out
            reply.trickle_s = decision.terminal.trickle_s
        if request.method in WRITE_METHODS and reply.status < 300:
            self._autosave()
        return reply, decision.labels

    def _authenticate(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ArmError(
                401,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
                headers={
                    "WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline.com/common", '
                    'error="invalid_token", error_description="The authentication failed because of missing '
                    "'Authorization' header.\""
                },
            )
        if self._token is not None and not hmac.compare_digest(token.strip().encode(), self._token.encode()):
            raise ArmError(
                401,
                "InvalidAuthenticationToken",
                "The access token is invalid.",
                headers={
                    "WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline.com/common", '
                    'error="invalid_token", error_description="The access token is invalid."'
                },
            )

    def _route(self, path: str) -> tuple[_Route, dict[str, str]]:
        for route in ROUTES:
            m = PATTERNS[route.name].match(path)
            if m is not None:
                return route, m.groupdict()
        m = _PROVIDER_PATH.search(path)
        if m is not None and path.lower().startswith("/subscriptions/"):
            raise ArmError(
                404,
                "InvalidResourceType",
                f"The resource type '{m.group('type')}' could not be found in the namespace '{m.group('ns')}' "
                "in the fake Azure Resource Manager.",
            )
        raise ArmError(404, "NotFound", f"No route for '{path}' in the fake Azure Resource Manager.")

    @staticmethod
    def _check_api_version(got: str | None, route: _Route) -> None:
        if not got:
            raise ArmError(
                400, "MissingApiVersionParameter", "The api-version query parameter (?api-version=) is required for all requests."
            )
        if not _API_VERSION_SHAPE.match(got):
            raise ArmError(
                400,
                "InvalidApiVersionParameter",
                f"The api-version '{got}' is invalid. The supported versions are '{route.api_version}'.",
            )
        if got != route.api_version:
            raise ArmError(
                400,
                "NoRegisteredProviderFound",
                f"No registered resource provider found for location 'global' and API version '{got}' for type "
                f"'{route.type_name}'. The supported api-versions are '{route.api_version}'. "
                "The supported locations are 'global'.",
            )

    def _take_write_token(self, subscription: str) -> dict[str, str]:
        ok, left, retry_after = self.write_limiter.take(subscription)
        if not ok:
            raise ArmError(
                429,
                "SubscriptionRequestsThrottled",
                f"Number of 'write' requests for subscription '{subscription}' exceeded the limit. "
                f"Please try again after '{retry_after}' seconds after additional tokens are available. "
                "Refer to https://aka.ms/arm-throttling",
                headers={"Retry-After": str(retry_after), "x-ms-ratelimit-remaining-subscription-writes": "0"},
            )
        return {
            "x-ms-ratelimit-remaining-subscription-writes": str(left),
            "x-ms-ratelimit-remaining-subscription-global-writes": str(left),
        }

    # ------------------------------------------------------------ faults

    async def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 0.05))

    async def _fault_reply(self, request: web.Request, rule: FaultRule) -> Reply:
        headers = {} if rule.retry_after is None else {"Retry-After": f"{rule.retry_after:g}"}
        if rule.kind == "throttle":
            code = rule.code or "SubscriptionRequestsThrottled"
            message = rule.message or (
                "Number of requests for subscription exceeded the limit. Please try again after "
                f"'{rule.retry_after or 0:g}' seconds. Refer to https://aka.ms/arm-throttling"
            )
            return Reply(429, {"error": {"code": code, "message": message}}, headers)
        if rule.kind == "busy":
            message = rule.message or (
                "Another operation on this or dependent resource is in progress. "
                "To retrieve status of the operation use uri: "
                f"{self.base_url}/subscriptions/operations/{uuid.uuid4()}. Retry the operation later."
            )
            code = rule.code or "RetryableErrorDueToAnotherOperation"
            return Reply(429, {"error": {"code": code, "message": message}}, headers)
        if rule.kind == "hang":
            await self._hold(request, rule.hang_s)
            return Reply(504, self._server_error_body(504, rule))
        if rule.kind == "garbage":
            return Reply(200, raw=(rule.message or "<html><body>502 upstream gone</body></html>").encode())
        if rule.kind == "huge":
            return Reply(200, huge_bytes=rule.body_bytes)
        return Reply(int(rule.status or 500), self._server_error_body(int(rule.status or 500), rule), headers)

    @staticmethod
    def _server_error_body(status: int, rule: FaultRule) -> dict[str, Any]:
        defaults = {
            500: ("InternalServerError", "Encountered internal server error. Please try again later."),
            502: ("BadGateway", "The server received an invalid response from an upstream server."),
            503: ("ServiceUnavailable", "The server is currently unable to handle the request. Please retry later."),
            504: ("GatewayTimeout", "The gateway did not receive a response within the specified time period."),
        }
        code, message = defaults.get(status, ("InternalServerError", "Encountered internal server error."))
        return {"error": {"code": rule.code or code, "message": rule.message or message}}

    async def _hold(self, request: web.Request, max_s: float) -> None:
        """Hold a request until the client leaves, the server stops or ``max_s`` passes."""
        deadline = time.monotonic() + max_s
        while not self._stopping.is_set() and time.monotonic() < deadline:
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            await asyncio.sleep(0.05)

    async def _wait_for_release(self, held: HeldRequest, max_s: float) -> None:
        """A ``hold`` fault: wait, unhandled, until released, the server stops or ``max_s`` passes.

        The client leaving does not end the hold: ARM goes on with a request it
        has received, so a held write still lands once released."""
        with self._held_lock:
            self._held.append(held)
        deadline = time.monotonic() + max_s
        try:
            while not held.released.is_set() and not self._stopping.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        finally:
            with self._held_lock:
                self._held.remove(held)

    # ------------------------------------------------------------ resource handlers

    def _call(self, name: str, request: web.Request, p: Mapping[str, str], body: Any) -> Reply:
        s, method = self.state, request.method
        sub, rg = p["sub"], p["rg"]
        if name == "tm_profiles":
            return Reply(200, {"value": s.tm_list_profiles(sub, rg), "nextLink": None})
        if name == "tm_profile":
            return Reply(200, s.tm_get_profile(sub, rg, p["profile"]))
        if name == "tm_endpoint":
            args = (sub, rg, p["profile"], p["etype"], p["name"])
            if method == "GET":
                return Reply(200, s.tm_get_endpoint(*args))
            if method == "PATCH":
                return Reply(200, s.tm_patch_endpoint(*args, body))
            status, doc = s.tm_put_endpoint(*args, body)
            return Reply(status, doc)
        if name == "fd":
            if method == "GET":
                return Reply(200, s.fd_get(sub, rg, p["name"]))
            status, doc, op = s.fd_put(sub, rg, p["name"], body)
            return Reply(status, doc, self._lro_headers(op))
        if name in ("fd_op", "afd_op"):
            provider = "Microsoft.Network" if name == "fd_op" else "Microsoft.Cdn"
            result = s.poll_operation(provider, p["op"])
            headers = {}
            if self._lro_retry_after is not None and result["status"] == "InProgress":
                headers["Retry-After"] = str(self._lro_retry_after)
            return Reply(200, result, headers)
        if name in ("apim_backends", "apim_backend"):
            return self._call_apim(name, request, p, body)
        return self._call_afd(name, request, p, body)

    def _call_apim(self, name: str, request: web.Request, p: Mapping[str, str], body: Any) -> Reply:
        s, method = self.state, request.method
        sub, rg, service = p["sub"], p["rg"], p["service"]
        if name == "apim_backends":
            docs = s.apim_list_backends(sub, rg, service)
            return Reply(200, {"value": docs, "count": len(docs), "nextLink": None})
        backend = p["backend"]
        if method in ("GET", "HEAD"):
            doc, etag = s.apim_get_backend(sub, rg, service, backend)
            return Reply(200, None if method == "HEAD" else doc, {"ETag": etag})
        if_match = request.headers.get("If-Match")
        if method == "PATCH":
            doc, etag = s.apim_patch_backend(sub, rg, service, backend, body, if_match)
            return Reply(200, doc, {"ETag": etag})
        status, doc, etag = s.apim_put_backend(sub, rg, service, backend, body, if_match)
        return Reply(status, doc, {"ETag": etag})

    def _call_afd(self, name: str, request: web.Request, p: Mapping[str, str], body: Any) -> Reply:
        s, method = self.state, request.method
        sub, rg, profile, group = p["sub"], p["rg"], p["profile"], p["group"]
        if name == "afd_group":
            doc = s.afd_get_group(sub, rg, profile, group)
            return Reply(200, doc, self._etag_header(afd_origin_group_id(sub, rg, profile, group)))
        if name == "afd_origins":
            return Reply(200, {"value": s.afd_list_origins(sub, rg, profile, group), "nextLink": None})
        oid = afd_origin_id(sub, rg, profile, group, p["origin"])
        args = (sub, rg, profile, group, p["origin"])
        if method == "GET":
            return Reply(200, s.afd_get_origin(*args), self._etag_header(oid))
        self._check_if_match(request, oid)
        if method == "PATCH":
            status, doc, op = s.afd_patch_origin(*args, body)
        else:
            status, doc, op = s.afd_put_origin(*args, body)
        return Reply(status, doc, {**self._lro_headers(op), **self._etag_header(oid)})

    def _lro_headers(self, op: Operation) -> dict[str, str]:
        headers = {"Azure-AsyncOperation": self.base_url + op.path()}
        if self._lro_retry_after is not None:
            headers["Retry-After"] = str(self._lro_retry_after)
        return headers

    def _etag_header(self, resource_id: str) -> dict[str, str]:
        etag = self.state.etag(resource_id)
        return {"ETag": etag} if etag else {}

    def _check_if_match(self, request: web.Request, resource_id: str) -> None:
        wanted = request.headers.get("If-Match")
        if not wanted or wanted.strip() == "*":
            return
        current = self.state.etag(resource_id)
        if current is not None and wanted.strip() != current:
            raise ArmError(412, "PreconditionFailed", f"The specified precondition 'If-Match = {wanted}' failed: the resource has changed.")

    # ------------------------------------------------------------ admin API (/_arm/)

    def _add_admin_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/_arm/log", self._admin_log)
        r.add_delete("/_arm/log", self._admin_clear_log)
        r.add_get("/_arm/faults", self._admin_faults)
        r.add_post("/_arm/faults", self._admin_add_fault)
        r.add_delete("/_arm/faults", self._admin_clear_faults)
        r.add_get("/_arm/held", self._admin_held)
        r.add_post("/_arm/release", self._admin_release)
        r.add_post("/_arm/mutate", self._admin_mutate)
        r.add_post("/_arm/write-limit", self._admin_write_limit)
        r.add_get("/_arm/state", self._admin_state)
        r.add_get("/_arm/health", self._admin_health)

    async def _admin_log(self, request: web.Request) -> web.Response:
        return web.json_response({"value": [e.to_dict() for e in self.log.entries()]})

    async def _admin_clear_log(self, request: web.Request) -> web.Response:
        self.clear_log()
        return web.json_response({"cleared": True})

    async def _admin_faults(self, request: web.Request) -> web.Response:
        return web.json_response({"value": [r.to_dict() for r in self.faults.rules()]})

    async def _admin_add_fault(self, request: web.Request) -> web.Response:
        try:
            rule = self.inject(FaultRule.from_dict(await request.json()))
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": {"code": "BadRequest", "message": str(exc)}}, status=400)
        return web.json_response(rule.to_dict(), status=201)

    async def _admin_clear_faults(self, request: web.Request) -> web.Response:
        self.clear_faults()
        return web.json_response({"cleared": True})

    async def _admin_held(self, request: web.Request) -> web.Response:
        return web.json_response({"value": [h.to_dict() for h in self.held()]})

    async def _admin_release(self, request: web.Request) -> web.Response:
        return web.json_response({"released": self.release()})

    async def _admin_mutate(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
            doc = self.mutate(str(data["resource_id"]), dict(data["changes"]), validate=bool(data.get("validate", True)))
        except ArmError as err:
            return web.json_response(err.body(), status=err.status)
        except (ValueError, TypeError, KeyError) as exc:
            return web.json_response({"error": {"code": "BadRequest", "message": str(exc)}}, status=400)
        return web.json_response(doc)

    async def _admin_write_limit(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
            self.set_write_limit(float(data["capacity"]), float(data["refill_per_s"]))
        except (ValueError, TypeError, KeyError) as exc:
            return web.json_response({"error": {"code": "BadRequest", "message": str(exc)}}, status=400)
        return web.json_response({"capacity": data["capacity"], "refill_per_s": data["refill_per_s"]})

    async def _admin_state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.dump())

    async def _admin_health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "base_url": self.base_url})

    # ------------------------------------------------------------ Python API: seeding

    def seed_traffic_manager_profile(
        self,
        subscription: str,
        resource_group: str,
        profile: str,
        routing_method: str = "Weighted",
        endpoints: Sequence[Mapping[str, Any]] = (),
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Endpoints: ``{name, type, target, weight, priority, status, monitor_status, location}``."""
        doc = self.state.seed_tm_profile(subscription, resource_group, profile, routing_method, endpoints, **kwargs)
        self._autosave()
        return doc

    def seed_front_door_classic(
        self, subscription: str, resource_group: str, name: str, body: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Store a Front Door classic resource; default body: :func:`arm_seed.classic_front_door_body`."""
        if body is None:
            body = arm_seed.classic_front_door_body(subscription, resource_group, name)
        doc = self.state.seed_front_door(subscription, resource_group, name, body)
        self._autosave()
        return doc

    def seed_afd_origin_group(
        self,
        subscription: str,
        resource_group: str,
        profile: str,
        origin_group: str,
        origins: Sequence[Mapping[str, Any]] = (),
        group_properties: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Origins: ``{name, host_name, weight, priority, enabled_state}``."""
        doc = self.state.seed_afd_origin_group(subscription, resource_group, profile, origin_group, origins, group_properties)
        self._autosave()
        return doc

    def seed_apim_backends(
        self, subscription: str, resource_group: str, service: str, backends: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """Backends of an APIM service: ``{name, url}`` or a pool ``{name, members: [{backend, weight, priority}]}``."""
        docs = self.state.seed_apim_backends(subscription, resource_group, service, backends)
        self._autosave()
        return docs

    def seed_from_config(self, cfg: Settings) -> list[str]:
        """Seed every target of a regionguard config (see :func:`arm_seed.seed_from_config`)."""
        ids = arm_seed.seed_from_config(self.state, cfg)
        self._autosave()
        return ids

    # ------------------------------------------------------------ Python API: test hooks

    def get_resource(self, resource_id: str) -> dict[str, Any] | None:
        """The resource as a GET would return it, without auth, faults or logging."""
        return self.state.get_resource(resource_id)

    def mutate(self, resource_id: str, changes: Mapping[str, Any], *, validate: bool = True) -> dict[str, Any]:
        """ "Someone changed it in the portal": see :meth:`ArmState.mutate`."""
        doc = self.state.mutate(resource_id, changes, validate=validate)
        logger.info("fake ARM: portal edit of %s", resource_id)
        self._autosave()
        return doc

    def inject(self, rule: FaultRule) -> FaultRule:
        return self.faults.add(rule)

    def inject_throttle(self, count: int | None = 1, *, retry_after: float | None = 1, **match: Any) -> FaultRule:
        """Next ``count`` matching requests: 429 ``SubscriptionRequestsThrottled`` (Retry-After unless None)."""
        return self.inject(FaultRule("throttle", count=count, retry_after=retry_after, **match))

    def inject_busy(self, count: int | None = 1, *, retry_after: float | None = 1, **match: Any) -> FaultRule:
        """Next ``count`` matching requests: 429 ``RetryableErrorDueToAnotherOperation``."""
        return self.inject(FaultRule("busy", count=count, retry_after=retry_after, **match))

    def inject_error(self, status: int = 500, count: int | None = 1, **match: Any) -> FaultRule:
        """Next ``count`` matching requests: ``status`` (500/502/503/504) with ARM's body."""
        return self.inject(FaultRule("error", count=count, status=status, **match))

    def inject_latency(self, seconds: float, count: int | None = 1, **match: Any) -> FaultRule:
        return self.inject(FaultRule("latency", count=count, latency_s=seconds, **match))

    def inject_hang(self, count: int | None = 1, *, max_s: float = 30.0, **match: Any) -> FaultRule:
        """Hold the next ``count`` matching requests (until the client gives up, stop(), or ``max_s``)."""
        return self.inject(FaultRule("hang", count=count, hang_s=max_s, **match))

    def inject_hold(self, count: int | None = 1, *, max_s: float = 30.0, **match: Any) -> FaultRule:
        """Hold the next ``count`` matching requests, unhandled, until :meth:`release` (or stop(), or ``max_s``); then handle them."""
        return self.inject(FaultRule("hold", count=count, hang_s=max_s, **match))

    def held(self) -> list[HeldRequest]:
        """The requests a ``hold`` fault keeps waiting now, oldest first."""
        with self._held_lock:
            return list(self._held)

    def release(self) -> int:
        """Let every held request go on to be handled; returns how many were released."""
        with self._held_lock:
            held = list(self._held)
        for h in held:
            h.release()
        return len(held)

    def inject_garbage(self, count: int | None = 1, **match: Any) -> FaultRule:
        """Next ``count`` matching requests: 200 with a body that is not JSON (not handled)."""
        return self.inject(FaultRule("garbage", count=count, **match))

    def inject_trickle(self, count: int | None = 1, *, every_s: float = 1.0, **match: Any) -> FaultRule:
        """Next ``count`` matching requests: handled, then the answer's body one byte every ``every_s``."""
        return self.inject(FaultRule("trickle", count=count, trickle_s=every_s, **match))

    def inject_huge(self, count: int | None = 1, *, body_bytes: int = 64 * 1024 * 1024, **match: Any) -> FaultRule:
        """Next ``count`` matching requests: 200 with a ``body_bytes`` JSON-looking body (not handled)."""
        return self.inject(FaultRule("huge", count=count, body_bytes=body_bytes, **match))

    def clear_faults(self) -> None:
        self.faults.clear()

    def set_write_limit(self, capacity: float, refill_per_s: float) -> None:
        """Per-subscription write bucket (ARM: 200 refilling 10/s)."""
        self.write_limiter.configure(capacity, refill_per_s)

    @property
    def request_log(self) -> list[LoggedRequest]:
        return self.log.entries()

    def clear_log(self) -> None:
        self.log.clear()

    # ------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike[str]) -> None:
        target = Path(path)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps(self.state.dump(), indent=1, sort_keys=False), encoding="utf-8")
        os.replace(tmp, target)

    def load(self, path: str | os.PathLike[str]) -> None:
        self.state.load(json.loads(Path(path).read_text(encoding="utf-8")))

    def _autosave(self) -> None:
        if self._state_file is not None:
            try:
                self.save(self._state_file)
            except OSError:
                logger.warning("fake ARM: cannot save state to %s", self._state_file, exc_info=True)


# ---------------------------------------------------------------- CLI entry


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="regionguard sim arm", description="Run the fake Azure Resource Manager.")
    p.add_argument("--config", help="regionguard config: seed every target it names")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: any free port")
    p.add_argument("--token", default=None, help="accept only this bearer token (default: any)")
    p.add_argument("--state-file", default=None, help="JSON file: loaded at start, saved after every write")
    p.add_argument("--write-capacity", type=float, default=10_000, help="per-subscription write bucket size")
    p.add_argument("--write-refill", type=float, default=1_000.0, help="write tokens refilled per second")
    p.add_argument("--lro-polls", type=int, default=1, help="status polls answering InProgress before Succeeded")
    return p


def main(argv: Sequence[str] | None = None, *, stop: threading.Event | None = None) -> int:
    """Start the fake ARM, print its base URL and CA bundle, run until Ctrl-C (or ``stop``)."""
    args = _parser().parse_args(argv)
    arm = FakeArm(
        args.host,
        args.port,
        args.token,
        args.state_file,
        write_capacity=args.write_capacity,
        write_refill_per_s=args.write_refill,
        lro_in_progress_polls=args.lro_polls,
    )
    arm.start()
    try:
        if args.config:
            from controlplane.config import load_settings

            ids = arm.seed_from_config(load_settings(args.config))
            print(f"seeded {len(ids)} resource(s) from {args.config}")
        print(f"fake ARM: {arm.base_url}")
        print(f"CA bundle: {arm.ca_bundle}")
        print("token: " + ("(the one given with --token)" if args.token else f"any bearer token (e.g. {DEFAULT_TOKEN_HINT})"))
        print(
            "admin API: GET /_arm/log, POST /_arm/faults, GET /_arm/held, POST /_arm/release, POST /_arm/mutate; Ctrl-C to stop", flush=True
        )
        waiter = stop or threading.Event()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: waiter.set())
        while not waiter.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        arm.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
