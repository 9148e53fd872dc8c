"""Clean readings for many devices at once, with numpy: the generator's fast path.

Drawing every value in Python (``generators.signals.clean_values``: a Gaussian, a clamp and a round
per metric) cost about 10 µs a reading and bound the generator at batch 10 and above. Here one call
draws the values of up to a whole fleet in a few array operations per device type, with the same
model: daily cycle at the site's solar time, per-device bias, phase and drift, Gaussian noise,
clamped and rounded as each metric's spec says, derived metrics from the same formulas
(``DeviceType.derive``). Only the random stream differs (numpy's, seeded from the fleet's seed), so
a seed still gives the same readings run after run.

It serves fault-free streams only: faults (anomalies, duplicates, late or offline devices, reboots,
skewed clocks, malformed payloads) decide per reading and keep the per-reading path in
``generators.stream``, which stays the reference.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np

from generators.devicetypes import DeviceType
from generators.fleet import Device, Fleet
from generators.signals import CYCLE_START_H, MS_PER_HOUR


def _seed(text: str) -> int:
    # A string seed through SHA-256, as random.Random does with SHA-512: stable across processes.
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


class _Kind:
    """One device type's part of the fleet, as arrays indexed by the devices' order within the type."""

    def __init__(self, kind: DeviceType, devices: list[Device]) -> None:
        self.kind = kind
        self.names = kind.metric_names
        drawn = [i for i, m in enumerate(kind.metrics) if not m.derived]
        self.drawn = drawn
        specs = [kind.metrics[i] for i in drawn]
        self.base = np.array([m.base for m in specs])
        self.amplitude = np.array([m.daily_amplitude for m in specs])
        self.noise = np.array([m.noise for m in specs])
        self.low = np.array([m.low for m in specs])
        self.high = np.array([m.high for m in specs])
        self.decimals = [m.decimals for m in specs]
        self.bias = np.array([[d.bias[i] for i in drawn] for d in devices])
        self.drift = np.array([[d.drift_per_h[i] for i in drawn] for d in devices])
        self.power_factor = np.array([d.power_factor for d in devices])


class FleetTick:
    def __init__(self, fleet: Fleet, seed: int, started_ms: int) -> None:
        self.devices = fleet.devices
        self.started_ms = started_ms
        self.rng = np.random.default_rng(_seed(f"{seed}:signals:numpy"))
        by_kind: dict[str, list[Device]] = {}
        for d in fleet.devices:
            by_kind.setdefault(d.kind.name, []).append(d)
        self.kinds = [_Kind(devices[0].kind, devices) for devices in by_kind.values()]
        number = {name: k for k, name in enumerate(by_kind)}
        self.kind_of = np.array([number[d.kind.name] for d in fleet.devices])
        local = {id(d): i for devices in by_kind.values() for i, d in enumerate(devices)}
        self.local = np.array([local[id(d)] for d in fleet.devices])
        self.hour_offset = np.array([d.site.solar_offset_h + d.phase_h for d in fleet.devices])

    def readings(self, start: int, n: int, now_ms: int) -> list[dict[str, Any]]:
        """``n`` readings of the devices in turn from fleet position ``start`` on (wrapping round the fleet
        as often as ``n`` needs), all measured at ``now_ms``; advances each device's seq and battery
        reading by reading as ``ReadingStream`` does. Numpy's cost per call is what it is whatever
        ``n``, so callers ask for a pass's worth at once, not a reading or a fleet at a time."""
        count = len(self.devices)
        if n < 1:
            raise ValueError(f"at least one reading per call, not {n}")
        idx = (start + np.arange(n)) % count
        hours = now_ms / MS_PER_HOUR + self.hour_offset[idx]
        daily = np.sin(2 * math.pi * (hours - CYCLE_START_H) / 24.0)
        elapsed_h = (now_ms - self.started_ms) / MS_PER_HOUR
        kinds = self.kind_of[idx]
        out: list[Any] = [None] * n
        devices = self.devices
        order = idx.tolist()
        for k, part in enumerate(self.kinds):
            positions = np.flatnonzero(kinds == k)
            if not positions.size:
                continue
            rows = self.local[idx[positions]]
            raw = (part.base + part.amplitude * daily[positions, None] + part.bias[rows] + part.drift[rows] * elapsed_h
                   + self.rng.standard_normal((positions.size, part.base.size)) * part.noise)
            raw = np.clip(raw, part.low, part.high)
            columns: dict[str, Any] = {}
            for j, i in enumerate(part.drawn):
                columns[part.names[i]] = np.round(raw[:, j], part.decimals[j])
            derive = part.kind.derive
            if derive is not None:
                spec = derive.spec
                value = derive.formula(columns, part.power_factor[rows],
                                       lambda mean, sd, size=positions.size: self.rng.normal(mean, sd, size))
                columns[spec.name] = np.round(np.clip(value, spec.low, spec.high), spec.decimals)
            names = part.names
            matrix = np.column_stack([columns[name] for name in names]).tolist()
            kind_name, drain = part.kind.name, part.kind.battery_drain
            for p, values in zip(positions.tolist(), matrix, strict=True):
                device = devices[order[p]]
                reading = {
                    "device_id": device.device_id, "site": device.site.site_id, "type": kind_name, "ts": now_ms,
                    "seq": device.seq, "boot": device.boot, "metrics": dict(zip(names, values, strict=True)),
                    "lat": device.lat, "lon": device.lon,
                }
                device.seq += 1
                if device.battery is not None:
                    reading["battery"] = round(device.battery, 2)
                    device.battery = max(0.0, device.battery - drain)
                out[p] = reading
        return out
