"""The soak, shortened for CI: one real worker (``regionguard run``) through 2 simulated hours of faults coming
and going (8 endpoints, time scale 240: about 30 s); its memory, threads, descriptors, sockets, database
connections and every in-memory container stay flat after the warm-up. ``bench/soak.py`` runs it (and the
6-hour version) and explains what is scaled."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.soak import Plan, run

CI = Plan(
    hours=2,
    time_scale=240,
    regions=4,
    deployments=2,
    interval=120,  # simulated seconds: 0.5 s real, and so the probe's deadline
    liveness=120,
    cycle=1200,  # six cycles of the same faults: two warm up, four are judged
    fault_every=240,
    warmup=1 / 3,
    samples=120,
)


@pytest.mark.serial  # simulated hours on the wall clock: a busy neighbour lets the worker fall behind and its windows grow
def test_two_simulated_hours_of_faults_leave_what_the_worker_holds_flat(tmp_path: Path) -> None:
    lines: list[str] = []
    report = run(CI, out=lines.append, workdir=tmp_path)
    output = "\n".join(lines)
    assert report.worker_exit == 0, output
    assert report.faults >= 12 and report.arm_writes > 0, f"the soak drained nothing: it proves nothing\n{output}"
    assert report.verdicts, output
    assert [v.resource for v in report.failed()] == [], output
