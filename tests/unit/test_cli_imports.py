"""What the command line imports: nothing heavy to build the parser; a clear message when the ``sim`` extra is missing."""

from __future__ import annotations

import subprocess
import sys

import pytest

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


# A fresh interpreter in which aiohttp and trustme cannot be imported, as after `pip install regionguard` without [sim].
WITHOUT_SIM_EXTRA = """
import sys


class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("aiohttp", "trustme"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Blocker())
from controlplane.cli import main

sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("argv", [("demo", "--duration", "1", "--port", "0"), ("sim", "llm", "--", "--duration", "1"), ("sim", "arm")])
def test_demo_and_sim_without_the_sim_extra_say_how_to_install_it(argv: tuple[str, ...]) -> None:
    done = subprocess.run([sys.executable, "-c", WITHOUT_SIM_EXTRA, *argv], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith(f"error: regionguard {argv[0]} needs the simulator") and "pip install 'regionguard[sim]'" in line
    assert "Traceback" not in done.stderr
