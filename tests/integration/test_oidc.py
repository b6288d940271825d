"""Sign-in with OpenID Connect against a real provider on 127.0.0.1 (oidc-provider-mock, see oidc_provider.py).

The dashboard runs in Flask's test client; every call it makes to the
provider (discovery, token, JWKS) is real HTTP. The browser's part (the
provider's sign-in form) is played with httpx. Each refusal of the callback
has its own test.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from flask import Flask
from flask.testing import FlaskClient
from joserfc.jwk import RSAKey

from controlplane import users
from controlplane.config import Settings, Web
from controlplane.domain import OverrideKind
from controlplane.store import Store
from tests.integration.oidc_provider import ALICE_CLAIMS, ALICE_OID, Provider, certificate_pem, running
from tests.integration.web_seed import PASSWORD, cheap_hashing, copy_of, default_hashing, make_template, settings
from web import create_app

T0 = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
CALLBACK = "http://localhost/auth/oidc/callback"
ROLE_MAP = {"admin": ["RegionGuard.Admin"], "operator": ["RegionGuard.Operator"], "viewer": ["RegionGuard.Viewer"]}


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.at = now

    def now(self) -> datetime:
        return self.at


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    cheap_hashing()
    yield make_template(tmp_path_factory.mktemp("oidc-template"), settings(), T0)
    default_hashing()


@pytest.fixture
def store(template: Path, tmp_path: Path) -> Iterator[Store]:
    s = copy_of(template, tmp_path)
    yield s
    s.close()


@pytest.fixture(scope="module")
def idp() -> Iterator[Provider]:
    with running(Provider()) as p:
        yield p


@pytest.fixture
def provider(idp: Provider) -> Iterator[Provider]:
    idp.reset()
    yield idp
    idp.reset()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


def with_sso(provider: Provider, monkeypatch: pytest.MonkeyPatch, **over: Any) -> Settings:
    client_id, secret = provider.register_client([CALLBACK])
    monkeypatch.setenv("RG_TEST_OIDC_SECRET", secret)
    web: dict[str, Any] = {
        "oidc": {
            "kind": "generic",
            "issuer": provider.issuer,
            "client_id": client_id,
            "client_secret_env": "RG_TEST_OIDC_SECRET",
            "display_name": "Test IdP",
            "role_map": ROLE_MAP,
            "session_lifetime": "1h",
        }
    }
    web["oidc"].update(over.pop("oidc", {}))
    web.update(over)
    return settings().model_copy(update={"web": Web.model_validate(web)})


@pytest.fixture
def app(provider: Provider, store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> Flask:
    return create_app(with_sso(provider, monkeypatch), store, {"TESTING": True, "CLOCK": clock, "SECRET_KEY": "test-secret"})


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no CSRF token in the page"
    return m.group(1)


def cookie_of(c: FlaskClient) -> str:
    cookie = c.get_cookie("regionguard_session")
    assert cookie is not None, "no session cookie"
    return cookie.value


def start(c: FlaskClient, next_path: str | None = None) -> str:
    """GET /auth/oidc/login; return the provider's authorization URL it redirects to."""
    r = c.get("/auth/oidc/login", query_string={"next": next_path} if next_path else None)
    assert r.status_code == 302, r.get_data(as_text=True)
    return r.headers["Location"]


def at_provider(authorize_url: str, sub: str) -> str:
    """Play the user at the provider's sign-in form; return the callback URL (path and query) it sends the browser to."""
    r = httpx.post(authorize_url, data={"sub": sub}, timeout=10)
    assert r.status_code == 302, r.text
    back = urlsplit(r.headers["Location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == CALLBACK
    return f"{back.path}?{back.query}"


def sign_in(app: Flask, sub: str, next_path: str | None = None) -> tuple[FlaskClient, Any, str]:
    c = app.test_client()
    back = at_provider(start(c, next_path), sub)
    return c, c.get(back), back


def signed_in_as(c: FlaskClient) -> str:
    html = c.get("/").get_data(as_text=True)
    m = re.search(r'<form class="whoami".*?<span>(.*?) <span class="role role-(\w+)">', html, re.S)
    assert m, "not signed in"
    return f"{m.group(1)}|{m.group(2)}"


def refused(r: Any, status: int, *words: str) -> str:
    html = r.get_data(as_text=True)
    assert r.status_code == status, html
    assert "Sign-in refused" in html
    for w in words:
        assert w in html, f"{w!r} not on the refusal page"
    return html


def assert_not_signed_in(c: FlaskClient) -> None:
    r = c.get("/")
    assert r.status_code == 302 and "/login" in r.headers["Location"]


# ---------------------------------------------------------------- the happy path


def test_an_operator_signs_in_and_every_action_records_the_stable_id_and_display_name(app: Flask, store: Store) -> None:
    c, r, _ = sign_in(app, "alice", next_path="/timeline")
    assert r.status_code == 302 and r.headers["Location"] == "/timeline"
    name = "Alice Example <sub:alice>"  # a generic provider: 'sub' is the stable id (Entra ID's 'oid': see the Entra test)
    assert signed_in_as(c) == f"{name.replace('<', '&lt;').replace('>', '&gt;')}|operator"

    [login] = store.events(kinds=["login"])
    assert (login.actor, login.severity, login.data["stable_id"], login.data["display_name"]) == (
        name,
        "info",
        "sub:alice",
        "Alice Example",
    )
    assert login.data["role"] == "operator" and login.data["matched"] == ["RegionGuard.Operator"]

    token = csrf_of(c.get("/").get_data(as_text=True))
    form = {"csrf_token": token, "action": "drain", "region": "eastus", "target": "", "reason": "eastus 503 storm"}
    html = c.post("/actions/preview", data=form).get_data(as_text=True)
    m = re.search(r'name="digest" value="(\w+)"', html)
    assert m, "no digest in the preview"
    digest = m.group(1)
    assert c.post("/actions/execute", data=dict(form, digest=digest)).status_code == 302
    [o] = store.active_overrides(T0)
    assert (o.kind, o.who) == (OverrideKind.DRAIN, name)
    [event] = store.events(kinds=["override"])
    assert event.actor == name and event.data["via"] == "sso"


def test_the_authorization_request_uses_pkce_s256_a_nonce_and_state(app: Flask, provider: Provider) -> None:
    c = app.test_client()
    url = start(c)
    q = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert url.startswith(provider.base + "/oauth2/authorize?")
    assert q["response_type"] == "code" and q["code_challenge_method"] == "S256"
    assert set(q["scope"].split()) == {"openid", "profile", "email"}
    assert len(q["state"]) >= 20 and len(q["nonce"]) >= 20 and q["redirect_uri"] == CALLBACK
    assert c.get(at_provider(url, "alice")).status_code == 302
    [sent] = provider.token_requests  # the verifier went to the token endpoint, and it matches the challenge
    challenge = base64.urlsafe_b64encode(hashlib.sha256(sent["code_verifier"].encode()).digest()).rstrip(b"=").decode()
    assert challenge == q["code_challenge"]
    assert "client_secret" not in sent  # client_secret_basic: the secret travels in the Authorization header only


def test_the_role_comes_from_the_roles_claim_and_the_highest_mapped_role_wins(app: Flask) -> None:
    c, r, _ = sign_in(app, "ada")
    assert r.status_code == 302
    assert signed_in_as(c).endswith("|admin")


def test_group_ids_map_to_roles_when_roles_claim_is_groups(
    provider: Provider, store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = with_sso(provider, monkeypatch, oidc={"roles_claim": "groups", "role_map": {"viewer": ["b7d2c0de-0000-4000-8000-00000000beef"]}})
    app = create_app(s, store, {"TESTING": True, "CLOCK": clock, "SECRET_KEY": "k"})
    c, r, _ = sign_in(app, "grouped")
    assert r.status_code == 302
    assert signed_in_as(c).endswith("|viewer")
    token = csrf_of(c.get("/").get_data(as_text=True))
    assert (
        c.post("/actions/preview", data={"csrf_token": token, "action": "drain", "region": "eastus", "reason": "try it"}).status_code == 403
    )


def test_a_role_change_at_the_provider_takes_effect_at_the_next_sign_in(app: Flask, provider: Provider) -> None:
    c, _, _ = sign_in(app, "alice")
    assert signed_in_as(c).endswith("|operator")
    provider.set_user("alice", {**ALICE_CLAIMS, "roles": ["RegionGuard.Viewer"]})
    try:
        assert signed_in_as(c).endswith("|operator")  # the session keeps the role it was given ...
        c2, _, _ = sign_in(app, "alice")
        assert signed_in_as(c2).endswith("|viewer")  # ... and the next sign-in takes the new one
    finally:
        provider.set_user("alice", ALICE_CLAIMS)


def test_the_session_ends_after_its_lifetime(app: Flask, clock: FakeClock) -> None:
    c, _, _ = sign_in(app, "alice")
    clock.at = T0 + timedelta(minutes=59)
    assert signed_in_as(c).endswith("|operator")
    clock.at = T0 + timedelta(hours=1)
    assert_not_signed_in(c)


def test_logout_ends_the_session_and_goes_to_the_providers_end_session_endpoint(app: Flask, provider: Provider) -> None:
    c, _, _ = sign_in(app, "alice")
    token = csrf_of(c.get("/").get_data(as_text=True))
    r = c.post("/logout", data={"csrf_token": token})
    assert r.status_code == 302
    end = urlsplit(r.headers["Location"])
    assert f"{end.scheme}://{end.netloc}{end.path}" == provider.base + "/oauth2/end_session"
    q = {k: v[0] for k, v in parse_qs(end.query).items()}
    assert q["post_logout_redirect_uri"] == "http://localhost/login?signed_out=1" and q["client_id"]
    assert_not_signed_in(c)


def test_pages_allow_forms_to_reach_only_the_provider_and_still_forbid_inline_script(app: Flask, provider: Provider) -> None:
    csp = app.test_client().get("/login").headers["Content-Security-Policy"]
    assert f"form-action 'self' {provider.base};" in csp
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp


def test_api_tokens_work_as_before_with_sso_configured(app: Flask, store: Store) -> None:
    token = users.create_api_token(store, "script", "viewer", "test", T0)
    assert app.test_client().get("/api/v1/regions", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert app.test_client().get("/api/v1/regions", headers={"Authorization": "Bearer rg_nope"}).status_code == 401


# ---------------------------------------------------------------- no role


def test_no_roles_claim_means_no_access_and_the_page_names_the_claim(app: Flask, store: Store) -> None:
    c, r, _ = sign_in(app, "norole")
    html = refused(r, 403, "No &#39;roles&#39; claim", "Nora Norole", "RegionGuard.Operator")
    assert '<code class="missing-claim">roles</code>' in html
    assert_not_signed_in(c)
    [event] = store.events(kinds=["login"])
    assert event.severity == "warning" and event.data["claim"] == "roles"


def test_roles_that_map_to_nothing_mean_no_access(app: Flask) -> None:
    c, r, _ = sign_in(app, "stranger")
    refused(r, 403, "none of these is mapped", "SomeOther.App")
    assert_not_signed_in(c)


# ---------------------------------------------------------------- the callback refuses


def test_a_wrong_state_is_refused_before_the_code_is_spent(app: Flask, provider: Provider, store: Store) -> None:
    c = app.test_client()
    back = at_provider(start(c), "alice")
    forged = re.sub(r"state=[^&]+", "state=forged-state-value", back)
    refused(c.get(forged), 400, "does not match a sign-in started in this browser")
    assert provider.token_requests == []  # no code exchange for an unknown state
    assert store.events(kinds=["login"]) == []  # a stale tab or a double click: logged, not audited
    assert_not_signed_in(c)


def test_a_callback_from_another_browser_is_refused(app: Flask) -> None:
    victim = app.test_client()
    back = at_provider(start(victim), "alice")
    attacker = app.test_client()  # never started a sign-in: no state in its session
    refused(attacker.get(back), 400, "does not match")
    assert_not_signed_in(attacker)


def test_several_tabs_may_sign_in_at_once_but_only_the_newest_five_pending_sign_ins_are_kept(app: Flask) -> None:
    c = app.test_client()
    urls = [start(c) for _ in range(6)]
    refused(c.get(at_provider(urls[0], "alice")), 400, "does not match")  # the oldest was forgotten
    r = c.get(at_provider(urls[3], "alice"))
    assert r.status_code == 302 and signed_in_as(c).endswith("|operator")


def test_a_replayed_code_is_refused(app: Flask, provider: Provider) -> None:
    c, r, back = sign_in(app, "alice")
    assert r.status_code == 302
    # the same callback again: its state was used up
    refused(c.get(back), 400, "does not match")
    # the same code under a fresh, valid state: the provider will not exchange it twice
    old_code = parse_qs(urlsplit(back).query)["code"][0]
    c2 = app.test_client()
    fresh = at_provider(start(c2), "alice")
    replay = re.sub(r"code=[^&]+", f"code={old_code}", fresh)
    refused(c2.get(replay), 400, "Authorization code refused", "used already")
    assert_not_signed_in(c2)


def _tampered(provider: Provider, app: Flask, change: Any) -> tuple[FlaskClient, Any]:
    provider.tamper = change
    c, r, _ = sign_in(app, "alice")
    return c, r


def test_an_id_token_for_another_audience_is_refused(app: Flask, provider: Provider, store: Store) -> None:
    c, r = _tampered(provider, app, lambda cl, h: ({**cl, "aud": "some-other-app"}, h, provider.key))
    refused(r, 400, "Identity token refused", "issued for another application")
    assert_not_signed_in(c)
    [event] = store.events(kinds=["login"])  # a token that fails validation is a warning in the audit trail
    assert event.severity == "warning" and event.summary == "single sign-on refused: Identity token refused"


def test_an_id_token_from_another_issuer_is_refused(app: Flask, provider: Provider) -> None:
    c, r = _tampered(provider, app, lambda cl, h: ({**cl, "iss": "https://evil.example"}, h, provider.key))
    refused(r, 400, "&#39;iss&#39; claim is wrong", f"not issued by {provider.issuer}")
    assert_not_signed_in(c)


def test_an_id_token_with_a_bad_signature_is_refused(app: Flask, provider: Provider) -> None:
    forger = RSAKey.generate_key(2048)
    c, r = _tampered(provider, app, lambda cl, h: (cl, h, forger))  # same kid, another key
    refused(r, 400, "signature does not verify")
    assert_not_signed_in(c)


def test_an_expired_id_token_is_refused(app: Flask, provider: Provider) -> None:
    now = int(time.time())  # the provider stamps real time; so does the check
    c, r = _tampered(provider, app, lambda cl, h: ({**cl, "iat": now - 7200, "exp": now - 3600}, h, provider.key))
    refused(r, 400, "expired")
    assert_not_signed_in(c)


def test_an_id_token_without_the_nonce_is_refused(app: Flask, provider: Provider) -> None:
    c, r = _tampered(provider, app, lambda cl, h: ({k: v for k, v in cl.items() if k != "nonce"}, h, provider.key))
    refused(r, 400, "&#39;nonce&#39; claim is missing")
    assert_not_signed_in(c)


def test_an_id_token_with_another_sign_ins_nonce_is_refused(app: Flask, provider: Provider) -> None:
    c, r = _tampered(provider, app, lambda cl, h: ({**cl, "nonce": "nonce-of-another-sign-in"}, h, provider.key))
    refused(r, 400, "&#39;nonce&#39; claim is wrong")
    assert_not_signed_in(c)


def test_an_unknown_kid_makes_one_refetch_of_the_keys_then_is_refused(app: Flask, provider: Provider) -> None:
    sign_in(app, "alice")  # the app now holds the provider's keys
    fetches = provider.jwks_fetches
    assert fetches == 1
    stranger = RSAKey.generate_key(2048, parameters={"kid": "not-published"})
    c, r = _tampered(provider, app, lambda cl, h: (cl, {**h, "kid": "not-published"}, stranger))
    refused(r, 400, "unknown &#39;kid&#39;")
    assert provider.jwks_fetches == fetches + 1  # exactly one refetch
    assert_not_signed_in(c)


def test_a_rotated_key_is_picked_up_by_refetching_the_keys(app: Flask, provider: Provider) -> None:
    sign_in(app, "alice")
    rotated = RSAKey.generate_key(2048, parameters={"kid": "rotated-2026"})
    provider.extra_keys.append(rotated)  # published after the app cached the old set
    c, r = _tampered(provider, app, lambda cl, h: (cl, {**h, "kid": "rotated-2026"}, rotated))
    assert r.status_code == 302, r.get_data(as_text=True)
    assert provider.jwks_fetches == 2
    assert signed_in_as(c).endswith("|operator")


@pytest.mark.parametrize(
    "target",
    ["https://evil.example/", "//evil.example/x", "/\\evil.example", "http:/evil.example", "javascript:alert(1)", "///evil.example"],
)
def test_the_return_url_never_leaves_the_dashboard(app: Flask, target: str) -> None:
    c, r, _ = sign_in(app, "alice", next_path=target)
    assert r.status_code == 302
    assert r.headers["Location"] == "/", r.headers["Location"]
    assert signed_in_as(c).endswith("|operator")


def test_an_error_from_the_provider_is_shown_and_signs_nobody_in(app: Flask) -> None:
    c = app.test_client()
    url = start(c)
    r = httpx.post(url, data={"action": "deny"}, timeout=10)
    back = urlsplit(r.headers["Location"])
    refused(c.get(f"{back.path}?{back.query}"), 400, "access_denied")
    assert_not_signed_in(c)


# ---------------------------------------------------------------- local users as break-glass


def test_a_local_sign_in_with_sso_configured_is_a_warning_in_the_audit_trail(app: Flask, store: Store) -> None:
    c = app.test_client()
    html = c.get("/login").get_data(as_text=True)
    assert "Sign in with Test IdP" in html and "break-glass" in html
    r = c.post("/login", data={"username": "ada", "password": PASSWORD, "csrf_token": csrf_of(html)})
    assert r.status_code == 302
    [event] = store.events(kinds=["login"])
    assert (event.actor, event.severity, event.data["via"]) == ("ada", "warning", "local")
    assert "break-glass" in event.summary


def test_local_users_can_be_turned_off(provider: Provider, store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    on = create_app(with_sso(provider, monkeypatch), store, {"TESTING": True, "CLOCK": clock, "SECRET_KEY": "same"})
    c = on.test_client()
    html = c.get("/login").get_data(as_text=True)
    assert c.post("/login", data={"username": "ada", "password": PASSWORD, "csrf_token": csrf_of(html)}).status_code == 302

    off = create_app(with_sso(provider, monkeypatch, local_users=False), store, {"TESTING": True, "CLOCK": clock, "SECRET_KEY": "same"})
    c2 = off.test_client()
    page = c2.get("/login").get_data(as_text=True)
    assert 'name="password"' not in page and "Sign in with Test IdP" in page
    # a password POST with a valid CSRF token (a session from the page while local users were on) is refused
    fresh = on.test_client()
    token = csrf_of(fresh.get("/login").get_data(as_text=True))
    c2.set_cookie("regionguard_session", cookie_of(fresh), domain="localhost")
    r = c2.post("/login", data={"username": "ada", "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 403 and "Local accounts are turned off" in r.get_data(as_text=True)
    # a session made while they were on is not honoured once they are off
    c2.set_cookie("regionguard_session", cookie_of(c), domain="localhost")
    assert_not_signed_in(c2)


def test_without_sso_the_login_page_is_unchanged(store: Store, clock: FakeClock) -> None:
    app = create_app(settings(), store, {"TESTING": True, "CLOCK": clock, "SECRET_KEY": "k"})
    c = app.test_client()
    html = c.get("/login").get_data(as_text=True)
    assert "Sign in with" not in html and 'name="password"' in html
    assert c.get("/auth/oidc/login").status_code == 404
    assert "form-action 'self';" in c.get("/login").headers["Content-Security-Policy"]
    r = c.post("/login", data={"username": "ada", "password": PASSWORD, "csrf_token": csrf_of(html)})
    assert r.status_code == 302 and store.events(kinds=["login"]) == []  # no break-glass warning without SSO


# ---------------------------------------------------------------- Entra ID


def test_entra_id_endpoints_come_from_the_tenants_discovery_document(
    store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"
    with running(Provider(mount=f"/{tenant}/v2.0")) as idp:
        client_id, secret = idp.register_client([CALLBACK])
        monkeypatch.setenv("RG_TEST_ENTRA_SECRET", secret)
        web = Web.model_validate(
            {
                "oidc": {
                    "kind": "entra_id",
                    "tenant": tenant,
                    "client_id": client_id,
                    "client_secret_env": "RG_TEST_ENTRA_SECRET",
                    "authority_host": idp.base,
                    "role_map": ROLE_MAP,
                }
            }
        )
        app = create_app(settings().model_copy(update={"web": web}), store, {"TESTING": True, "CLOCK": clock, "SECRET_KEY": "k"})
        c = app.test_client()
        url = start(c)
        assert url.startswith(f"{idp.base}/{tenant}/v2.0/oauth2/authorize?")
        r = c.get(at_provider(url, "alice"))
        assert r.status_code == 302, r.get_data(as_text=True)
        assert signed_in_as(c) == f"Alice Example &lt;oid:{ALICE_OID}&gt;|operator"
        assert "Sign in with Microsoft Entra ID" in app.test_client().get("/login").get_data(as_text=True)


def test_entra_id_with_a_certificate_signs_in_with_a_client_assertion(
    tmp_path: Path, store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = "contoso.onmicrosoft.com"
    with running(Provider(mount=f"/{tenant}/v2.0")) as idp:
        client_id, secret = idp.register_client([CALLBACK])
        registered = tmp_path / "registered.pem"
        idp.certificates[client_id] = (certificate_pem(registered, password=b"pem-pass"), secret)
        monkeypatch.setenv("RG_TEST_PEM_PASSWORD", "pem-pass")

        def app_with(pem: Path) -> Flask:
            oidc = {
                "kind": "entra_id",
                "tenant": tenant,
                "client_id": client_id,
                "client_certificate": {"path": str(pem), "password_env": "RG_TEST_PEM_PASSWORD"},
                "authority_host": idp.base,
                "role_map": ROLE_MAP,
            }
            s = settings().model_copy(update={"web": Web.model_validate({"oidc": oidc})})
            return create_app(s, store, {"TESTING": True, "CLOCK": clock, "SECRET_KEY": "k"})

        c, r, _ = sign_in(app_with(registered), "alice")
        assert r.status_code == 302, r.get_data(as_text=True)
        assert signed_in_as(c).endswith("|operator")
        [sent] = idp.token_requests
        assert "client_secret" not in sent and sent["client_assertion_type"].endswith("jwt-bearer")
        [checked] = idp.assertions
        assert checked["header"]["alg"] == "PS256" and checked["claims"]["aud"] == f"{idp.base}/{tenant}/v2.0/oauth2/token"

        other = tmp_path / "other.pem"  # a certificate the app registration does not know
        certificate_pem(other, password=b"pem-pass")
        c2, r2, _ = sign_in(app_with(other), "alice")
        refused(r2, 400, "Authorization code refused", "invalid_client", "check the secret or certificate")
        assert_not_signed_in(c2)


def test_a_missing_client_secret_stops_the_app_with_the_variable_named(
    provider: Provider, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from controlplane.config import ConfigError

    s = with_sso(provider, monkeypatch)
    monkeypatch.delenv("RG_TEST_OIDC_SECRET")
    with pytest.raises(ConfigError, match="RG_TEST_OIDC_SECRET is not set"):
        create_app(s, store, {"TESTING": True, "SECRET_KEY": "k"})


def test_an_unreachable_provider_gives_a_clear_page_and_local_sign_in_still_works(
    store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RG_TEST_OIDC_SECRET", "s")
    web = Web.model_validate(
        {
            "oidc": {
                "kind": "generic",
                "issuer": "http://127.0.0.1:9",
                "client_id": "x",
                "client_secret_env": "RG_TEST_OIDC_SECRET",
                "role_map": ROLE_MAP,
                "timeout": "2s",
            }
        }
    )
    app = create_app(settings().model_copy(update={"web": web}), store, {"TESTING": True, "CLOCK": clock, "SECRET_KEY": "k"})
    c = app.test_client()
    refused(c.get("/auth/oidc/login"), 502, "Identity provider unreachable", "http://127.0.0.1:9/.well-known/openid-configuration")
    html = c.get("/login").get_data(as_text=True)
    assert c.post("/login", data={"username": "ada", "password": PASSWORD, "csrf_token": csrf_of(html)}).status_code == 302
