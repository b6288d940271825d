"""`regionguard demo` end to end, headless: the README's main command does what it says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_demo_region_outage_drains_everywhere_within_20_s_and_restores_without_flapping(tmp_path: Path) -> None:
    report_path = tmp_path / "r.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "controlplane.cli",
            "demo",
            "--scenario",
            "region-outage",
            "--duration",
            "90",  # the upper bound: it stops as soon as the region is back everywhere and stays so
            "--until",
            "recovered",
            "--report",
            str(report_path),
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dashboard at http://127.0.0.1:" in proc.stdout
    report = json.loads(report_path.read_text())
    down, up = report["faults"]
    assert (down["fault"], up["fault"]) == ("down", "none")
    region = down["region"]

    # drained from every target through the fake ARM within 20 s of the fault
    assert set(down["seconds_to_drain_per_target"]) == {"tm-weighted", "tm-priority", "afd-prod", "apim-pool"}
    for target, seconds in down["seconds_to_drain_per_target"].items():
        assert seconds is not None and seconds <= 20, f"{region} not drained from {target} in 20 s: {seconds}"
    assert down["seconds_to_first_azure_write"] is not None and down["seconds_to_first_azure_write"] <= 20

    # nothing before the fault, nothing unexplained, no flapping
    assert report["changes_before_first_fault"] == 0
    assert report["changes_not_explained_by_a_fault"] == []
    assert report["flaps"] == 0

    # restored after recovery, as read back from the fake ARM through the SDK
    for target, seconds in up["seconds_to_restore_per_target"].items():
        assert seconds is not None, f"{region} not restored in {target}"
    for target, state in report["final_state"].items():
        assert state[region]["enabled"] is True, f"{region} still disabled in {target}: {state}"
    enabled_writes = [c for c in report["changes"] if c["region"] == region and c["field"] == "enabled"]
    assert [c["to"] for c in enabled_writes].count(False) == 4 and [c["to"] for c in enabled_writes].count(True) == 4
    # the APIM pool drains as fast as Traffic Manager does: both are written in the same reconcile tick
    drains = down["seconds_to_drain_per_target"]
    assert abs(drains["apim-pool"] - drains["tm-weighted"]) <= 2.5, drains


def test_metrics_after_a_demo_outage_carry_every_series_on_call_needs() -> None:
    """In-process demo: a region goes down, traffic moves, /api/v1/metrics tells the story."""
    import time
    from datetime import UTC, datetime

    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    from controlplane.cli.demo import Demo
    from controlplane.domain import ChangeStatus, Field
    from controlplane.users import create_api_token

    demo = Demo(web_port=0).start()
    try:
        demo.sim.set_fault("eastus", "down")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            drained = [
                c for c in demo.store.changes(status=ChangeStatus.APPLIED, region="eastus") if c.field is Field.ENABLED and c.after is False
            ]
            if len(drained) >= 3:
                break
            time.sleep(0.5)
        assert len(drained) >= 3, "eastus was not drained from all three targets within 30 s"
        # A change is stored as applied the moment its write lands; the tick that wrote it goes on (the
        # target is read back, then the metrics count the tick's changes). The worker holds this lock for
        # a whole tick: once we have it, that tick is over and the metrics below are its.
        assert demo.worker is not None and demo.worker._apply_lock.acquire(timeout=30), "the worker's tick did not end"
        demo.worker._apply_lock.release()
        token = create_api_token(demo.store, "prometheus", "viewer", "test", datetime.now(UTC))
        r = httpx.get(demo.url + "api/v1/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert r.status_code == 200, r.text[:300]
        assert httpx.get(demo.url + "api/v1/metrics", timeout=10).status_code == 401
        samples: dict[str, list] = {}
        for family in text_string_to_metric_families(r.text):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append(sample)

        def value(name: str, **labels: str) -> float:
            hits = [s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
            assert hits, f"no sample {name} {labels}"
            return sum(hits)

        assert value("regionguard_probe_results_total", region="eastus", outcome="connect_error") >= 3
        assert value("regionguard_probe_results_total", region="westeurope", outcome="ok") >= 1
        assert value("regionguard_probe_time_to_first_chunk_seconds_count", region="westeurope") >= 1
        assert value("regionguard_region_state", region="eastus", state="unhealthy") == 1
        assert value("regionguard_region_score", region="westeurope") > 0.5
        assert value("regionguard_target_endpoint_enabled", target="tm-weighted", region="eastus", side="actual") == 0
        assert value("regionguard_target_endpoint_weight", target="afd-prod", region="westeurope", side="desired") >= 1
        assert value("regionguard_changes_total", status="applied") >= 3
        assert value("regionguard_azure_requests_total") >= 3
        assert value("regionguard_leader") == 1
        assert value("regionguard_probe_tokens_total") > 0
        # one region down is no reason to fail open: no target is in panic
        assert sum(s.value for s in samples.get("regionguard_panic", [])) == 0
        # the drains spent Azure write budget, and the gauge says so
        assert demo.settings is not None
        assert 0 <= value("regionguard_write_budget_remaining") < demo.settings.guardrails.write_budget_per_hour
    finally:
        demo.stop()
