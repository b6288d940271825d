"""Login and logout (local users, argon2 hashes, rate-limited attempts)."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, redirect, render_template, request, session, url_for

from controlplane.users import authenticate
from web.security import csrf_token, principal, state

log = logging.getLogger(__name__)

auth = Blueprint("auth", __name__)


def safe_next(target: str | None) -> str:
    """Only same-site paths: never redirect to another host after login."""
    if not target:
        return url_for("dashboard.overview")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return url_for("dashboard.overview")
    return target


@auth.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if request.method == "GET":
        if principal() is not None:
            return redirect(safe_next(request.args.get("next")))
        csrf_token()
        return render_template("login.html", next=request.args.get("next", ""), error=None)
    ws = state()
    name = (request.form.get("username") or "").strip()[:80]
    password = request.form.get("password") or ""
    ip = request.remote_addr or "?"
    wait = ws.limiter.hit(name, ip)
    if wait is not None:
        log.warning("login rate limit hit for user %r from %s", name, ip)
        resp = render_template(
            "login.html", next=request.form.get("next", ""), error=f"Too many login attempts. Try again in {int(wait)} s."
        )
        return resp, 429, {"Retry-After": str(int(wait))}
    who = authenticate(ws.store, name, password)
    if who is None:
        log.info("failed login for %r from %s", name, ip)
        return render_template("login.html", next=request.form.get("next", ""), error="Wrong user name or password."), 401
    ws.limiter.reset(name, ip)
    session.clear()  # no fixation: a fresh session (and CSRF token) on login
    session.permanent = True
    session["user"] = who.name
    csrf_token()
    log.info("login: %s (%s) from %s", who.name, who.role, ip)
    return redirect(safe_next(request.form.get("next")))


@auth.post("/logout")
def logout() -> Any:
    session.clear()
    return redirect(url_for("auth.login"))
