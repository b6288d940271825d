"""Long-running commands: ``run`` (the worker), ``web`` (the dashboard), ``demo`` and ``sim``.

Everything heavy (the worker, Flask, waitress, the simulator) is imported
inside the command that runs it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING, Any

from controlplane.cli.common import CommandError, db_error, freeze_startup_heap, open_checked_store, settings_of, with_config, wsgi_server
from controlplane.errors import EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication
    from waitress.server import BaseWSGIServer

    from controlplane.metrics import Metrics
    from controlplane.runtime.worker import Worker


def cmd_run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from controlplane.logging_setup import configure_from_settings
    from controlplane.metrics import Metrics
    from controlplane.notify import Notifier
    from controlplane.runtime.leader import LeaseTiming, open_worker_store
    from controlplane.runtime.worker import Worker

    settings = settings_of(args)
    for handler in list(logging.getLogger().handlers):  # replace main()'s plain handler
        logging.getLogger().removeHandler(handler)
    configure_from_settings(settings.logging)  # also quiets azure-core, Alembic and the scheduler unless DEBUG
    timing = LeaseTiming.for_lease(args.lease_ttl, settings.azure.request_timeout)  # the Worker checks it the same way
    try:
        store = open_worker_store(settings.database.url, timing, migrate=args.migrate)
        store.check()
    except Exception as exc:
        raise db_error(exc) from None
    metrics = Metrics()
    notifier = Notifier(settings.notifications, store=store, metrics=metrics) if settings.notifications.channels else None
    worker = Worker(
        settings, store, holder=args.holder, notifier=notifier, metrics=metrics, lease_ttl_s=args.lease_ttl, dry_run=args.dry_run
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: stop.set())
    servers: list[BaseWSGIServer] = []
    if args.health_port is not None:
        servers.append(_serve(_worker_http(worker, metrics), settings.web.host, args.health_port, "health"))
    if args.with_web:
        from web.app import create_app

        servers.append(_serve(create_app(settings, store), settings.web.host, settings.web.port, "dashboard"))
    for line in worker.missing_keys:  # loud, before anything else: every probe of that endpoint will fail
        print(f"CONFIGURATION PROBLEM: {line}: /readyz stays not ready until it is set", file=sys.stderr, flush=True)
    freeze_startup_heap()
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


def _worker_http(worker: Worker, metrics: Metrics) -> WSGIApplication:
    from controlplane.metrics import worker_http_app

    return worker_http_app(worker.readiness, metrics, worker.memory_sizes)


def _serve(app: WSGIApplication, host: str, port: int, name: str) -> BaseWSGIServer:
    """Serve a WSGI app with waitress in a background thread; returns the server."""
    import threading

    server = wsgi_server(app, host, port, threads=4)
    threading.Thread(target=server.run, name=f"regionguard-{name}", daemon=True).start()
    print(f"{name} on http://{host}:{server.getsockname()[1]}/", flush=True)
    return server


def cmd_web(args: argparse.Namespace) -> int:
    import signal

    from controlplane.logging_setup import configure_from_settings
    from web.app import create_app

    settings = settings_of(args)
    for handler in list(logging.getLogger().handlers):  # the same secret-scrubbing handler as `run`
        logging.getLogger().removeHandler(handler)
    configure_from_settings(settings.logging)
    store = open_checked_store(settings)
    host = args.host or settings.web.host
    port = settings.web.port if args.port is None else args.port
    try:
        try:
            server = wsgi_server(create_app(settings, store), host, port, threads=8)
        except OSError as exc:
            raise CommandError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc} (pass --port N; 0 picks a free one)", EXIT_USAGE
            ) from None
        print(f"regionguard dashboard on http://{host}:{server.getsockname()[1]}/", flush=True)  # the real port, also for --port 0

        def _stop(_signum: int, _frame: Any) -> None:
            raise KeyboardInterrupt  # waitress's run() stops its task threads and returns

        signal.signal(signal.SIGTERM, _stop)
        freeze_startup_heap()
        server.run()
        server.close()
    finally:
        store.close()
    print("regionguard dashboard stopped", flush=True)
    return EXIT_OK


SIM_EXTRA_MODULES = ("aiohttp", "trustme")


def require_sim_extra(command: str) -> None:
    """The simulator needs the optional ``sim`` extra; say how to install it instead of a traceback."""
    import importlib

    for module in SIM_EXTRA_MODULES:
        try:
            importlib.import_module(module)
        except ImportError:
            raise CommandError(
                f"regionguard {command} needs the simulator, which is an optional extra ({module} is not installed):"
                " pip install 'regionguard[sim]'",
                EXIT_USAGE,
            ) from None


def cmd_demo(args: argparse.Namespace) -> int:
    require_sim_extra("demo")
    from controlplane.cli.demo import run_demo
    from controlplane.replay import TimelineError

    try:
        return run_demo(scenario=args.scenario, duration_s=args.duration, report_path=args.report, web_port=args.port, until=args.until)
    except TimelineError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    except OSError as exc:
        if getattr(exc, "errno", None) == 98:
            raise CommandError(f"port {args.port} is in use: pass --port N (0 picks a free one)", EXIT_USAGE) from None
        raise


def cmd_sim(args: argparse.Namespace) -> int:
    require_sim_extra("sim")
    rest = list(args.rest)
    if args.config:
        rest = ["--config", args.config, *rest]
    if args.which == "llm":
        from simulator.llm import main as sim_main
    else:
        from simulator.arm import main as sim_main
    return sim_main(rest)


def register(sub: Any) -> None:
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
    p.add_argument(
        "--until",
        choices=["end", "recovered"],
        default="end",
        help="end: run for --duration (or until Ctrl-C); recovered: also stop once a non-looping scenario is over"
        " and every region has served again, with nothing left to do, for a settle period",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("sim", help="run a simulator: llm regions or the fake ARM")
    p.add_argument("which", choices=["llm", "arm"])
    p.add_argument("--config", default=None)
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options for the simulator (see: regionguard sim llm -- --help)")
    p.set_defaults(func=cmd_sim)
