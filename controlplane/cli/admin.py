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


def _read_password(args: argparse.Namespace) -> str:
    import getpass

    try:
        if args.password_stdin:
            line = sys.stdin.readline()
            if not line:
                raise EOFError
            return line.rstrip("\r\n")
        return os.environ.get("REGIONGUARD_PASSWORD") or getpass.getpass(f"password for {args.name}: ")
    except EOFError:  # stdin at its end, or Ctrl-D at the prompt
        raise CommandError(
            "no password given (standard input ended): type it at the prompt, pipe it with --password-stdin, or set REGIONGUARD_PASSWORD",
            EXIT_USAGE,
        ) from None


def cmd_user(args: argparse.Namespace) -> int:
    from controlplane import users

    command = args.user_command
    if command != "list" and not args.name:
        raise CommandError(f"user {command} needs NAME", EXIT_USAGE)
    if command == "add" and not args.role:
        raise CommandError("user add needs --role viewer|operator|admin", EXIT_USAGE)
    settings = settings_of(args)
    store = open_checked_store(settings)
    try:
        try:
            if command == "list":
                rows = store.users()
                print(
                    "\n".join(
                        f"{u.name:<24} {u.role:<9} {'DISABLED' if u.disabled else 'enabled':<9} since {u.created_at:%Y-%m-%d}" for u in rows
                    )
                    or "no users"
                )
                return EXIT_OK
            if command == "add":
                users.add_user(store, args.name, args.role, _read_password(args), utcnow())
                done = f"user {args.name} ({args.role}) saved"
            elif command == "passwd":
                users.change_password(store, args.name, _read_password(args))
                done = f"user {args.name}: password changed; every session of the user has ended and any sign-in lock is lifted"
            elif command in ("disable", "enable"):
                users.set_disabled(store, args.name, command == "disable")
                done = f"user {args.name} {command}d" + (
                    "; every session of the user has ended" if command == "disable" else "; any sign-in lock is lifted"
                )
            else:
                users.remove_user(store, args.name)
                done = f"user {args.name} removed; every session of the user has ended"
        except users.UserError as exc:
            raise CommandError(str(exc), EXIT_USAGE) from None
    finally:
        store.close()
    print(done)
    return EXIT_OK


def cmd_token(args: argparse.Namespace) -> int:
    from controlplane.users import UserError, create_api_token

    settings = settings_of(args)
    command = args.token_command
    if command == "create" and (not args.name or not args.role):
        raise CommandError("token create needs --name N and --role viewer|operator|admin", EXIT_USAGE)
    if command == "revoke" and args.id is None and not args.name:
        raise CommandError("token revoke needs --id ID or --name N (regionguard token list shows them)", EXIT_USAGE)
    store = open_checked_store(settings)
    try:
        if command == "list":
            tokens = store.api_tokens()
            data = [
                {
                    "id": t.id,
                    "name": t.name,
                    "role": t.role,
                    "created_by": t.created_by,
                    "created_at": t.created_at.isoformat(),
                    "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None,
                    "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None,
                }
                for t in tokens
            ]
            text = "\n".join(
                f"#{t.id:<4} {t.name:<24} {t.role:<9} by {t.created_by:<20} "
                + (
                    f"REVOKED {t.revoked_at:%Y-%m-%d %H:%M}"
                    if t.revoked_at
                    else f"last used {t.last_used_at:%Y-%m-%d %H:%M}"
                    if t.last_used_at
                    else "never used"
                )
                for t in tokens
            )
            emit(args, data, text or "no API tokens")
            return EXIT_OK
        if command == "revoke":
            live = [t for t in store.api_tokens() if t.revoked_at is None and (t.id == args.id or (args.name and t.name == args.name))]
            if not live:
                raise CommandError(f"no live API token {'#' + str(args.id) if args.id is not None else repr(args.name)}", EXIT_USAGE)
            now = utcnow()
            for t in live:
                store.revoke_api_token(t.id, now)
            emit(
                args,
                {"revoked": [t.id for t in live]},
                "revoked: " + ", ".join(f"#{t.id} {t.name}" for t in live) + " (refused from now on)",
            )
            return EXIT_OK
        try:
            token = create_api_token(store, args.name, args.role, f"cli:{who()}", utcnow(), owner=args.user)
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
    p.add_argument("user_command", choices=["add", "list", "disable", "enable", "remove", "passwd"])
    p.add_argument("name", nargs="?", default=None)
    p.add_argument("--role", default=None, choices=["viewer", "operator", "admin"], help="add: the user's role")
    p.add_argument("--password-stdin", action="store_true", help="add/passwd: read the password from standard input")
    p.set_defaults(func=cmd_user)

    p = with_config(sub.add_parser("token", help="API bearer tokens"))
    p.add_argument("token_command", choices=["create", "list", "revoke"])
    p.add_argument("--name", default=None, help="create: the token's name; revoke: every live token of that name")
    p.add_argument("--role", default=None, choices=["viewer", "operator", "admin"], help="create: the token's role")
    p.add_argument(
        "--user", default=None, help="create: the dashboard user the token acts for; it stops when that user is disabled or removed"
    )
    p.add_argument("--id", type=int, default=None, help="revoke: the token's id (from token list)")
    p.set_defaults(func=cmd_token)
