"""How many items a running worker holds, per in-memory container: what the soak watches for growth.

:func:`container_sizes` walks the attributes of regionguard's own objects
(classes defined under ``controlplane``, ``probes`` or ``simulator``) from a
root, and returns ``{path: items}`` for every ``dict``, ``list``, ``set``,
``frozenset`` and ``deque`` it meets. It enters our objects it finds in
attributes and in containers (the health windows in the evaluator, the channel
workers in the notifier), and sums the same path over a container's elements,
so a path reads like ``reconciler._mine`` or
``evaluator._windows[*].flaps``; a deque with a ``maxlen`` also reports its bound, summed the same way,
as ``<path>@bound``. Configuration (pydantic models) is not
entered: it does not change while the worker runs.

It is cheap (a few thousand ``len`` calls for 100 endpoints) and takes no
lock: another thread may change a container while it is read, so a container
that changes size under it is read again, and skipped after a few tries. The
worker serves the result on its health port at ``/debug/sizes``
(``bench/soak.py`` samples it).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

OUR_PACKAGES = ("controlplane", "probes", "simulator")
CONTAINERS = (dict, list, set, frozenset, deque)
MAX_DEPTH = 8
BOUND = "@bound"  # "<path>@bound": the items those containers can hold at most (deques with a maxlen)
MAX_ELEMENTS = 5_000  # a container this long is counted, not entered (a backlog of results, not a map of our objects)


def ours(value: Any) -> bool:
    """An instance of a class defined in regionguard (not configuration, not a type, not a function)."""
    cls = type(value)
    return (
        cls.__module__.split(".", 1)[0] in OUR_PACKAGES
        and not isinstance(value, BaseModel | type)
        and (hasattr(value, "__dict__") or hasattr(cls, "__slots__"))
    )


def _attributes(obj: Any) -> Iterable[tuple[str, Any]]:
    names: dict[str, None] = {}
    for klass in type(obj).__mro__:
        for name in getattr(klass, "__slots__", ()):
            names.setdefault(name, None)
    for name in names:
        try:
            yield name, getattr(obj, name)
        except AttributeError:
            continue
    yield from list(getattr(obj, "__dict__", {}).items())


def _elements(container: Any) -> list[Any]:
    for _ in range(5):
        try:
            return list(container.values()) if isinstance(container, dict) else list(container)
        except RuntimeError:  # changed size during iteration: another thread is writing it
            continue
    return []


def container_sizes(root: Any, name: str = "", max_depth: int = MAX_DEPTH) -> dict[str, int]:
    """``{path: items}`` of every container reachable from ``root`` through our own objects."""
    out: dict[str, int] = {}
    seen: set[int] = set()

    def visit(obj: Any, path: str, depth: int) -> None:
        if id(obj) in seen or depth > max_depth:
            return
        seen.add(id(obj))
        for attr, value in _attributes(obj):
            value_at(value, f"{path}.{attr}" if path else attr, depth + 1)

    def value_at(value: Any, path: str, depth: int) -> None:
        if isinstance(value, CONTAINERS):
            if id(value) in seen:
                return
            seen.add(id(value))
            out[path] = out.get(path, 0) + len(value)
            if isinstance(value, deque) and value.maxlen is not None:
                out[path + BOUND] = out.get(path + BOUND, 0) + value.maxlen
            if depth > max_depth or len(value) > MAX_ELEMENTS:
                return
            for element in _elements(value):
                if isinstance(element, CONTAINERS) or ours(element):
                    value_at(element, f"{path}[*]", depth + 1)
        elif ours(value):
            visit(value, path, depth)

    value_at(root, name, 0)
    return dict(sorted(out.items()))
