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
            _emit(args, {"current": current, "head": head}, f"current {current or 'none'} (head {head}){'' if current == head else ' -- run: regionguard db upgrade'}")
    except Exception as exc:  # noqa: BLE001 - turned into one clear line
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

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "db_command", None) == "upgrade" and args.revision is None:
        args.revision = "head"
    if getattr(args, "db_command", None) == "downgrade" and args.revision is None:
        args.revision = "base"
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.WARNING), format="%(asctime)s %(levelname)s %(name)s %(message)s")
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
