"""Event loops: uvloop where it is installed, asyncio's own otherwise.

Probe timings are only as good as the loop's wake-up latency; uvloop's is
lower and steadier under load than the default loop's. Set
REGIONGUARD_EVENT_LOOP=asyncio to force the standard loop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    if os.environ.get("REGIONGUARD_EVENT_LOOP", "auto") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on the loop :func:`new_event_loop` picks."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(coro)
