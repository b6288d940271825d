"""The dashboard in a real headless Chromium (Debian's /usr/bin/chromium; Playwright never downloads one).

Served by werkzeug on 127.0.0.1 (ephemeral port) from a seeded SQLite store.
Screenshots of the overview and a region page go to artifacts/screenshots/.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from controlplane.config import azure_name
from controlplane.domain import EndpointSetting, HealthStateName, TargetState
from controlplane.engine.strategy import desired_states
from controlplane.store import Store
from tests.conftest import browser_path
from tests.integration.web_seed import (
    PASSWORD,
    cheap_hashing,
    copy_of,
    default_hashing,
    make_template,
    seed_health,
    seed_incident,
    seed_liveness,
    seed_probes,
    settings,
)
from web import create_app

pytestmark = pytest.mark.browser

T0 = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.at = now

    def now(self) -> datetime:
        return self.at


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Store, FakeClock]]:
    cheap_hashing()
    s = settings()
    store = copy_of(make_template(tmp_path, s, T0), tmp_path)
    seed_health(store, T0, {"westeurope": HealthStateName.DEGRADED, "japaneast": HealthStateName.UNHEALTHY})
    seed_probes(store, T0, minutes=3, error_region="japaneast", error="HTTP 503: <html>Service Unavailable</html>")
    clock = FakeClock(T0)
    app = create_app(s, store, {"CLOCK": clock, "SECRET_KEY": "browser-test", "REFRESH_SECONDS": 1})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="web-under-test", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", store, clock
    finally:
        server.shutdown()
        thread.join(timeout=5)
        store.close()
        default_hashing()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = browser_path()  # skips (or fails with REGIONGUARD_REQUIRE_BROWSER=1) when absent
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _page(browser: Any, errors: list[str]) -> Any:
    page = browser.new_context(viewport={"width": 1360, "height": 900}).new_page()
    page.set_default_timeout(10_000)
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: _request_failed(r, errors))
    return page


def _request_failed(request: Any, errors: list[str]) -> None:
    """A failed request is an error, except the live refresh the browser aborts because the page navigates away."""
    if request.failure == "net::ERR_ABORTED" and "/partials/" in request.url:
        return
    errors.append(f"request failed: {request.url} ({request.failure})")


def _login(page: Any, base: str, name: str) -> None:
    page.goto(base + "/")
    assert "/login" in page.url
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("article.card")


def _run_the_strategy(store: Store, now: datetime) -> None:
    """What the worker's tick does before applying: desired state from health + overrides, saved for the dashboard."""
    s = settings()
    rows = store.target_endpoints()
    actual = {
        t.name: TargetState(
            t.name,
            {r.region: r.actual or EndpointSetting(None, None, False) for r in rows if r.target == t.name},
        )
        for t in s.targets
    }
    _, health = store.health()
    for desired in desired_states(s, health, actual, store.active_overrides(now), now):
        t = s.target(desired.target)
        store.save_target_state(t.name, {r: azure_name(t, r) for r in t.endpoints}, None, desired, now)


def test_an_operator_drains_a_region_and_sees_it_on_the_timeline_and_in_the_desired_state(
    browser: Any, served: tuple[str, Store, FakeClock]
) -> None:
    base, store, clock = served
    errors: list[str] = []
    page = _page(browser, errors)
    _login(page, base, "otto")

    cards = page.locator("article.card")
    assert cards.count() == 3
    assert sorted(cards.evaluate_all("els => els.map(e => e.dataset.region)")) == ["eastus", "japaneast", "westeurope"]
    states = {r: page.locator(f"article.card[data-region={r}] .state").inner_text().lower() for r in ("eastus", "westeurope", "japaneast")}
    assert states == {"eastus": "healthy", "westeurope": "degraded", "japaneast": "unhealthy"}

    # the live part refreshes itself without a full reload
    page.evaluate("window.__noReload = true")
    before = page.get_attribute(".live-body", "data-generated")
    clock.at = T0 + timedelta(seconds=5)
    page.wait_for_function("before => document.querySelector('.live-body').dataset.generated !== before", arg=before)
    assert page.evaluate("window.__noReload") is True

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "overview.png"), full_page=True)

    page.click("article.card[data-region=eastus] h2 a")
    page.wait_for_selector("figure.chart")
    assert page.locator("figure.chart").count() == 4
    page.screenshot(path=str(SCREENSHOTS / "region.png"))  # the top: summary and charts

    drain = page.locator("form.control[data-action=drain]")
    drain.locator("input[name=reason]").fill("eastus returns 503s, draining by hand")
    drain.locator("button[type=submit]").click()
    page.wait_for_selector("p.sentence")
    sentence = page.inner_text("p.sentence")
    assert "disable eastus in tm-weighted, tm-priority and afd-prod" in sentence and "2 of 3 stay serving" in sentence
    assert "japaneast still counted as serving but unhealthy" in page.inner_text("section.preview")
    assert store.overrides() == []  # nothing happens before the confirm

    page.click("#confirm-button")
    page.wait_for_selector(".flash-ok")
    assert "Drain region recorded" in page.inner_text(".flash-ok")
    [override] = store.active_overrides(clock.now())
    assert (override.region, override.who, override.why) == ("eastus", "otto", "eastus returns 503s, draining by hand")

    # the worker's strategy turns the override into a desired state; the dashboard shows desired vs actual
    _run_the_strategy(store, clock.now())
    page.goto(base + "/")
    row = page.locator("section.target[data-target=tm-weighted] tr[data-region=eastus]")
    assert row.locator("td.desired").inner_text().startswith("disabled")
    assert row.locator("td.actual").inner_text().startswith("enabled")
    assert "not yet applied" in row.inner_text() and f"drained #{override.id} by otto" in row.inner_text()
    page.screenshot(path=str(SCREENSHOTS / "overview-after-drain.png"), full_page=True)

    page.click("nav a[href='/timeline']")
    item = page.locator("li.item-override").first
    assert f"#{override.id} drain eastus in all targets" in item.inner_text()
    assert "eastus returns 503s, draining by hand" in item.inner_text()
    assert errors == []


def test_a_viewer_sees_no_buttons(browser: Any, served: tuple[str, Store, FakeClock]) -> None:
    base, _, _ = served
    errors: list[str] = []
    page = _page(browser, errors)
    _login(page, base, "vic")
    assert page.locator("article.card").count() == 3
    for path in ("/", "/region/eastus", "/target/tm-priority"):
        page.goto(base + path)
        assert page.locator("form.control").count() == 0, path
        assert page.locator("form.lift").count() == 0, path
        assert page.locator("button", has_text="Drain").count() == 0, path
        assert page.locator("form.card-control, form.failover-control, section.automation form").count() == 0, path
    assert errors == []


def _no_horizontal_scroll(page: Any) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"))


def test_on_call_drains_from_the_overview_card_fails_over_and_freezes_from_the_top(
    browser: Any, served: tuple[str, Store, FakeClock]
) -> None:
    base, store, clock = served
    errors: list[str] = []
    page = _page(browser, errors)
    page.set_viewport_size({"width": 1280, "height": 800})
    _login(page, base, "otto")

    strip = page.locator("section.automation")
    assert strip.get_attribute("data-mode") in ("active", "no leader")
    assert "vantages:" in strip.inner_text()
    assert strip.locator("form[data-action=freeze]").count() == 1 and strip.locator("form[data-action=unfreeze]").count() == 0
    # the card's control is on screen without scrolling at 1280 x 800
    drain = page.locator("article.card[data-region=eastus] form.card-control[data-action=drain]")
    assert drain.bounding_box()["y"] < 800

    drain.locator("input[name=reason]").fill("eastus returns 503s")
    drain.locator("button[type=submit]").click()
    page.wait_for_selector("p.sentence")
    assert "disable eastus" in page.inner_text("p.sentence")
    page.click("#confirm-button")
    page.wait_for_selector(".flash-ok")
    page.wait_for_load_state("load")  # a navigation while app.js still loads would abort it
    [override] = store.active_overrides(clock.now())
    assert (override.kind.value, override.region, override.why) == ("drain", "eastus", "eastus returns 503s")

    page.goto(base + "/")
    card = page.locator("article.card[data-region=eastus]")
    assert card.locator("form.card-control[data-action=restore]").count() == 1
    assert card.locator("form.card-control[data-action=drain]").count() == 0

    failover = page.locator("form.failover-control[data-target=tm-priority]")
    failover.locator("select[name=region]").select_option("westeurope")
    failover.locator("input[name=reason]").fill("move traffic off eastus")
    failover.locator("button[type=submit]").click()
    page.wait_for_selector("p.sentence")
    assert "westeurope" in page.inner_text("p.sentence")
    page.click("#confirm-button")
    page.wait_for_selector(".flash-ok")
    page.wait_for_load_state("load")
    assert any(o.kind.value == "failover" and o.region == "westeurope" for o in store.active_overrides(clock.now()))

    page.goto(base + "/")
    freeze = page.locator("section.automation form[data-action=freeze]")
    freeze.locator("input[name=reason]").fill("change window")
    freeze.locator("input[name=expires_in]").fill("30m")
    freeze.locator("button[type=submit]").click()
    page.wait_for_selector("#confirm-button")
    page.click("#confirm-button")
    page.wait_for_selector(".flash-ok")
    page.wait_for_load_state("load")
    page.goto(base + "/")
    strip = page.locator("section.automation")
    assert strip.get_attribute("data-mode") in ("frozen", "no leader")
    assert "frozen every target until" in strip.inner_text() and "by otto" in strip.inner_text()
    assert strip.locator("form[data-action=freeze]").count() == 0 and strip.locator("form[data-action=unfreeze]").count() == 1

    # typing a reason pauses the live refresh instead of wiping it
    strip.locator("form[data-action=unfreeze] input[name=reason]").fill("window over")
    clock.at = clock.at + timedelta(seconds=5)
    page.wait_for_function("() => document.getElementById('refresh-status').textContent.includes('paused')")
    assert page.locator("section.automation form[data-action=unfreeze] input[name=reason]").input_value() == "window over"
    assert _no_horizontal_scroll(page)
    assert errors == []


def test_the_overview_and_region_page_fit_a_phone(browser: Any, served: tuple[str, Store, FakeClock]) -> None:
    base, store, _ = served
    seed_liveness(store, T0, region="japaneast")
    errors: list[str] = []
    page = _page(browser, errors)
    page.set_viewport_size({"width": 390, "height": 844})
    _login(page, base, "otto")
    assert _no_horizontal_scroll(page)
    assert page.locator("section.automation").is_visible()
    assert page.locator("details.vantage-grid td.vcell[data-vantage=test]").count() == 6
    page.wait_for_load_state("load")
    page.goto(base + "/region/japaneast")
    assert _no_horizontal_scroll(page)
    failed = page.locator("tr[data-endpoint='japaneast/gpt-4o'] td.vcell[data-vantage=test] .live")
    assert failed.is_visible() and failed.inner_text() == "liveness connect error, 4 s ago\n3 of last 20 failed"
    # state, reason and controls come before the charts; the long tables are collapsed
    controls_y = page.locator("section.controls").bounding_box()["y"]
    assert page.locator("section.region-summary").bounding_box()["y"] < controls_y < page.locator("section.charts").bounding_box()["y"]
    assert page.locator("details.collapsible:not([open])").count() >= 2
    page.click("details.collapsible summary:has-text('Recent probes')")
    assert page.locator("table.probes").is_visible()
    page.wait_for_load_state("load")
    page.goto(base + "/target/tm-weighted")
    assert page.locator(".shares[data-target=tm-weighted] svg.share-bar").first.is_visible()
    assert page.locator("figure.share-history svg").is_visible()
    assert _no_horizontal_scroll(page)
    assert errors == []


def test_an_open_incident_banner_leads_to_its_story_and_the_list_filters(browser: Any, served: tuple[str, Store, FakeClock]) -> None:
    base, store, _ = served
    seed_incident(store, T0 - timedelta(days=3), healthy=True)
    seed_incident(store, T0 - timedelta(minutes=10), healthy=False)
    for name, size in (("vic", {"width": 1280, "height": 800}), ("otto", {"width": 390, "height": 844})):
        errors: list[str] = []
        page = _page(browser, errors)
        page.set_viewport_size(size)
        _login(page, base, name)
        banner = page.locator("p.banner-incident")
        assert banner.count() == 1 and "Open incident in eastus" in banner.inner_text()
        banner.locator("a").click()
        page.wait_for_selector("ol.story")
        assert [c.get_attribute("data-chapter") for c in page.locator("li.chapter").all()] == [
            "evidence",
            "verdict",
            "plan",
            "writes",
            "recovery",
        ]
        assert "Not recovered yet." in page.inner_text("li.chapter[data-chapter=recovery]")
        assert _no_horizontal_scroll(page)
        page.click("nav a[href='/incidents']")
        assert page.locator("tr[data-incident]").count() == 2
        page.select_option("select[name=state]", "closed")
        page.click("form.filters button[type=submit]")
        page.wait_for_url("**state=closed**")
        assert page.locator("tr[data-incident]").count() == 1
        assert page.locator("form.control, button.danger").count() == 0  # the incident pages carry no controls
        assert _no_horizontal_scroll(page)
        assert errors == [], name
