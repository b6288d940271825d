"""Bad request bodies get a 400 with a reason, never a 500; error bodies are valid JSON (no bare NaN)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from controlplane.config import Settings
from controlplane.store import Store
from tests.integration.test_web import T0, FakeClock, login, token_for
from tests.integration.web_seed import cheap_hashing, copy_of, default_hashing, make_template, settings
from web import create_app


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    cheap_hashing()
    yield make_template(tmp_path_factory.mktemp("web-hostile-template"), settings(), T0)
    default_hashing()


@pytest.fixture
def seeded(template: Path, tmp_path: Path) -> Iterator[Store]:
    store = copy_of(template, tmp_path)
    yield store
    store.close()


@pytest.fixture
def app(seeded: Store) -> Flask:
    s: Settings = settings()
    return create_app(s, seeded, {"TESTING": True, "CLOCK": FakeClock(T0), "SECRET_KEY": "test-secret"})


def strict_json(text: str) -> object:
    def no_constants(name: str) -> object:
        raise ValueError(f"bare {name} in a JSON body")

    return json.loads(text, parse_constant=no_constants)


@pytest.mark.parametrize(
    "body",
    [
        '{"action": "drain", "region": "eastus", "reason": "test it", "expires_in": NaN, "preview_only": true}',
        '{"action": "drain", "region": "eastus", "reason": "test it", "expires_in": -60, "preview_only": true}',
        '{"action": "drain", "region": "eastus", "reason": "test it", "expires_in": 1e400, "preview_only": true}',
        '{"action": "pin", "target": "tm-weighted", "region": "eastus", "reason": "test it", "weight": NaN, "preview_only": true}',
        "[" * 30_000 + "]" * 30_000,
        '{"a": ' * 5_000,
        '{"action": "drain", "region": "eastus\\u0000", "reason": "test\\u0000 it", "preview_only": true}',
    ],
    ids=["nan-expiry", "past-expiry", "huge-expiry", "nan-weight", "deep-array", "deep-broken", "nul"],
)
def test_a_hostile_api_body_is_a_400_with_a_reason_in_valid_json(app: Flask, seeded: Store, body: str) -> None:
    r = app.test_client().post(
        "/api/v1/overrides", data=body, headers={**token_for(seeded, "operator"), "Content-Type": "application/json"}
    )
    assert r.status_code == 400, (r.status_code, r.get_data(as_text=True)[:300])
    answer = strict_json(r.get_data(as_text=True))
    assert isinstance(answer, dict) and answer.get("error") and answer.get("reason")


@pytest.mark.parametrize(
    "next_url", ["/\r\nSet-Cookie: x=1", "/%0d%0aLocation: https://evil.example", "//evil.example/", "https://evil.example/"]
)
def test_a_login_next_with_cr_lf_or_another_host_never_leaves_the_site_or_errors(app: Flask, next_url: str) -> None:
    c, _csrf = login(app, "otto")
    r = c.get("/login", query_string={"next": next_url})
    assert r.status_code in (200, 302, 400), r.status_code
    location = r.headers.get("Location", "")
    assert "\r" not in location and "\n" not in location
    assert location.startswith("/") and not location.startswith("//"), location  # a path on this site, whatever it says


# ---------------------------------------------------------------- drift controls (admin)


def _drift(store: Store) -> None:
    from controlplane.domain import EndpointSetting

    store.set_applied("tm-weighted", "eastus", EndpointSetting(weight=900, enabled=True), T0)
    store.set_drift("tm-weighted", "eastus", "weight 900 -> 500 changed outside regionguard")


def test_an_admin_adopts_drift_from_the_target_page_with_a_preview_and_an_audit_event(app: Flask, seeded: Store) -> None:
    from controlplane.domain import EventKind

    _drift(seeded)
    admin, csrf = login(app, "ada")
    page = admin.get("/target/tm-weighted").get_data(as_text=True)
    assert 'aria-label="drift"' in page and "weight 900 -&gt; 500" in page
    form = {"csrf_token": csrf, "target": "tm-weighted", "region": "eastus", "action": "adopt", "reason": "the portal edit was right"}
    preview = admin.post("/drift/preview", data=form)
    assert preview.status_code == 200 and "this will keep eastus in tm-weighted" in preview.get_data(as_text=True)
    assert seeded.overrides() == []
    done = admin.post("/drift/execute", data=form)
    assert done.status_code == 302
    (pin,) = seeded.overrides()
    assert (pin.kind.value, pin.region, pin.weight) == ("pin", "eastus", 500)
    (event,) = seeded.events(kinds=[EventKind.DRIFT])
    assert event.actor == "ada" and event.summary.endswith("the portal edit was right")


def test_an_operator_neither_sees_nor_may_use_the_drift_controls(app: Flask, seeded: Store) -> None:
    _drift(seeded)
    op, csrf = login(app, "otto")
    assert 'aria-label="drift"' not in op.get("/target/tm-weighted").get_data(as_text=True)
    form = {"csrf_token": csrf, "target": "tm-weighted", "region": "eastus", "action": "revert", "reason": "nope"}
    assert op.post("/drift/execute", data=form).status_code == 403
    assert op.post("/drift/preview", data=form).status_code == 403


def test_a_drift_decision_without_drift_or_with_a_bad_action_is_a_400(app: Flask, seeded: Store) -> None:
    admin, csrf = login(app, "ada")
    base = {"csrf_token": csrf, "target": "tm-weighted", "region": "eastus", "reason": "why not"}
    assert admin.post("/drift/preview", data={**base, "action": "adopt"}).status_code == 400  # no drift there
    assert admin.post("/drift/execute", data={**base, "action": "explode"}).status_code == 400
