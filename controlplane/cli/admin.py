"""Admin commands: ``check-config``, ``db`` (migrations), ``user add``, ``token create``."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from controlplane.cli.common import CommandError, db_error, default_config, emit, open_checked_store, settings_of, utcnow, who, with_config
from controlplane.config import ConfigError, load_settings, missing_api_keys, summary
from controlplane.errors import EXIT_OK, EXIT_REFUSED, EXIT_USAGE


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = load_settings(args.file)
    missing = missing_api_keys(settings)
    if missing and args.strict:
        raise ConfigError(args.file, missing)
    print(summary(settings))
    for line in missing:
        print(f"warning: {line}", file=sys.stderr)
    return EXIT_OK


def cmd_db(args: argparse.Namespace) -> int:
    from controlplane.store import db

    settings = settings_of(args)
    url = settings.database.url
    try:
        if args.db_command == "upgrade":
            db.upgrade(url, args.revision)
            print(f"database at {db.current_revision(url)} (head {db.head_revision()})")
        elif args.db_command == "downgrade":
            _downgrade(args, url)
        else:
            current = db.current_revision(url)
            head = db.head_revision()
            emit(
                args,
                {"current": current, "head": head},
                f"current {current or 'none'} (head {head}){'' if current == head else ' -- run: regionguard db upgrade'}",
            )
    except CommandError:
        raise
    except Exception as exc:
        raise db_error(exc) from None
    return EXIT_OK


# What a downgrade past the first migration destroys, in on-call's words.
_KEPT_BY_BASE = (
    ("audit_event", "audit trail events"),
    ("app_user", "dashboard users"),
    ("api_token", "API tokens"),
    ("override", "overrides"),
    ("probe_result", "probe results"),
    ("change", "recorded changes"),
)


def _downgrade(args: argparse.Namespace, url: str) -> None:
    """Undo migrations: only with an explicit revision and --yes, after saying what will be lost."""
    from controlplane.store import db

    if args.revision is None:
        raise CommandError(
            "db downgrade needs a REVISION: 'regionguard db current' shows where the database is; 'base' drops every table", EXIT_USAGE
        )
    try:
        steps = db.downgrade_steps(url, args.revision)
    except ValueError as exc:
        raise CommandError(f"db downgrade: {exc}", EXIT_USAGE) from None
    if not steps:
        print(f"database already at {db.current_revision(url) or 'base'}: nothing to undo")
        return
    lines = [f"db downgrade to {args.revision} undoes {len(steps)} migration(s):"]
    lines += [f"  {rev}: {doc}" for rev, doc in steps]
    if args.revision == "base":
        counts = db.table_row_counts(url, tuple(t for t, _ in _KEPT_BY_BASE))
        lost = ", ".join(f"{counts[t]} {words}" for t, words in _KEPT_BY_BASE if t in counts)
        lines.append(f"  and DROPS EVERY TABLE, with everything in them: {lost}")
    else:
        lines.append("  columns and tables those migrations added are dropped with their data")
    if not args.yes:
        raise CommandError("\n".join([*lines, "refused: nothing changed; run again with --yes to do it"]), EXIT_REFUSED)
    print("\n".join(lines))
    db.downgrade(url, args.revision)
    print(f"database at {db.current_revision(url) or 'base'}")


def cmd_user(args: argparse.Namespace) -> int:
    import getpass

    from controlplane.users import UserError, add_user

    settings = settings_of(args)
    store = open_checked_store(settings)
    try:
        try:
            if args.password_stdin:
                line = sys.stdin.readline()
                if not line:
                    raise EOFError
                password = line.rstrip("\r\n")
            else:
                password = os.environ.get("REGIONGUARD_PASSWORD") or getpass.getpass(f"password for {args.name}: ")
        except EOFError:  # stdin at its end, or Ctrl-D at the prompt
            raise CommandError(
                "no password given (standard input ended): type it at the prompt, pipe it with --password-stdin, "
                "or set REGIONGUARD_PASSWORD",
                EXIT_USAGE,
            ) from None
        try:
            add_user(store, args.name, args.role, password, utcnow())
        except UserError as exc:
            raise CommandError(str(exc), EXIT_USAGE) from None
    finally:
        store.close()
    print(f"user {args.name} ({args.role}) saved")
    return EXIT_OK


def cmd_token(args: argparse.Namespace) -> int:
    from controlplane.users import UserError, create_api_token

    settings = settings_of(args)
    store = open_checked_store(settings)
    try:
        try:
            token = create_api_token(store, args.name, args.role, f"cli:{who()}", utcnow())
        except UserError as exc:
            raise CommandError(str(exc), EXIT_USAGE) from None
    finally:
        store.close()
    emit(
        args,
        {"name": args.name, "role": args.role, "token": token},
        f"API token {args.name} ({args.role}) -- shown once, store it now:\n{token}",
    )
    return EXIT_OK


def register(sub: Any) -> None:
    p = sub.add_parser("check-config", help="validate a config file")
    p.add_argument("file")
    p.add_argument("--strict", action="store_true", help="also fail when an API-key environment variable is not set")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("db", help="database migrations")
    p.add_argument("db_command", choices=["upgrade", "downgrade", "current"])
    p.add_argument("revision", nargs="?", default=None, help="upgrade: default head; downgrade: required (base drops every table)")
    p.add_argument("--yes", action="store_true", help="downgrade: really undo the migrations (without it, only says what would be lost)")
    p.add_argument("--config", default=default_config(), help="config file (default $REGIONGUARD_CONFIG or regionguard.yaml)")
    p.add_argument("--json", action="store_true", help="machine-readable output (current)")
    p.set_defaults(func=cmd_db)


def register_accounts(sub: Any) -> None:
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
