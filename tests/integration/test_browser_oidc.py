"""Single sign-on in a real headless Chromium (Debian's /usr/bin/chromium) against a real OpenID provider.

dashboard -> the provider's sign-in page -> back with a role from the 'roles'
claim -> a drain with its preview -> logout through the provider's
end-session page -> signed out. Both servers listen on 127.0.0.1; the
provider's pages link a stylesheet on a CDN, which the test blocks (and
records) so that no request leaves the machine.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from werkzeug.serving import make_server

from controlplane.config import Web
from controlplane.domain import HealthStateName
from controlplane.store import Store
from tests.conftest import browser_path
from tests.integration.oidc_provider import Provider, running
from tests.integration.test_browser import CHROMIUM_ARGS, SCREENSHOTS, T0, FakeClock
from tests.integration.web_seed import cheap_hashing, copy_of, default_hashing, make_template, seed_health, seed_probes, settings
from web import create_app

pytestmark = pytest.mark.browser

ROLE_MAP = {"admin": ["RegionGuard.Admin"], "operator": ["RegionGuard.Operator"], "viewer": ["RegionGuard.Viewer"]}


class _Late:
    """A WSGI app set after the server knows its port (the redirect URI registered at the provider needs it)."""

    app: Any = None

    def __call__(self, environ: Any, start_response: Any) -> Any:
        return self.app(environ, start_response)


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Provider, Store, FakeClock]]:
    cheap_hashing()
    store = copy_of(make_template(tmp_path, settings(), T0), tmp_path)
    seed_health(store, T0, {"westeurope": HealthStateName.DEGRADED})
    seed_probes(store, T0, minutes=2)
    clock = FakeClock(T0)
    late = _Late()
    server = make_server("127.0.0.1", 0, late, threaded=True)
    base = f"http://127.0.0.1:{server.server_port}"
    with running(Provider()) as idp:
        client_id, secret = idp.register_client([f"{base}/auth/oidc/callback"])
        monkeypatch.setenv("RG_BROWSER_OIDC_SECRET", secret)
        web = Web.model_validate(
            {
                "oidc": {
                    "kind": "generic",
                    "issuer": idp.issuer,
                    "client_id": client_id,
                    "client_secret_env": "RG_BROWSER_OIDC_SECRET",
                    "display_name": "Contoso IdP",
                    "role_map": ROLE_MAP,
                }
            }
        )
        late.app = create_app(
            settings().model_copy(update={"web": web}), store, {"CLOCK": clock, "SECRET_KEY": "browser-sso", "REFRESH_SECONDS": 1}
        )
        thread = threading.Thread(target=server.serve_forever, name="web-under-test", daemon=True)
        thread.start()
        try:
            yield base, idp, store, clock
        finally:
            server.shutdown()
            thread.join(timeout=5)
            server.server_close()
            store.close()
            default_hashing()


@pytest.fixture
def browser() -> Iterator[Any]:
    executable = browser_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def test_an_operator_signs_in_with_the_provider_drains_with_a_preview_and_signs_out(
    browser: Any, served: tuple[str, Provider, Store, FakeClock]
) -> None:
    base, idp, store, clock = served
    errors: list[str] = []
    blocked: list[str] = []
    context = browser.new_context(viewport={"width": 1360, "height": 900})

    def only_loopback(route: Any) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    context.route("**/*", only_loopback)
    page = context.new_page()
    page.set_default_timeout(10_000)
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" and base in page.url else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))

    # the dashboard sends an unknown visitor to the sign-in page, which offers the provider
    page.goto(base + "/region/eastus")
    assert urlsplit(page.url).path == "/login"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "sso-login.png"))
    page.click("a.sso")

    # the provider's own sign-in page, on its own origin
    page.wait_for_selector("button[value=alice]")
    assert page.url.startswith(idp.base + "/oauth2/authorize?")
    page.click("button[value=alice]")

    # back, with the operator role from the 'roles' claim, on the page first asked for
    page.wait_for_selector("figure.chart")
    assert urlsplit(page.url).path == "/region/eastus"
    assert page.inner_text("form.whoami").startswith("Alice Example <sub:alice>")
    assert page.inner_text("form.whoami .role") == "operator"

    drain = page.locator("form.control[data-action=drain]")
    drain.locator("input[name=reason]").fill("eastus 503s, signed in through SSO")
    drain.locator("button[type=submit]").click()
    page.wait_for_selector("p.sentence")
    assert "disable eastus in tm-weighted, tm-priority and afd-prod" in page.inner_text("p.sentence")
    assert store.overrides() == []  # the preview wrote nothing
    page.click("#confirm-button")
    page.wait_for_selector(".flash-ok")
    [override] = store.active_overrides(clock.now())
    assert (override.region, override.who) == ("eastus", "Alice Example <sub:alice>")
    [event] = store.events(kinds=["override"])
    assert event.actor == "Alice Example <sub:alice>" and event.data["via"] == "sso"
    page.screenshot(path=str(SCREENSHOTS / "sso-after-drain.png"))

    # logout: the local session ends, then the provider's end-session page, then back to our sign-in page
    page.click("form.whoami button[type=submit]")
    page.wait_for_selector("text=End Session")
    assert page.url.startswith(idp.base + "/oauth2/end_session?")
    page.click("button[type=submit]")
    page.wait_for_selector(".flash-ok")
    assert urlsplit(page.url).path == "/login" and "You are signed out" in page.inner_text(".flash-ok")
    page.goto(base + "/")
    assert urlsplit(page.url).path == "/login"  # the session is gone

    assert errors == []
    assert {urlsplit(u).hostname for u in blocked} <= {"cdn.jsdelivr.net"}  # only the provider's stylesheet tried to leave
    context.close()
