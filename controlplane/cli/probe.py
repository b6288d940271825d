"""``regionguard probe``: one round of probes now, one line (or JSON record) per endpoint.

What on-call runs first when paged. ``probe_command`` builds the text and the
exit code: 0 when every endpoint answered ``ok``, 1 when any did not, 2 for an
unknown region. The probe runner (httpx) is imported only when a round runs.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from typing import TYPE_CHECKING, Any

from controlplane.cli.common import CommandError, settings_of, with_config
from controlplane.config import Settings
from controlplane.domain import Outcome, ProbeResult, as_jsonable
from controlplane.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from controlplane.textsafe import terminal_safe

if TYPE_CHECKING:
    from probes.runner import ProbeRunner


def probe_command(
    settings: Settings, region: str | None = None, as_json: bool = False, runner: ProbeRunner | None = None
) -> tuple[str, int]:
    """Run one round (of ``region``, or all) and render it; returns (text, exit code)."""
    if region is not None and region not in settings.region_names:
        known = ", ".join(settings.region_names)
        return f"no region named {region!r} (regions: {known})", EXIT_USAGE
    if runner is None:
        from probes.runner import ProbeRunner

        runner = ProbeRunner(settings)
    results = runner.run_round_sync(region)
    code = EXIT_OK if all(r.outcome is Outcome.OK for r in results) else EXIT_FAILED
    if as_json:
        return json.dumps([as_jsonable(r) for r in results], indent=2), code
    return render_text(settings, results), code


def render_text(settings: Settings, results: list[ProbeResult]) -> str:
    from probes.cost import estimate_monthly

    width = max((len(r.endpoint_id) for r in results), default=8)
    lines = [f"{'ENDPOINT':<{width}}  {'OUTCOME':<16} {'STATUS':>6} {'TTFT':>9} {'TOTAL':>9}  DETAILS"]
    lines += [render_line(r, width) for r in results]
    counts = Counter(r.outcome.value for r in results)
    summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
    lines.append(f"{len(results)} endpoint(s) from vantage {settings.probe.vantage}: {summary or 'nothing probed'}")
    costs = estimate_monthly(settings, results)
    total = sum(costs[r.endpoint_id].cost_per_month for r in results)
    lines.append(
        f"probe cost at a {settings.probe.interval:g}s interval: about {total:.2f} {settings.probe.cost_currency}/month for these endpoint(s)"
    )
    return "\n".join(lines)


def render_line(r: ProbeResult, width: int = 24) -> str:
    status = "-" if r.status_code is None else str(r.status_code)
    details = " ".join(_details(r))
    return f"{r.endpoint_id:<{width}}  {r.outcome.value:<16} {status:>6} {_ms(r.ttft_ms):>9} {_ms(r.total_ms):>9}  {details}".rstrip()


def _details(r: ProbeResult) -> list[str]:
    parts: list[str] = []
    if r.remaining_requests is not None or r.limit_requests is not None:
        parts.append(f"requests={_fraction(r.remaining_requests, r.limit_requests)}")
    if r.remaining_tokens is not None or r.limit_tokens is not None:
        parts.append(f"tokens={_fraction(r.remaining_tokens, r.limit_tokens)}")
    fields: list[tuple[str, Any]] = [
        ("utilization", None if r.utilization_pct is None else f"{r.utilization_pct:g}%"),
        ("retry-after", None if r.retry_after_ms is None else f"{r.retry_after_ms}ms"),
        ("x-ms-region", r.region_header),
        ("apim-request-id", r.apim_request_id),
        ("x-request-id", r.request_id),
    ]
    parts += [f"{name}={value}" for name, value in fields if value is not None]
    if r.prompt_tokens is not None or r.completion_tokens is not None:
        parts.append(f"usage={r.prompt_tokens or 0}+{r.completion_tokens or 0}")
    if r.error:
        parts.append(f"error: {r.error}")
    if r.anomalies:
        parts.append(f"(anomalies: {r.anomalies})")
    return parts


def _fraction(remaining: int | None, limit: int | None) -> str:
    return f"{'?' if remaining is None else remaining}/{'?' if limit is None else limit}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}ms"


def cmd_probe(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    if args.region and args.region not in settings.region_names:
        raise CommandError(f"--region: no region named {args.region!r} (one of {', '.join(settings.region_names)})", EXIT_USAGE)
    text, code = probe_command(settings, region=args.region, as_json=args.json)
    print(text if args.json else terminal_safe(text))
    return code


def register(sub: Any) -> None:
    p = with_config(sub.add_parser("probe", help="one round of probes now, printed per endpoint"))
    p.add_argument("--region", default=None)
    p.set_defaults(func=cmd_probe)
