"""The simulated network: what a probe sees of an endpoint under the faults in
force, with the timeline's noise. The only other thing replay simulates is time.

It turns the fault model (``simulator.faults``) into a classified
:class:`~controlplane.domain.ProbeResult` with the config's timeout and slow
limits, and says how long the probe took (so its result arrives then).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from controlplane.config import Settings
from controlplane.domain import LivenessFailure, LivenessResult, Outcome, ProbeResult
from controlplane.replay.timeline import Baseline, Noise
from simulator.faults import Fault, choose_status, fault_fires


class ProbeModel:
    """What a probe from ``vantage`` sees of an endpoint under the faults in force. Pure but for ``rng``."""

    def __init__(self, settings: Settings, baseline: Baseline, noise: Noise, rng: random.Random) -> None:
        self.s = settings
        self.base = baseline
        self.noise = noise
        self.rng = rng
        self.timeout_ms = settings.probe.timeout * 1000.0
        self.tokens = settings.probe.max_tokens

    def _jitter(self) -> float:
        j = self.noise.jitter_ms
        return self.rng.uniform(-j, j) if j else 0.0

    def probe(self, eid: str, region: str, vantage: str, started: datetime, faults: Mapping[str, Fault]) -> tuple[ProbeResult, float]:
        """(result, seconds until the result is known)."""
        rng = self.rng
        fired = {k: f for k, f in faults.items() if k != "slow" and fault_fires(f, vantage, rng)}
        slow = faults.get("slow")
        if slow is not None and not fault_fires(slow, vantage, rng):
            slow = None
        lost = self.noise.loss > 0 and rng.random() < self.noise.loss
        base: dict[str, Any] = {"endpoint_id": eid, "region": region, "vantage": vantage, "started_at": started}
        timeout_s = self.timeout_ms / 1000.0
        if lost:
            return ProbeResult(**base, outcome=Outcome.TIMEOUT, total_ms=self.timeout_ms, error="probe lost (replay noise)"), timeout_s
        if "down" in fired:
            return ProbeResult(**base, outcome=Outcome.CONNECT_ERROR, error="connection refused (replay fault: down)"), 0.01
        if "hang" in fired:
            return ProbeResult(**base, outcome=Outcome.TIMEOUT, total_ms=self.timeout_ms, error="no answer (replay fault: hang)"), timeout_s
        if "auth" in fired:
            return ProbeResult(**base, outcome=Outcome.AUTH_ERROR, status_code=401, error="401 (replay fault: auth)"), 0.05
        limit = self.base.limit_tokens
        throttle = faults.get("throttle")
        headroom = (
            self.base.headroom * (1.0 - throttle.rate)
            if throttle is not None and throttle.applies_to_vantage(vantage)
            else self.base.headroom
        )
        if "throttle" in fired:
            f = fired["throttle"]
            return (
                ProbeResult(
                    **base,
                    outcome=Outcome.THROTTLED,
                    status_code=429,
                    retry_after_ms=int(f.retry_after_s * 1000),
                    limit_tokens=limit,
                    remaining_tokens=0,
                    error="429 (replay fault: throttle)",
                ),
                0.05,
            )
        if "error" in fired:
            status = choose_status(fired["error"], rng)
            return ProbeResult(**base, outcome=Outcome.SERVER_ERROR, status_code=status, error=f"{status} (replay fault: error)"), 0.1
        ttft = max(1.0, self.base.ttft_ms + self._jitter())
        per_token = max(0.0, self.base.per_token_ms + self._jitter() / 10.0)
        if slow is not None:
            if slow.ttft_ms is not None:
                ttft = slow.ttft_ms
            elif slow.multiplier is not None:
                ttft *= slow.multiplier
            if slow.multiplier is not None:
                per_token *= slow.multiplier
        total = ttft + per_token * self.tokens
        if ttft >= self.timeout_ms or total >= self.timeout_ms:
            return ProbeResult(
                **base, outcome=Outcome.TIMEOUT, status_code=200, total_ms=self.timeout_ms, error="deadline passed while streaming"
            ), timeout_s
        outcome = Outcome.OK
        if "truncate" in fired:
            outcome = Outcome.TRUNCATED
        elif "bad_content" in fired:
            outcome = Outcome.BAD_CONTENT
        elif "content_filter" in fired:
            outcome = Outcome.CONTENT_FILTERED
        elif ttft > self.s.probe.slow_ttft * 1000.0 or total > self.s.probe.slow_total * 1000.0:
            outcome = Outcome.SLOW
        result = ProbeResult(
            **base,
            outcome=outcome,
            status_code=200,
            headers_ms=min(ttft, 50.0),
            ttft_ms=round(ttft, 1),
            total_ms=round(total, 1),
            output_chunks=self.tokens,
            completion_tokens=self.tokens,
            finished=outcome is not Outcome.TRUNCATED,
            finish_reason="content_filter" if outcome is Outcome.CONTENT_FILTERED else "stop",
            limit_tokens=limit,
            remaining_tokens=int(limit * headroom),
        )
        return result, total / 1000.0

    def liveness(self, eid: str, region: str, vantage: str, started: datetime, faults: Mapping[str, Fault]) -> tuple[LivenessResult, float]:
        """(a liveness check's result, seconds until it is known): the models list sees the region's
        front end -- down, hang, error (and auth, an answer: alive) -- and the timeline's loss; not the
        model's faults (throttle, slow, wrong answers), as :mod:`simulator.llm` serves it."""
        rng = self.rng
        base: dict[str, Any] = {"endpoint_id": eid, "region": region, "vantage": vantage, "started_at": started}
        timeout_s = min(self.s.probe.liveness_timeout, self.s.probe.timeout)
        if self.noise.loss > 0 and rng.random() < self.noise.loss:
            return LivenessResult(**base, ok=False, error="check lost (replay noise)", failure=LivenessFailure.TIMEOUT), timeout_s
        fired = {k: f for k, f in faults.items() if k in ("down", "hang", "error", "auth") and fault_fires(f, vantage, rng)}
        if "down" in fired:
            return LivenessResult(
                **base, ok=False, error="connection refused (replay fault: down)", failure=LivenessFailure.CONNECT_ERROR
            ), 0.01
        if "hang" in fired:
            return LivenessResult(**base, ok=False, error="no answer (replay fault: hang)", failure=LivenessFailure.TIMEOUT), timeout_s
        if "auth" in fired:
            return LivenessResult(**base, ok=True, status_code=401, latency_ms=30.0), 0.03
        if "error" in fired:
            status = choose_status(fired["error"], rng)
            return LivenessResult(
                **base, ok=False, status_code=status, error=f"HTTP {status} from the models list", failure=LivenessFailure.SERVER_ERROR
            ), 0.05
        latency = max(5.0, 40.0 + self._jitter())
        return LivenessResult(**base, ok=True, status_code=200, latency_ms=round(latency, 1)), latency / 1000.0
