"""The layout's import rules, checked on the source with ``ast`` (nothing is imported).

- The engine is pure: nothing it reaches (directly or through the modules it
  imports) is the store, the runtime, an actuator, a probe, the web app, the
  simulator, replay or the CLI, or imports a library that does I/O; the
  engine's own modules import only the standard library (never ``time``: time
  is injected as a Clock).
- ``web/`` never reaches an actuator, an Azure management client or an Azure
  credential (it records intent; the worker talks to Azure).
- ``probes/`` never reaches the web app, the runtime, the store or the CLI.
- Nothing outside ``controlplane/cli/`` imports the CLI.
- No two modules import each other, however indirectly (imports inside
  functions count; ``if TYPE_CHECKING:`` imports do not, they never run).
- Top-level packages form no cycle, except through composition roots: the
  CLI (entry points), ``controlplane.runtime.worker`` (wires the probe runner
  into the running loop) and ``controlplane.replay`` (runs the engine against
  the simulator's fault model). Without that exception the packages cycle by
  design: ``probes`` and ``simulator`` build on ``controlplane``'s values
  (config, domain) while those roots drive them.

An AST walk rather than import-linter contracts: no new dependency, the rules
read as plain Python next to the self-tests below (which build small trees
that break each rule and check the rule says so), and imports inside
functions, the way this code base loads heavy modules lazily, count too.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("controlplane", "probes", "web", "simulator", "migrations")

ENGINE = ("controlplane.engine",)
COMPOSITION_ROOTS = ("controlplane.cli", "controlplane.runtime.worker", "controlplane.replay")
# third-party and standard-library modules that talk to a network, a database, a process or a disk
IO_LIBRARIES = (
    "sqlalchemy",
    "alembic",
    "psycopg",
    "psycopg2",
    "httpx",
    "requests",
    "aiohttp",
    "azure",
    "openai",
    "flask",
    "werkzeug",
    "waitress",
    "apscheduler",
    "prometheus_client",
    "socket",
    "ssl",
    "http",
    "urllib.request",
    "subprocess",
    "asyncio",
    "sqlite3",
    "multiprocessing",
)


# ---------------------------------------------------------------- the import graph


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str  # a first-party module when the name resolves to one, else the dotted name as written
    path: str
    line: int

    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass
class Graph:
    modules: dict[str, Path]
    imports: dict[str, list[Import]] = field(default_factory=dict)

    def first_party(self, module: str) -> list[Import]:
        return [i for i in self.imports.get(module, []) if i.imported in self.modules]

    def reach(self, start: Iterable[str]) -> dict[str, list[Import]]:
        """Every first-party module reachable from ``start``, with one import chain that gets there."""
        chains: dict[str, list[Import]] = {m: [] for m in start}
        todo = list(chains)
        while todo:
            module = todo.pop()
            for imp in self.first_party(module):
                if imp.imported not in chains:
                    chains[imp.imported] = [*chains[module], imp]
                    todo.append(imp.imported)
        return chains


def _under(module: str, prefixes: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of every node under ``if TYPE_CHECKING:`` (those imports never run)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            for stmt in node.body:
                skip.update(id(n) for n in ast.walk(stmt))
    return skip


def _resolve(name: str, modules: Mapping[str, Path]) -> str:
    """The longest first-party module that ``name`` names or lies in; ``name`` itself when none does."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return name


def scan(root: Path, packages: Iterable[str] = PACKAGES) -> Graph:
    modules = {
        _module_name(root, path): path
        for package in packages
        if (root / package).is_dir()
        for path in sorted((root / package).rglob("*.py"))
        if "__pycache__" not in path.parts
    }
    graph = Graph(modules)
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        skip = _type_checking_nodes(tree)
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        found: list[Import] = []
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package[: len(package) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from pkg import sub` imports the submodule when there is one
                names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
            for name in names:
                target = _resolve(name, modules)
                if target != module:
                    found.append(Import(module, target, str(path.relative_to(root)), node.lineno))
        graph.imports[module] = found
    return graph


# ---------------------------------------------------------------- the rules (each returns its violations)


def _chain(chain: list[Import]) -> str:
    return " -> ".join(f"{i.imported} ({i.where()})" for i in chain)


def forbidden_reach(graph: Graph, sources: Iterable[str], forbidden: Iterable[str], why: str) -> list[str]:
    """Nothing under ``sources`` reaches a first-party module under ``forbidden``, directly or not."""
    forbidden = tuple(forbidden)
    start = [m for m in graph.modules if _under(m, sources)]
    return [
        f"{chain[0].importer} reaches {module}: {_chain(chain)} ({why})"
        for module, chain in sorted(graph.reach(start).items())
        if chain and _under(module, forbidden)
    ]


def forbidden_libraries(graph: Graph, sources: Iterable[str], libraries: Iterable[str], why: str) -> list[str]:
    """No module reachable from ``sources`` imports one of ``libraries``."""
    libraries = tuple(libraries)
    start = [m for m in graph.modules if _under(m, sources)]
    problems = []
    for module, chain in sorted(graph.reach(start).items()):
        for imp in graph.imports.get(module, []):
            if imp.imported not in graph.modules and _under(imp.imported, libraries):
                via = f" (reached: {_chain(chain)})" if chain else ""
                problems.append(f"{imp.where()}: {module} imports {imp.imported}{via} ({why})")
    return problems


def stdlib_only(graph: Graph, sources: Iterable[str], banned: Iterable[str], why: str) -> list[str]:
    """Modules under ``sources`` import only first-party modules and the standard library minus ``banned``."""
    banned = tuple(banned)
    problems = []
    for module in sorted(m for m in graph.modules if _under(m, sources)):
        for imp in graph.imports[module]:
            if imp.imported in graph.modules or imp.imported == "__future__":
                continue
            top = imp.imported.split(".")[0]
            if top not in sys.stdlib_module_names or _under(imp.imported, banned):
                problems.append(f"{imp.where()}: {module} imports {imp.imported} ({why})")
    return problems


def imported_only_from(graph: Graph, targets: Iterable[str], allowed: Iterable[str], why: str) -> list[str]:
    """First-party modules under ``targets`` are imported only by modules under ``allowed`` (or ``targets``)."""
    targets, allowed = tuple(targets), tuple(allowed)
    return [
        f"{imp.where()}: {module} imports {imp.imported} ({why})"
        for module in sorted(graph.modules)
        if not _under(module, targets) and not _under(module, allowed)
        for imp in graph.first_party(module)
        if _under(imp.imported, targets)
    ]


def _cycles(nodes: Iterable[str], edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def module_cycles(graph: Graph) -> list[str]:
    edges = {m: {i.imported for i in graph.first_party(m)} for m in graph.modules}
    problems = []
    for component in _cycles(graph.modules, edges):
        inside = [i for m in component for i in graph.first_party(m) if i.imported in component]
        problems.append(f"import cycle between {', '.join(component)}: " + "; ".join(f"{i.where()} imports {i.imported}" for i in inside))
    return problems


def package_cycles(graph: Graph, roots: Iterable[str] = COMPOSITION_ROOTS) -> list[str]:
    roots = tuple(roots)
    evidence: dict[tuple[str, str], list[Import]] = {}
    for module in graph.modules:
        if _under(module, roots):
            continue
        for imp in graph.first_party(module):
            a, b = module.split(".")[0], imp.imported.split(".")[0]
            if a != b:
                evidence.setdefault((a, b), []).append(imp)
    edges: dict[str, set[str]] = {}
    for a, b in evidence:
        edges.setdefault(a, set()).add(b)
    problems = []
    for component in _cycles({p for pair in evidence for p in pair}, edges):
        shown = [
            f"{i.where()} imports {i.imported}" for (a, b), imps in sorted(evidence.items()) if {a, b} <= set(component) for i in imps[:3]
        ]
        problems.append(f"packages {', '.join(component)} import each other outside the composition roots: " + "; ".join(shown))
    return problems


def violations(graph: Graph) -> dict[str, list[str]]:
    return {
        "engine reaches no runtime, store, actuator, probe, web, simulator, replay or CLI module": forbidden_reach(
            graph,
            ENGINE,
            (
                "controlplane.runtime",
                "controlplane.store",
                "controlplane.actuators",
                "controlplane.replay",
                "controlplane.cli",
                "probes",
                "web",
                "simulator",
            ),
            "the engine is pure",
        ),
        "nothing the engine reaches does I/O": forbidden_libraries(graph, ENGINE, IO_LIBRARIES, "the engine is pure"),
        "engine modules import only the standard library, never time": stdlib_only(
            graph, ENGINE, ("time", *IO_LIBRARIES), "the engine is pure; time is injected as a Clock"
        ),
        "web reaches no actuator and no Azure SDK": [
            *forbidden_reach(graph, ("web",), ("controlplane.actuators",), "the web records intent; the worker talks to Azure"),
            # azure.core alone is fine (the metrics module subclasses its pipeline policy); the clients and credentials are not
            *forbidden_libraries(graph, ("web",), ("azure.mgmt", "azure.identity"), "the web records intent; the worker talks to Azure"),
        ],
        "probes reach no web, runtime, store or CLI module": forbidden_reach(
            graph,
            ("probes",),
            ("web", "controlplane.runtime", "controlplane.store", "controlplane.cli"),
            "probes measure and return results; the runtime stores them",
        ),
        "only the CLI imports the CLI": imported_only_from(graph, ("controlplane.cli",), (), "the CLI is a composition root"),
        "no module import cycles": module_cycles(graph),
        "no package cycles outside composition roots": package_cycles(graph),
    }


# ---------------------------------------------------------------- the repository keeps them

REPO = scan(ROOT)
RULES = sorted(violations(REPO))


def test_the_scan_sees_the_whole_layout() -> None:
    for module in (
        "controlplane.engine.health",
        "controlplane.runtime.worker",
        "controlplane.cli.main",
        "probes.llm",
        "web.app",
        "simulator.llm",
    ):
        assert module in REPO.modules
    assert any(i.imported == "controlplane.domain" for i in REPO.imports["controlplane.engine.health"])


@pytest.mark.parametrize("rule", RULES)
def test_the_repository_keeps_the_import_rule(rule: str) -> None:
    problems = violations(REPO)[rule]
    assert not problems, f"{rule}:\n" + "\n".join(problems)


# ---------------------------------------------------------------- self-tests: each rule catches a break


CLEAN_TREE = {
    "controlplane/__init__.py": "",
    "controlplane/domain.py": "from dataclasses import dataclass\n",
    "controlplane/config.py": "import yaml\nfrom controlplane.domain import *\nfrom controlplane.notify.settings import NotificationSettings\n",
    "controlplane/notify/__init__.py": "",
    "controlplane/notify/settings.py": "from controlplane.durations import parse_duration\n",
    "controlplane/notify/notifier.py": "import httpx\nfrom controlplane.notify.settings import NotificationSettings\n",
    "controlplane/durations.py": "import re\n",
    "controlplane/engine/__init__.py": "",
    "controlplane/engine/health.py": "import math\nfrom typing import TYPE_CHECKING\nfrom controlplane.config import Settings\n"
    "if TYPE_CHECKING:\n    from controlplane.store import Store\n",
    "controlplane/engine/planner.py": "from . import health\nfrom .health import HealthEvaluator\n",
    "controlplane/store/__init__.py": "from controlplane.store.repo import Store\n",
    "controlplane/store/repo.py": "import sqlalchemy\nfrom controlplane.domain import Plan\n",
    "controlplane/actuators/__init__.py": "",
    "controlplane/actuators/base.py": "from azure.core.exceptions import HttpResponseError\n",
    "controlplane/runtime/__init__.py": "",
    "controlplane/runtime/worker.py": "from probes.runner import ProbeRunner\nfrom controlplane.store import Store\n",
    "controlplane/replay/__init__.py": "from simulator.faults import Fault\nfrom controlplane.engine import planner\n",
    "controlplane/cli/__init__.py": "",
    "controlplane/cli/main.py": "def main():\n    from web.app import create_app\n    from simulator.llm import LLMSimulator\n",
    "probes/__init__.py": "",
    "probes/runner.py": "import httpx\nfrom controlplane.config import Settings\n",
    "web/__init__.py": "",
    "web/app.py": "import flask\nfrom controlplane.store import Store\nfrom controlplane.metrics import Metrics\n",
    "controlplane/metrics.py": "from azure.core.pipeline.policies import SansIOHTTPPolicy\n",
    "simulator/__init__.py": "",
    "simulator/faults.py": "from controlplane.durations import parse_duration\n",
    "simulator/llm.py": "import aiohttp\nfrom controlplane.config import Settings\n",
}

# rule -> (file, the line that breaks it): each is added to the clean tree on its own
BREAKS = {
    "engine reaches no runtime, store, actuator, probe, web, simulator, replay or CLI module": (
        "controlplane/engine/planner.py",
        "from controlplane.store import Store\n",
    ),
    "nothing the engine reaches does I/O": ("controlplane/durations.py", "import httpx\n"),
    "engine modules import only the standard library, never time": ("controlplane/engine/health.py", "def now():\n    import time\n"),
    "web reaches no actuator and no Azure SDK": ("web/app.py", "from controlplane.actuators.base import HttpResponseError\n"),
    "probes reach no web, runtime, store or CLI module": ("probes/runner.py", "from controlplane.store.repo import Store\n"),
    "only the CLI imports the CLI": ("controlplane/runtime/worker.py", "from controlplane.cli import main\n"),
    "no module import cycles": ("controlplane/notify/settings.py", "def _duration():\n    from controlplane.config import Settings\n"),
    "no package cycles outside composition roots": ("controlplane/notify/notifier.py", "from web.app import create_app\n"),
}


def _tree(root: Path, files: Mapping[str, str]) -> Graph:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return scan(root)


def test_every_rule_has_a_self_test() -> None:
    assert set(BREAKS) == set(RULES)


def test_a_tree_that_keeps_the_rules_has_no_violations(tmp_path: Path) -> None:
    found = {rule: problems for rule, problems in violations(_tree(tmp_path, CLEAN_TREE)).items() if problems}
    assert found == {}


@pytest.mark.parametrize("rule", sorted(BREAKS))
def test_each_rule_names_the_import_that_breaks_it(tmp_path: Path, rule: str) -> None:
    name, extra = BREAKS[rule]
    files = {**CLEAN_TREE, name: CLEAN_TREE[name] + extra}
    found = {r: problems for r, problems in violations(_tree(tmp_path, files)).items() if problems}
    assert rule in found, found
    assert any(name in problem for problem in found[rule]), found[rule]  # it points at the file and line


def test_a_composition_root_may_import_everything(tmp_path: Path) -> None:
    files = {**CLEAN_TREE, "controlplane/cli/main.py": CLEAN_TREE["controlplane/cli/main.py"] + "from probes.runner import ProbeRunner\n"}
    assert package_cycles(_tree(tmp_path, files)) == []
    assert package_cycles(_tree(tmp_path, files), roots=()) != []  # without the exception the same tree cycles


def test_type_checking_imports_do_not_count_but_lazy_ones_do(tmp_path: Path) -> None:
    graph = _tree(tmp_path, CLEAN_TREE)
    assert "controlplane.store" not in {i.imported for i in graph.imports["controlplane.engine.health"]}
    assert {"web.app", "simulator.llm"} <= {i.imported for i in graph.imports["controlplane.cli.main"]}


def test_relative_and_from_package_imports_resolve_to_modules(tmp_path: Path) -> None:
    graph = _tree(tmp_path, CLEAN_TREE)
    assert {i.imported for i in graph.imports["controlplane.engine.planner"]} == {"controlplane.engine.health"}
    assert {i.imported for i in graph.imports["controlplane.replay"]} == {"simulator.faults", "controlplane.engine.planner"}


def test_web_reaching_an_azure_management_client_breaks_its_rule(tmp_path: Path) -> None:
    files = {
        **CLEAN_TREE,
        "web/app.py": CLEAN_TREE["web/app.py"] + "from azure.mgmt.trafficmanager import TrafficManagerManagementClient\n",
    }
    [problem] = violations(_tree(tmp_path, files))["web reaches no actuator and no Azure SDK"]
    assert problem.startswith("web/app.py:4: web.app imports azure.mgmt.trafficmanager")
