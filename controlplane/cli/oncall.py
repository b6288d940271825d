"""On-call actions: ``drain``, ``restore``, ``failover``, ``pin``, ``freeze``, ``unfreeze``.

Each one goes through ``controlplane.actions`` (the one entry for web, API and
CLI) as the operator ``cli:<user>``; ``--preview`` shows what it would do.
Nothing changes without a confirmed preview: a prompt on a terminal,
``--yes`` for scripts, or ``--digest`` of a preview taken earlier.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from controlplane.cli.common import CommandError, emit, open_checked_store, settings_of, utcnow, who, with_config
from controlplane.errors import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, exit_code


def _act(args: argparse.Namespace, fields: dict[str, Any]) -> int:
    from controlplane.actions import ActionRefused, InvalidAction, NotAllowed, execute, parse_request, preview
    from controlplane.users import Principal

    settings = settings_of(args)
    data = {k: v for k, v in fields.items() if v is not None}
    if not data.get("reason"):
        if not args.preview:
            raise CommandError("--reason: required: say why (it is kept in the audit trail); only --preview does without", EXIT_USAGE)
        data["reason"] = "preview only"  # a preview changes nothing and records nothing
    if getattr(args, "for_", None):
        data["expires_in"] = args.for_
    if getattr(args, "force", False):
        data["force"] = True
        data["confirm"] = args.confirm
    store = open_checked_store(settings)
    actor = Principal(name=f"cli:{who()}", role="admin" if getattr(args, "force", False) else "operator", via="cli")
    try:
        req = parse_request(data)
        if args.preview:
            p = preview(settings, store, req, actor, utcnow())
            emit(args, p.to_dict(), p.sentence)
            return EXIT_OK if p.allowed else EXIT_REFUSED
        digest = args.digest or _confirmed_digest(args, preview(settings, store, req, actor, utcnow()))
        result = execute(settings, store, req, actor, utcnow(), expected_digest=digest, require_digest=True)
    except InvalidAction as exc:
        flag = _FLAGS.get(exc.field)
        message = f"{flag}: {str(exc).split(': ', 1)[1]}" if flag and ": " in str(exc) else str(exc)
        raise CommandError(message, exit_code(exc)) from None
    except ActionRefused as exc:
        raise CommandError(exc.reason if exc.reason.startswith("refused") else f"refused: {exc.reason}", exit_code(exc)) from None
    except NotAllowed as exc:
        raise CommandError(f"not allowed: {exc}", exit_code(exc)) from None
    finally:
        store.close()
    emit(args, result.to_dict(), f"done: {done_sentence(result.preview.sentence)}" + (" (forced)" if result.forced else ""))
    return EXIT_OK


# The request's field names as the CLI spells them, so an error names what the operator typed.
_FLAGS = {"expires_in": "--for", "reason": "--reason", "weight": "--weight", "priority": "--priority", "confirm": "--confirm"}


def done_sentence(preview: str) -> str:
    """The preview ("this will lift ...") told after the fact: the override is stored now; Azure follows on the worker's tick."""
    for prefix, past in (("this will lift ", "lifted "), ("this will freeze ", "froze ")):
        if preview.lower().startswith(prefix):
            return past + preview[len(prefix) :]
    for prefix in ("This will ", "this will "):
        preview = preview.replace(prefix, "the worker will now ", 1)
    return preview


def _confirmed_digest(args: argparse.Namespace, p: Any) -> str | None:
    """The digest of the preview the operator accepted: ``--yes``, or a yes at the prompt on a terminal.

    ``None`` when the preview is refused: execute then answers with the refusal
    (or, with ``--force``, asks for the digest of what is forced).
    """
    if not p.allowed and not getattr(args, "force", False):
        return None
    if args.yes:
        return str(p.digest)
    if not sys.stdin.isatty():
        raise CommandError(
            "--yes: required to change production without a terminal to confirm on (or pass --digest from `--preview --json`)",
            EXIT_USAGE,
        )
    print(p.sentence + (f" Refused: {p.refusal}." if p.refusal else ""))
    try:
        answer = input("Proceed? [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        raise CommandError("not confirmed: nothing changed", EXIT_REFUSED)
    return str(p.digest)


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


def register(sub: Any) -> None:
    def action(name: str, help_text: str, func: Any) -> argparse.ArgumentParser:
        p = with_config(sub.add_parser(name, help=help_text))
        p.add_argument("--reason", default=None, help="why (kept in the audit trail); required unless --preview")
        p.add_argument("--preview", action="store_true", help="show what it would do; change nothing")
        p.add_argument("--yes", action="store_true", help="confirm without a prompt (scripts): do what the preview says")
        p.add_argument("--digest", default=None, help="confirm the preview with this digest (from --preview --json); refused if it changed")
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
