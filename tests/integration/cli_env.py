"""Shared fixtures for the CLI tests: a config file on disk, a fake ARM seeded from it, a migrated SQLite store.

The config is the demo's (``controlplane.cli.demo.demo_config``: three regions,
two deployments each, a weighted and a priority Traffic Manager profile, a
Front Door Standard/Premium origin group and an APIM pool) with sections replaced as a test
needs. Commands run in-process through ``controlplane.cli.main`` with pytest's
``capsys``; the store stays open so a test can seed rows (health, actual
target state, leases) and read back what a command stored.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.cli import main
from controlplane.cli.demo import demo_config
from controlplane.config import Settings, azure_name, parse_settings
from controlplane.domain import EndpointHealth, EndpointSetting, HealthStateName, Outcome, ProbeResult, RegionHealth, TargetState
from controlplane.store import Store, open_store
from simulator.arm import WRITE_METHODS, FakeArm
from simulator.arm_faults import LoggedRequest

REGIONS = ("eastus", "westeurope", "japaneast")
DEPLOYMENTS = ("gpt-4o", "gpt-4o-mini")
USER = "oncall-test"  # REGIONGUARD_USER: the CLI acts as cli:<user>
ACTOR = f"cli:{USER}"
# Nothing listens on port 9 of the loopback: probes get a quick connection refused.
UNUSED_URLS = {r: f"http://127.0.0.1:9/{r}" for r in REGIONS}


@dataclass(frozen=True)
class Run:
    """What one command did: exit code, standard output and standard error."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def config_dict(arm: FakeArm, database_url: str, region_urls: Mapping[str, str] | None = None, **sections: Any) -> dict[str, Any]:
    """The demo config pointed at ``arm`` and ``database_url``; each keyword replaces keys of that section."""
    data = demo_config(dict(region_urls or UNUSED_URLS), list(DEPLOYMENTS), arm, database_url, 0)
    for name, value in sections.items():
        if isinstance(value, Mapping) and isinstance(data.get(name), Mapping):
            data[name] = {**data[name], **value}
        else:
            data[name] = value
    return data


def write_config(path: Path, data: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(copy.deepcopy(dict(data)), sort_keys=False), encoding="utf-8")
    return path


@dataclass
class CliEnv:
    directory: Path
    arm: FakeArm
    settings: Settings
    data: dict[str, Any]
    config: Path
    url: str
    store: Store
    capsys: pytest.CaptureFixture[str]

    def run(self, *argv: str, config: Path | str | None = None) -> Run:
        """``regionguard ARGV --config <this env's file>``, in-process."""
        return self.run_raw(*argv, "--config", str(config or self.config))

    def run_raw(self, *argv: str) -> Run:
        self.capsys.readouterr()
        code = main(list(argv))
        captured = self.capsys.readouterr()
        return Run(code, captured.out, captured.err)

    def other_config(self, name: str, **sections: Any) -> Path:
        """A second config file: this env's with some sections replaced (e.g. a different database)."""
        data = copy.deepcopy(self.data)
        for key, value in sections.items():
            data[key] = {**data[key], **value} if isinstance(value, Mapping) and isinstance(data.get(key), Mapping) else value
        return write_config(self.directory / name, data)

    # ------------------------------------------------------------ the fake ARM

    def arm_writes(self) -> list[LoggedRequest]:
        return [e for e in self.arm.request_log if e.method in WRITE_METHODS]

    def arm_methods(self) -> set[str]:
        return {e.method for e in self.arm.request_log}

    # ------------------------------------------------------------ seeding the store

    def names(self, target: str) -> dict[str, str]:
        t = self.settings.target(target)
        return {region: azure_name(t, region) for region in t.endpoints}

    def baseline(self, target: str, disabled: Sequence[str] = ()) -> TargetState:
        """The target as configured, with ``disabled`` regions turned off."""
        t = self.settings.target(target)
        return TargetState(
            target=target,
            endpoints={
                r: EndpointSetting(weight=ep.weight, priority=ep.priority, enabled=r not in disabled) for r, ep in t.endpoints.items()
            },
        )

    def seed_actual(self, target: str, now: datetime, disabled: Sequence[str] = (), desired: TargetState | None = None) -> None:
        """As if the worker had read ``target`` from Azure (and decided ``desired``)."""
        self.store.save_target_state(target, self.names(target), self.baseline(target, disabled), desired, now)

    def seed_health(self, now: datetime, **regions: tuple[HealthStateName, float, str]) -> None:
        """Saved health per region: ``eastus=(HealthStateName.UNHEALTHY, 0.1, "3 consecutive connect errors")``."""
        endpoint_rows, region_rows = [], []
        for region, (state, score, reason) in regions.items():
            eps = tuple(
                EndpointHealth(endpoint_id=f"{region}/{d}", region=region, state=state, score=score, reason=reason, since=now)
                for d in DEPLOYMENTS
            )
            endpoint_rows.extend(eps)
            region_rows.append(RegionHealth(region=region, state=state, score=score, reasons=(reason,), endpoints=eps, since=now))
        self.store.save_health(endpoint_rows, region_rows, now)

    def seed_probe(self, region: str, at: datetime, outcome: Outcome = Outcome.OK) -> None:
        self.store.add_probe_results(
            [
                ProbeResult(
                    endpoint_id=f"{region}/{d}",
                    region=region,
                    vantage="demo",
                    started_at=at,
                    outcome=outcome,
                    status_code=200,
                    ttft_ms=300.0,
                    total_ms=320.0,
                )
                for d in DEPLOYMENTS
            ]
        )


def migrated_template(directory: Path) -> Path:
    """An empty SQLite database migrated to head, to copy per test (cheaper than migrating each time)."""
    path = directory / "template.db"
    store = open_store("sqlite:///" + str(path), migrate=True)
    with store.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    return path


def make_env(
    directory: Path,
    arm: FakeArm,
    capsys: pytest.CaptureFixture[str],
    region_urls: Mapping[str, str] | None = None,
    template: Path | None = None,
    **sections: Any,
) -> CliEnv:
    """Config file, fake ARM seeded from it, migrated SQLite database; the caller closes ``env.store``."""
    db = directory / "regionguard.db"
    if template is not None:
        shutil.copyfile(template, db)
    url = "sqlite:///" + str(db)
    data = config_dict(arm, url, region_urls, **sections)
    config = write_config(directory / "regionguard.yaml", data)
    settings = parse_settings(data, str(config))
    arm.seed_from_config(settings)
    store = open_store(url, migrate=template is None)
    return CliEnv(directory=directory, arm=arm, settings=settings, data=data, config=config, url=url, store=store, capsys=capsys)


def ago(now: datetime, seconds: float) -> datetime:
    return now - timedelta(seconds=seconds)
