"""Streaming anomaly detection against each device's own recent history, one (device, metric) at a time.

Three detectors, all cheap enough to keep in Spark state for every series of a large fleet:

- ``ewma_z``: a reading more than ``z_threshold`` standard deviations from the series' exponentially
  weighted mean (after a warm-up of ``warmup`` readings).
- ``drift``: a two-sided CUSUM of those standardized deviations: a run of readings each a little off
  the same way, as a slowly drifting sensor gives, fires once the sum passes ``drift_threshold``.
- ``stuck``: the same value ``stuck_run`` times in a row (a frozen sensor), unless the series rests at
  that value anyway: a run at the value the series last repeated is reported only when, at the rate
  the series repeated values before the run, a run that long is less likely than ``stuck_chance``.

What keeps them quiet on healthy signals (the false positives ``deploy.checks.detector_eval`` found):

- A reading equal to the one before (a signal resting at a physical limit, such as 0 ug/m3 or the
  lowest CO2 a sensor reports, a frozen stretch, a coarsely rounded value) does not update the mean
  and deviation: it says nothing new about the spread, and learning from it shrank the deviation to
  nothing, so every small step off the limit became a "5-sigma" anomaly.
- Anomalous readings move the mean and deviation as if they were ``z_threshold`` deviations away,
  not further (a clipped update): one spike barely teaches anything, but a lasting change of level
  is learnt in a few readings instead of being flagged forever while history stood still.
- The deviation is the smaller of a fast (``alpha``) and a slow (``var_alpha``) estimate: the slow
  one does not swell with a drift, so a drift stands out; the fast one forgets an old disturbance.
- ``stuck`` judges a run at a resting value against the series' own repeat rate, so a signal clamped
  at a limit or rounded coarsely (which repeats all the time) does not fire, while a freeze at any
  other value is still reported at once.

A frozen sensor whose value is the limit the signal rests at anyway, and the reading a spike or
drift pushed to a limit where the healthy signal was already, look healthy: no detector can tell.
A series that has sat at one value since the job first saw it has no deviation to judge by yet, so
its first few steps off that value are flagged until the deviation is learnt.

The state is a plain tuple of numbers (``SeriesState.as_tuple``, the Spark state schema in
``processing.transforms``); the logic here is pure Python and unit-tested alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

EWMA = "ewma_z"
DRIFT = "drift"
STUCK = "stuck"


@dataclass(frozen=True)
class DetectorConfig:
    alpha: float = 0.05
    z_threshold: float = 5.0
    warmup: int = 30
    stuck_run: int = 5
    #: weight of the slow deviation estimate (memory of about 1/var_alpha distinct readings)
    var_alpha: float = 0.01
    #: CUSUM: the sum of standardized deviations beyond ``drift_slack`` at which ``drift`` fires (0: off)
    drift_threshold: float = 8.0
    drift_slack: float = 1.0
    #: a run of ``stuck_run`` is reported when the series' repeat rate makes it less likely than this
    stuck_chance: float = 1e-3

    @classmethod
    def from_settings(cls, s: Any) -> DetectorConfig:
        """From ``processing.settings.ProcessingSettings`` (or anything with its ``anomaly_*`` fields)."""
        return cls(z_threshold=s.anomaly_z, warmup=s.anomaly_warmup, stuck_run=s.anomaly_stuck_run,
                   drift_threshold=s.anomaly_drift)


@dataclass
class SeriesState:
    #: readings seen
    n: int = 0
    mean: float = 0.0
    var: float = 0.0
    last: float = math.nan
    run: int = 0
    #: readings that updated the mean and deviation (those not equal to the reading before)
    updates: int = 0
    slow_var: float = 0.0
    #: exponentially weighted share of readings equal to the one before
    repeats: float = 0.0
    drift_up: float = 0.0
    drift_down: float = 0.0
    #: the value the series last repeated before the current run: where it rests (inf: nowhere yet)
    rest: float = math.inf

    def as_tuple(self) -> tuple[int, float, float, float, int, int, float, float, float, float, float]:
        return (self.n, self.mean, self.var, self.last, self.run, self.updates, self.slow_var, self.repeats,
                self.drift_up, self.drift_down, self.rest)

    @classmethod
    def from_tuple(cls, t: tuple) -> SeriesState:
        return cls(int(t[0]), float(t[1]), float(t[2]), float(t[3]), int(t[4]), int(t[5]), float(t[6]),
                   float(t[7]), float(t[8]), float(t[9]), float(t[10]))


def observe(state: SeriesState, value: float, cfg: DetectorConfig) -> list[tuple[str, float]]:
    """Feeds one value; returns the (detector, score) pairs that fired for it."""
    fired: list[tuple[str, float]] = []
    state.n += 1
    repeat = value == state.last
    if not repeat:
        if state.run > 1:  # the series repeated a value before: where it rests (at a limit, say)
            state.rest = state.last
        state.run = 0
    state.run += 1
    state.last = value
    state.repeats += cfg.alpha * (float(repeat) - state.repeats)
    if state.run == cfg.stuck_run and _frozen(state, cfg):  # once per frozen stretch
        fired.append((STUCK, float(state.run)))
    if state.updates == 0:
        state.updates, state.mean, state.var, state.slow_var = 1, value, 0.0, 0.0
        return fired
    # A floor on the deviation keeps a near-constant series from calling every wiggle an anomaly.
    std = math.sqrt(max(min(state.var, state.slow_var), (1e-3 * max(abs(state.mean), 1.0)) ** 2))
    diff = value - state.mean
    z = diff / std
    warm = state.n > cfg.warmup
    if warm and abs(z) > cfg.z_threshold:
        fired.append((EWMA, abs(z)))
    if repeat:
        return fired
    if warm:
        z = max(-cfg.z_threshold, min(cfg.z_threshold, z))
        diff = z * std
        if cfg.drift_threshold > 0:
            state.drift_up = max(0.0, state.drift_up + z - cfg.drift_slack)
            state.drift_down = max(0.0, state.drift_down - z - cfg.drift_slack)
            if max(state.drift_up, state.drift_down) > cfg.drift_threshold:
                fired.append((DRIFT, max(state.drift_up, state.drift_down)))
                state.drift_up = state.drift_down = 0.0
    # The first readings are averaged plainly, so the estimates start unbiased.
    a = max(cfg.alpha, 1.0 / (state.updates + 1))
    slow = max(cfg.var_alpha, 1.0 / (state.updates + 1))
    state.mean += a * diff
    state.var = (1 - a) * (state.var + a * diff * diff)
    state.slow_var = (1 - slow) * (state.slow_var + slow * diff * diff)
    state.updates += 1
    return fired


def _frozen(state: SeriesState, cfg: DetectorConfig) -> bool:
    """Whether the current run of ``state.last`` is a frozen sensor: at least ``stuck_run`` long (after a
    few distinct values), and away from where the series rests or unlikely for its repeat rate."""
    if state.run < cfg.stuck_run or state.updates < cfg.stuck_run:
        return False
    if state.last != state.rest:
        return True
    # The repeat rate before this run: each of its run - 1 repeats moved the rate a step towards 1.
    before = max(0.0, 1.0 - (1.0 - state.repeats) / (1.0 - cfg.alpha) ** (state.run - 1))
    return before ** (cfg.stuck_run - 1) < cfg.stuck_chance
