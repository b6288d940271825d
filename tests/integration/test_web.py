"""The dashboard and API through Flask's test client: RBAC, CSRF, escaping, headers, the action flow."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from flask.testing import FlaskClient
from sqlalchemy import event

from controlplane import users
from controlplane.config import Settings
from controlplane.domain import (
    AuditEvent,
    Change,
    ChangeStatus,
    EndpointHealth,
    Field,
    FlagKind,
    HealthStateName,
    LeaseName,
    LivenessFailure,
    LivenessResult,
    Outcome,
    Override,
    OverrideKind,
    Plan,
    ProbeResult,
    RegionHealth,
    Transition,
)
from controlplane.store import Store, open_store, queries
from tests.integration.web_seed import (
    HOSTILE,
    PASSWORD,
    REGIONS,
    cheap_hashing,
    copy_of,
    default_hashing,
    make_template,
    seed_everything,
    seed_incident,
    seed_liveness,
    seed_probes,
    seed_targets,
    seed_transition,
    settings,
)
from tests.statements import statements_run
from web import create_app

T0 = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.at = now

    def now(self) -> datetime:
        return self.at


@pytest.fixture
def s() -> Settings:
    return settings()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    cheap_hashing()
    yield make_template(tmp_path_factory.mktemp("web-template"), settings(), T0)
    default_hashing()


@pytest.fixture
def seeded(template: Path, tmp_path: Path) -> Iterator[Store]:
    store = copy_of(template, tmp_path)
    yield store
    store.close()


@pytest.fixture
def app(s: Settings, seeded: Store, clock: FakeClock) -> Iterator[Flask]:
    yield create_app(s, seeded, {"TESTING": True, "CLOCK": clock, "SECRET_KEY": "test-secret"})


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no CSRF token in the page"
    return m.group(1)


def login(app: Flask, name: str) -> tuple[FlaskClient, str]:
    c = app.test_client()
    token = csrf_of(c.get("/login").get_data(as_text=True))
    r = c.post("/login", data={"username": name, "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 302, r.get_data(as_text=True)
    return c, csrf_of(c.get("/").get_data(as_text=True))


def token_for(store: Store, role: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + users.create_api_token(store, f"script-{role}", role, "test", T0)}


PAGES = ["/", "/region/eastus", "/region/eastus?range=7d", "/target/tm-weighted", "/timeline", "/incidents"]
POSTS = ["/actions/preview", "/actions/execute", "/overrides/1/lift", "/logout"]
API_GETS = ["/api/v1/regions", "/api/v1/regions/eastus", "/api/v1/targets", "/api/v1/events", "/api/v1/overrides", "/api/v1/incidents"]


# ---------------------------------------------------------------- authentication


@pytest.mark.parametrize("path", PAGES)
def test_pages_without_a_session_redirect_to_login(app: Flask, path: str) -> None:
    r = app.test_client().get(path)
    assert r.status_code == 302
    assert r.headers["Location"].startswith("/login?next=")


@pytest.mark.parametrize("path", POSTS[:3])
def test_posts_without_a_session_redirect_to_login_and_write_nothing(app: Flask, seeded: Store, path: str) -> None:
    r = app.test_client().post(path, data={"action": "drain", "region": "eastus", "reason": "test"})
    assert r.status_code == 302 and r.headers["Location"].startswith("/login")
    assert seeded.overrides() == []


def test_the_live_partial_answers_401_without_a_session(app: Flask) -> None:
    assert app.test_client().get("/partials/overview").status_code == 401


@pytest.mark.parametrize("path", API_GETS)
def test_api_without_a_token_is_401_json(app: Flask, path: str) -> None:
    r = app.test_client().get(path)
    assert r.status_code == 401
    assert r.json["error"] == "unauthorized"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    r = app.test_client().get(path, headers={"Authorization": "Bearer rg_not-a-real-token"})
    assert r.status_code == 401


def test_healthz_needs_no_login_and_readyz_checks_the_database(app: Flask, s: Settings, tmp_path: Any) -> None:
    c = app.test_client()
    assert c.get("/healthz").json == {"status": "ok"}
    assert c.get("/readyz").status_code == 200
    empty = open_store("sqlite:///" + str(tmp_path / "not-migrated.db"))
    down = create_app(s, empty, {"TESTING": True, "SECRET_KEY": "x"}).test_client().get("/readyz")
    assert down.status_code == 503 and down.json == {"status": "unavailable"}
    empty.close()


def test_wrong_password_is_refused_without_saying_which_part_was_wrong(app: Flask) -> None:
    c = app.test_client()
    token = csrf_of(c.get("/login").get_data(as_text=True))
    for user in ("otto", "nobody"):
        r = c.post("/login", data={"username": user, "password": "wrong password!", "csrf_token": token})
        assert r.status_code == 401
        assert "Wrong user name or password." in r.get_data(as_text=True)
    assert c.get("/").status_code == 302


def test_login_attempts_are_rate_limited_per_user_and_ip(s: Settings, seeded: Store, clock: FakeClock) -> None:
    limited = s.model_copy(update={"web": s.web.model_copy(update={"login_attempts_per_minute": 3})})
    c = create_app(limited, seeded, {"TESTING": True, "CLOCK": clock, "SECRET_KEY": "x"}).test_client()
    token = csrf_of(c.get("/login").get_data(as_text=True))
    codes = [c.post("/login", data={"username": "otto", "password": "guess", "csrf_token": token}).status_code for _ in range(3)]
    assert codes == [401, 401, 401]
    r = c.post("/login", data={"username": "otto", "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert "Too many login attempts" in r.get_data(as_text=True)
    # another user from the same address is not locked out by otto's attempts
    assert c.post("/login", data={"username": "ada", "password": PASSWORD, "csrf_token": token}).status_code == 302


def test_login_without_a_csrf_token_is_rejected(app: Flask) -> None:
    c = app.test_client()
    c.get("/login")
    r = c.post("/login", data={"username": "otto", "password": PASSWORD})
    assert r.status_code == 403


def test_session_cookie_is_httponly_and_samesite(app: Flask) -> None:
    c = app.test_client()
    token = csrf_of(c.get("/login").get_data(as_text=True))
    r = c.post("/login", data={"username": "otto", "password": PASSWORD, "csrf_token": token})
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    # signed, not encrypted: so it must hold only the user name, the CSRF token and the session version, never the password
    value = cookie.split(";")[0].split("=", 1)[1]
    sessions = app.session_interface
    assert isinstance(sessions, SecureCookieSessionInterface)
    serializer = sessions.get_signing_serializer(app)
    assert serializer is not None
    payload = serializer.loads(value)
    assert set(payload) == {"user", "csrf", "ver", "_permanent"}, payload
    assert payload["user"] == "otto" and isinstance(payload["ver"], int)
    assert PASSWORD not in json.dumps(payload) and PASSWORD not in cookie


def test_login_never_redirects_to_another_site(app: Flask) -> None:
    c = app.test_client()
    token = csrf_of(c.get("/login").get_data(as_text=True))
    r = c.post("/login", data={"username": "otto", "password": PASSWORD, "csrf_token": token, "next": "//evil.example/x"})
    assert r.headers["Location"] == "/"


def test_logout_needs_csrf_and_ends_the_session(app: Flask) -> None:
    c, token = login(app, "vic")
    assert c.post("/logout").status_code == 403
    assert c.post("/logout", data={"csrf_token": token}).status_code == 302
    assert c.get("/").status_code == 302


def test_a_demoted_user_loses_rights_on_the_next_request(app: Flask, seeded: Store) -> None:
    c, token = login(app, "otto")
    users.add_user(seeded, "otto", "viewer", PASSWORD, T0)  # a reset: new role and password, so the old session ends too
    r = c.post("/actions/preview", data={"csrf_token": token, "action": "drain", "region": "eastus", "reason": "test it"})
    assert r.status_code in (302, 403) and seeded.overrides() == []
    viewer, token = login(app, "otto")
    r = viewer.post("/actions/preview", data={"csrf_token": token, "action": "drain", "region": "eastus", "reason": "test it"})
    assert r.status_code == 403


# ---------------------------------------------------------------- headers and escaping


def test_security_headers_forbid_inline_script_and_framing(app: Flask) -> None:
    c, _ = login(app, "vic")
    for path in ("/", "/login", "/api/v1/regions"):
        h = c.get(path).headers
        csp = h["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert h["X-Content-Type-Options"] == "nosniff"
        assert h["Referrer-Policy"] == "same-origin"
        assert h["X-Frame-Options"] == "DENY"


def test_pages_have_no_inline_script_and_no_external_assets(app: Flask) -> None:
    c, _ = login(app, "ada")
    for path in PAGES:
        html = c.get(path).get_data(as_text=True)
        assert re.findall(r"<script(?![^>]*\bsrc=)", html) == [], path
        assert not re.search(r'(src|href)="(https?:)?//', html), path
        assert " style=" not in html and "onclick" not in html.lower(), path


def test_hostile_probe_error_text_is_escaped(app: Flask, seeded: Store) -> None:
    seed_probes(seeded, T0, minutes=2, error_region="eastus")
    seed_transition(seeded, T0, "eastus")
    c, _ = login(app, "vic")
    html = c.get("/region/eastus").get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert HOSTILE not in html
    timeline = c.get("/timeline").get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in timeline and HOSTILE not in timeline


def test_a_hostile_override_reason_is_escaped_everywhere(app: Flask, seeded: Store) -> None:
    seeded.add_override(Override(kind=OverrideKind.DRAIN, who="otto", why=HOSTILE, created_at=T0, region="eastus"))
    c, _ = login(app, "ada")
    for path in ("/", "/region/eastus", "/timeline", "/target/tm-weighted", "/partials/overview"):
        html = c.get(path).get_data(as_text=True)
        assert HOSTILE not in html, path


# ---------------------------------------------------------------- overview


def test_overview_shows_a_card_per_region_and_desired_vs_actual_per_target(app: Flask) -> None:
    c, _ = login(app, "vic")
    html = c.get("/").get_data(as_text=True)
    assert len(re.findall(r'<article class="card card-healthy', html)) == 3
    for region in ("eastus", "westeurope", "japaneast"):
        assert f'data-region="{region}"' in html
    assert "Success (5 min)" in html and "100.0%" in html
    assert re.search(r"TTFT p50 / p95 \(5 min\)</dt><dd>2\d\d ms / 2\d\d ms", html)
    assert html.count('<polyline class="line-a"') >= 3  # a sparkline per region
    for target in ("tm-weighted", "tm-priority", "afd-prod"):
        assert f'data-target="{target}"' in html
    assert "in sync" in html
    assert 'role="alert"' not in html  # fresh data, a leader, nothing frozen: no banners


def test_overview_marks_pending_and_failed_writes_and_drift(app: Flask, seeded: Store) -> None:
    seeded.set_write_status("tm-weighted", "eastus", "failed", "Conflict: precondition failed")
    seeded.set_write_status("afd-prod", "eastus", "pending")
    seeded.set_drift("tm-priority", "japaneast", "priority 3 -> 7 changed outside regionguard")
    c, _ = login(app, "vic")
    html = c.get("/partials/overview").get_data(as_text=True)
    assert "write failed" in html and "Conflict: precondition failed" in html
    assert "write pending" in html
    assert "changed outside regionguard" in html


def test_banners_for_no_leader_stale_data_panic_freeze_and_config_problems(app: Flask, seeded: Store, clock: FakeClock) -> None:
    seeded.release_lease(LeaseName.LEADER, "worker-1")
    seeded.set_flag(FlagKind.PANIC, "afd-prod", {"reason": "every endpoint looks unhealthy"}, T0)
    seeded.add_override(Override(kind=OverrideKind.FREEZE, who="ada", why="change window", created_at=T0))
    eps = [
        EndpointHealth("eastus/gpt-4o", "eastus", HealthStateName.HEALTHY, 1.0, "ok", config_problem="auth_error: 401 from eastus/gpt-4o")
    ]
    seeded.save_health(eps, [RegionHealth("eastus", HealthStateName.HEALTHY, 1.0, (), tuple(eps))], T0)
    clock.at = T0 + timedelta(minutes=10)
    c, _ = login(app, "vic")
    html = c.get("/partials/overview").get_data(as_text=True)
    kinds = set(re.findall(r'data-kind="(\w+)"', html))
    assert {"leader", "stale", "panic", "frozen", "config"} <= kinds
    assert "No leader" in html and "Stale data" in html and "every endpoint looks unhealthy" in html
    assert "Automation frozen for every target by ada" in html and "auth_error: 401" in html


# ---------------------------------------------------------------- region, target, timeline pages


def test_region_page_shows_charts_probes_and_transitions(app: Flask, seeded: Store) -> None:
    seed_transition(seeded, T0, "eastus")
    c, _ = login(app, "vic")
    html = c.get("/region/eastus").get_data(as_text=True)
    for title in ("Time to first token", "Total latency", "Success rate", "Throttle rate (429)"):
        assert title in html
    assert "req-eastus-" in html  # request ids of recent probes
    assert "3 consecutive failures (503)" in html and "503 at 12:00:10" in html
    # probe cost per month: a 10 s interval is 262,800 probes; no usage recorded, so
    # 15 prompt + 5 completion tokens are assumed: 262,800 x (15 x 2.0 + 5 x 8.0) / 1M = 18.40
    assert "18.40 USD <small>(5,256,000 tokens, estimated; 525,600 liveness checks at 0 tokens)</small>" in html
    assert c.get("/region/eastus?range=24h").status_code == 200
    assert c.get("/region/eastus?range=1y").status_code == 400
    assert c.get("/region/mars").status_code == 404
    assert c.get("/target/nope").status_code == 404


def test_region_charts_aggregate_minute_rollups_into_buckets_of_the_range(seeded: Store) -> None:
    start = T0 - timedelta(minutes=15)
    for bucket_s in (60, 600, 3600):
        buckets = queries.rollup_series(seeded, ["eastus", "japaneast"], start, bucket_s)
        assert sum(b.count for b in buckets["eastus"]) == 15 * 6 * 2  # every probe counted once
        assert all(b.start % bucket_s == 0 for b in buckets["eastus"])
        assert len(buckets["eastus"]) <= 15 * 60 // bucket_s + 1
        assert [b.start for b in buckets["eastus"]] == sorted({b.start for b in buckets["eastus"]})


def test_long_range_charts_reuse_settled_buckets_and_reread_only_the_newest(seeded: Store) -> None:
    from web import readmodel

    mono = [0.0]
    cache = readmodel.SeriesCache(ttl_s=300, settle_s=300, monotonic=lambda: mono[0])
    since = T0 - timedelta(hours=24)
    first = cache.series(seeded, "eastus", since, 600, T0)
    assert first == queries.rollup_series(seeded, ["eastus"], since, 600)["eastus"]
    seeded.purge(raw_before=T0 - timedelta(days=30), rollup_before=T0 - timedelta(minutes=10))  # settled minutes vanish
    seed_probes(seeded, T0 + timedelta(minutes=2), minutes=2)  # and newer ones arrive
    again = cache.series(seeded, "eastus", since, 600, T0 + timedelta(minutes=2))
    start = int((T0 - timedelta(minutes=20)).timestamp())
    assert [(b.start - start, b.count) for b in first] == [(0, 5 * 6 * 2), (600, 10 * 6 * 2)]
    # 11:40 is settled: served from the cache (though purged since); 11:50 and the new 12:00 are re-read
    assert [(b.start - start, b.count) for b in again] == [(0, 5 * 6 * 2), (600, 10 * 6 * 2), (1200, 2 * 6 * 2)]
    mono[0] = 301.0  # after the ttl everything is read again
    assert [(b.start - start, b.count) for b in cache.series(seeded, "eastus", since, 600, T0 + timedelta(minutes=2))] == [
        (600, 10 * 6 * 2),
        (1200, 2 * 6 * 2),
    ]


def test_the_overview_sparklines_of_every_region_reuse_settled_minutes_and_reread_the_newest_in_one_query(seeded: Store) -> None:
    from web import readmodel

    cache = readmodel.SeriesCache(ttl_s=300, settle_s=300, monotonic=lambda: 0.0)
    regions, since = ["eastus", "japaneast"], T0 - timedelta(minutes=60)
    first = cache.series_of(seeded, regions, since, 60, T0)
    assert first == queries.rollup_series(seeded, regions, since, 60) and len(first["eastus"]) == 15
    seeded.purge(raw_before=T0 - timedelta(days=30), rollup_before=T0 - timedelta(minutes=10))  # settled minutes vanish
    seed_probes(seeded, T0 + timedelta(minutes=2), minutes=2)  # and newer ones arrive
    with statements_run(seeded.engine) as reads:
        again = cache.series_of(seeded, regions, since, 60, T0 + timedelta(minutes=2))
    assert len(reads) == 1  # one query for both regions' newest buckets
    for r in regions:  # minutes before 11:55 from the cache (though purged since), the rest re-read, 12:00 and 12:01 new
        assert (
            again[r]
            == [b for b in first[r] if b.start < int((T0 - timedelta(minutes=5)).timestamp())]
            + queries.rollup_series(seeded, [r], T0 - timedelta(minutes=5), 60)[r]
        )
        assert [b.start for b in again[r]][-2:] == [int(T0.timestamp()), int(T0.timestamp()) + 60] and len(again[r]) == 17


def test_timeline_lists_changes_plans_transitions_and_overrides_newest_first_and_filters(app: Flask, seeded: Store) -> None:
    seed_transition(seeded, T0, "westeurope")
    change = Change("tm-weighted", "eastus", "aoai-eastus", Field.ENABLED, True, False, "unhealthy: 503s")
    plan_id = seeded.record_plan(Plan(changes=(change,)), "worker-1", T0 - timedelta(minutes=1), fencing_token=7)
    seeded.record_change(change, "applied", T0 - timedelta(seconds=50), "automation", plan_id, fencing_token=7)
    seeded.add_override(
        Override(kind=OverrideKind.DRAIN, who="otto", why="maintenance", created_at=T0 - timedelta(seconds=10), region="japaneast")
    )
    seeded.add_event(
        AuditEvent(
            kind="drift",
            at=T0 - timedelta(seconds=5),
            actor="worker-1",
            summary="tm-weighted/japaneast weight changed outside",
            region="japaneast",
            target="tm-weighted",
        )
    )
    c, _ = login(app, "vic")
    html = c.get("/timeline").get_data(as_text=True)
    kinds = re.findall(r'<li class="item item-(\w+)', html)
    assert kinds == ["event", "override", "change", "plan", "transition"]
    assert "(eastus): enabled -&gt; disabled [applied]" in html and "fencing token 7" in html
    assert re.findall(r'<li class="item item-(\w+)', c.get("/timeline?kind=change").get_data(as_text=True)) == ["change"]
    only_japan = c.get("/timeline?region=japaneast").get_data(as_text=True)
    assert set(re.findall(r'<li class="item item-(\w+)', only_japan)) == {"override", "event"}
    assert c.get("/timeline?kind=bogus").status_code == 400
    assert c.get("/timeline?region=mars").status_code == 400


# ---------------------------------------------------------------- controls and RBAC


def test_a_viewer_sees_no_controls_and_cannot_post(app: Flask, seeded: Store) -> None:
    c, token = login(app, "vic")
    for path in ("/", "/region/eastus", "/target/tm-priority"):
        html = c.get(path).get_data(as_text=True)
        assert "/actions/preview" not in html and "/lift" not in html, path
    form = {"csrf_token": token, "action": "drain", "region": "eastus", "reason": "viewer tries"}
    assert c.post("/actions/preview", data=form).status_code == 403
    assert c.post("/actions/execute", data=form).status_code == 403
    o = seeded.add_override(Override(kind=OverrideKind.DRAIN, who="otto", why="x", created_at=T0, region="eastus"))
    assert c.post(f"/overrides/{o.id}/lift", data={"csrf_token": token, "reason": "nope"}).status_code == 403
    assert len(seeded.active_overrides(T0)) == 1


def test_an_operator_sees_controls_on_region_and_target_pages(app: Flask) -> None:
    c, _ = login(app, "otto")
    region = c.get("/region/eastus").get_data(as_text=True)
    for action in ("drain", "restore", "failover", "pin"):
        assert f'data-action="{action}"' in region
    target = c.get("/target/tm-priority").get_data(as_text=True)
    for action in ("drain", "failover", "pin", "freeze"):
        assert f'data-action="{action}"' in target
    assert 'data-action="unfreeze"' not in target  # only the control that applies: nothing is frozen
    assert 'data-action="failover"' not in c.get("/target/tm-weighted").get_data(as_text=True)


def test_the_overview_shows_only_the_freeze_control_that_applies(app: Flask, seeded: Store) -> None:
    c, _ = login(app, "otto")
    page = c.get("/").get_data(as_text=True)
    assert 'data-action="freeze"' in page and 'data-action="unfreeze"' not in page
    assert 'data-mode="' in page
    seeded.add_override(
        Override(kind=OverrideKind.FREEZE, who="ada", why="change window", created_at=T0, expires_at=T0 + timedelta(hours=1))
    )
    page = c.get("/").get_data(as_text=True)
    assert 'data-action="unfreeze"' in page and 'data-action="freeze"' not in page
    assert 'data-mode="frozen"' in page or 'data-mode="no leader"' in page
    assert "frozen every target until 2026" in page and "by ada" in page
    target = c.get("/target/tm-priority").get_data(as_text=True)
    assert 'data-action="unfreeze"' in target and 'data-action="freeze"' not in target


def test_overview_cards_offer_drain_or_restore_and_priority_targets_fail_over(app: Flask, seeded: Store) -> None:
    c, _ = login(app, "otto")
    page = c.get("/").get_data(as_text=True)
    assert page.count('class="control compact card-control" data-action="drain"') == 3
    assert 'data-action="failover" data-target="tm-priority"' in page
    assert 'data-target="tm-weighted"' in page and 'data-action="failover" data-target="tm-weighted"' not in page
    seeded.add_override(Override(kind=OverrideKind.DRAIN, who="otto", why="503s", created_at=T0, region="eastus"))
    page = c.get("/").get_data(as_text=True)
    assert page.count('card-control" data-action="drain"') == 2 and page.count('card-control" data-action="restore"') == 1
    viewer, _ = login(app, "vic")
    page = viewer.get("/").get_data(as_text=True)
    assert "card-control" not in page and "failover-control" not in page and 'data-action="freeze"' not in page


def test_posts_without_the_csrf_token_are_rejected(app: Flask, seeded: Store) -> None:
    c, _token = login(app, "ada")
    form = {"action": "drain", "region": "eastus", "reason": "no token"}
    assert c.post("/actions/execute", data=form).status_code == 403
    assert c.post("/actions/execute", data=dict(form, csrf_token="forged")).status_code == 403
    other, _ = login(app, "otto")
    assert c.post("/actions/execute", data=dict(form, csrf_token=csrf_of(other.get("/").get_data(as_text=True)))).status_code == 403
    assert seeded.overrides() == []


def test_drain_shows_a_preview_then_needs_a_confirm(app: Flask, seeded: Store) -> None:
    c, token = login(app, "otto")
    form = {"csrf_token": token, "action": "drain", "region": "eastus", "target": "", "reason": "eastus 503 storm"}
    r = c.post("/actions/preview", data=form)
    html = r.get_data(as_text=True)
    assert r.status_code == 200
    assert "This will disable eastus in tm-weighted, tm-priority and afd-prod; 2 of 3 stay serving in each" in html
    assert seeded.overrides() == []  # the preview wrote nothing
    digest = re.search(r'name="digest" value="(\w+)"', html).group(1)
    r = c.post("/actions/execute", data=dict(form, digest=digest))
    assert r.status_code == 302 and r.headers["Location"] == "/region/eastus"
    [o] = seeded.active_overrides(T0)
    assert (o.kind, o.region, o.who, o.why) == (OverrideKind.DRAIN, "eastus", "otto", "eastus 503 storm")
    assert "Drain region recorded" in c.get("/region/eastus").get_data(as_text=True)
    assert "eastus 503 storm" in c.get("/timeline").get_data(as_text=True)


def test_a_refused_drain_shows_the_reason_and_only_an_admin_may_force_it(app: Flask, seeded: Store, s: Settings) -> None:
    seed_targets(seeded, s, T0, disabled={"tm-weighted": {"westeurope", "japaneast"}})
    form = {"action": "drain", "region": "eastus", "target": "tm-weighted", "reason": "must go"}
    op, op_token = login(app, "otto")
    html = op.post("/actions/preview", data=dict(form, csrf_token=op_token)).get_data(as_text=True)
    assert "Refused:" in html and "min_serving is 1" in html and "Only an admin can force" in html
    assert "force-button" not in html
    assert op.post("/actions/execute", data=dict(form, csrf_token=op_token)).status_code == 409
    assert op.post("/actions/execute", data=dict(form, csrf_token=op_token, force="1", confirm="eastus")).status_code == 403
    admin, token = login(app, "ada")
    html = admin.post("/actions/preview", data=dict(form, csrf_token=token)).get_data(as_text=True)
    assert 'id="force-button"' in html and 'data-must-equal="eastus"' in html
    digest = re.search(r'name="digest" value="(\w+)"', html).group(1)
    assert admin.post("/actions/execute", data=dict(form, csrf_token=token, force="1", confirm="east", digest=digest)).status_code == 400
    assert seeded.overrides() == []
    assert admin.post("/actions/execute", data=dict(form, csrf_token=token, force="1", confirm="eastus")).status_code == 400  # no digest
    assert seeded.overrides() == []
    r = admin.post("/actions/execute", data=dict(form, csrf_token=token, force="1", confirm="eastus", digest=digest))
    assert r.status_code == 302
    assert seeded.active_overrides(T0)[0].forced


def test_bad_input_on_a_form_is_a_400_naming_the_field(app: Flask) -> None:
    c, token = login(app, "otto")
    r = c.post(
        "/actions/preview",
        data={"csrf_token": token, "action": "pin", "region": "eastus", "target": "tm-weighted", "weight": "lots", "reason": "xyz"},
    )
    assert r.status_code == 400 and "weight: &#39;lots&#39;" in r.get_data(as_text=True)


def test_an_operator_lifts_an_override_from_the_page(app: Flask, seeded: Store) -> None:
    o = seeded.add_override(Override(kind=OverrideKind.FREEZE, who="ada", why="window", created_at=T0))
    c, token = login(app, "otto")
    r = c.post(f"/overrides/{o.id}/lift", data={"csrf_token": token, "reason": "window over", "back": "/target/tm-weighted"})
    assert r.status_code == 302 and r.headers["Location"] == "/target/tm-weighted"
    assert seeded.active_overrides(T0) == []
    assert seeded.events(kinds=["override_lifted"])[0].actor == "otto"


# ---------------------------------------------------------------- JSON API


def test_the_regions_api_reads_no_sparkline_rollups_it_does_not_return(app: Flask, seeded: Store) -> None:
    c = app.test_client()
    h = token_for(seeded, "viewer")
    with statements_run(seeded.engine) as reads:
        body = c.get("/api/v1/regions", headers=h).json
    assert [r["name"] for r in body["regions"]] == ["eastus", "westeurope", "japaneast"]
    assert reads and not [q for q in reads if "probe_rollup" in q]  # the JSON has no charts: the overview's hour of minutes is not read


def test_api_reads_regions_targets_events_and_overrides(app: Flask, seeded: Store) -> None:
    c = app.test_client()
    h = token_for(seeded, "viewer")
    regions = c.get("/api/v1/regions", headers=h).json["regions"]
    assert [r["name"] for r in regions] == ["eastus", "westeurope", "japaneast"]
    assert regions[0]["state"] == "healthy" and regions[0]["success_pct_5m"] == 100.0
    targets = c.get("/api/v1/targets", headers=h).json["targets"]
    assert {t["name"] for t in targets} == {"tm-weighted", "tm-priority", "afd-prod"}
    assert targets[0]["endpoints"][0]["desired"]["enabled"] is True
    assert c.get("/api/v1/events?kind=override&limit=5", headers=h).json == {"events": []}
    assert c.get("/api/v1/overrides?active=true", headers=h).json == {"overrides": []}


def test_api_rejects_bad_query_values_naming_the_field(app: Flask, seeded: Store) -> None:
    c, h = app.test_client(), token_for(seeded, "viewer")
    for query, field, value in (
        ("since=yesterday", "since", "yesterday"),
        ("limit=0", "limit", 0),
        ("limit=x", "limit", "x"),
        ("region=mars", "region", "mars"),
    ):
        r = c.get(f"/api/v1/events?{query}", headers=h)
        assert r.status_code == 400 and r.json["field"] == field and r.json["value"] == value, query
    assert c.get("/api/v1/overrides?active=maybe", headers=h).status_code == 400


def test_api_drain_preview_execute_and_lift_with_a_bearer_token(app: Flask, seeded: Store) -> None:
    c, h = app.test_client(), token_for(seeded, "operator")
    body = {"action": "drain", "region": "eastus", "target": "tm-weighted", "reason": "scripted drain", "expires_in": "30m"}
    r = c.post("/api/v1/overrides", json=dict(body, preview_only=True), headers=h)
    assert r.status_code == 200 and "disable eastus in tm-weighted" in r.json["preview"]["sentence"]
    assert seeded.overrides() == []
    digest = r.json["preview"]["digest"]
    r = c.post("/api/v1/overrides", json=body, headers=h)
    assert r.status_code == 400 and r.json["field"] == "digest"  # nothing is stored without the reviewed preview
    assert seeded.overrides() == []
    r = c.post("/api/v1/overrides", json=dict(body, digest=digest), headers=h)
    assert r.status_code == 201
    [added] = r.json["added"]
    assert added["who"] == "token:script-operator" and added["expires_at"] == (T0 + timedelta(minutes=30)).isoformat()
    [event] = seeded.events(kinds=["override"])
    assert event.actor == "token:script-operator" and event.data["via"] == "token"
    listed = c.get("/api/v1/overrides?active=true", headers=h).json["overrides"]
    assert [o["id"] for o in listed] == [added["id"]] and listed[0]["active"] is True
    assert c.delete(f"/api/v1/overrides/{added['id']}", json={"reason": "done"}, headers=h).status_code == 200
    assert c.delete(f"/api/v1/overrides/{added['id']}", json={"reason": "again"}, headers=h).status_code == 409
    assert seeded.active_overrides(T0) == []


def test_api_errors_are_json_and_name_the_field_and_value(app: Flask, seeded: Store, s: Settings) -> None:
    c, h = app.test_client(), token_for(seeded, "operator")
    r = c.post("/api/v1/overrides", json={"action": "drain", "region": "mars", "reason": "xyz"}, headers=h)
    assert r.status_code == 400 and (r.json["field"], r.json["value"]) == ("region", "mars")
    r = c.post("/api/v1/overrides", data="not json", headers=dict(h, **{"Content-Type": "application/json"}))
    assert r.status_code == 400 and r.json["field"] == "body"
    r = c.post(
        "/api/v1/overrides", json={"action": "failover", "region": "westeurope", "target": "tm-weighted", "reason": "xyz"}, headers=h
    )
    assert r.status_code == 400 and r.json["field"] == "target"
    seed_targets(seeded, s, T0, disabled={"afd-prod": {"westeurope", "japaneast"}})
    r = c.post("/api/v1/overrides", json={"action": "drain", "region": "eastus", "target": "afd-prod", "reason": "xyz"}, headers=h)
    assert r.status_code == 409 and "min_serving" in r.json["reason"] and r.json["preview"]["forceable"] is True
    r = c.post(
        "/api/v1/overrides",
        json={"action": "drain", "region": "eastus", "target": "afd-prod", "reason": "xyz", "force": True, "confirm": "eastus"},
        headers=h,
    )
    assert r.status_code == 403


def test_api_rbac_a_viewer_token_cannot_write(app: Flask, seeded: Store) -> None:
    c, h = app.test_client(), token_for(seeded, "viewer")
    r = c.post("/api/v1/overrides", json={"action": "freeze", "reason": "viewer"}, headers=h)
    assert r.status_code == 403 and r.json["error"] == "forbidden"
    o = seeded.add_override(Override(kind=OverrideKind.FREEZE, who="ada", why="w", created_at=T0))
    assert c.delete(f"/api/v1/overrides/{o.id}", json={"reason": "viewer"}, headers=h).status_code == 403
    assert c.post(f"/api/v1/overrides/{o.id}/lift", json={"reason": "viewer"}, headers=h).status_code == 403


def test_api_with_a_session_cookie_needs_the_csrf_header_to_write(app: Flask, seeded: Store) -> None:
    c, token = login(app, "otto")
    assert c.get("/api/v1/regions").status_code == 200
    body = {"action": "freeze", "target": "tm-weighted", "reason": "via browser"}
    r = c.post("/api/v1/overrides", json=body)
    assert r.status_code == 403 and r.json["error"] == "csrf"
    digest = c.post("/api/v1/overrides", json=dict(body, preview_only=True), headers={"X-CSRF-Token": token}).json["preview"]["digest"]
    assert c.post("/api/v1/overrides", json=dict(body, digest=digest), headers={"X-CSRF-Token": token}).status_code == 201


def test_a_revoked_token_is_refused(app: Flask, seeded: Store) -> None:
    h = token_for(seeded, "admin")
    c = app.test_client()
    assert c.get("/api/v1/regions", headers=h).status_code == 200
    [row] = [seeded.api_token(users.token_hash(h["Authorization"].split()[1]))]
    assert row is not None
    seeded.revoke_api_token(row.id, T0)
    assert c.get("/api/v1/regions", headers=h).status_code == 401


# ---------------------------------------------------------------- PostgreSQL


@pytest.mark.postgres
def test_the_read_model_and_pages_work_on_postgresql(postgres_url: str, s: Settings, clock: FakeClock) -> None:
    from web import readmodel

    cheap_hashing()
    store = open_store(postgres_url, migrate=True)
    try:
        seed_everything(store, s, T0)
        seed_transition(store, T0, "eastus")
        users.add_user(store, "vic", "viewer", PASSWORD, T0)
        view = readmodel.overview(s, store, T0)
        assert [c.state for c in view.cards] == ["healthy"] * 3 and view.banners == []
        assert all(c.stats.probes == 5 * 6 * 2 and c.age_s == 10.0 for c in view.cards)
        for bucket_s in (60, 600, 3600):
            series = queries.rollup_series(store, ["eastus"], T0 - timedelta(minutes=15), bucket_s)["eastus"]
            assert sum(b.count for b in series) == 15 * 6 * 2 and all(b.start % bucket_s == 0 for b in series)
        app = create_app(s, store, {"TESTING": True, "CLOCK": clock, "SECRET_KEY": "x"})
        c, _ = login(app, "vic")
        for path in PAGES:
            assert c.get(path).status_code == 200, path
    finally:
        store.close()
        default_hashing()


def test_every_target_shows_each_regions_share_of_traffic_and_the_target_page_its_24h_history(
    app: Flask, seeded: Store, s: Settings
) -> None:
    seed_targets(seeded, s, T0, disabled={"tm-weighted": {"eastus"}})
    seeded.record_change(
        Change("tm-weighted", "eastus", "aoai-eastus", Field.ENABLED, True, False, "eastus unhealthy"),
        ChangeStatus.APPLIED,
        T0 - timedelta(hours=3),
        fencing_token=4,
    )
    c, _ = login(app, "vic")
    page = c.get("/").get_data(as_text=True)
    assert "westeurope 60%, japaneast 40%" in page  # 300 and 200 over the 500 still enabled
    assert "eastus 100%; standby westeurope then japaneast" in page  # the priority target
    target = c.get("/target/tm-weighted").get_data(as_text=True)
    assert 'class="chart share-history"' in target and "1 applied change(s) in the last 24 h" in target
    assert "from 2026-11-27 09:00:00 UTC: westeurope 60%, japaneast 40%" in target
    assert "eastus 50%, westeurope 30%, japaneast 20%" in target  # before the drain
    token = token_for(seeded, "viewer")
    body = app.test_client().get("/api/v1/targets", headers=token).json
    weighted = next(t for t in body["targets"] if t["name"] == "tm-weighted")
    assert weighted["traffic_share"]["actual"] == {"shares": {"westeurope": 60.0, "japaneast": 40.0}, "standby": []}


def test_incidents_list_page_banner_and_api(app: Flask, seeded: Store) -> None:
    seed_incident(seeded, T0 - timedelta(days=2), healthy=True)
    seed_incident(seeded, T0 - timedelta(minutes=10), healthy=False)
    c, _ = login(app, "vic")
    listing = c.get("/incidents").get_data(as_text=True)
    assert listing.count("data-incident=") == 2
    assert "eastus-20261127T115000Z" in listing and "eastus-20261125T120000Z" in listing
    assert "25 s / 25 s" in listing  # time to detect, mean / p95: first failed probe 25 s before the verdict
    assert "4 s / 4 s" in listing  # time to act
    assert c.get("/incidents?state=open").get_data(as_text=True).count("data-incident=") == 1
    assert c.get("/incidents?outcome=timeout").get_data(as_text=True).count("data-incident=") == 2
    assert c.get("/incidents?region=mars").status_code == 400
    story = c.get("/incident/eastus-20261125T120000Z").get_data(as_text=True)
    for chapter in ("evidence", "verdict", "plan", "writes", "recovery"):
        assert f'data-chapter="{chapter}"' in story
    assert story.count("eastus unhealthy: 3 of 3 failed") == 1  # each reason once, not once per change
    assert "Back in every target at 2026-11-25 12:05:30 UTC (30 s after it was healthy)" in story
    assert c.get("/incident/eastus-20200101T000000Z").status_code == 404
    overview = c.get("/").get_data(as_text=True)
    assert 'data-incident="eastus-20261127T115000Z"' in overview and "Open incident in eastus" in overview
    assert "eastus-20261125T120000Z" not in overview
    h = token_for(seeded, "viewer")
    body = app.test_client().get("/api/v1/incidents?state=open", headers=h).json
    [open_one] = body["incidents"]
    assert open_one["id"] == "eastus-20261127T115000Z" and open_one["open"] and open_one["time_to_act_s"] == 4.0
    assert {w["fencing_token"] for w in open_one["writes"]} == {9}
    one = app.test_client().get("/api/v1/incidents/eastus-20261125T120000Z", headers=h).json
    assert one["time_to_restore_s"] == 30.0 and one["drained_everywhere_at"] == (T0 - timedelta(days=2, seconds=-4)).isoformat()
    assert app.test_client().get("/api/v1/incidents?days=0", headers=h).json["field"] == "days"
    limited = app.test_client().get("/api/v1/incidents?limit=1", headers=h).json
    assert len(limited["incidents"]) == 1 and limited["figures"]["count"] == 2  # the figures count every incident
    assert app.test_client().get("/api/v1/incidents?limit=x", headers=h).json["field"] == "limit"
    assert app.test_client().get("/api/v1/incidents/nope", headers=h).status_code == 404


def test_newcomer_fixes_collecting_sparkline_cost_currency_and_each_plan_reason_once(app: Flask, seeded: Store, clock: FakeClock) -> None:
    c, _ = login(app, "vic")
    clock.at = T0 + timedelta(days=3)  # no rollups in the last hour: nothing to draw yet
    assert "collecting: the last hour fills in" in c.get("/partials/overview").get_data(as_text=True)
    clock.at = T0
    html = c.get("/region/eastus").get_data(as_text=True)
    assert re.search(r'class="probe-cost">\d+\.\d\d USD ', html)
    reason = "eastus unhealthy: 7 of last 10 probes failed (503)"
    changes = tuple(
        Change(t, "eastus", f"aoai-{t}", Field.ENABLED, True, False, reason) for t in ("tm-weighted", "tm-priority", "afd-prod")
    )
    seeded.record_plan(Plan(changes=changes), "worker-1", T0 - timedelta(minutes=1), fencing_token=7)
    timeline = c.get("/timeline?kind=plan").get_data(as_text=True)
    assert timeline.count(reason) == 1
    assert "tm-weighted/eastus enabled -&gt; disabled, tm-priority/eastus enabled -&gt; disabled" in timeline


def test_the_incident_cache_keeps_closed_incidents_and_rereads_the_ones_that_can_change(
    app: Flask, seeded: Store, clock: FakeClock
) -> None:
    seed_incident(seeded, T0 - timedelta(days=2), healthy=True)
    c, _ = login(app, "vic")
    assert c.get("/incidents").get_data(as_text=True).count("data-incident=") == 1
    seed_incident(seeded, T0 - timedelta(minutes=10), healthy=False)
    listing = c.get("/incidents").get_data(as_text=True)
    assert listing.count("data-incident=") == 2 and "(1 open)" in listing
    later = T0 + timedelta(minutes=1)
    seeded.add_transitions([Transition("region", "eastus", HealthStateName.UNHEALTHY, HealthStateName.HEALTHY, "recovered", later)])
    for target in ("tm-weighted", "tm-priority", "afd-prod"):
        seeded.record_change(
            Change(target, "eastus", f"aoai-eastus-{target}", Field.ENABLED, False, True, "back"),
            ChangeStatus.APPLIED,
            later,
            fencing_token=10,
        )
    clock.at = T0 + timedelta(minutes=2)
    listing = c.get("/incidents").get_data(as_text=True)
    assert listing.count("data-incident=") == 2 and "(0 open)" in listing


def test_the_vantage_grid_makes_one_partitioned_prober_obvious(app: Flask, seeded: Store) -> None:
    results = [
        ProbeResult(
            endpoint_id=f"{r}/{e}",
            region=r,
            vantage="vantage-b",
            started_at=T0 - timedelta(seconds=5 * k),
            outcome=Outcome.CONNECT_ERROR,
            error="connection refused",
        )
        for r in REGIONS
        for e in ("gpt-4o", "gpt-4o-mini")
        for k in (1, 2)
    ]
    seeded.add_probe_results(results)
    c, _ = login(app, "vic")
    html = c.get("/").get_data(as_text=True)
    assert html.count('data-vantage="vantage-b" data-state="unhealthy"') == 6  # every endpoint, from one prober
    assert 'data-vantage="test" data-state="healthy"' in html  # the other prober sees them fine
    grid = app.test_client().get("/api/v1/regions", headers=token_for(seeded, "viewer")).json["vantage_grid"]
    assert grid["cells"]["eastus/gpt-4o"]["vantage-b"] == {"state": "unhealthy", "ok": 0, "total": 2, "last": "connect_error"}
    region = c.get("/region/japaneast").get_data(as_text=True)
    assert region.count('data-vantage="vantage-b" data-state="unhealthy"') == 2  # just this region's endpoints


# ---------------------------------------------------------------- liveness checks


def test_a_failed_liveness_check_shows_with_its_reason_age_and_recent_failures(app: Flask, seeded: Store, clock: FakeClock) -> None:
    seed_liveness(seeded, T0)
    c, _ = login(app, "vic")
    for path in ("/", "/region/eastus"):
        html = c.get(path).get_data(as_text=True)
        row = html.split('<tr data-endpoint="eastus/gpt-4o">', 1)[1].split("</tr>", 1)[0]
        assert 'data-liveness="failed"' in row and "liveness connect error, 4 s ago" in row, path
        assert "3 of last 20 failed" in row and 'title="ConnectError: [Errno 111] Connection refused' in row, path
    overview = c.get("/partials/overview").get_data(as_text=True)
    assert 'data-liveness="ok"' in overview.split('<tr data-endpoint="westeurope/gpt-4o">', 1)[1].split("</tr>", 1)[0]
    clock.at = T0 + timedelta(minutes=5)  # the prober still probes but stopped checking: its last check is stale, not news
    seeded.add_probe_results([ProbeResult("eastus/gpt-4o", "eastus", "test", clock.at - timedelta(seconds=2), Outcome.OK)])
    assert "liveness connect error, 5 min ago (stale)" in c.get("/region/eastus").get_data(as_text=True)


def test_liveness_text_from_the_store_is_escaped(app: Flask, seeded: Store) -> None:
    hostile = {"at": T0.isoformat(), "ok": False, "failure": "timeout", "error": "\x1b]0;pwned\x07" + HOSTILE + "\u202e", "status": None}
    seeded.set_flag(FlagKind.LIVENESS, "test", {"endpoints": {"eastus/gpt-4o": hostile}}, T0)
    c, _ = login(app, "vic")
    for path in ("/", "/region/eastus"):
        html = c.get(path).get_data(as_text=True)
        assert "liveness timeout" in html and HOSTILE not in html and "\x1b" not in html and "\u202e" not in html, path
        assert "\\x1b]0;pwned\\x07&lt;script&gt;" in html, path
    [check] = app.test_client().get("/api/v1/regions", headers=token_for(seeded, "viewer")).json["regions"][0]["liveness"]
    assert check["error"] == "\\x1b]0;pwned\\x07" + HOSTILE + "\\u202e"  # JSON escapes the HTML; the control characters are escaped too


def test_api_regions_and_region_carry_the_last_liveness_check_per_endpoint_and_vantage(app: Flask, seeded: Store, clock: FakeClock) -> None:
    seed_liveness(seeded, T0)
    seed_liveness(seeded, T0, vantage="vantage-b", failed=0)
    c, h = app.test_client(), token_for(seeded, "viewer")
    east = c.get("/api/v1/regions", headers=h).json["regions"][0]
    failed = {
        "endpoint": "eastus/gpt-4o",
        "vantage": "test",
        "ok": False,
        "reason": "connect error",
        "failure": "connect_error",
        "status": None,
        "error": "ConnectError: [Errno 111] Connection refused (waiting for response headers)",
        "at": (T0 - timedelta(seconds=4)).isoformat(),
        "age_s": 4.0,
        "stale": False,
        "recent_checks": 20,
        "recent_failed": 3,
    }
    assert east["liveness"] == [
        failed,
        {
            **failed,
            "vantage": "vantage-b",
            "ok": True,
            "reason": "ok",
            "failure": None,
            "status": 200,
            "error": None,
            "recent_checks": 17,
            "recent_failed": 0,
        },
    ]
    one = c.get("/api/v1/regions/eastus", headers=h).json
    assert one["region"]["name"] == "eastus" and one["region"]["liveness"] == east["liveness"]
    assert set(one["vantage_grid"]["vantages"]) == {"test", "vantage-b"}  # a vantage seen only by its liveness checks gets a column
    west = c.get("/api/v1/regions/westeurope", headers=h).json["region"]["liveness"]
    assert [(x["endpoint"], x["vantage"], x["ok"], x["recent_failed"]) for x in west] == [
        ("westeurope/gpt-4o", "test", True, 0),
        ("westeurope/gpt-4o", "vantage-b", True, 0),
    ]
    clock.at = T0 + timedelta(minutes=1)
    assert all(x["stale"] for x in c.get("/api/v1/regions/eastus", headers=h).json["region"]["liveness"])
    r = c.get("/api/v1/regions/mars", headers=h)
    assert r.status_code == 404 and r.json["field"] == "region" and r.json["value"] == "mars"


def test_the_worker_stores_its_liveness_checks_as_one_bounded_summary_that_the_api_shows(app: Flask, s: Settings, seeded: Store) -> None:
    from controlplane.runtime.worker import Worker

    worker = Worker(s, seeded, actuators={}, probe=False)
    for k in range(30):  # 25 good checks, then 5 timeouts: the first failure flips, and is stored at once
        ok = k < 25
        failure = None if ok else LivenessFailure.TIMEOUT
        worker._on_liveness(LivenessResult("eastus/gpt-4o", "eastus", "local", T0 - timedelta(seconds=30 - k), ok, failure=failure))
    worker._writer.shutdown(wait=True)
    [flag] = seeded.flags(FlagKind.LIVENESS)
    assert flag.subject == "local" and len(json.dumps(flag.value)) < 1000  # bounded: counts, not a history
    [check] = app.test_client().get("/api/v1/regions/eastus", headers=token_for(seeded, "viewer")).json["region"]["liveness"]
    assert (check["vantage"], check["ok"], check["reason"], check["recent_failed"], check["recent_checks"]) == (
        "local",
        False,
        "timeout",
        1,
        20,
    )


def test_a_page_or_api_read_makes_all_its_store_calls_on_one_connection(app: Flask, seeded: Store) -> None:
    checkouts: list[object] = []

    def checkout(*args: object) -> None:
        checkouts.append(args[0])

    h = token_for(seeded, "viewer")
    event.listen(seeded.engine, "checkout", checkout)
    try:
        for path in ("/api/v1/regions", "/api/v1/regions/eastus", "/api/v1/incidents"):
            checkouts.clear()
            assert app.test_client().get(path, headers=h).status_code == 200
            assert len(checkouts) == 1, path
    finally:
        event.remove(seeded.engine, "checkout", checkout)
