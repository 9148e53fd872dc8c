"""The fleet's stream of readings: one reading per call, devices in turn, with the configured faults.

Given the same fleet, seed, fault config and the same ``now_ms`` sequence, a stream produces the same
items; the run loop feeds it the wall clock, ``generators.render`` a synthetic one.
"""

from __future__ import annotations

import random
from typing import Any, Protocol

from generators.faults import (
    MALFORMED_KINDS,
    FaultConfig,
    apply_anomaly,
    clock_skew_ms,
    malformed_payload,
    start_anomaly,
)
from generators.fleet import Device, Fleet
from generators.outgoing import CopyGroup, Item
from generators.signals import clean_values
from generators.ticks import FleetTick
from servicekit.contract import topic_for


class Source(Protocol):
    """Where readings come from: the simulated fleet or a replayed file."""

    generated: int

    def next(self, now_ms: int) -> list[Item] | None:
        """What to send for the next reading (maybe nothing yet); None when the source is exhausted."""

    def drain(self) -> list[Item]:
        """Whatever is still held back (offline backlogs) at the end of a run."""


class ReadingStream:
    def __init__(self, fleet: Fleet, faults: FaultConfig, seed: int, started_ms: int) -> None:
        self.fleet = fleet
        self.faults = faults
        self.started_ms = started_ms
        self.signal_rng = random.Random(f"{seed}:signals")
        self.fault_rng = random.Random(f"{seed}:faults")
        self.generated = 0
        self.episodes = 0
        self._idx = 0
        self._seed = seed
        self._tick: FleetTick | None = None
        if faults.clock_skew_rate:
            for device in fleet:
                device.skew_ms = clock_skew_ms(faults, self.fault_rng)

    def next(self, now_ms: int) -> list[Item]:
        f, rng = self.faults, self.fault_rng
        devices = self.fleet.devices
        device = devices[self._idx % len(devices)]
        self._idx += 1
        self.generated += 1
        if f.reboot_rate and rng.random() < f.reboot_rate:
            # A reboot loses the device's RAM: seq restarts under a new boot and an anomaly ends.
            device.boot += 1
            device.seq = 0
            device.anomaly = None
        event_ms = now_ms
        if f.late_rate and rng.random() < f.late_rate:
            event_ms -= f.late_delay_ms
        elif f.out_of_order_rate and rng.random() < f.out_of_order_rate:
            event_ms -= f.out_of_order_delay_ms
        values = clean_values(device, event_ms, self.started_ms, self.signal_rng)
        reading = self._reading(device, event_ms + device.skew_ms, values)

        labels = None
        if device.anomaly is None and f.anomaly_rate and rng.random() < f.anomaly_rate:
            self.episodes += 1
            device.anomaly = start_anomaly(self.episodes, device.kind.metrics, rng)
        if device.anomaly is not None:
            labels, sent = self._anomalous(device, reading, values)
            if sent is None:
                return [Item(labels=labels)]

        items = []
        if f.malformed_rate and rng.random() < f.malformed_rate:
            payload = malformed_payload(reading, rng.choice(MALFORMED_KINDS))
            items.append(Item(payload=payload, topic=topic_for(reading["site"], reading["device_id"])))
        item = Item(reading=reading, labels=labels)
        items.append(item)
        if f.duplicate_rate and rng.random() < f.duplicate_rate:
            item.group = CopyGroup()
            items.append(Item(reading=reading, labels=labels, group=item.group, copy=True))
        return self._online(device, items, now_ms)

    @property
    def vectorised(self) -> bool:
        """Whether ``next_many`` applies: a fault-free stream (faults decide reading by reading)."""
        return self.faults.clean

    def next_many(self, now_ms: int, n: int) -> list[dict[str, Any]]:
        """The next ``n`` readings, devices in turn, drawn with numpy (``generators.ticks``); only for a
        fault-free stream, whose readings need no ``Item`` (``Batcher.add_plain``)."""
        if not self.faults.clean:
            raise RuntimeError("next_many serves fault-free streams only; use next()")
        if self._tick is None:
            self._tick = FleetTick(self.fleet, self._seed, self.started_ms)
        readings = self._tick.readings(self._idx % len(self.fleet), n, now_ms)
        self._idx += n
        self.generated += n
        return readings

    def drain(self) -> list[Item]:
        """Every offline device comes back and sends its backlog."""
        out: list[Item] = []
        for device in self.fleet:
            if device.backlog is not None:
                out.extend(device.backlog)
                device.backlog = device.offline_until_ms = None
        return out

    def _reading(self, device: Device, ts: int, values: dict[str, float]) -> dict[str, Any]:
        reading: dict[str, Any] = {
            "device_id": device.device_id,
            "site": device.site.site_id,
            "type": device.kind.name,
            "ts": ts,
            "seq": device.seq,
            "boot": device.boot,
            "metrics": values,
            "lat": device.lat,
            "lon": device.lon,
        }
        device.seq += 1
        if device.battery is not None:
            reading["battery"] = round(device.battery, 2)
            device.battery = max(0.0, device.battery - device.kind.battery_drain)
        return reading

    def _anomalous(
        self, device: Device, reading: dict[str, Any], values: dict[str, float]
    ) -> tuple[list[dict[str, Any]], float | None]:
        """Applies the device's anomaly to this reading; the labels, and the value sent (None: dropped)."""
        anomaly = device.anomaly
        base = {k: reading[k] for k in ("device_id", "site", "type", "boot", "seq", "ts")}
        if anomaly.metric is None:
            apply_anomaly(anomaly, values, None)
            labels = [
                {**base, "metric": m, "kind": anomaly.kind, "value": None, "normal": v, "episode": anomaly.episode}
                for m, v in values.items()
            ]
            sent = None
        else:
            normal = values[anomaly.metric]
            sent = apply_anomaly(anomaly, values, device.kind.spec(anomaly.metric))
            labels = [{**base, "metric": anomaly.metric, "kind": anomaly.kind, "value": sent, "normal": normal,
                       "episode": anomaly.episode}]
        if anomaly.done:
            device.anomaly = None
        return labels, sent

    def _online(self, device: Device, items: list[Item], now_ms: int) -> list[Item]:
        """Offline bursts: an offline device keeps measuring into a backlog, sent whole when it is back."""
        f = self.faults
        if device.backlog is None:
            if not (f.offline_rate and self.fault_rng.random() < f.offline_rate):
                return items
            # Offline for 0.5 to 1.5 times the configured duration, starting with this reading.
            device.offline_until_ms = now_ms + int(f.offline_duration_ms * self.fault_rng.uniform(0.5, 1.5))
            device.backlog = []
        if now_ms < device.offline_until_ms:  # type: ignore[operator]
            device.backlog.extend(items)
            return []
        items = device.backlog + items
        device.backlog = device.offline_until_ms = None
        return items
