"""`regionguard` command line: builds the parser, dispatches, maps errors to exit codes.

Every command that reads state takes ``--config`` (default: ``$REGIONGUARD_CONFIG``
or ``regionguard.yaml``) and most take ``--json``. Errors are one clear line on
stderr and a non-zero exit code, never a traceback:
exit 2 = bad input or config, 3 = refused (guardrail, frozen, checksum),
4 = database unavailable, 1 = anything else that failed.

Each command group lives in its own module with a ``register(sub)`` that adds
its subcommands; heavy imports stay inside the command functions so
``regionguard --help`` loads only argparse and the config module.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from controlplane.cli import admin, drift, oncall, probe, replay, run, state
from controlplane.cli.common import CommandError
from controlplane.config import ConfigError
from controlplane.errors import EXIT_FAILED, EXIT_USAGE
from controlplane.textsafe import terminal_safe


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="regionguard", description="Keep a multi-region Azure OpenAI service serving.")
    parser.add_argument("--log-level", default=os.environ.get("REGIONGUARD_LOG_LEVEL", "WARNING"))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # the order of the help listing: admin, running things, on-call reads, on-call actions, accounts
    admin.register(sub)
    run.register(sub)
    probe.register(sub)
    replay.register(sub)
    state.register(sub)
    oncall.register(sub)
    drift.register(sub)
    admin.register_accounts(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "db_command", None) == "upgrade" and args.revision is None:
        args.revision = "head"
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.WARNING), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(terminal_safe(f"{exc.source}: invalid configuration"), file=sys.stderr)
        for problem in exc.problems:
            print(terminal_safe(problem), file=sys.stderr)
        return EXIT_USAGE
    except CommandError as exc:
        print(terminal_safe(f"error: {exc}"), file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the last net: a user never sees a traceback (--log-level DEBUG logs it)
        logging.getLogger("controlplane.cli").debug("unexpected error", exc_info=True)
        print(terminal_safe(f"error: unexpected {type(exc).__name__}: {str(exc)[:300]} (--log-level DEBUG shows where)"), file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
