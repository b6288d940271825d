"""`regionguard` command line: the only place that prints.

One module per command group (``admin``, ``run``, ``probe``, ``replay``,
``state``, ``oncall``; the demo's wiring in ``demo``), shared helpers and the
exit codes in ``common``, the parser and the dispatch in ``main``.
``controlplane.cli:main`` is the console script; ``python -m controlplane.cli``
runs the same.
"""

from controlplane.cli.common import CommandError
from controlplane.cli.main import build_parser, main
from controlplane.errors import EXIT_DB, EXIT_FAILED, EXIT_OK, EXIT_REFUSED, EXIT_USAGE

__all__ = ["EXIT_DB", "EXIT_FAILED", "EXIT_OK", "EXIT_REFUSED", "EXIT_USAGE", "CommandError", "build_parser", "main"]
