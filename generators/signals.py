"""What a healthy device measures at a given moment: daily cycle, per-device bias, slow drift, noise.

Values depend only on the device, the event time and the signal random stream, never on faults,
so the same seed and clock give the same clean values whether or not faults are injected (the
anomaly labels record both the clean value and what was sent).
"""

from __future__ import annotations

import math
import random

from generators.fleet import Device

MS_PER_HOUR = 3_600_000
#: Hour of local solar time at which the daily cycle crosses its base level going up; peak at 15:00.
CYCLE_START_H = 9.0


def clean_values(device: Device, event_ms: int, started_ms: int, rng: random.Random) -> dict[str, float]:
    """The device's metrics at ``event_ms``; drift counts from ``started_ms``, when the run began."""
    hours = event_ms / MS_PER_HOUR + device.site.solar_offset_h + device.phase_h
    daily = math.sin(2 * math.pi * (hours - CYCLE_START_H) / 24.0)
    elapsed_h = (event_ms - started_ms) / MS_PER_HOUR
    gauss = rng.gauss
    values: dict[str, float] = {}
    for spec, bias, drift in zip(device.kind.metrics, device.bias, device.drift_per_h, strict=True):
        if not spec.derived:
            values[spec.name] = spec.clamp(
                spec.base + spec.daily_amplitude * daily + bias + drift * elapsed_h + gauss(0, spec.noise)
            )
    if device.kind.derive is not None:
        device.kind.derive(values, device.power_factor, rng)
    return values
