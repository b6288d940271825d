"""An API key the config names but the environment lacks: said at check-config, at start, in /readyz, on the region."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.cli import main
from controlplane.config import load_settings
from controlplane.engine.health import HealthEvaluator
from controlplane.metrics import worker_http_app
from controlplane.runtime.worker import Worker
from controlplane.store import open_store
from probes.runner import ProbeRunner
from tests.integration.test_cli import ROOT, _Lines

KEY_ENV = "RG_TEST_UNSET_KEY_7341"


def write(tmp_path: Path, db: str) -> Path:
    data: dict[str, Any] = {
        "regions": [
            {
                "name": "eastus",
                "azure_region": "eastus",
                "endpoints": [
                    {
                        "name": "gpt-4o",
                        "base_url": "http://127.0.0.1:9",
                        "deployment": "gpt-4o",
                        "auth": {"kind": "api_key", "env": KEY_ENV},
                    }
                ],
            }
        ],
        "database": {"url": db},
    }
    path = tmp_path / "regionguard.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_check_config_warns_about_an_unset_key_and_strict_makes_it_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    config = str(write(tmp_path, "sqlite:///" + str(tmp_path / "x.db")))
    assert main(["check-config", config]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("ok:")
    assert f"warning: regions[0].endpoints[0].auth.env: {KEY_ENV} is not set" in err
    assert main(["check-config", "--strict", config]) == 2
    out, err = capsys.readouterr()
    assert f"regions[0].endpoints[0].auth.env: {KEY_ENV} is not set" in err and "Traceback" not in err
    monkeypatch.setenv(KEY_ENV, "a-key")
    assert main(["check-config", "--strict", config]) == 0
    assert "warning" not in capsys.readouterr().err


def _get(app: Any, path: str) -> tuple[str, dict[str, Any]]:
    status: list[str] = []
    body = b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO()}, lambda s, h: status.append(s)))
    return status[0], json.loads(body)


def test_a_worker_without_its_key_is_not_ready_and_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    settings = load_settings(write(tmp_path, "sqlite:///" + str(tmp_path / "w.db")))
    store = open_store(settings.database.url, migrate=True)
    try:
        worker = Worker(settings, store, actuators={})
        status, body = _get(worker_http_app(worker.readiness), "/readyz")
        assert status.startswith("503")
        assert body["checks"]["api_keys"] is False
        assert any(KEY_ENV in r for r in body["checks"]["reasons"])
        ready = Worker(settings, store, actuators={}, environ={KEY_ENV: "a-key"})
        assert ready.readiness()["api_keys"] is True and "reasons" not in ready.readiness()
    finally:
        store.close()


def test_the_region_of_an_endpoint_without_its_key_shows_a_config_problem_not_unknown_with_a_score(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "sqlite:///" + str(tmp_path / "r.db")))
    results = ProbeRunner(settings, environ={}).run_round_sync()
    report = HealthEvaluator.from_results(settings, results).evaluate(results[0].started_at)
    region = report.regions["eastus"]
    assert region.reasons[0].startswith("config problem: gpt-4o: auth_error"), region.reasons
    assert KEY_ENV in region.reasons[0]
    assert report.config_problems and KEY_ENV in report.config_problems[0]


def test_regionguard_run_without_a_key_says_so_loudly_at_start_naming_the_variable_and_the_endpoint(tmp_path: Path) -> None:
    """The real command, stopped once it is up: the problem is the first thing it prints, and /readyz gives the reason."""
    config = write(tmp_path, "sqlite:///" + str(tmp_path / "run.db"))
    environ = {k: v for k, v in os.environ.items() if k != KEY_ENV} | {"PYTHONUNBUFFERED": "1"}
    argv = ["run", "--config", str(config), "--migrate", "--dry-run", "--holder", "no-key", "--health-port", "0", "--lease-ttl", "5"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "controlplane.cli", *argv],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # one stream: what it says, in the order it says it
        text=True,
    )
    try:
        out = _Lines(proc)
        out.wait_for("regionguard worker no-key running")
        loud = [i for i, line in enumerate(out.seen) if line.startswith("CONFIGURATION PROBLEM: ")]
        assert loud, out.seen
        line = out.seen[loud[0]]
        assert KEY_ENV in line and "eastus/gpt-4o" in line and "/readyz" in line, line
        assert loud[0] < len(out.seen) - 1  # said before "running", not buried after it
        health = next(x for x in out.seen if x.startswith("health on http://")).split(" on ", 1)[1]
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(health + "readyz", timeout=5)
        assert refused.value.code == 503
        body = json.loads(refused.value.read())
        assert body["checks"]["api_keys"] is False
        assert any(KEY_ENV in r and "eastus/gpt-4o" in r for r in body["checks"]["reasons"]), body
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert "regionguard worker stopped" in out.rest()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
