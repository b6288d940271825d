"""A result the health engine cannot read is a problem on that endpoint, never an exception and never "unknown"."""

from __future__ import annotations

from dataclasses import replace

from controlplane.domain import HealthStateName as H
from controlplane.engine.health import HealthEvaluator
from tests.fakes import at, make_settings, probe_result

EAST = "eastus/gpt-4o"
WEST = "westeurope/gpt-4o"


def test_a_result_that_cannot_be_evaluated_marks_its_endpoint_with_a_problem_and_spares_the_others() -> None:
    west_ok = [probe_result(WEST, "ok", 30.0 * i) for i in range(5)]
    unreadable = replace(probe_result(EAST, "ok", 100.0), started_at=at(100.0).replace(tzinfo=None))  # a naive time
    ev = HealthEvaluator.from_results(make_settings(), [*west_ok, unreadable])
    report = ev.evaluate(at(150.0))
    east, west = report.endpoints[EAST], report.endpoints[WEST]
    assert west.state is H.HEALTHY
    assert east.config_problem and "cannot be evaluated" in east.config_problem
    assert "cannot be evaluated" in east.reason and east.reason != "no probe results yet"
    assert any("cannot be evaluated" in p for p in report.config_problems)
    assert report.regions["eastus"].reasons[0].startswith("config problem: gpt-4o: probe results cannot be evaluated")


def test_a_readable_result_afterwards_clears_the_problem() -> None:
    ev = HealthEvaluator(make_settings())
    ev.observe(replace(probe_result(EAST, "ok", 0.0), started_at=None))  # type: ignore[arg-type]  # a result without a start time, on purpose
    assert ev.evaluate(at(1.0)).endpoints[EAST].config_problem
    for i in range(3):
        ev.observe(probe_result(EAST, "ok", 10.0 + 30.0 * i))
    report = ev.evaluate(at(80.0))
    assert report.endpoints[EAST].config_problem is None
    assert report.endpoints[EAST].state is H.HEALTHY
