"""What every command module shares: exit codes, the error type, config and store helpers.

Kept light: importing this (and so ``regionguard --help``) loads the config
module only; the store, SDKs, Flask and the simulator are imported inside the
commands that need them.
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import datetime
from typing import TYPE_CHECKING, Any

from controlplane.config import Settings, load_settings
from controlplane.errors import EXIT_DB, EXIT_FAILED, EXIT_USAGE, exit_code
from controlplane.textsafe import terminal_safe

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication
    from waitress.server import BaseWSGIServer

    from controlplane.store import Store


class CommandError(Exception):
    """A failure with a message for on-call and an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def default_config() -> str:
    return os.environ.get("REGIONGUARD_CONFIG", "regionguard.yaml")


def with_config(p: argparse.ArgumentParser, json_flag: bool = True) -> argparse.ArgumentParser:
    """Add ``--config`` (and ``--json`` unless ``json_flag`` is false) to a subcommand."""
    p.add_argument("--config", default=default_config(), help="config file (default $REGIONGUARD_CONFIG or regionguard.yaml)")
    if json_flag:
        p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def settings_of(args: argparse.Namespace) -> Settings:
    from pathlib import Path

    from controlplane.config import ConfigError

    if not Path(args.config).exists():
        raise ConfigError(
            args.config,
            [
                f"(file): no config file at {args.config!r}: give one with --config PATH or set REGIONGUARD_CONFIG "
                "(examples/regionguard.yaml is a start; 'regionguard demo' needs none)"
            ],
        )
    return load_settings(args.config)


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, default=str))  # ensure_ascii: control characters arrive escaped
    else:
        print(terminal_safe(text))


def db_error(exc: BaseException) -> CommandError:
    from sqlalchemy.exc import SQLAlchemyError

    from controlplane.store import DatabaseUnavailable

    if isinstance(exc, DatabaseUnavailable):
        return CommandError(str(exc), exit_code(exc))
    if isinstance(exc, SQLAlchemyError):
        orig = getattr(exc, "orig", None) or exc
        return CommandError(f"database unavailable: {type(orig).__name__}: {str(orig).splitlines()[0][:200] if str(orig) else ''}", EXIT_DB)
    return CommandError(f"{type(exc).__name__}: {exc}", EXIT_FAILED)


def open_checked_store(settings: Settings) -> Store:
    """Open the configured database and check it is reachable and migrated."""
    from controlplane.store import Store

    try:
        store = Store(settings.database.url)
    except Exception as exc:
        raise db_error(exc) from None
    try:
        store.check()
    except Exception as exc:
        store.close()
        raise db_error(exc) from None
    return store


def utcnow() -> datetime:
    from datetime import UTC

    return datetime.now(UTC)


def since(text: str | None) -> datetime | None:
    """'1h', '30m', '2d' (ago) or an ISO 8601 timestamp -> aware datetime."""
    from datetime import UTC, timedelta

    from controlplane.durations import parse_duration

    if not text:
        return None
    try:
        return utcnow() - timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(f"--since/--until: {text!r} is neither a duration (1h, 30m) nor an ISO 8601 time", EXIT_USAGE) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def who() -> str:
    import getpass

    try:
        return os.environ.get("REGIONGUARD_USER") or getpass.getuser()
    except Exception:
        return "unknown"


def freeze_startup_heap() -> None:
    """Exempt what start-up built (modules, the app, settings, the store) from every later cyclic GC pass.

    A long-running server's full (generation 2) collections otherwise walk
    those ~130,000 objects each time: 50-75 ms pauses on the 2-core CI
    machine at load 3 (150-300 ms at load 10), 3-6 of them in 100 page reads,
    so they are a page's slowest reads (bench/scale.py prints them). Frozen,
    a full pass walks only what requests left alive: 3-5 ms (8-11 at load 10).
    They stay alive for the process's life anyway.
    """
    import gc

    gc.collect()
    gc.freeze()


def wsgi_server(app: WSGIApplication, host: str, port: int, threads: int) -> BaseWSGIServer:
    """A waitress server bound to one host and port (port 0 picks a free one); ``run()`` serves."""
    from waitress.server import BaseWSGIServer, create_server

    server = create_server(app, host=host, port=port, threads=threads)
    if not isinstance(server, BaseWSGIServer):  # waitress makes a multi-socket server only for several listen addresses
        server.close()
        raise CommandError(f"{host}:{port}: expected one address to listen on", EXIT_USAGE)
    return server
