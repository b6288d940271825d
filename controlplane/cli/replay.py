"""``regionguard replay``: what would regionguard have done? (simulated time)."""

from __future__ import annotations

import argparse
from typing import Any

from controlplane.cli.common import CommandError, emit, open_checked_store, settings_of, since, with_config
from controlplane.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE


def cmd_replay(args: argparse.Namespace) -> int:
    from controlplane.replay import TimelineError, run_replay

    settings = settings_of(args)
    try:
        if args.from_db:
            start = since(args.since)
            if start is None:
                raise CommandError("--from-db needs --since", EXIT_USAGE)
            store = open_checked_store(settings)
            try:
                results = store.results_between(start, since(args.until))
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
    emit(args, result.to_dict(), result.to_text())
    return EXIT_OK


def register(sub: Any) -> None:
    p = with_config(sub.add_parser("replay", help="what would regionguard have done? (simulated time)"))
    p.add_argument("timeline", nargs="?", help="timeline YAML or built-in scenario name")
    p.add_argument("--from-db", action="store_true", help="replay stored probe results instead")
    p.add_argument("--since", default=None)
    p.add_argument("--until", default=None)
    p.set_defaults(func=cmd_replay)
