"""Every hand-written ``# type: ignore`` and ``# noqa`` names its code and says why on the same line.

Accepted: ``# type: ignore[code]  # why`` and ``# noqa: CODE - why`` (or ``# noqa: CODE  # why``).
mypy (``ignore-without-code``, ``warn_unused_ignores``) and ruff (``RUF100``)
already refuse ignores without a code or that are no longer needed; this adds the reason.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("controlplane", "probes", "web", "simulator", "migrations", "tests", "bench")

_MARKER = re.compile(r"#\s*(type:\s*ignore|noqa)\b", re.IGNORECASE)
_GOOD = (
    re.compile(r"#\s*type:\s*ignore\[[a-z0-9_, -]+\]\s+#\s*\S"),
    re.compile(r"#\s*noqa:\s*[A-Z]+[0-9]+(?:\s*,\s*[A-Z]+[0-9]+)*\s+(?:-|#|--|:)\s*\S"),
)


def reasonless(text: str, name: str = "<source>") -> list[str]:
    """``file:line: comment`` for each suppression comment without a code and a reason."""
    found = []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        marker = _MARKER.search(tok.string) if tok.type == tokenize.COMMENT else None
        if marker is None:
            continue
        if not any(g.match(tok.string[marker.start() :]) for g in _GOOD):
            found.append(f"{name}:{tok.start[0]}: {tok.string.strip()}")
    return found


def test_every_suppression_in_the_repository_gives_its_reason() -> None:
    problems = [
        problem
        for top in SOURCES
        if (ROOT / top).is_dir()
        for path in sorted((ROOT / top).rglob("*.py"))
        if "__pycache__" not in path.parts
        for problem in reasonless(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    ]
    assert not problems, "say why on the same line (# type: ignore[code]  # why, or # noqa: CODE - why):\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "line",
    [
        "x = f()  # type: ignore\n",
        "x = f()  # type: ignore[arg-type]\n",
        "x = f()  # type: ignore[arg-type]  #\n",
        "import os  # noqa\n",
        "import os  # noqa: F401\n",
        "def f():  # type: ignore[no-untyped-def]\n    pass\n",
    ],
)
def test_a_suppression_without_code_or_reason_is_reported(line: str) -> None:
    assert reasonless(line) == [f"<source>:1: {line.splitlines()[0].split('  ', 1)[1]}"]


@pytest.mark.parametrize(
    "line",
    [
        "x = f()  # type: ignore[arg-type]  # the stub says str; the SDK takes bytes too\n",
        "x = f()  # type: ignore[misc, union-attr]  # frozen on purpose\n",
        "clock = lambda: fixed  # noqa: E731 - a caller-driven time stands still\n",
        "import os  # noqa: F401  # re-exported\n",
        "s = '# type: ignore'  # a string, not a comment\n",
    ],
)
def test_a_suppression_with_code_and_reason_passes(line: str) -> None:
    assert reasonless(line) == []
