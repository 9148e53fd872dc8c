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


def _template(device: Device) -> dict[str, Any]:
    # The key order of ReadingStream's readings, which the wire keeps.
    reading: dict[str, Any] = {
        "device_id": device.device_id, "site": device.site.site_id, "type": device.kind.name, "ts": 0,
        "seq": 0, "boot": device.boot, "metrics": None, "lat": device.lat, "lon": device.lon,
    }
    if device.battery is not None:
        reading["battery"] = 0.0
    return reading


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
        self.metrics_of = _dict_maker(self.names)


def _dict_maker(names: tuple[str, ...]) -> Any:
    """A function making ``{names[0]: v[0], ...}`` of a list ``v``, as a dict display: 4-6x faster
    than ``dict(zip(names, v))``, and it runs once per reading (namedtuple makes its code the same
    way). The names are the device types' own metric names, not input."""
    body = ", ".join(f"{name!r}: v[{i}]" for i, name in enumerate(names))
    return eval(f"lambda v: {{{body}}}", {})  # noqa: S307


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
        # A reading is its device's template copied, with seq, metrics and battery filled in: copying a
        # dict of the same keys costs less than building it, and keeps the wire's key order.
        self._templates = [_template(d) for d in fleet.devices]
        self._drain = np.array([0.0 if d.battery is None else d.kind.battery_drain for d in fleet.devices])

    def readings(self, start: int, n: int, now_ms: int) -> list[dict[str, Any]]:
        """``n`` readings of the devices in turn from fleet position ``start`` on (wrapping round the fleet
        as often as ``n`` needs), all measured at ``now_ms``; advances each device's seq and battery
        reading by reading as ``ReadingStream`` does. Numpy's cost per call is what it is whatever
        ``n``, so callers ask for a pass's worth at once, not a reading or a fleet at a time."""
        count = len(self.devices)
        if n < 1:
            raise ValueError(f"at least one reading per call, not {n}")
        positions_all = np.arange(n)
        idx = (start + positions_all) % count
        # Devices come in turn, so position p holds the same device as position p % count, for the
        # (p // count)-th time in this call: seq and battery follow from that without a Python step per
        # reading, and only the call's own devices (at most n) are read and written back, whatever the
        # fleet's size.
        occurrence = positions_all // count
        first = positions_all % count
        devices = self.devices
        order = idx.tolist()
        own = [devices[i] for i in order[:count]]
        seq0 = np.fromiter((d.seq for d in own), dtype=np.int64, count=len(own))
        battery0 = np.fromiter((d.battery or 0.0 for d in own), dtype=float, count=len(own))
        drain0 = self._drain[idx[:count]]
        seqs = (seq0[first] + occurrence).tolist()
        batteries = np.round(np.maximum(battery0[first] - occurrence * drain0[first], 0.0), 2).tolist()
        hours = now_ms / MS_PER_HOUR + self.hour_offset[idx]
        daily = np.sin(2 * math.pi * (hours - CYCLE_START_H) / 24.0)
        elapsed_h = (now_ms - self.started_ms) / MS_PER_HOUR
        kinds = self.kind_of[idx]
        out: list[Any] = [None] * n
        templates = self._templates
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
            names, metrics_of = part.names, part.metrics_of
            matrix = np.column_stack([columns[name] for name in names]).tolist()
            has_battery = part.kind.battery_drain > 0  # a drain is what gives a device a battery (fleet.py)
            for p, values in zip(positions.tolist(), matrix, strict=True):
                reading = templates[order[p]].copy()
                reading["ts"] = now_ms
                reading["seq"] = seqs[p]
                reading["metrics"] = metrics_of(values)
                if has_battery:
                    reading["battery"] = batteries[p]
                out[p] = reading
        # Each device moves on by its readings in this call: seq by one each, the battery by its drain.
        for f, device in enumerate(own):
            taken = (n - 1 - f) // count + 1
            device.seq += taken
            if device.battery is not None:
                device.battery = max(0.0, device.battery - taken * float(drain0[f]))
        return out
