"""Sessions end when they should: logout, a new password, a disabled account; tokens end when revoked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from controlplane import users
from controlplane.config import Settings
from controlplane.store import Store
from tests.integration.test_web import T0, FakeClock, login, token_for
from tests.integration.web_seed import cheap_hashing, copy_of, default_hashing, make_template, settings
from web import create_app

COOKIE = "regionguard_session"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    cheap_hashing()
    yield make_template(tmp_path_factory.mktemp("sessions-template"), settings(), T0)
    default_hashing()


@pytest.fixture
def seeded(template: Path, tmp_path: Path) -> Iterator[Store]:
    cheap_hashing()
    store = copy_of(template, tmp_path)
    yield store
    store.close()
    default_hashing()


@pytest.fixture
def app(seeded: Store) -> Flask:
    s: Settings = settings()
    return create_app(s, seeded, {"TESTING": True, "CLOCK": FakeClock(T0), "SECRET_KEY": "test-secret"})


def copy_session(app: Flask, c: FlaskClient) -> FlaskClient:
    """Another browser holding a copy of ``c``'s session cookie (a stolen or replayed cookie)."""
    cookie = c.get_cookie(COOKIE)
    assert cookie is not None
    other = app.test_client()
    other.set_cookie(COOKIE, cookie.value)
    return other


def signed_in(c: FlaskClient) -> bool:
    return c.get("/").status_code == 200


def test_a_cookie_replayed_after_logout_no_longer_works(app: Flask) -> None:
    c, csrf = login(app, "otto")
    replay = copy_session(app, c)
    assert signed_in(replay)
    assert c.post("/logout", data={"csrf_token": csrf}).status_code == 302
    assert not signed_in(replay)
    assert not signed_in(c)
    again, _ = login(app, "otto")  # a fresh login works
    assert signed_in(again)


def test_a_password_change_ends_every_session_of_the_user(app: Flask, seeded: Store) -> None:
    c, _ = login(app, "otto")
    other, _ = login(app, "ada")
    users.change_password(seeded, "otto", "a brand new passphrase")
    assert not signed_in(c)
    assert signed_in(other)  # someone else's session is untouched


def test_a_disabled_user_is_out_at_once_and_back_only_after_enable_and_a_new_login(app: Flask, seeded: Store) -> None:
    c, _ = login(app, "otto")
    users.set_disabled(seeded, "otto", True)
    assert not signed_in(c)
    users.set_disabled(seeded, "otto", False)
    assert not signed_in(c)  # the old session stays ended
    fresh, _ = login(app, "otto")
    assert signed_in(fresh)


def test_a_revoked_token_is_refused_at_once(app: Flask, seeded: Store) -> None:
    headers = token_for(seeded, "viewer")
    assert app.test_client().get("/api/v1/regions", headers=headers).status_code == 200
    (live,) = [t for t in seeded.api_tokens() if t.revoked_at is None]
    assert seeded.revoke_api_token(live.id, T0)
    assert app.test_client().get("/api/v1/regions", headers=headers).status_code == 401


# ---------------------------------------------------------------- behind a TLS-terminating proxy


def _proxied_app(seeded: Store, hops: int) -> Flask:
    s = settings()
    s = s.model_copy(update={"web": s.web.model_copy(update={"trusted_proxies": hops})})
    return create_app(s, seeded, {"TESTING": True, "CLOCK": FakeClock(T0), "SECRET_KEY": "test-secret"})


def _login_response(app: Flask) -> tuple[str, str]:
    from tests.integration.test_web import PASSWORD, csrf_of

    c = app.test_client()
    https = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
    token = csrf_of(c.get("/login", headers=https).get_data(as_text=True))
    r = c.post("/login", data={"username": "otto", "password": PASSWORD, "csrf_token": token}, headers=https)
    assert r.status_code == 302
    return r.headers.get("Strict-Transport-Security", ""), r.headers.get("Set-Cookie", "")


def test_a_trusted_proxy_saying_https_gets_hsts_and_secure_cookies(seeded: Store) -> None:
    hsts, cookie = _login_response(_proxied_app(seeded, 1))
    assert hsts.startswith("max-age=")
    assert COOKIE in cookie and "Secure" in cookie


def test_without_a_trusted_proxy_a_client_cannot_claim_https(seeded: Store) -> None:
    hsts, cookie = _login_response(_proxied_app(seeded, 0))
    assert hsts == ""
    assert COOKIE in cookie and "Secure" not in cookie


# ---------------------------------------------------------------- lockout shared by every web process


def test_failed_sign_ins_spread_over_two_web_processes_lock_the_account_for_both_and_the_audit_trail_says_so(
    seeded: Store,
) -> None:
    from datetime import timedelta

    from controlplane.domain import EventKind
    from controlplane.store import Store as StoreClass
    from tests.integration.test_web import PASSWORD, csrf_of

    clock = FakeClock(T0)
    other_store = StoreClass(seeded.url)  # a second process: its own engine on the same database
    try:
        apps = [create_app(settings(), st, {"TESTING": True, "CLOCK": clock, "SECRET_KEY": "test-secret"}) for st in (seeded, other_store)]

        def attempt(app: Flask, password: str) -> int:
            c = app.test_client()
            token = csrf_of(c.get("/login").get_data(as_text=True))
            return c.post("/login", data={"username": "otto", "password": password, "csrf_token": token}).status_code

        for i in range(5):  # lockout_after defaults to 5
            assert attempt(apps[i % 2], "wrong guess") == 401
        for app in apps:
            assert attempt(app, PASSWORD) == 429  # locked, even with the right password, in both processes
        (event,) = [e for e in seeded.events(kinds=[EventKind.LOGIN]) if "locked" in e.summary]
        assert event.severity == "warning" and "otto" in event.summary
        clock.at = T0 + timedelta(minutes=16)  # lockout_for defaults to 15 min
        assert attempt(apps[1], PASSWORD) == 302
    finally:
        other_store.close()
