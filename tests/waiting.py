"""Wait for a condition with a deadline, instead of sleeping and hoping."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# How long a Python process of ours may take to start: import, open its store, take its first tick. About 3 s
# alone; 20 s ran out once under `make test` with the machine at load 13 (worker-a printed nothing at all).
PROCESS_START_S = 60.0


def wait_until(condition: Callable[[], T], timeout: float, what: str, step: float = 0.01) -> T:
    """Poll ``condition`` every ``step`` s until it returns something truthy (returned); fail after ``timeout`` s naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)
