"""The kinds of device the fleet is made of: their metrics, units, plausible ranges and battery.

Each metric is a daily cycle around a base level plus noise, clamped to what the sensor can
physically report. A few metrics follow from others (a power meter's power is voltage times
current times its power factor), so a type may derive values after the independent ones are drawn.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MetricSpec:
    """A metric's signal: base level, daily swing (negative: peaks at night), noise and hard limits."""

    name: str
    unit: str
    base: float
    daily_amplitude: float
    noise: float
    low: float
    high: float
    decimals: int = 2
    #: computed from other metrics by the type's ``derive``; base, swing and noise only size anomalies
    derived: bool = False

    @property
    def spread(self) -> float:
        """The metric's normal variability, the yardstick anomalies are sized by."""
        return max(abs(self.daily_amplitude), 5 * self.noise)

    def clamp(self, value: float) -> float:
        return round(min(self.high, max(self.low, value)), self.decimals)


#: A derived metric's raw value from (the values so far, the device's power factor, draw(mean, sd)).
#: Written with arithmetic only, so the same formula serves one reading (floats, ``random.gauss``)
#: and a whole fleet at once (numpy columns, ``Generator.normal``); the metric's spec then clamps it.
Formula = Callable[[Mapping[str, Any], Any, Callable[[float, float], Any]], Any]


@dataclass(frozen=True)
class Derive:
    spec: MetricSpec
    formula: Formula

    def __call__(self, values: dict[str, float], power_factor: float, rng: random.Random) -> None:
        values[self.spec.name] = self.spec.clamp(self.formula(values, power_factor, rng.gauss))


@dataclass(frozen=True)
class DeviceType:
    name: str
    metrics: tuple[MetricSpec, ...]
    #: battery percent used per reading; 0 for mains-powered devices, which report no battery
    battery_drain: float
    derive: Derive | None = None

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.metrics)

    def spec(self, metric: str) -> MetricSpec:
        return next(m for m in self.metrics if m.name == metric)


POWER = MetricSpec("power", "W", 1800.0, 1100.0, 60.0, 0.0, 15_000.0, 1, derived=True)
PEAK = MetricSpec("peak", "mm/s", 6.0, 2.0, 0.5, 0.0, 150.0, 3, derived=True)

DEVICE_TYPES: dict[str, DeviceType] = {
    t.name: t
    for t in (
        DeviceType(
            "environment",
            (
                MetricSpec("temperature", "degC", 21.0, 4.0, 0.2, -40.0, 85.0),
                # Relative humidity falls as the air warms: its cycle runs opposite to temperature.
                MetricSpec("humidity", "%RH", 45.0, -10.0, 1.0, 0.0, 100.0),
                MetricSpec("pressure", "hPa", 1013.0, 1.5, 0.3, 870.0, 1085.0),
            ),
            battery_drain=0.0005,
        ),
        DeviceType(
            "power_meter",
            (
                MetricSpec("voltage", "V", 230.0, 3.0, 0.8, 180.0, 260.0, 1),
                MetricSpec("current", "A", 8.0, 5.0, 0.4, 0.0, 63.0),
                POWER,
            ),
            battery_drain=0.0,
            derive=Derive(POWER, lambda v, pf, _draw: v["voltage"] * v["current"] * pf),
        ),
        DeviceType(
            "air_quality",
            (
                MetricSpec("pm2_5", "ug/m3", 12.0, 6.0, 1.5, 0.0, 500.0, 1),
                MetricSpec("co2", "ppm", 600.0, 250.0, 15.0, 350.0, 5000.0, 0),
            ),
            battery_drain=0.002,
        ),
        DeviceType(
            "vibration",
            (
                MetricSpec("rms", "mm/s", 2.0, 0.8, 0.15, 0.0, 50.0, 3),
                PEAK,
            ),
            battery_drain=0.004,
            # Peak velocity is the RMS times a crest factor of about 3 for machinery in good shape.
            derive=Derive(PEAK, lambda v, _pf, draw: v["rms"] * draw(3.0, 0.2)),
        ),
    )
}
