"""Login and logout: local users (argon2 hashes, rate-limited attempts), and the way to single sign-on (web/oidc.py).

With ``web.oidc`` configured, local users are break-glass accounts: each local
sign-in is a warning in the audit trail, and ``web.local_users: false`` turns
them off.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, redirect, render_template, request, session, url_for

from controlplane.domain import AuditEvent, EventKind
from controlplane.users import authenticate, clear_login_failures, login_locked, login_tag, record_login_failure, session_version
from web.oidc import sso
from web.security import csrf_token, principal, safe_next, state

log = logging.getLogger(__name__)

auth = Blueprint("auth", __name__)


def _login_page(error: str | None, next_path: str, status: int = 200) -> Any:
    ws = state()
    provider = sso()
    return render_template(
        "login.html",
        next=next_path,
        error=error,
        sso_name=provider.cfg.display_name if provider else None,
        local_users=ws.settings.web.local_users,
        signed_out=request.args.get("signed_out") == "1",
    ), status


def _too_many(wait_s: float) -> Any:
    page, status = _login_page(f"Too many login attempts. Try again in {int(wait_s)} s.", request.form.get("next", ""), 429)
    return page, status, {"Retry-After": str(int(wait_s))}


@auth.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if request.method == "GET":
        if principal() is not None:
            return redirect(safe_next(request.args.get("next")))
        csrf_token()
        return _login_page(None, request.args.get("next", ""))
    ws = state()
    if not ws.settings.web.local_users:
        return _login_page("Local accounts are turned off (web.local_users: false): use single sign-on.", "", 403)
    name = (request.form.get("username") or "").strip()[:80]
    password = request.form.get("password") or ""
    ip = request.remote_addr or "?"
    wait = ws.limiter.hit(name, ip)
    if wait is not None:
        log.warning("sign-in rate limit hit for name %s from %s", login_tag(name), ip)
        return _too_many(wait)
    now = ws.clock.now()
    # Every name, an account or not, gets the same answers and the same work:
    # a lock shared by every web process (the database holds the count), the
    # password checked (against a dummy hash for no account), the failure counted.
    locked = login_locked(ws.store, name, now)
    if locked is not None:
        log.warning("sign-in to a locked name %s from %s", login_tag(name), ip)
        return _too_many(locked + 1)
    who = authenticate(ws.store, name, password)
    if who is None:
        log.info("failed sign-in for name %s from %s", login_tag(name), ip)
        web = ws.settings.web
        record_login_failure(ws.store, name, ip, now, web.lockout_after, web.lockout_for)
        return _login_page("Wrong user name or password.", request.form.get("next", ""), 401)
    clear_login_failures(ws.store, who.name)
    ws.limiter.reset(name, ip)
    session.clear()  # no fixation: a fresh session (and CSRF token) on login
    session.permanent = True
    session["user"] = who.name
    session["ver"] = session_version(ws.store, who.name)  # logout or a new password bumps it: this cookie then ends
    csrf_token()
    log.info("login: %s (%s) from %s", who.name, who.role, ip)
    if ws.settings.web.oidc is not None:  # with SSO configured, a local account is break-glass: say so in the audit trail
        log.warning("break-glass local sign-in: %s (%s) from %s", who.name, who.role, ip)
        ws.store.add_event(
            AuditEvent(
                kind=EventKind.LOGIN,
                at=ws.clock.now(),
                actor=who.name,
                summary=f"break-glass: local account {who.name} ({who.role}) signed in while single sign-on is configured",
                severity="warning",
                data={"via": "local", "role": who.role, "ip": ip},
            )
        )
    return redirect(safe_next(request.form.get("next")))


@auth.post("/logout")
def logout() -> Any:
    """End the local session; after a single sign-on, also sign out at the provider where it can."""
    was_sso = "sso" in session
    name = session.get("user")
    if name and not was_sso:  # a copy of this cookie must not outlive the logout
        state().store.end_sessions(str(name))
    session.clear()
    provider = sso()
    if was_sso and provider is not None:
        end = provider.end_session_url()
        if end:
            return redirect(end)
    return redirect(url_for("auth.login", signed_out=1))
