"""Commands that read or converge state: ``status``, ``plan``, ``apply``, ``history``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from controlplane.cli.common import CommandError, emit, open_checked_store, settings_of, since, utcnow, who, with_config
from controlplane.config import Settings
from controlplane.domain import EventKind
from controlplane.errors import EXIT_FAILED, EXIT_OK, EXIT_REFUSED, EXIT_USAGE

if TYPE_CHECKING:
    from controlplane.domain import EndpointSetting
    from controlplane.engine.health import HealthReport
    from controlplane.runtime.reconcile import Reconciler
    from controlplane.status import SystemStatus
    from controlplane.store import Store


def _health_now(settings: Settings, store: Store) -> HealthReport:
    """Health as the leader would see it now, rebuilt from stored results of every vantage."""
    from controlplane.engine.health import HealthEvaluator
    from controlplane.runtime.worker import warm_horizon

    now = utcnow()
    evaluator = HealthEvaluator.from_results(
        settings, store.latest_results(per_endpoint=settings.health.window, since=now - warm_horizon(settings)), now
    )
    return evaluator.evaluate(now)


def _reconciler(settings: Settings, store: Store, holder: str, lease_ttl_s: float | None = None) -> Reconciler:
    """The CLI's reconciler; under a lease (``apply``), every Azure call is bounded by that lease (ADR 0012)."""
    from controlplane.actuators.factory import build_actuators
    from controlplane.domain import SystemClock
    from controlplane.runtime.leader import LeaseTiming
    from controlplane.runtime.reconcile import Reconciler

    if lease_ttl_s is None:
        return Reconciler(settings, store, build_actuators(settings), SystemClock(), holder, actor=holder)
    timing = LeaseTiming.for_lease(lease_ttl_s, settings.azure.request_timeout)
    actuators = build_actuators(settings, call_s=timing.call_s, user_agent=f"regionguard-{holder}")
    return Reconciler(settings, store, actuators, SystemClock(), holder, actor=holder, call_s=timing.call_s, skew_s=timing.skew_s)


def cmd_status(args: argparse.Namespace) -> int:
    from controlplane.status import read_status

    settings = settings_of(args)
    store = open_checked_store(settings)
    try:
        now = utcnow()
        status = read_status(settings, store, now)
        read_errors = _unresolved_read_errors(settings, store, now)
    finally:
        store.close()
    data = status_json(status)
    data["read_errors"] = read_errors
    text = _status_text(data)
    emit(args, data, _read_errors_text(read_errors, "status shows the last state read").rstrip("\n") + "\n" + text if read_errors else text)
    return EXIT_FAILED if read_errors else EXIT_OK  # the targets' state shown is not what Azure has now


def _unresolved_read_errors(settings: Settings, store: Store, now: Any) -> dict[str, str]:
    """``target`` or ``target/region`` -> the last read error the worker recorded, unless it could read again since."""
    from datetime import timedelta

    from controlplane.domain import EventKind

    latest: dict[tuple[str, str | None], Any] = {}
    for e in store.events(since=now - timedelta(days=7), kinds=[EventKind.READ_ERROR], limit=1000):  # newest first
        if e.target is not None:
            latest.setdefault((e.target, e.region), e)
    names = {t.name for t in settings.targets}
    return {
        f"{target}/{region}" if region else target: e.summary.split(": ", 1)[-1]
        for (target, region), e in sorted(latest.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))
        if target in names and e.severity == "warning"
    }


def _setting_fields(side: str, setting: EndpointSetting | None) -> dict[str, Any]:
    return {
        f"{side}_enabled": setting.enabled if setting else None,
        f"{side}_weight": setting.weight if setting else None,
        f"{side}_priority": setting.priority if setting else None,
    }


def status_json(status: SystemStatus) -> dict[str, Any]:
    """`regionguard status --json`: the status read model, flat for scripts."""
    return {
        "at": status.now.isoformat(),
        "leader": status.leader,
        "regions": [
            {
                "region": r.name,
                "state": r.state.value,
                "score": None if r.score is None else round(r.score, 3),  # an unknown region has no score, not 1.00
                "config_problems": list(r.config_problems),
                "reasons": list(r.reasons) if r.evaluated else ["no health evaluated yet"],
                "last_probe_age_s": None if r.age_s is None else round(r.age_s, 1),
                "stale": r.stale,
                "liveness": [c.to_dict() for c in r.liveness],  # each vantage's last zero-token check per endpoint
            }
            for r in status.regions
        ],
        # the endpoints regionguard has read or decided, by target and region
        "targets": [
            {
                "target": e.target,
                "region": e.region,
                "endpoint": e.endpoint,
                **_setting_fields("actual", e.actual),
                **_setting_fields("desired", e.desired),
                "desired_reason": e.desired_reason,
                "drift": e.drift,
                "write_status": e.write_status,
                "write_error": e.write_error,
                "monitor_status": e.monitor_status,
            }
            for e in sorted((e for t in status.targets for e in t.endpoints if e.known), key=lambda e: (e.target, e.region))
        ],
        "overrides": [
            {
                "id": o.id,
                "kind": o.kind.value,
                "region": o.region,
                "target": o.target,
                "who": o.who,
                "why": o.why,
                "expires_at": o.expires_at.isoformat() if o.expires_at else None,
            }
            for o in status.overrides
        ],
        "panic": {target: p.to_dict() for target, p in status.panics.items()},
        "frozen": [t or "*" for t in status.frozen],
        "config_problems": list(status.config_problems),
        "credentials": [c.to_dict() for c in status.credentials],  # workers whose Azure credential fails
    }


def _status_text(d: dict[str, Any]) -> str:
    lines = [f"leader: {d['leader'] or 'NONE (no worker holds the lease)'}"]
    for target, flag in d["panic"].items():
        lines.append(f"PANIC {target}: {flag.get('reason', flag)}")
    if d["frozen"]:
        lines.append("automation frozen: " + ", ".join("all targets" if t == "*" else t for t in d["frozen"]))
    for p in d["config_problems"]:
        lines.append(f"configuration problem: {p}")
    for c in d["credentials"]:
        down = f"; stepped down at {c['stepped_down_at']}" if c["stepped_down_at"] else ""
        lines.append(
            f"Azure credential failing on worker {c['worker']} since {c['since'] or '?'}: {c['error']}{down} (as of {c['updated_at']})"
        )
    lines.append("")
    lines.append(f"{'REGION':<14} {'STATE':<10} {'SCORE':>5}  {'PROBE AGE':>9}  REASON")
    for r in d["regions"]:
        age = "never" if r["last_probe_age_s"] is None else f"{r['last_probe_age_s']:.0f}s" + (" STALE" if r["stale"] else "")
        score = "-" if r["score"] is None else f"{r['score']:.2f}"
        state = "PROBLEM" if r["state"] == "unknown" and r["config_problems"] else r["state"]  # ours to fix, not "no data"
        lines.append(f"{r['region']:<14} {state:<10} {score:>5}  {age:>9}  {'; '.join(r['reasons'])}")
    lines.extend(_liveness_lines(d["regions"]))
    if d["targets"]:
        lines.append("")
        lines.append(f"{'TARGET':<14} {'REGION':<12} {'ACTUAL':<22} {'DESIRED':<22} NOTE")
        for t in d["targets"]:
            note = "; ".join(
                x
                for x in (
                    f"drift: {t['drift']}" if t["drift"] else "",
                    f"write {t['write_status']}: {t['write_error'] or ''}".strip() if t["write_status"] else "",
                    t["desired_reason"] or "",
                )
                if x
            )
            lines.append(f"{t['target']:<14} {t['region']:<12} {_setting(t, 'actual'):<22} {_setting(t, 'desired'):<22} {note}")
    if d["overrides"]:
        lines.append("")
        lines.append("overrides:")
        for o in d["overrides"]:
            lines.append(
                f"  #{o['id']} {o['kind']} {o['region'] or 'all regions'} in {o['target'] or 'all targets'} by {o['who']}: {o['why']}"
                + (f" (until {o['expires_at']})" if o["expires_at"] else "")
            )
    return "\n".join(lines)


def _liveness_lines(regions: list[dict[str, Any]]) -> list[str]:
    """One line per failing or stale liveness check (ok ones are in ``--json``): on-call sees at a
    glance that an endpoint stopped answering before the paid probes confirm it."""
    out = []
    for r in regions:
        for c in r["liveness"]:
            if c["ok"] and not c["stale"]:
                continue
            recent = f", {c['recent_failed']} of last {c['recent_checks']} failed" if c["recent_checks"] else ""
            out.append(
                f"liveness {r['region']} {c['endpoint']} from {c['vantage']}: {c['reason']}, {c['age_s']:.0f}s ago{recent}"
                + (" STALE" if c["stale"] else "")
            )
    return ["", *out] if out else []


def _setting(row: dict[str, Any], side: str) -> str:
    enabled = row[f"{side}_enabled"]
    if enabled is None:
        return "-"
    parts = ["enabled" if enabled else "DISABLED"]
    if row[f"{side}_weight"] is not None:
        parts.append(f"w={row[f'{side}_weight']}")
    if row[f"{side}_priority"] is not None:
        parts.append(f"p={row[f'{side}_priority']}")
    return " ".join(parts)


def cmd_plan(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    store = open_checked_store(settings)
    try:
        plan, errors = _reconciler(settings, store, f"cli:{who()}").plan_and_read_errors(_health_now(settings, store))
    finally:
        store.close()
    data = {**plan.to_dict(), "read_errors": errors, "complete": not errors}
    emit(args, data, _read_errors_text(errors, "plan") + plan.to_text() if errors else plan.to_text())
    return EXIT_FAILED if errors else EXIT_OK  # a plan without part of Azure is not "nothing to do"


def _read_errors_text(errors: dict[str, str], what: str) -> str:
    """The lines that say a result is incomplete, before the result itself."""
    lines = [f"ERROR: could not read Azure for {len(errors)} target(s)/endpoint(s); this {what} leaves them out:"]
    lines += [f"  {name}: {why}" for name, why in sorted(errors.items())]
    return "\n".join(lines) + "\n"


def cmd_apply(args: argparse.Namespace) -> int:
    from controlplane.runtime.leader import LeaderElector

    settings = settings_of(args)
    store = open_checked_store(settings)
    try:
        ttl = max(30.0, settings.reconcile.deadline * 2)
        elector = LeaderElector(store, holder=f"cli:{who()}", ttl_s=ttl)
        state = elector.tick()
        if not state.leader:
            lease = store.lease()
            raise CommandError(
                f"a worker holds the lease ({lease.holder if lease else None}): it applies the plan itself; use overrides (drain, pin, freeze) to steer it",
                EXIT_REFUSED,
            )
        try:
            tick = _reconciler(settings, store, elector.holder, lease_ttl_s=ttl).reconcile_once(
                _health_now(settings, store), fencing_token=state.token, dry_run=args.dry_run, manual_plan_checksum=args.checksum
            )
        finally:
            elector.release()
    finally:
        store.close()
    data = {
        "plan": tick.plan.to_dict() if tick.plan else None,
        "applied": [c.to_dict() for c in tick.applied],
        "failed": [{"change": c.to_dict(), "code": code, "message": msg} for c, code, msg in tick.failed],
        "refused": tick.refused,
        "dry_run": tick.dry_run,
        "read_errors": tick.read_errors,
    }
    lines = [_read_errors_text(tick.read_errors, "apply").rstrip("\n")] if tick.read_errors else []
    lines += [tick.plan.to_text() if tick.plan else "No changes."]
    lines += [f"applied: {c.describe()}" for c in tick.applied]
    lines += [f"FAILED: {c.describe()}: {code}: {msg}" for c, code, msg in tick.failed]
    if tick.refused:
        lines.append(f"refused: {tick.refused}")
    emit(args, data, "\n".join(lines))
    if tick.refused:
        return EXIT_REFUSED
    return EXIT_FAILED if tick.failed or tick.read_errors else EXIT_OK


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"{text!r} is not between 1 and 10000")
    return value


def cmd_history(args: argparse.Namespace) -> int:
    from controlplane.domain import as_jsonable

    settings = settings_of(args)
    if args.region is not None and args.region not in settings.region_names:
        raise CommandError(f"--region: no region named {args.region!r} (one of {', '.join(settings.region_names)})", EXIT_USAGE)
    if args.target is not None and args.target not in {t.name for t in settings.targets}:
        raise CommandError(f"--target: no target named {args.target!r} (one of {', '.join(t.name for t in settings.targets)})", EXIT_USAGE)
    store = open_checked_store(settings)
    try:
        events = store.events(since=since(args.since), kinds=args.kind or None, region=args.region, target=args.target, limit=args.limit)
    finally:
        store.close()
    data = [as_jsonable(e) for e in events]
    text = "\n".join(f"{e.at:%Y-%m-%d %H:%M:%S} {e.severity:<8} {e.kind:<14} {e.actor:<20} {e.summary}" for e in events) or "no events"
    emit(args, data, text)
    return EXIT_OK


def register(sub: Any) -> None:
    p = with_config(sub.add_parser("status", help="regions, targets desired vs actual, flags, freshness"))
    p.set_defaults(func=cmd_status)

    p = with_config(sub.add_parser("plan", help="what would change now (reads Azure, writes nothing)"))
    p.set_defaults(func=cmd_plan)

    p = with_config(sub.add_parser("apply", help="plan and apply once (only when no worker holds the lease)"))
    p.add_argument("--checksum", default=None, help="refuse unless the plan is the one reviewed with 'plan'")
    p.add_argument("--dry-run", action="store_true")
    p.set_defaults(func=cmd_apply)

    p = with_config(sub.add_parser("history", help="audit trail, newest first"))
    p.add_argument("--since", default=None, help="e.g. 1h, 2d or an ISO time")
    p.add_argument("--kind", action="append", default=[], choices=[k.value for k in EventKind], help="filter by kind (repeatable)")
    p.add_argument("--region", default=None, help="only events about this region")
    p.add_argument("--target", default=None, help="only events about this target")
    p.add_argument("--limit", type=_limit, default=100, help="at most this many events (1-10000, default 100)")
    p.set_defaults(func=cmd_history)
