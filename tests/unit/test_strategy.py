"""Desired state: weights from health, priority failover/failback, quota caps, overrides."""

from __future__ import annotations

from controlplane.domain import EndpointSetting
from controlplane.domain import HealthStateName as H
from controlplane.engine.strategy import StrategyMemory, desired_state, desired_states, frozen_by
from tests.fakes import at, make_settings, override, region_health, target_state

NOW = at(1000)


def health(**states):
    """region=state or region=(state, score) or region=RegionHealth."""
    out = {}
    for region, v in states.items():
        if isinstance(v, tuple):
            out[region] = region_health(region, v[0], v[1])
        elif isinstance(v, str | H):
            out[region] = region_health(region, v)
        else:
            out[region] = v
    return out


ALL_OK = {"eastus": "healthy", "westeurope": "healthy", "japaneast": "healthy"}


def weights(ts):
    return {r: (e.enabled, e.weight) for r, e in ts.endpoints.items()}


# ---------------------------------------------------------------- weighted


def test_healthy_regions_get_their_baseline_weight() -> None:
    s = make_settings()
    d = desired_state(s, "tm-weighted", health(**ALL_OK), target_state(s, "tm-weighted", weights={"eastus": 120}), now=NOW)
    assert weights(d) == {"eastus": (True, 500), "westeurope": (True, 300), "japaneast": (True, 200)}
    assert d.reasons["eastus"].startswith("healthy")
    assert d.manual == ()


def test_a_degraded_region_gets_its_baseline_times_its_score() -> None:
    s = make_settings()
    h = health(**{**ALL_OK, "westeurope": ("degraded", 0.4)})
    d = desired_state(s, "tm-weighted", h, target_state(s, "tm-weighted"), now=NOW)
    assert d.endpoints["westeurope"] == EndpointSetting(weight=120, priority=None, enabled=True)
    assert d.reasons["westeurope"].startswith("degraded (score 0.40): weight 120 of 300")


def test_a_degraded_region_keeps_at_least_a_tenth_of_its_weight() -> None:
    s = make_settings()
    h = health(**{**ALL_OK, "japaneast": ("degraded", 0.0)})
    assert desired_state(s, "tm-weighted", h, None, now=NOW).endpoints["japaneast"].weight == 20


def test_small_score_wobbles_are_not_worth_a_write() -> None:
    s = make_settings()
    actual = target_state(s, "tm-weighted", weights={"westeurope": 150})
    h = health(**{**ALL_OK, "westeurope": ("degraded", 0.53)})  # 159: within 5 % of 300
    assert desired_state(s, "tm-weighted", h, actual, now=NOW).endpoints["westeurope"].weight == 150
    h = health(**{**ALL_OK, "westeurope": ("degraded", 0.6)})  # 180: a real move
    assert desired_state(s, "tm-weighted", h, actual, now=NOW).endpoints["westeurope"].weight == 180


def test_an_unhealthy_region_is_disabled_and_its_weight_left_alone() -> None:
    s = make_settings()
    actual = target_state(s, "tm-weighted", weights={"eastus": 333})
    h = health(**{**ALL_OK, "eastus": "unhealthy"})
    d = desired_state(s, "tm-weighted", h, actual, now=NOW)
    assert d.endpoints["eastus"] == EndpointSetting(weight=333, priority=None, enabled=False)
    assert d.reasons["eastus"].startswith("unhealthy")


def test_a_region_without_fresh_data_is_left_as_it_is() -> None:
    s = make_settings()
    actual = target_state(s, "tm-weighted", enabled={"eastus": False}, weights={"eastus": 42})
    d = desired_state(s, "tm-weighted", health(westeurope="healthy", japaneast="healthy"), actual, now=NOW)
    assert d.endpoints["eastus"] == EndpointSetting(weight=42, priority=None, enabled=False)
    assert "no fresh health data" in d.reasons["eastus"]


def test_front_door_keeps_its_configured_priority_in_weighted_routing() -> None:
    s = make_settings(targets=("afd-prod",))
    d = desired_state(s, "afd-prod", health(**ALL_OK), target_state(s, "afd-prod", priorities={"eastus": 3}), now=NOW)
    assert {r: e.priority for r, e in d.endpoints.items()} == {"eastus": 1, "westeurope": 1, "japaneast": 1}


def test_a_near_quota_region_takes_no_more_than_its_headroom_allows() -> None:
    s = make_settings(weights={"eastus": 500, "westeurope": 300, "japaneast": 200})
    h = health(
        eastus="unhealthy",
        westeurope=region_health("westeurope", "healthy", quota_headroom=0.05),
        japaneast="healthy",
    )
    d = desired_state(s, "tm-weighted", h, target_state(s, "tm-weighted"), now=NOW)
    west, japan = d.endpoints["westeurope"].weight, d.endpoints["japaneast"].weight
    # westeurope had 30 % of the traffic: with eastus out it would get 60 %; capped at 30 % x 1.05
    assert west / (west + japan) <= 0.3 * 1.05 + 0.01
    assert japan == 200  # the region that did nothing keeps its weight
    assert "near its quota (5% headroom)" in d.reasons["westeurope"]


def test_no_quota_cap_without_other_capacity() -> None:
    s = make_settings()
    h = health(
        eastus="unhealthy",
        westeurope=region_health("westeurope", "healthy", quota_headroom=0.02),
        japaneast=region_health("japaneast", "healthy", quota_headroom=0.01),
    )
    d = desired_state(s, "tm-weighted", h, target_state(s, "tm-weighted"), now=NOW)
    assert weights(d)["westeurope"] == (True, 300) and weights(d)["japaneast"] == (True, 200)


def test_no_quota_cap_when_its_share_does_not_grow() -> None:
    s = make_settings()
    h = health(**{**ALL_OK, "westeurope": region_health("westeurope", "healthy", quota_headroom=0.02)})
    d = desired_state(s, "tm-weighted", h, target_state(s, "tm-weighted"), now=NOW)
    assert d.endpoints["westeurope"].weight == 300


# ---------------------------------------------------------------- priority


def prio(**kw):
    return make_settings(targets=("tm-priority",), **kw)


def enabled(ts):
    return {r: e.enabled for r, e in ts.endpoints.items()}


def test_priority_target_disables_a_failed_primary_and_keeps_priorities() -> None:
    s = prio()
    h = health(**{**ALL_OK, "eastus": "unhealthy"})
    d = desired_state(s, "tm-priority", h, target_state(s, "tm-priority"), now=NOW)
    assert enabled(d) == {"eastus": False, "westeurope": True, "japaneast": True}
    assert {r: e.priority for r, e in d.endpoints.items()} == {"eastus": 1, "westeurope": 2, "japaneast": 3}
    assert d.reasons["westeurope"].endswith("(serving)")
    assert d.reasons["japaneast"].endswith("(standby)")


def test_a_recovered_primary_waits_for_the_failback_dwell() -> None:
    s = prio(target_options={"failback_dwell": "300s"})
    actual = target_state(s, "tm-priority", enabled={"eastus": False})
    h = health(**{**ALL_OK, "eastus": region_health("eastus", "healthy", since=at(900))})
    d = desired_state(s, "tm-priority", h, actual, now=at(1000))
    assert enabled(d)["eastus"] is False
    assert "failback from westeurope in 3m20s" in d.reasons["eastus"]
    d = desired_state(s, "tm-priority", h, actual, now=at(1200))
    assert enabled(d)["eastus"] is True
    assert d.reasons["eastus"].startswith("failback: healthy for 5m00s")


def test_failback_dwell_falls_back_on_memory_when_health_has_no_since() -> None:
    s = prio(target_options={"failback_dwell": "60s"})
    actual = target_state(s, "tm-priority", enabled={"eastus": False})
    h = health(**{**ALL_OK, "eastus": region_health("eastus", "healthy", since=None)})
    memory = StrategyMemory()
    assert enabled(desired_state(s, "tm-priority", h, actual, now=at(0), memory=memory))["eastus"] is False
    assert enabled(desired_state(s, "tm-priority", h, actual, now=at(61), memory=memory))["eastus"] is True


def test_manual_failback_never_happens_by_itself() -> None:
    s = prio(target_options={"failback": "manual"})
    actual = target_state(s, "tm-priority", enabled={"eastus": False})
    h = health(**{**ALL_OK, "eastus": region_health("eastus", "healthy", since=at(0))})
    d = desired_state(s, "tm-priority", h, actual, now=at(100000))
    assert enabled(d)["eastus"] is False
    assert "failback is manual" in d.reasons["eastus"]


def test_a_recovered_standby_comes_back_at_once() -> None:
    s = prio(target_options={"failback_dwell": "1h"})
    actual = target_state(s, "tm-priority", enabled={"japaneast": False})
    h = health(**{**ALL_OK, "japaneast": region_health("japaneast", "healthy", since=at(999))})
    assert enabled(desired_state(s, "tm-priority", h, actual, now=NOW))["japaneast"] is True


def test_when_nothing_better_serves_a_recovered_primary_comes_back_at_once() -> None:
    s = prio(target_options={"failback_dwell": "1h"})
    actual = target_state(s, "tm-priority", enabled={"eastus": False})
    h = health(eastus=region_health("eastus", "healthy", since=at(999)), westeurope="unhealthy", japaneast="unhealthy")
    assert enabled(desired_state(s, "tm-priority", h, actual, now=NOW))["eastus"] is True


# ---------------------------------------------------------------- overrides


def test_a_drain_override_wins_over_health_and_is_marked_manual() -> None:
    s = make_settings(targets=("tm-weighted", "afd-prod"))
    o = override("drain", "eastus", why="maintenance window")
    ds = desired_states(s, health(**ALL_OK), [target_state(s, "tm-weighted"), target_state(s, "afd-prod")], [o], now=NOW)
    for d in ds:
        assert d.endpoints["eastus"].enabled is False
        assert d.manual == ("eastus",)
        assert d.reasons["eastus"] == "drain eastus in all targets by alice: maintenance window"


def test_an_override_for_one_target_leaves_the_others_alone() -> None:
    s = make_settings(targets=("tm-weighted", "afd-prod"))
    o = override("drain", "eastus", "afd-prod")
    tm, afd = desired_states(s, health(**ALL_OK), [target_state(s, "tm-weighted"), target_state(s, "afd-prod")], [o], now=NOW)
    assert tm.endpoints["eastus"].enabled is True and tm.manual == ()
    assert afd.endpoints["eastus"].enabled is False


def test_maintenance_drains_like_a_drain() -> None:
    s = make_settings()
    d = desired_state(s, "tm-weighted", health(**ALL_OK), target_state(s, "tm-weighted"), [override("maintenance", "japaneast")], now=NOW)
    assert d.endpoints["japaneast"].enabled is False


def test_expired_and_lifted_overrides_are_ignored() -> None:
    s = make_settings()
    expired = override("drain", "eastus", created=0, expires=500)
    d = desired_state(s, "tm-weighted", health(**ALL_OK), target_state(s, "tm-weighted"), [expired], now=NOW)
    assert d.endpoints["eastus"].enabled is True and d.manual == ()


def test_a_pinned_weight_holds_even_when_degraded() -> None:
    s = make_settings()
    h = health(**{**ALL_OK, "eastus": ("degraded", 0.2)})
    d = desired_state(s, "tm-weighted", h, target_state(s, "tm-weighted"), [override("pin", "eastus", weight=700)], now=NOW)
    assert d.endpoints["eastus"].weight == 700
    assert "eastus" in d.manual


def test_a_pinned_priority_swaps_with_its_holder_so_priorities_stay_unique() -> None:
    s = prio()
    d = desired_state(
        s, "tm-priority", health(**ALL_OK), target_state(s, "tm-priority"), [override("pin", "japaneast", priority=1)], now=NOW
    )
    prios = {r: e.priority for r, e in d.endpoints.items()}
    assert prios == {"eastus": 3, "westeurope": 2, "japaneast": 1}
    assert set(d.manual) == {"eastus", "japaneast"}


def test_failover_sends_a_priority_target_to_the_named_region() -> None:
    s = prio()
    d = desired_state(
        s, "tm-priority", health(**ALL_OK), target_state(s, "tm-priority"), [override("failover", "japaneast", "tm-priority")], now=NOW
    )
    assert enabled(d) == {"eastus": False, "westeurope": False, "japaneast": True}
    assert set(d.manual) == {"eastus", "westeurope", "japaneast"}


def test_failover_is_ignored_by_weighted_targets() -> None:
    s = make_settings()
    d = desired_state(s, "tm-weighted", health(**ALL_OK), target_state(s, "tm-weighted"), [override("failover", "japaneast")], now=NOW)
    assert all(enabled(d).values()) and d.manual == ()


def test_freeze_keeps_actual_but_operator_drains_still_apply() -> None:
    s = make_settings()
    actual = target_state(s, "tm-weighted", weights={"eastus": 77})
    h = health(**{**ALL_OK, "westeurope": "unhealthy"})
    ovs = [override("freeze", target="tm-weighted", why="incident 42", created=0), override("drain", "japaneast", created=10)]
    d = desired_state(s, "tm-weighted", h, actual, ovs, now=NOW)
    assert weights(d) == {"eastus": (True, 77), "westeurope": (True, 300), "japaneast": (False, 200)}
    assert d.reasons["westeurope"].startswith("automation frozen (freeze all regions in tm-weighted by alice: incident 42)")
    assert frozen_by(ovs, "tm-weighted", NOW) is ovs[0]
    assert frozen_by(ovs, "afd-prod", NOW) is None


def test_the_newest_override_wins_a_conflict() -> None:
    s = make_settings()
    ovs = [override("pin", "eastus", weight=100, created=0), override("pin", "eastus", weight=900, created=5)]
    d = desired_state(s, "tm-weighted", health(**ALL_OK), target_state(s, "tm-weighted"), list(reversed(ovs)), now=NOW)
    assert d.endpoints["eastus"].weight == 900


def test_now_defaults_to_the_health_report_time() -> None:
    from controlplane.engine.health import HealthEvaluator

    s = make_settings()
    report = HealthEvaluator(s).evaluate(at(5))
    d = desired_state(s, "tm-weighted", report, None)
    assert all(e.enabled for e in d.endpoints.values())
