"""Streaming anomaly detection against each device's own recent history, one (device, metric) at a time.

Two detectors, both cheap enough to keep in Spark state for every series of a large fleet:

- ``ewma_z``: an exponentially weighted mean and variance of the series; a reading whose distance from
  the mean is more than ``z_threshold`` standard deviations is an anomaly (after a warm-up). Anomalous
  values do not update the history, so one spike does not teach the detector that spikes are normal.
- ``stuck``: the same value ``stuck_run`` times in a row (a frozen sensor); real signals carry noise.

The state is a plain tuple so Spark can store it; the logic here is pure Python and unit-tested alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

EWMA = "ewma_z"
STUCK = "stuck"


@dataclass(frozen=True)
class DetectorConfig:
    alpha: float = 0.05
    z_threshold: float = 5.0
    warmup: int = 30
    stuck_run: int = 5


@dataclass
class SeriesState:
    n: int = 0
    mean: float = 0.0
    var: float = 0.0
    last: float = math.nan
    run: int = 0

    def as_tuple(self) -> tuple[int, float, float, float, int]:
        return (self.n, self.mean, self.var, self.last, self.run)

    @classmethod
    def from_tuple(cls, t: tuple) -> SeriesState:
        return cls(int(t[0]), float(t[1]), float(t[2]), float(t[3]), int(t[4]))


def observe(state: SeriesState, value: float, cfg: DetectorConfig) -> list[tuple[str, float]]:
    """Feeds one value; returns the (detector, score) pairs that fired for it."""
    fired: list[tuple[str, float]] = []
    state.run = state.run + 1 if value == state.last else 1
    state.last = value
    if state.run == cfg.stuck_run:  # fire once per frozen stretch, not on every repeat
        fired.append((STUCK, float(state.run)))
    if state.n == 0:
        state.n, state.mean, state.var = 1, value, 0.0
        return fired
    # A floor on the deviation keeps a near-constant series from calling every wiggle an anomaly.
    std = math.sqrt(max(state.var, (1e-3 * max(abs(state.mean), 1.0)) ** 2))
    score = abs(value - state.mean) / std
    if state.n >= cfg.warmup and score > cfg.z_threshold:
        fired.append((EWMA, score))
        return fired
    diff = value - state.mean
    incr = cfg.alpha * diff
    state.mean += incr
    state.var = (1 - cfg.alpha) * (state.var + diff * incr)
    state.n += 1
    return fired
