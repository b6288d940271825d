"""``regionguard drift list|adopt|revert``: decide on drift reported under ``drift: report``.

Reported drift pauses automation for that endpoint "until an operator
decides"; these are the decisions. ``adopt`` keeps Azure's value through an
override (pin or drain), ``revert`` lets the worker write desired state over
it on its next tick. Both show a preview first (``--preview``, a prompt, or
``--yes``) and leave an audit event with the reason.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from controlplane.cli.common import CommandError, emit, open_checked_store, settings_of, utcnow, who, with_config
from controlplane.errors import EXIT_OK, EXIT_REFUSED, EXIT_USAGE


def cmd_drift(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    if args.drift_command == "list":
        store = open_checked_store(settings)
        try:
            rows = [r for t in settings.targets for r in store.target_endpoints(t.name) if r.drift]
        finally:
            store.close()
        data = [{"target": r.target, "region": r.region, "endpoint": r.endpoint, "drift": r.drift} for r in rows]
        text = "\n".join(f"{r.target:<16} {r.region:<14} {r.endpoint:<28} {r.drift}" for r in rows) or "no unresolved drift"
        emit(args, data, text)
        return EXIT_OK
    return _decide(args, settings)


def _decide(args: argparse.Namespace, settings: Any) -> int:
    from controlplane.drift import drift_preview, resolve_drift

    if args.target is None or args.region is None:
        raise CommandError(f"drift {args.drift_command} needs TARGET and REGION (regionguard drift list shows them)", EXIT_USAGE)
    if args.target not in {t.name for t in settings.targets}:
        raise CommandError(f"TARGET: no target named {args.target!r}", EXIT_USAGE)
    if not args.preview and not (args.reason or "").strip():
        raise CommandError("--reason: required: say why (it is kept in the audit trail); only --preview does without", EXIT_USAGE)
    actor = f"cli:{who()}"
    store = open_checked_store(settings)
    try:
        try:
            sentence = drift_preview(settings, store, args.target, args.region, args.drift_command, actor, utcnow())
        except (KeyError, ValueError) as exc:
            raise CommandError(str(exc).strip("'\""), EXIT_USAGE) from None
        if args.preview:
            emit(args, {"preview": sentence, "target": args.target, "region": args.region, "action": args.drift_command}, sentence)
            return EXIT_OK
        _confirm(args, sentence)
        event = resolve_drift(settings, store, args.target, args.region, args.drift_command, actor, utcnow(), why=args.reason.strip())
    finally:
        store.close()
    emit(args, {"done": sentence, "event": event.summary}, f"done: {event.summary}")
    return EXIT_OK


def _confirm(args: argparse.Namespace, sentence: str) -> None:
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise CommandError("--yes: required to decide without a terminal to confirm on (see --preview)", EXIT_USAGE)
    print(sentence)
    try:
        answer = input("Proceed? [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        raise CommandError("not confirmed: nothing changed", EXIT_REFUSED)


def register(sub: Any) -> None:
    p = with_config(sub.add_parser("drift", help="drift reported by 'drift: report': list it, adopt it or revert it"))
    p.add_argument("drift_command", choices=["list", "adopt", "revert"])
    p.add_argument("target", nargs="?", default=None, help="adopt/revert: the target")
    p.add_argument("region", nargs="?", default=None, help="adopt/revert: the region")
    p.add_argument("--reason", default=None, help="why (kept in the audit trail); required unless --preview")
    p.add_argument("--preview", action="store_true", help="say what it would do; change nothing")
    p.add_argument("--yes", action="store_true", help="confirm without a prompt (scripts)")
    p.set_defaults(func=cmd_drift)
