"""Small numeric helpers the benches share: percentiles, rates over a window, ratios against a baseline.

Pure functions, so the arithmetic behind every reported figure is unit-tested without servers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) by linear interpolation between closest ranks; None when empty."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float | None:
    """The median (the mean of the middle two for an even count); None when empty."""
    return percentile(values, 50)


def rate(count: float, seconds: float) -> float:
    """Items per second; 0 for an empty or instant window (never a division by zero)."""
    return count / seconds if seconds > 0 else 0.0


def ratio(subject: float | None, baseline: float | None) -> float | None:
    """``subject / baseline``; None when either is missing or the baseline is not positive."""
    if subject is None or baseline is None or baseline <= 0:
        return None
    return subject / baseline


def drain_rate(samples: Sequence[tuple[float, int]], total: int, ready_at: float | None = None) -> float | None:
    """Items per second over a drain seen as ``(time, items moved so far)`` samples: from the first
    sample with anything moved (or ``ready_at``, when every mover was up, if later) to the first sample
    that reached ``total``.

    What had moved at that start is subtracted, so start-up is left out of the rate for the subject
    and the baseline alike. A drain over within one sample is timed from the sample before it. None
    when ``total`` was never reached or nothing moved.
    """
    done = next((t for t, n in samples if n >= total), None)
    first = next((t for t, n in samples if n > 0), None)
    if done is None or first is None:
        return None
    start = first if ready_at is None else max(first, ready_at)
    if start >= done:
        start = max((t for t, _ in samples if t < done), default=done)
    moved = max((n for t, n in samples if t <= start), default=0)
    return rate(total - moved, done - start) if done > start else None
