"""What probing costs: tokens per probe (from recorded usage) and per month.

Each probe's ``prompt_tokens`` / ``completion_tokens`` come from the stream's
usage chunk. The monthly estimate multiplies the average tokens of the
recorded probes of an endpoint by the probes one vantage sends at the normal
interval, priced at the endpoint's ``pricing`` (per 1M input/output tokens).
Confirmation probes while the evidence is undecided add to this; failed
probes (429, 5xx) are usually not billed. Both are ignored: the figure is
the steady-state cost of one prober.

The liveness checks between LLM probes (``probe.liveness_interval``, the
data plane's models list) cost no tokens: they are counted per month and
priced at 0, on the first endpoint of each Azure OpenAI resource (one check
serves every deployment on it).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from controlplane.config import Settings
from controlplane.domain import ProbeResult, endpoint_id
from controlplane.engine.cadence import LivenessGroups

HOURS_PER_MONTH = 730.0  # Azure pricing's month
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600.0
ASSUMED_PROMPT_TOKENS = 15  # "Reply with only the number NNNN" plus chat framing, when nothing was measured


@dataclass(frozen=True, slots=True)
class CostEstimate:
    endpoint_id: str
    probes_per_month: float
    prompt_tokens_per_probe: float
    completion_tokens_per_probe: float
    tokens_per_month: float
    cost_per_month: float  # in the currency of the endpoint's pricing
    measured: bool  # token figures from recorded usage (False: assumed from the prompt and max_tokens)
    liveness_checks_per_month: float = 0.0  # zero-token models-list requests: they cost nothing

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def probe_tokens(result: ProbeResult) -> int:
    """Tokens one probe used (0 when the service reported no usage)."""
    return (result.prompt_tokens or 0) + (result.completion_tokens or 0)


def _average_usage(results: Iterable[ProbeResult]) -> dict[str, tuple[float, float]]:
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for r in results:
        if r.prompt_tokens is None and r.completion_tokens is None:
            continue
        acc = sums[r.endpoint_id]
        acc[0] += r.prompt_tokens or 0
        acc[1] += r.completion_tokens or 0
        acc[2] += 1
    return {eid: (p / n, c / n) for eid, (p, c, n) in sums.items()}


def estimate_monthly(settings: Settings, results: Iterable[ProbeResult] = ()) -> dict[str, CostEstimate]:
    """Per endpoint id: probes, tokens and cost per month for one prober."""
    usage = _average_usage(results)
    probes_per_month = SECONDS_PER_MONTH / settings.probe.interval
    liveness = SECONDS_PER_MONTH / settings.probe.liveness_interval if settings.probe.liveness_interval > 0 else 0.0
    checkers = LivenessGroups.of(settings)
    out: dict[str, CostEstimate] = {}
    for region in settings.regions:
        for ep in region.endpoints:
            eid = endpoint_id(region.name, ep.name)
            measured = eid in usage
            prompt, completion = usage.get(eid, (float(ASSUMED_PROMPT_TOKENS), float(settings.probe.max_tokens)))
            per_probe_cost = (prompt * ep.pricing.input_per_1m + completion * ep.pricing.output_per_1m) / 1_000_000
            out[eid] = CostEstimate(
                endpoint_id=eid,
                probes_per_month=probes_per_month,
                prompt_tokens_per_probe=prompt,
                completion_tokens_per_probe=completion,
                tokens_per_month=probes_per_month * (prompt + completion),
                cost_per_month=probes_per_month * per_probe_cost,
                measured=measured,
                liveness_checks_per_month=liveness if eid in checkers else 0.0,
            )
    return out


def render_costs(estimates: dict[str, CostEstimate], currency: str = "USD") -> list[str]:
    """One line per endpoint, for the CLI."""
    lines = []
    for e in estimates.values():
        basis = "measured" if e.measured else "assumed"
        lines.append(
            f"{e.endpoint_id}: {e.probes_per_month:,.0f} probes/month, "
            f"{e.prompt_tokens_per_probe:.1f}+{e.completion_tokens_per_probe:.1f} tokens/probe ({basis}), "
            f"{e.tokens_per_month:,.0f} tokens/month, {e.cost_per_month:.2f} {currency}/month"
            + (f"; {e.liveness_checks_per_month:,.0f} liveness checks/month at 0 tokens" if e.liveness_checks_per_month else "")
        )
    return lines
