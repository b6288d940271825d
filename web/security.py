"""Authentication, roles, CSRF, login rate limiting and security headers.

- Pages: a signed, HttpOnly, SameSite cookie session holding the user name and
  a CSRF token. The role is read from the store on every request, so a
  demoted or disabled user loses rights at once.
- API (``/api/v1``): ``Authorization: Bearer rg_...`` tokens (no cookies, so no
  CSRF); a logged-in browser session may also call it, and then unsafe
  methods need the ``X-CSRF-Token`` header.
- Every state-changing request with a session must carry the session's CSRF
  token (form field ``csrf_token`` or header ``X-CSRF-Token``).
"""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, ParamSpec
from urllib.parse import urlsplit

from flask import Flask, Response, abort, current_app, g, has_request_context, jsonify, redirect, request, session, url_for
from flask.sessions import SecureCookieSessionInterface
from werkzeug.wrappers import Response as BaseResponse

from controlplane.config import Settings
from controlplane.domain import Clock
from controlplane.store import Store
from controlplane.users import Principal, authenticate_token, current_role

log = logging.getLogger(__name__)

SSO_SESSION_KEY = "sso"  # written by web.oidc.start_session
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PUBLIC_ENDPOINTS = frozenset({"auth.login", "oidc.login", "oidc.callback", "health.healthz", "health.readyz", "static"})
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)

P = ParamSpec("P")


class SessionCookies(SecureCookieSessionInterface):
    """Flask's signed cookies, marked Secure whenever the request came over https
    (directly, or through a trusted proxy's X-Forwarded-Proto), not only when configured."""

    def get_cookie_secure(self, app: Flask) -> bool:
        configured = bool(super().get_cookie_secure(app))
        return configured or (has_request_context() and request.is_secure)


class LoginLimiter:
    """Sliding one-minute window of login attempts per (user, IP) and per IP.

    In memory and per process: enough to stop online guessing against one
    server; bounded so a flood of distinct keys cannot grow it without limit.
    """

    MAX_KEYS = 10_000

    def __init__(self, per_minute: int, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.per_ip = per_minute * 5
        self._now = monotonic
        self._lock = threading.Lock()
        self._hits: dict[tuple[str, str], deque[float]] = {}

    def _window(self, key: tuple[str, str], now: float) -> deque[float]:
        q = self._hits.get(key)
        if q is None:
            if len(self._hits) >= self.MAX_KEYS:
                self._prune(now)
            q = self._hits.setdefault(key, deque())
        while q and now - q[0] >= 60.0:
            q.popleft()
        return q

    def _prune(self, now: float) -> None:
        for k in [k for k, q in self._hits.items() if not q or now - q[-1] >= 60.0]:
            del self._hits[k]
        if len(self._hits) >= self.MAX_KEYS:  # still full: forget the oldest half
            for k in sorted(self._hits, key=lambda k: self._hits[k][-1] if self._hits[k] else 0.0)[: self.MAX_KEYS // 2]:
                del self._hits[k]

    def hit(self, user: str, ip: str) -> float | None:
        """Count an attempt; return seconds to wait if over the limit, else None."""
        now = self._now()
        with self._lock:
            pair, by_ip = self._window((user.lower(), ip), now), self._window(("", ip), now)
            for q, limit in ((pair, self.per_minute), (by_ip, self.per_ip)):
                if len(q) >= limit:
                    return max(1.0, 60.0 - (now - q[0]))
            pair.append(now)
            by_ip.append(now)
            return None

    def reset(self, user: str, ip: str) -> None:
        with self._lock:
            self._hits.pop((user.lower(), ip), None)


@dataclass
class WebState:
    """Per-app objects the views need (kept in ``app.extensions['regionguard']``)."""

    settings: Settings
    store: Store
    clock: Clock
    limiter: LoginLimiter
    series_cache: Any = None  # web.readmodel.SeriesCache for long-range charts
    incident_cache: Any = None  # web.readmodel.IncidentCache: closed incidents are final


def safe_next(target: str | None) -> str:
    """Only same-site paths: never redirect to another host after login."""
    if not target:
        return url_for("dashboard.overview")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):  # CR/LF would split the Location header
        return url_for("dashboard.overview")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return url_for("dashboard.overview")
    return target


def state() -> WebState:
    return current_app.extensions["regionguard"]


def principal() -> Principal | None:
    found: Principal | None = g.get("principal")
    return found


def actor() -> Principal:
    """The principal of a view behind ``require_role`` (which has already turned anonymous requests away)."""
    p = principal()
    if p is None:
        abort(401)
    return p


# ---------------------------------------------------------------- CSRF


def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return str(token)


def _csrf_ok() -> bool:
    expected = session.get("csrf")
    sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token")
    return bool(expected and sent and hmac.compare_digest(str(expected), str(sent)))


# ---------------------------------------------------------------- request hooks


def _is_api() -> bool:
    return request.path.startswith("/api/")


def _is_partial() -> bool:
    return request.path.startswith("/partials/")


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def _unauthorized() -> BaseResponse:
    if _is_api():
        resp = jsonify({"error": "unauthorized", "reason": "log in or send 'Authorization: Bearer <token>'"})
        resp.status_code = 401
        resp.headers["WWW-Authenticate"] = 'Bearer realm="regionguard"'
        return resp
    if _is_partial():
        return Response("session expired: reload the page to log in", status=401, mimetype="text/plain")
    return redirect(url_for("auth.login", next=request.full_path if request.query_string else request.path))


def _load_principal() -> BaseResponse | None:
    ws = state()
    g.principal = None
    token = _bearer() if _is_api() else None
    if token is not None:
        p = authenticate_token(ws.store, token, ws.clock.now())
        if p is None:
            return _unauthorized()
        g.principal = p
        return None
    if SSO_SESSION_KEY in session:  # signed in with OpenID Connect (web/oidc.py): the role came from the provider
        g.principal = _sso_principal(ws)
        return None
    name = session.get("user")
    if name and not ws.settings.web.local_users:  # break-glass accounts were turned off since this login
        session.clear()
        name = None
    if name:
        version = session.get("ver")
        role = current_role(ws.store, str(name), int(version) if isinstance(version, int) else 0)
        if role is None:  # deleted, disabled, logged out or given a new password since this session began
            session.clear()
        else:
            g.principal = Principal(name=str(name), role=role, via="session")
    return None


def _sso_principal(ws: WebState) -> Principal | None:
    """The single-sign-on user until the session's deadline (``session_lifetime``); then, or without SSO configured, nobody."""
    data = session.get(SSO_SESSION_KEY)
    if not isinstance(data, dict) or ws.settings.web.oidc is None or ws.clock.now().timestamp() >= float(data.get("until", 0)):
        session.clear()
        return None
    return Principal(name=str(data["name"]), role=str(data["role"]), via="sso")


HEALTH_ENDPOINTS = frozenset({"health.healthz", "health.readyz", "static"})


def before_request() -> BaseResponse | None:
    if request.endpoint in HEALTH_ENDPOINTS:
        return None  # never depends on the session (nor on the database a signed-in user's role is read from)
    denied = _load_principal()
    if denied is not None:
        return denied
    p = principal()
    if p is None and request.endpoint not in PUBLIC_ENDPOINTS:
        return _unauthorized()
    if request.method in UNSAFE_METHODS and (p is None or p.via == "session") and not _csrf_ok():
        log.warning("CSRF check failed for %s %s", request.method, request.path)
        if _is_api():
            return _json_error(403, "csrf", "missing or wrong CSRF token (send X-CSRF-Token, or use a bearer token)")
        abort(403, description="The form expired or did not come from this dashboard (CSRF check failed). Reload the page and try again.")
    return None


def _json_error(status: int, error: str, reason: str) -> Response:
    resp = jsonify({"error": error, "reason": reason})
    resp.status_code = status
    return resp


def security_headers(resp: Response) -> Response:
    h = resp.headers
    h.setdefault("Content-Security-Policy", CSP)
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("Referrer-Policy", "same-origin")
    h.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    h.setdefault("Cross-Origin-Resource-Policy", "same-origin")
    h.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()")
    if request.endpoint != "static":
        h.setdefault("Cache-Control", "no-store")
    if request.is_secure:
        h.setdefault("Strict-Transport-Security", "max-age=31536000")
    return resp


def install(app: Flask) -> None:
    app.before_request(before_request)
    app.after_request(security_headers)
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.jinja_env.globals["principal"] = principal


# ---------------------------------------------------------------- decorators


def require_role(role: str) -> Callable[[Callable[P, Any]], Callable[P, Any]]:
    """403 unless the principal has at least ``role`` (login is enforced globally)."""

    def deco(view: Callable[P, Any]) -> Callable[P, Any]:
        @wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            p = principal()
            if p is None:
                return _unauthorized()
            if not p.can(role):
                if _is_api():
                    return _json_error(403, "forbidden", f"role {p.role!r} may not do this ({role} or above needed)")
                abort(403, description=f"Your role ({p.role}) may not do this; {role} or above is needed.")
            return view(*args, **kwargs)

        return wrapper

    return deco
