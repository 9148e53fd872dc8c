"""Pacing the readings and measuring the rate achieved, on the generator's own monotonic clock.

The pacer is a schedule, not a sleep per reading: at time t it owes ``floor(rate * t)`` readings in
all, so a stall (a slow flush, a busy CPU, a full in-flight window) is made up right after and the
count over any longer span stays on target. The meter samples the cumulative count about once a
second and reports the achieved rate over the run and the lowest and highest rate over any window
of ``window_s`` (a minute by default), which is what "the rate holds within 5%" is judged by.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


class RatePacer:
    """How many readings are due now for a steady ``rate`` per second since ``start``."""

    def __init__(self, rate: float, start: float) -> None:
        self.rate = rate
        self.start = start
        self.issued = 0

    def due(self, now: float) -> int:
        return int(self.rate * (now - self.start)) - self.issued

    def took(self, n: int) -> None:
        self.issued += n


#: How long the main loop naps when no reading is due. It used to nap one reading's time (a fifth of
#: a millisecond at 5,000 readings/s), so it drew the readings a few at a time, and numpy's cost per
#: call (``generators.ticks``) is the same for 5 readings as for 500: at 5,000 readings/s in batches of
#: 10 the generator took 47 % of a core, more than the bridge, on the machine the Spark job shares.
#: The schedule stays exact (the pacer owes what is due whenever it looks); readings only bunch into
#: passes of 10 ms, each measured at its pass's time.
IDLE_S = 0.01


@dataclass(frozen=True)
class RateReport:
    """The rate a run achieved; ``within`` is the check the benchmark reports."""

    target: float | None
    count: int
    elapsed_s: float
    window_s: float
    #: lowest and highest rate over any span of at least ``window_s`` (None: the run was shorter)
    worst_window: float | None
    best_window: float | None

    @property
    def achieved(self) -> float:
        return self.count / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def within(self, tolerance: float = 0.05) -> bool:
        """The achieved rate, and every full window's, within ``tolerance`` of the target."""
        if self.target is None:
            return True
        rates = [self.achieved] + [r for r in (self.worst_window, self.best_window) if r is not None]
        return all(abs(r - self.target) <= tolerance * self.target for r in rates)


class RateMeter:
    """Cumulative counts sampled on a monotonic clock; keeps only one window of samples."""

    def __init__(self, start: float, target: float | None, window_s: float = 60.0, sample_s: float = 1.0) -> None:
        self.start = start
        self.target = target
        self.window_s = window_s
        self.sample_s = sample_s
        self._samples: deque[tuple[float, int]] = deque([(start, 0)])
        self._last = (start, 0)
        self.worst: float | None = None
        self.best: float | None = None

    def tick(self, now: float, count: int) -> None:
        if now - self._samples[-1][0] < self.sample_s:
            self._last = (now, count)
            return
        self._sample(now, count)

    def _sample(self, now: float, count: int) -> None:
        self._last = (now, count)
        samples = self._samples
        samples.append((now, count))
        horizon = now - self.window_s
        while len(samples) > 2 and samples[1][0] <= horizon:
            samples.popleft()
        t0, n0 = samples[0]
        if t0 <= horizon + 1e-9:
            rate = (count - n0) / (now - t0)
            self.worst = rate if self.worst is None else min(self.worst, rate)
            self.best = rate if self.best is None else max(self.best, rate)

    def report(self, end: float | None = None, count: int | None = None) -> RateReport:
        """The report up to the last tick (or ``end``/``count`` when given: the run's last reading)."""
        if end is None or count is None:
            end, count = self._last
        if end > self._samples[-1][0]:
            self._sample(end, count)
        return RateReport(self.target, count, end - self.start, self.window_s, self.worst, self.best)
