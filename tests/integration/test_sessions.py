"""Sessions end when they should: logout, a new password, a disabled account; tokens end when revoked."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from controlplane import users
from controlplane.config import Settings
from controlplane.domain import EventKind
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


# ---------------------------------------------------------------- an unknown name is throttled like a real one


def _two_processes(seeded: Store, clock: FakeClock, lockout_after: int = 3) -> tuple[list[Flask], Store]:
    """Two web apps, each with its own engine on the same database (two web processes); a generous per-process limit."""
    s = settings()
    s = s.model_copy(update={"web": s.web.model_copy(update={"lockout_after": lockout_after, "login_attempts_per_minute": 1000})})
    other = Store(seeded.url)
    config = {"TESTING": True, "CLOCK": clock, "SECRET_KEY": "test-secret"}
    return [create_app(s, st, config) for st in (seeded, other)], other


def _throttle_keys(store: Store) -> list[str]:
    with store.engine.connect() as conn:
        return [str(k) for k in conn.exec_driver_sql("SELECT name_key FROM login_throttle").scalars()]


def _answer(app: Flask, name: str, password: str, address: str) -> tuple[int, str, str | None]:
    """Status, page (without its per-session CSRF token) and Retry-After of one sign-in attempt."""
    from tests.integration.test_web import csrf_of

    c = app.test_client()
    env = {"REMOTE_ADDR": address}
    token = csrf_of(c.get("/login", environ_base=env).get_data(as_text=True))
    r = c.post("/login", data={"username": name, "password": password, "csrf_token": token}, environ_base=env)
    page = re.sub(r'name="csrf_token" value="[^"]*"', "", r.get_data(as_text=True))
    return r.status_code, page, r.headers.get("Retry-After")


@pytest.mark.parametrize(
    "addresses", [["203.0.113.9"], ["203.0.113.1", "198.51.100.2", "192.0.2.3"]], ids=["one address", "many addresses"]
)
def test_an_unknown_name_gets_the_same_answers_and_the_same_shared_lock_as_an_existing_one(seeded: Store, addresses: list[str]) -> None:
    from tests.integration.test_web import PASSWORD

    clock = FakeClock(T0)
    apps, other = _two_processes(seeded, clock, lockout_after=3)
    try:
        answers = {}
        for name in ("otto", "nobody-by-this-name"):
            seen = []
            for i in range(5):  # spread over both processes (and the addresses)
                seen.append(_answer(apps[i % 2], name, "wrong guess", addresses[i % len(addresses)]))
            seen.append(_answer(apps[0], name, PASSWORD, addresses[0]))  # the right password changes nothing while locked
            answers[name] = seen
        assert [a[0] for a in answers["otto"]] == [401, 401, 401, 429, 429, 429]
        assert answers["nobody-by-this-name"] == answers["otto"]  # same status, page and Retry-After at every step
        clock.at = T0 + timedelta(minutes=16)  # lockout_for: 15 min
        assert _answer(apps[1], "otto", PASSWORD, addresses[-1])[0] == 302
        assert _answer(apps[1], "nobody-by-this-name", "wrong guess", addresses[-1])[0] == 401
    finally:
        other.close()


def test_a_failed_sign_in_does_the_same_work_for_an_existing_and_an_unknown_name(seeded: Store) -> None:
    from argon2 import PasswordHasher
    from sqlalchemy import event

    verified: list[str] = []

    class CountingHasher(PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> bool:
            verified.append(str(hash))
            return super().verify(hash, password)

    users.set_hasher(CountingHasher(time_cost=1, memory_cost=8, parallelism=1))
    statements: list[str] = []
    event.listen(seeded.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    apps, other = _two_processes(seeded, FakeClock(T0))
    try:
        work = {}
        for name in ("otto", "nobody-by-this-name"):
            verified.clear()
            statements.clear()
            assert _answer(apps[0], name, "wrong guess", "203.0.113.5")[0] == 401
            work[name] = (len(verified), len(statements))
        assert work["otto"] == work["nobody-by-this-name"] and work["otto"][0] == 1  # one Argon2 check each (a dummy hash for no account)
    finally:
        other.close()


def test_locking_a_name_that_is_no_account_writes_no_audit_event_and_logs_the_lock_without_the_name(
    seeded: Store, caplog: pytest.LogCaptureFixture
) -> None:
    hostile = "\x1b[2J\u202e<script>alert(1)</script>"
    clock = FakeClock(T0)
    apps, other = _two_processes(seeded, clock, lockout_after=2)
    try:
        with caplog.at_level(logging.INFO):
            statuses = [_answer(apps[i % 2], hostile, "wrong guess", "203.0.113.5")[0] for i in range(3)]
        assert statuses == [401, 401, 429]
        assert not [e for e in seeded.events(kinds=[EventKind.LOGIN]) if "locked" in e.summary]
        messages = [r.getMessage() for r in caplog.records]
        assert not [m for m in messages if "\x1b" in m or "\u202e" in m]  # no raw escape or bidi control reaches a log line
        (lock,) = [m for m in messages if "locked after" in m]
        assert "alert" not in lock and "2J" not in lock  # the lock is logged without the name
        keys = _throttle_keys(seeded)
        assert keys and all(re.fullmatch(r"[0-9a-f]{64}", k) for k in keys)  # only a hash of the submitted name is stored
    finally:
        other.close()


def test_a_password_typed_into_the_name_field_never_reaches_a_log_line(seeded: Store, caplog: pytest.LogCaptureFixture) -> None:
    typed = "Tr0ub4dor&3-correct-horse"  # a password in the wrong field: failed, locked, then rate limited
    clock = FakeClock(T0)
    apps, other = _two_processes(seeded, clock, lockout_after=2)
    try:
        with caplog.at_level(logging.INFO):
            statuses = [_answer(apps[i % 2], typed, "anything", "203.0.113.9")[0] for i in range(4)]
        assert statuses == [401, 401, 429, 429]
        failed = [r.getMessage() for r in caplog.records if "sign-in" in r.getMessage() or "login" in r.getMessage()]
        assert len(failed) >= 4, failed  # each attempt is still logged ...
        assert not [m for m in (r.getMessage() for r in caplog.records) if "Tr0ub4dor" in m]  # ... without the text typed
        tags = {m.split("#", 1)[1].split()[0] for m in failed if "name #" in m}
        assert len(tags) == 1, failed  # one stable tag, so on-call can still tell that the attempts were for one name
    finally:
        other.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(request: pytest.FixtureRequest, seeded: Store) -> Iterator[Store]:
    """The seeded SQLite store, or a fresh PostgreSQL one with user otto."""
    if request.param == "sqlite":
        yield seeded
        return
    from controlplane.store import open_store

    store = open_store(request.getfixturevalue("postgres_url"), migrate=True)
    users.add_user(store, "otto", "operator", "a long enough password", T0)
    yield store
    store.close()


def test_spraying_names_keeps_the_throttle_bounded_never_frees_a_live_lock_and_old_names_expire(
    any_db: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(users, "LOGIN_THROTTLE_MAX_NAMES", 4)
    window = 15 * 60.0

    def fail(name: str, second: int) -> float | None:
        return users.record_login_failure(any_db, name, "198.51.100.7", T0 + timedelta(seconds=second), 2, window)

    fail("otto", 0)
    assert fail("otto", 0) == window
    for i in range(10):  # a spray of distinct names, one guess each: more than the table holds
        fail(f"sprayed-{i}", 1 + i)
        assert len(_throttle_keys(any_db)) <= 4
    assert users.login_locked(any_db, "OTTO", T0 + timedelta(seconds=11))  # the lock outlived the spray (and a case change)
    for name in ("x1", "x2", "x3"):  # every row a live lock now
        fail(name, 12)
        assert fail(name, 12) == window
    assert fail("one-too-many", 13) is None and len(_throttle_keys(any_db)) == 4  # not counted, nothing given up
    assert "sign-in throttle full" in caplog.text
    later = T0 + timedelta(minutes=30)  # past every window and lock
    users.record_login_failure(any_db, "someone", "198.51.100.7", later, 2, window)
    assert len(_throttle_keys(any_db)) == 1
    assert not users.login_locked(any_db, "otto", later)
