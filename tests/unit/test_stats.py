"""One percentile for verdicts, rollups and the dashboard."""

from __future__ import annotations

import pytest

from controlplane.stats import percentile


def test_the_median_of_an_even_count_is_the_lower_one_so_one_outlier_never_moves_it() -> None:
    assert percentile([100.0, 110.0, 120.0, 9000.0], 0.5) == 110.0
    assert percentile([100.0, 110.0, 120.0], 0.5) == 110.0


def test_p95_is_the_nearest_rank_and_always_a_measured_value() -> None:
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert percentile(values, 0.95) == 19.0
    assert percentile(values, 1.0) == 20.0
    assert percentile(values, 0.0) == 1.0


def test_no_values_give_no_percentile() -> None:
    assert percentile([], 0.5) is None


def test_it_refuses_a_quantile_outside_zero_to_one() -> None:
    with pytest.raises(ValueError, match="q: 95"):
        percentile([1.0], 95)
