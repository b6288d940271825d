"""The dashboard's app factory.

``create_app(settings, store=None, test_config=None)`` builds a Flask app that
reads the store and writes only overrides and audit events (through
:mod:`controlplane.actions`); it never calls Azure.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from contextlib import ExitStack
from datetime import datetime, timedelta
from typing import Any

from flask import Blueprint, Flask, Response, g, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from controlplane.config import Settings
from controlplane.domain import SystemClock
from controlplane.errors import http_status
from controlplane.store import DatabaseUnavailable, Store, open_store
from web import oidc, readmodel, security

log = logging.getLogger(__name__)

health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz() -> Response:
    """The process is alive (no auth, no database)."""
    return jsonify({"status": "ok"})


@health.get("/readyz")
def readyz() -> tuple[Response, int]:
    """The database is reachable and migrated. No auth; no details leak (they are logged)."""
    try:
        security.state().store.check()
    except DatabaseUnavailable as exc:
        log.warning("not ready: %s", exc)
        return jsonify({"status": "unavailable"}), 503
    return jsonify({"status": "ready"}), 200


def _secret_key(settings: Settings) -> str:
    key = os.environ.get(settings.web.secret_key_env)
    if key:
        return key
    log.warning(
        "%s is not set: using a random per-process session key (sessions end when the process restarts, and several web processes will not share logins)",
        settings.web.secret_key_env,
    )
    return secrets.token_urlsafe(48)


# ---------------------------------------------------------------- template filters


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    s = int(max(0, seconds))
    if s < 90:
        return f"{s} s ago"
    if s < 5400:
        return f"{s // 60} min ago"
    if s < 172800:
        return f"{s // 3600} h ago"
    return f"{s // 86400} d ago"


MISSING = "\u2013"  # an en dash stands for "no value" in every table


def _ms(value: float | None) -> str:
    if value is None:
        return MISSING
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


def _pct(value: float | None, digits: int = 0) -> str:
    return MISSING if value is None else f"{value:.{digits}f}%"


def _frac(value: float | None) -> str:
    return "unknown" if value is None else f"{100 * value:.0f}%"


def _when(value: datetime | None) -> str:
    return MISSING if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _secs(value: float | None) -> str:
    if value is None:
        return MISSING
    s = round(value)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def _setting(value: Any) -> str:
    if value is None:
        return MISSING
    if value is True:
        return "enabled"
    if value is False:
        return "disabled"
    return str(value)


def _errors(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        if request.path.startswith("/api/"):
            resp = jsonify({"error": exc.name.lower().replace(" ", "_"), "reason": exc.description})
            resp.status_code = exc.code or 500
            return resp
        return render_template("error.html", code=exc.code, name=exc.name, description=exc.description), exc.code

    @app.errorhandler(DatabaseUnavailable)
    def db_down(exc: DatabaseUnavailable) -> Any:
        log.error("database unavailable: %s", exc)
        if request.path.startswith("/api/"):
            return jsonify({"error": exc.error, "reason": "the database is unreachable"}), http_status(exc)
        return render_template(
            "error.html",
            code=http_status(exc),
            name="Database unavailable",
            description="The dashboard cannot reach its database. The worker may still be running; check `regionguard status`.",
        ), http_status(exc)


def create_app(settings: Settings, store: Store | None = None, test_config: Mapping[str, Any] | None = None, metrics: Any = None) -> Flask:
    """Build the dashboard. ``test_config`` may set Flask keys and ``CLOCK`` (an object with ``now()``).

    ``metrics`` (a :class:`controlplane.metrics.Metrics`) is served at
    ``/api/v1/metrics`` (session or bearer token, like the rest of the API),
    refreshed from the store before each scrape; by default the app has its own.
    """
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=(test_config or {}).get("SECRET_KEY") or _secret_key(settings),
        SESSION_COOKIE_NAME="regionguard_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=os.environ.get("REGIONGUARD_COOKIE_SECURE") == "1",
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=settings.web.session_lifetime),
        MAX_CONTENT_LENGTH=64 * 1024,
        REFRESH_SECONDS=5,
        JSON_SORT_KEYS=False,
    )
    if test_config:
        app.config.update(test_config)
    app.session_interface = security.SessionCookies()
    if settings.web.trusted_proxies:
        from werkzeug.middleware.proxy_fix import ProxyFix

        n = settings.web.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n)  # type: ignore[method-assign]  # Flask's documented way to wrap its WSGI app
    clock = app.config.get("CLOCK") or SystemClock()
    app.extensions["regionguard"] = security.WebState(
        settings=settings,
        store=store or open_store(settings.database.url, migrate=False),
        clock=clock,
        limiter=security.LoginLimiter(settings.web.login_attempts_per_minute),
        series_cache=readmodel.SeriesCache() if app.config.get("SERIES_CACHE", True) else None,
        incident_cache=readmodel.IncidentCache() if app.config.get("INCIDENT_CACHE", True) else None,
    )
    _one_connection_per_read(app, app.extensions["regionguard"].store)
    app.jinja_env.autoescape = True  # every template, whatever its extension
    app.jinja_env.filters.update(secs=_secs, age=_age, ms=_ms, pct=_pct, frac=_frac, when=_when, setting=_setting)
    security.install(app)

    from web.api import api
    from web.auth import auth
    from web.dashboard import dashboard

    app.register_blueprint(health)
    app.register_blueprint(auth)
    oidc.install(app, settings.web.oidc)
    app.register_blueprint(dashboard)
    app.register_blueprint(api)
    app.register_blueprint(_metrics_blueprint(app.extensions["regionguard"].store, metrics))
    _errors(app)
    return app


def _one_connection_per_read(app: Flask, store: Store) -> None:
    """A GET (page, partial or API read) makes its dozen or more store calls on one connection (Store.reading).

    Registered before the sign-in check, so the session's user lookup shares
    it too; health checks keep their own, simplest path. Single sign-on's GETs
    call the identity provider (up to ``oidc.timeout``): no transaction is held
    open across that, PostgreSQL would end it after db.IDLE_IN_TRANSACTION_S.
    """

    def start() -> None:
        endpoint = request.endpoint or ""
        if request.method in ("GET", "HEAD") and endpoint not in security.HEALTH_ENDPOINTS and not endpoint.startswith("oidc."):
            stack = ExitStack()
            stack.enter_context(store.reading())
            g.regionguard_reads = stack

    def end(exc: BaseException | None) -> None:
        stack = g.pop("regionguard_reads", None)
        if stack is not None:
            stack.__exit__(type(exc) if exc else None, exc, exc.__traceback__ if exc else None)

    app.before_request(start)
    app.teardown_request(end)


def _metrics_blueprint(store: Store, metrics: Any) -> Blueprint:
    from controlplane.metrics import Metrics

    m = metrics if metrics is not None else Metrics()
    bp = Blueprint("metrics", __name__)
    bp.add_url_rule("/api/v1/metrics", "metrics", m.flask_view(before=lambda: m.refresh_from_store(store)))
    return bp


def serve(settings: Settings, store: Store | None = None, host: str | None = None, port: int | None = None, threads: int = 8) -> None:
    """Run the dashboard under waitress (a production WSGI server) until interrupted.

    For ``regionguard web``: the worker (scheduler) runs in its own process.
    """
    from waitress import serve as waitress_serve

    app = create_app(settings, store)
    host = host or settings.web.host
    port = settings.web.port if port is None else port
    log.warning("dashboard listening on http://%s:%s", host, port)
    waitress_serve(app, host=host, port=port, threads=threads, ident="regionguard")
