"""`regionguard` command line: the only place that prints.

Every command that reads state takes ``--config`` (default: ``$REGIONGUARD_CONFIG``
or ``regionguard.yaml``) and most take ``--json``. Errors are one clear line on
stderr and a non-zero exit code, never a traceback:
exit 2 = bad input or config, 3 = refused (guardrail, frozen, checksum),
4 = database unavailable, 1 = anything else that failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from controlplane.config import ConfigError, Settings, load_settings, summary

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED, EXIT_DB = 0, 1, 2, 3, 4

log = logging.getLogger(__name__)


class CommandError(Exception):
    """A failure with a message for on-call and an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def _default_config() -> str:
    return os.environ.get("REGIONGUARD_CONFIG", "regionguard.yaml")


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, default=str))
    else:
        print(text)


# ---------------------------------------------------------------- commands


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = load_settings(args.file)
    print(summary(settings))
    return EXIT_OK


def cmd_db(args: argparse.Namespace) -> int:
    from controlplane.store import db

    settings = _settings(args)
    url = settings.database.url
    try:
        if args.db_command == "upgrade":
            db.upgrade(url, args.revision)
            print(f"database at {db.current_revision(url)} (head {db.head_revision()})")
        elif args.db_command == "downgrade":
            db.downgrade(url, args.revision)
            print(f"database at {db.current_revision(url) or 'base'}")
        else:
            current = db.current_revision(url)
            head = db.head_revision()
            _emit(
                args,
                {"current": current, "head": head},
                f"current {current or 'none'} (head {head}){'' if current == head else ' -- run: regionguard db upgrade'}",
            )
    except Exception as exc:
        raise _db_error(exc) from None
    return EXIT_OK


def _db_error(exc: BaseException) -> CommandError:
    from sqlalchemy.exc import SQLAlchemyError

    from controlplane.store import DatabaseUnavailable

    if isinstance(exc, DatabaseUnavailable):
        return CommandError(str(exc), EXIT_DB)
    if isinstance(exc, SQLAlchemyError):
        orig = getattr(exc, "orig", None) or exc
        return CommandError(f"database unavailable: {type(orig).__name__}: {str(orig).splitlines()[0][:200] if str(orig) else ''}", EXIT_DB)
    return CommandError(f"{type(exc).__name__}: {exc}", EXIT_FAILED)


def _store(settings: Settings):  # type: ignore[no-untyped-def]
    """Open the configured database and check it is reachable and migrated."""
    from controlplane.store import Store

    store = Store(settings.database.url)
    try:
        store.check()
    except Exception as exc:
        store.close()
        raise _db_error(exc) from None
    return store


def _now():  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.now(UTC)


def _since(text: str | None):  # type: ignore[no-untyped-def]
    """'1h', '30m', '2d' (ago) or an ISO 8601 timestamp -> aware datetime."""
    from datetime import UTC, datetime, timedelta

    from controlplane.config import parse_duration

    if not text:
        return None
    try:
        return _now() - timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(f"--since/--until: {text!r} is neither a duration (1h, 30m) nor an ISO 8601 time", EXIT_USAGE) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


# ---------------------------------------------------------------- running things


def cmd_run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from controlplane.logging_setup import configure_from_settings
    from controlplane.metrics import Metrics
    from controlplane.notify import Notifier
    from controlplane.runtime.worker import Worker
    from controlplane.store import open_store

    settings = _settings(args)
    for handler in list(logging.getLogger().handlers):  # replace main()'s plain handler
        logging.getLogger().removeHandler(handler)
    configure_from_settings(settings.logging)
    for noisy in ("httpx", "apscheduler.executors", "apscheduler.scheduler", "waitress.queue"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        store = open_store(settings.database.url, migrate=args.migrate)
        store.check()
    except Exception as exc:
        raise _db_error(exc) from None
    metrics = Metrics()
    notifier = Notifier(settings, store=store, metrics=metrics) if settings.notifications.channels else None
    worker = Worker(
        settings, store, holder=args.holder, notifier=notifier, metrics=metrics, lease_ttl_s=args.lease_ttl, dry_run=args.dry_run
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: stop.set())
    servers = []
    if args.health_port is not None:
        servers.append(_serve(_worker_http(worker, metrics, store), settings.web.host, args.health_port, "health"))
    if args.with_web:
        from web.app import create_app

        servers.append(_serve(create_app(settings, store), settings.web.host, settings.web.port, "dashboard"))
    worker.start()
    print(
        f"regionguard worker {worker.holder} running ({'dry run, ' if args.dry_run or settings.azure.dry_run else ''}{len(settings.targets)} target(s)); SIGTERM to stop",
        flush=True,
    )
    try:
        while not stop.wait(0.5):
            pass
    finally:
        worker.stop(timeout=8.0)
        for server in servers:
            server.close()
        store.close()
    print("regionguard worker stopped", flush=True)
    return EXIT_OK


def _worker_http(worker, metrics, store):  # type: ignore[no-untyped-def]
    from controlplane.metrics import worker_http_app

    return worker_http_app(worker.readiness, metrics)


def _serve(app, host: str, port: int, name: str):  # type: ignore[no-untyped-def]
    """Serve a WSGI app with waitress in a background thread; returns the server."""
    import threading

    from waitress import create_server

    server = create_server(app, host=host, port=port, threads=4)
    threading.Thread(target=server.run, name=f"regionguard-{name}", daemon=True).start()
    print(f"{name} on http://{host}:{server.effective_port}/", flush=True)
    return server


def cmd_web(args: argparse.Namespace) -> int:
    import signal

    from waitress import create_server

    from web.app import create_app

    settings = _settings(args)
    store = _store(settings)
    host = args.host or settings.web.host
    port = settings.web.port if args.port is None else args.port
    try:
        try:
            server = create_server(create_app(settings, store), host=host, port=port, threads=8)
        except OSError as exc:
            raise CommandError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc} (pass --port N; 0 picks a free one)", EXIT_USAGE
            ) from None
        print(f"regionguard dashboard on http://{host}:{server.effective_port}/", flush=True)  # the real port, also for --port 0

        def _stop(_signum: int, _frame: Any) -> None:
            raise KeyboardInterrupt  # waitress's run() stops its task threads and returns

        signal.signal(signal.SIGTERM, _stop)
        server.run()
        server.close()
    finally:
        store.close()
    print("regionguard dashboard stopped", flush=True)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from controlplane.cli.demo import run_demo
    from controlplane.replay import TimelineError

    try:
        return run_demo(scenario=args.scenario, duration_s=args.duration, report_path=args.report, web_port=args.port)
    except TimelineError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    except OSError as exc:
        if getattr(exc, "errno", None) == 98:
            raise CommandError(f"port {args.port} is in use: pass --port N (0 picks a free one)", EXIT_USAGE) from None
        raise


def cmd_sim(args: argparse.Namespace) -> int:
    rest = list(args.rest)
    if args.config:
        rest = ["--config", args.config, *rest]
    if args.which == "llm":
        from simulator.llm import main as sim_main
    else:
        from simulator.arm import main as sim_main
    return sim_main(rest)


def cmd_probe(args: argparse.Namespace) -> int:
    from controlplane.cli.probe import probe_command

    settings = _settings(args)
    if args.region and args.region not in settings.region_names:
        raise CommandError(f"--region: no region named {args.region!r} (one of {', '.join(settings.region_names)})", EXIT_USAGE)
    text, code = probe_command(settings, region=args.region, as_json=args.json)
    print(text)
    return code


def cmd_replay(args: argparse.Namespace) -> int:
    from controlplane.replay import TimelineError, run_replay

    settings = _settings(args)
    try:
        if args.from_db:
            since = _since(args.since)
            if since is None:
                raise CommandError("--from-db needs --since", EXIT_USAGE)
            store = _store(settings)
            try:
                results = store.results_between(since, _since(args.until))
            finally:
                store.close()
            if not results:
                raise CommandError("no stored probe results in that time range", EXIT_FAILED)
            result = run_replay(settings, results=results)
        else:
            if not args.timeline:
                raise CommandError("replay needs a TIMELINE file or scenario name (or --from-db)", EXIT_USAGE)
            result = run_replay(settings, args.timeline)
    except TimelineError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    _emit(args, result.to_dict(), result.to_text())
    return EXIT_OK


# ---------------------------------------------------------------- on-call: read


def _health_now(settings: Settings, store):  # type: ignore[no-untyped-def]
    """Health as the leader would see it now, rebuilt from stored results of every vantage."""
    from controlplane.engine.health import HealthEvaluator
    from controlplane.runtime.worker import warm_horizon

    now = _now()
    evaluator = HealthEvaluator.from_results(
        settings, store.latest_results(per_endpoint=settings.health.window, since=now - warm_horizon(settings)), now
    )
    return evaluator.evaluate(now)


def _reconciler(settings: Settings, store, holder: str):  # type: ignore[no-untyped-def]
    from controlplane.actuators.factory import build_actuators
    from controlplane.domain import SystemClock
    from controlplane.runtime.reconcile import Reconciler

    return Reconciler(settings, store, build_actuators(settings), SystemClock(), holder, actor=holder)


def cmd_status(args: argparse.Namespace) -> int:
    settings = _settings(args)
    store = _store(settings)
    try:
        now = _now()
        _endpoints, regions = store.health()
        last = store.last_probe_at(settings.region_names)
        stale_after = settings.health.stale_after or 2 * settings.probe.interval
        lease = store.lease("leader")
        leader = lease["holder"] if lease and lease["holder"] and lease["expires_at"] and lease["expires_at"] > now else None
        overrides = store.active_overrides(now)
        panics = store.flags("panic:")
        problems = store.flags("config_problems").get("config_problems", {}).get("problems", [])
        data: dict[str, Any] = {
            "at": now.isoformat(),
            "leader": leader,
            "regions": [],
            "targets": [],
            "overrides": [],
            "panic": {k.split(":", 1)[1]: v for k, v in panics.items()},
            "frozen": [],
            "config_problems": problems,
        }
        for name in settings.region_names:
            rh = regions.get(name)
            age = (now - last[name]).total_seconds() if name in last else None
            data["regions"].append(
                {
                    "region": name,
                    "state": rh.state.value if rh else "unknown",
                    "score": round(rh.score, 3) if rh else None,
                    "reasons": list(rh.reasons) if rh else ["no health evaluated yet"],
                    "last_probe_age_s": None if age is None else round(age, 1),
                    "stale": age is None or age > stale_after,
                }
            )
        for row in store.target_endpoints():
            data["targets"].append(
                {
                    k: row[k]
                    for k in (
                        "target",
                        "region",
                        "endpoint",
                        "actual_enabled",
                        "actual_weight",
                        "actual_priority",
                        "desired_enabled",
                        "desired_weight",
                        "desired_priority",
                        "desired_reason",
                        "drift",
                        "write_status",
                        "write_error",
                        "monitor_status",
                    )
                }
            )
        for o in overrides:
            data["overrides"].append(
                {
                    "id": o.id,
                    "kind": o.kind.value,
                    "region": o.region,
                    "target": o.target,
                    "who": o.who,
                    "why": o.why,
                    "expires_at": o.expires_at.isoformat() if o.expires_at else None,
                }
            )
            if o.kind.value == "freeze":
                data["frozen"].append(o.target or "*")
    finally:
        store.close()
    _emit(args, data, _status_text(data))
    return EXIT_OK


def _status_text(d: dict[str, Any]) -> str:
    lines = [f"leader: {d['leader'] or 'NONE (no worker holds the lease)'}"]
    for target, flag in d["panic"].items():
        lines.append(f"PANIC {target}: {flag.get('reason', flag)}")
    if d["frozen"]:
        lines.append("automation frozen: " + ", ".join("all targets" if t == "*" else t for t in d["frozen"]))
    for p in d["config_problems"]:
        lines.append(f"configuration problem: {p}")
    lines.append("")
    lines.append(f"{'REGION':<14} {'STATE':<10} {'SCORE':>5}  {'PROBE AGE':>9}  REASON")
    for r in d["regions"]:
        age = "never" if r["last_probe_age_s"] is None else f"{r['last_probe_age_s']:.0f}s" + (" STALE" if r["stale"] else "")
        score = "-" if r["score"] is None else f"{r['score']:.2f}"
        lines.append(f"{r['region']:<14} {r['state']:<10} {score:>5}  {age:>9}  {'; '.join(r['reasons'])}")
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
    settings = _settings(args)
    store = _store(settings)
    try:
        plan = _reconciler(settings, store, f"cli:{_who()}").plan_only(_health_now(settings, store))
    finally:
        store.close()
    _emit(args, plan.to_dict(), plan.to_text())
    return EXIT_OK


def cmd_apply(args: argparse.Namespace) -> int:
    from controlplane.runtime.leader import LeaderElector

    settings = _settings(args)
    store = _store(settings)
    try:
        elector = LeaderElector(store, holder=f"cli:{_who()}", ttl_s=max(30.0, settings.reconcile.deadline * 2))
        state = elector.tick()
        if not state.leader:
            lease = store.lease("leader") or {}
            raise CommandError(
                f"a worker holds the lease ({lease.get('holder')}): it applies the plan itself; use overrides (drain, pin, freeze) to steer it",
                EXIT_REFUSED,
            )
        try:
            tick = _reconciler(settings, store, elector.holder).reconcile_once(
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
    }
    lines = [tick.plan.to_text() if tick.plan else "No changes."]
    lines += [f"applied: {c.describe()}" for c in tick.applied]
    lines += [f"FAILED: {c.describe()}: {code}: {msg}" for c, code, msg in tick.failed]
    if tick.refused:
        lines.append(f"refused: {tick.refused}")
    _emit(args, data, "\n".join(lines))
    if tick.refused:
        return EXIT_REFUSED
    return EXIT_FAILED if tick.failed else EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    from controlplane.domain import as_jsonable

    settings = _settings(args)
    store = _store(settings)
    try:
        events = store.events(since=_since(args.since), kinds=args.kind or None, region=args.region, target=args.target, limit=args.limit)
    finally:
        store.close()
    data = [as_jsonable(e) for e in events]
    text = "\n".join(f"{e.at:%Y-%m-%d %H:%M:%S} {e.severity:<8} {e.kind:<14} {e.actor:<20} {e.summary}" for e in events) or "no events"
    _emit(args, data, text)
    return EXIT_OK


# ---------------------------------------------------------------- on-call: act


def _who() -> str:
    import getpass

    try:
        return os.environ.get("REGIONGUARD_USER") or getpass.getuser()
    except Exception:
        return "unknown"


def _act(args: argparse.Namespace, fields: dict[str, Any]) -> int:
    from controlplane.actions import ActionRefused, InvalidAction, NotAllowed, execute, parse_request, preview
    from controlplane.users import Principal

    settings = _settings(args)
    data = {k: v for k, v in fields.items() if v is not None}
    if getattr(args, "for_", None):
        data["expires_in"] = args.for_
    if getattr(args, "force", False):
        data["force"] = True
        data["confirm"] = args.confirm
    store = _store(settings)
    actor = Principal(name=f"cli:{_who()}", role="admin" if getattr(args, "force", False) else "operator", via="cli")
    try:
        req = parse_request(data)
        if args.preview:
            p = preview(settings, store, req, actor, _now())
            _emit(args, p.to_dict(), p.sentence)
            return EXIT_OK if p.allowed else EXIT_REFUSED
        result = execute(settings, store, req, actor, _now())
    except InvalidAction as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    except ActionRefused as exc:
        raise CommandError(exc.reason if exc.reason.startswith("refused") else f"refused: {exc.reason}", EXIT_REFUSED) from None
    except NotAllowed as exc:
        raise CommandError(f"not allowed: {exc}", EXIT_REFUSED) from None
    finally:
        store.close()
    _emit(args, result.to_dict(), f"done: {result.preview.sentence}" + (" (forced)" if result.forced else ""))
    return EXIT_OK


def cmd_drain(args: argparse.Namespace) -> int:
    return _act(args, {"action": "drain", "region": args.region, "target": args.target, "reason": args.reason})


def cmd_restore(args: argparse.Namespace) -> int:
    return _act(args, {"action": "restore", "region": args.region, "target": args.target, "reason": args.reason})


def cmd_failover(args: argparse.Namespace) -> int:
    return _act(args, {"action": "failover", "target": args.target, "region": args.to, "reason": args.reason})


def cmd_pin(args: argparse.Namespace) -> int:
    if args.weight is None and args.priority is None:
        raise CommandError("pin needs --weight or --priority", EXIT_USAGE)
    return _act(
        args,
        {
            "action": "pin",
            "target": args.target,
            "region": args.region,
            "weight": args.weight,
            "priority": args.priority,
            "reason": args.reason,
        },
    )


def cmd_freeze(args: argparse.Namespace) -> int:
    return _act(args, {"action": "freeze", "target": args.target, "reason": args.reason})


def cmd_unfreeze(args: argparse.Namespace) -> int:
    return _act(args, {"action": "unfreeze", "target": args.target, "reason": args.reason})


# ---------------------------------------------------------------- users and tokens


def cmd_user(args: argparse.Namespace) -> int:
    import getpass

    from controlplane.users import UserError, add_user

    settings = _settings(args)
    store = _store(settings)
    try:
        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = os.environ.get("REGIONGUARD_PASSWORD") or getpass.getpass(f"password for {args.name}: ")
        try:
            add_user(store, args.name, args.role, password, _now())
        except UserError as exc:
            raise CommandError(str(exc), EXIT_USAGE) from None
    finally:
        store.close()
    print(f"user {args.name} ({args.role}) saved")
    return EXIT_OK


def cmd_token(args: argparse.Namespace) -> int:
    from controlplane.users import UserError, create_api_token

    settings = _settings(args)
    store = _store(settings)
    try:
        try:
            token = create_api_token(store, args.name, args.role, f"cli:{_who()}", _now())
        except UserError as exc:
            raise CommandError(str(exc), EXIT_USAGE) from None
    finally:
        store.close()
    _emit(
        args,
        {"name": args.name, "role": args.role, "token": token},
        f"API token {args.name} ({args.role}) -- shown once, store it now:\n{token}",
    )
    return EXIT_OK


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="regionguard", description="Keep a multi-region Azure OpenAI service serving.")
    parser.add_argument("--log-level", default=os.environ.get("REGIONGUARD_LOG_LEVEL", "WARNING"))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("check-config", help="validate a config file")
    p.add_argument("file")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("db", help="database migrations")
    p.add_argument("db_command", choices=["upgrade", "downgrade", "current"])
    p.add_argument("revision", nargs="?", default=None)
    p.add_argument("--config", default=_default_config())
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_db)

    def with_config(p: argparse.ArgumentParser, json_flag: bool = True) -> argparse.ArgumentParser:
        p.add_argument("--config", default=_default_config(), help="config file (default $REGIONGUARD_CONFIG or regionguard.yaml)")
        if json_flag:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    p = with_config(sub.add_parser("run", help="the worker: probes, and on the leader, reconcile"), json_flag=False)
    p.add_argument("--with-web", action="store_true", help="also serve the dashboard (small installs)")
    p.add_argument("--dry-run", action="store_true", help="plan and record, never write to Azure")
    p.add_argument("--migrate", action="store_true", help="run database migrations first")
    p.add_argument("--holder", default=None, help="lease holder id (default host:pid:random)")
    p.add_argument("--lease-ttl", type=float, default=15.0, help="lease period in seconds")
    p.add_argument("--health-port", type=int, default=None, help="serve /healthz, /readyz, /metrics on this port")
    p.set_defaults(func=cmd_run)

    p = with_config(sub.add_parser("web", help="the dashboard under waitress"), json_flag=False)
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None)
    p.set_defaults(func=cmd_web)

    p = sub.add_parser("demo", help="everything in one process on simulated Azure, with a scenario")
    p.add_argument("--scenario", default="tour", help="built-in scenario name or a timeline file")
    p.add_argument("--duration", type=float, default=None, help="stop after S seconds (headless runs)")
    p.add_argument("--report", default=None, help="write a JSON report here at the end")
    p.add_argument("--port", type=int, default=8080, help="dashboard port (0 = any free port)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("sim", help="run a simulator: llm regions or the fake ARM")
    p.add_argument("which", choices=["llm", "arm"])
    p.add_argument("--config", default=None)
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options for the simulator (see: regionguard sim llm -- --help)")
    p.set_defaults(func=cmd_sim)

    p = with_config(sub.add_parser("probe", help="one round of probes now, printed per endpoint"))
    p.add_argument("--region", default=None)
    p.set_defaults(func=cmd_probe)

    p = with_config(sub.add_parser("replay", help="what would regionguard have done? (simulated time)"))
    p.add_argument("timeline", nargs="?", help="timeline YAML or built-in scenario name")
    p.add_argument("--from-db", action="store_true", help="replay stored probe results instead")
    p.add_argument("--since", default=None)
    p.add_argument("--until", default=None)
    p.set_defaults(func=cmd_replay)

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
    p.add_argument("--kind", action="append", default=[], help="filter by kind (repeatable)")
    p.add_argument("--region", default=None)
    p.add_argument("--target", default=None)
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(func=cmd_history)

    def action(name: str, help_text: str, func: Any) -> argparse.ArgumentParser:
        p = with_config(sub.add_parser(name, help=help_text))
        p.add_argument("--reason", required=True, help="why (kept in the audit trail)")
        p.add_argument("--preview", action="store_true", help="show what it would do; change nothing")
        p.set_defaults(func=func)
        return p

    p = action("drain", "take a region out of every target (or --target)", cmd_drain)
    p.add_argument("region")
    p.add_argument("--target", default=None)
    p.add_argument("--for", dest="for_", default=None, help="expire after e.g. 30m")
    p.add_argument("--force", action="store_true", help="past min_serving (admin); needs --confirm REGION")
    p.add_argument("--confirm", default=None)
    p = action("restore", "lift drains of a region", cmd_restore)
    p.add_argument("region")
    p.add_argument("--target", default=None)
    p = action("failover", "send a priority target's traffic to a region", cmd_failover)
    p.add_argument("target")
    p.add_argument("--to", required=True, help="region")
    p.add_argument("--for", dest="for_", default=None)
    p = action("pin", "fix a region's weight or priority in a target", cmd_pin)
    p.add_argument("target")
    p.add_argument("region")
    p.add_argument("--weight", type=int, default=None)
    p.add_argument("--priority", type=int, default=None)
    p.add_argument("--for", dest="for_", default=None)
    p = action("freeze", "stop automated changes (a target or all)", cmd_freeze)
    p.add_argument("--target", default=None)
    p.add_argument("--for", dest="for_", default=None)
    p = action("unfreeze", "resume automated changes", cmd_unfreeze)
    p.add_argument("--target", default=None)

    p = with_config(sub.add_parser("user", help="local dashboard users"), json_flag=False)
    p.add_argument("user_command", choices=["add"])
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=["viewer", "operator", "admin"])
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.set_defaults(func=cmd_user)

    p = with_config(sub.add_parser("token", help="API bearer tokens"))
    p.add_argument("token_command", choices=["create"])
    p.add_argument("--name", required=True)
    p.add_argument("--role", required=True, choices=["viewer", "operator", "admin"])
    p.set_defaults(func=cmd_token)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "db_command", None) == "upgrade" and args.revision is None:
        args.revision = "head"
    if getattr(args, "db_command", None) == "downgrade" and args.revision is None:
        args.revision = "base"
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.WARNING), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"{exc.source}: invalid configuration", file=sys.stderr)
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
