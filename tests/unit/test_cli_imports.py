"""Building the command line (what ``regionguard --help`` does) imports no heavy module."""

from __future__ import annotations

import subprocess
import sys

# (httpx is not in the list: controlplane.config loads it today through controlplane.notify)
HEAVY = ("azure", "flask", "waitress", "sqlalchemy", "aiohttp", "trustme", "simulator", "web", "probes", "apscheduler", "alembic")

SCRIPT = """
import sys
from controlplane.cli import build_parser
build_parser().format_help()
print(" ".join(sorted({m.split(".")[0] for m in sys.modules})))
"""


def test_building_the_parser_imports_no_sdk_web_store_or_simulator() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split())
    assert "controlplane" in loaded
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))
