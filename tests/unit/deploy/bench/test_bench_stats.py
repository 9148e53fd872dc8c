"""The arithmetic behind every bench figure: percentiles, rates, ratios and the drain rate."""

from __future__ import annotations

import pytest

from deploy.bench.stats import drain_rate, percentile, rate, ratio


def test_percentile_interpolates_between_ranks_and_handles_edges():
    assert percentile([], 50) is None
    assert percentile([7.0], 99) == 7.0
    assert percentile([4, 1, 3, 2], 50) == pytest.approx(2.5)
    assert percentile(list(range(101)), 99) == pytest.approx(99)
    assert percentile([1, 2], 100) == 2
    with pytest.raises(ValueError):
        percentile([1], 101)


def test_rate_and_ratio_never_divide_by_zero():
    assert rate(100, 4) == 25
    assert rate(100, 0) == 0
    assert ratio(30, 60) == pytest.approx(0.5)
    assert ratio(30, 0) is None and ratio(None, 5) is None and ratio(5, None) is None


def test_drain_rate_leaves_out_start_up_and_what_moved_before_everyone_was_ready():
    # 0 moved until t=2, 100 at t=3 (first movement), all ready at t=4 with 300 moved, 1000 at t=8.
    samples = [(1.0, 0), (2.0, 0), (3.0, 100), (4.0, 300), (6.0, 700), (8.0, 1000)]
    assert drain_rate(samples, 1000) == pytest.approx((1000 - 100) / (8 - 3))
    assert drain_rate(samples, 1000, ready_at=4.0) == pytest.approx((1000 - 300) / (8 - 4))
    # ready before anything moved: the first movement starts the clock
    assert drain_rate(samples, 1000, ready_at=0.5) == pytest.approx(900 / 5)


def test_drain_rate_is_none_when_the_total_was_never_reached_or_nothing_moved():
    assert drain_rate([(1.0, 0), (2.0, 500)], 1000) is None
    assert drain_rate([(1.0, 0), (2.0, 0)], 0) is None
    assert drain_rate([], 10) is None


def test_a_drain_over_within_one_sample_is_timed_from_the_sample_before():
    assert drain_rate([(1.0, 0), (1.5, 0), (1.75, 300)], 300) == pytest.approx(300 / 0.25)
    # everything moved before the movers were seen ready: same fallback
    assert drain_rate([(1.0, 0), (2.0, 100), (3.0, 300)], 300, ready_at=5.0) == pytest.approx(200 / 1.0)
