"""The one percentile every figure uses: the engine's verdicts, the store's rollups, the dashboard."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values (``None`` when empty).

    The value at rank ``ceil(q * n)``: always one that was measured, and for
    ``q = 0.5`` the lower median, so with an even count a single outlier never
    moves it.
    """
    if not sorted_values:
        return None
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q: {q!r} is not between 0 and 1")
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]
