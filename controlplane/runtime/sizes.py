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

:func:`allocator_sizes` says what the C allocator holds (glibc's ``mallinfo2``):
bytes in use by ``malloc`` (C extensions, the database driver, OpenSSL, and
Python objects too large for Python's own small-object allocator, whose blocks
``sys.getallocatedblocks`` counts) and bytes it keeps free. When RSS grows while
both stay flat, the growth is elsewhere (Python's arenas, mapped files).
"""

from __future__ import annotations

import ctypes
import ctypes.util
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


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
    ]


def _mallinfo2() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        function = libc.mallinfo2  # glibc >= 2.33
    except (OSError, AttributeError):
        return None
    function.restype = _MallInfo2
    function.argtypes = []
    return function


_MALLINFO2 = _mallinfo2()


def allocator_sizes() -> dict[str, int]:
    """What glibc's malloc holds, over all its arenas, in KiB: in use (heap chunks and mapped blocks), free
    (kept in its arenas: fragmentation, or not yet given back), mapped (blocks it mapped on their own).
    Empty where the C library has no ``mallinfo2``."""
    if _MALLINFO2 is None:
        return {}
    info = _MALLINFO2()
    return {
        "malloc.in_use_kb": (info.uordblks + info.hblkhd) // 1024,
        "malloc.free_kb": info.fordblks // 1024,
        "malloc.mapped_kb": info.hblkhd // 1024,
    }
