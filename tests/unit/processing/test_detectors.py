"""The vectorised detectors (processing.detectors) against the reference, processing.anomaly.observe:
the same detections, scores and states, to the last bit, with numba and with the numpy fallback."""

from __future__ import annotations

import numpy as np
import pytest

from processing.anomaly import DetectorConfig, SeriesState, observe
from processing.detectors import _KERNEL, CODES, new_states, run_series


def fleet_series(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    series = []
    for k in range(40):
        n = int(rng.integers(1, 300))
        v = 20 + rng.normal(0, 1, n).round(1)
        if k % 3 == 0:
            v[rng.integers(0, n, 3)] += 15  # spikes
        if k % 4 == 0 and n > 50:
            v[20:30] = v[20]  # frozen
        if k % 5 == 0:
            v = np.maximum(v, 20)  # resting at a limit
        if k % 7 == 0:
            v = v + np.linspace(0, 8, n)  # drift
        series.append(v)
    return series


def reference(series: list[np.ndarray], cfg: DetectorConfig, states: list[SeriesState]) -> list[tuple]:
    fired, offset = [], 0
    for state, values in zip(states, series, strict=True):
        for i, value in enumerate(values.tolist()):
            fired += [(offset + i, d, s) for d, s in observe(state, value, cfg)]
        offset += len(values)
    return sorted(fired)


@pytest.mark.parametrize("use_numba", [pytest.param(True, marks=pytest.mark.skipif(
    _KERNEL is None, reason="numba not installed (the numpy case still runs)")), False])
def test_batches_of_series_detect_exactly_as_the_reference_one_value_at_a_time(use_numba):
    cfg = DetectorConfig()
    series = fleet_series(1)
    ref_states = [SeriesState() for _ in series]
    states = new_states(len(series))
    # Two batches: the second starts from the states the first left, as the job's state store hands them on.
    for part in (slice(0, None, 2), slice(1, None, 2)):
        chunks = [s[part] for s in series]
        expected = reference(chunks, cfg, ref_states)
        values = np.concatenate(chunks)
        starts = np.cumsum([0] + [len(c) for c in chunks])
        pos, code, score = run_series(values, starts, states, cfg, use_numba=use_numba)
        got = sorted(zip(pos.tolist(), [CODES[c] for c in code], score.tolist(), strict=True))
        assert got == expected
        assert len(expected) > 10  # the fleet does fire: the comparison means something
    np.testing.assert_array_equal(states, np.array([s.as_tuple() for s in ref_states]))


def test_an_empty_batch_and_a_new_series_start_clean():
    states = new_states(2)
    pos, _, _ = run_series(np.array([]), np.array([0, 0, 0]), states, DetectorConfig(), use_numba=False)
    assert len(pos) == 0
    np.testing.assert_array_equal(states, np.array([SeriesState().as_tuple()] * 2))
