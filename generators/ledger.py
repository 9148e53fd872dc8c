"""The generator's ledger: what was published and acknowledged by the broker, per device and metric.

It is the ground truth ``tsdemo verify`` compares with InfluxDB. Counts are bucketed by the event
time's minute so that a live stack can be checked up to a settled cutoff, and the file is
rewritten atomically so a reader never sees half of it. A reading enters the ledger only once the
broker has acknowledged it (PUBACK at QoS 1): that is the moment the pipeline owns it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUCKET_MS = 60_000
LEDGER_VERSION = 1


@dataclass(frozen=True)
class LedgerEntry:
    """Counts for one device and metric, by event-time bucket start (ms)."""

    device_id: str
    site: str
    type: str
    metric: str
    buckets: dict[int, int]

    def count(self, until_ms: int | None = None) -> int:
        return sum(n for b, n in self.buckets.items() if until_ms is None or b + BUCKET_MS <= until_ms)


class Ledger:
    """Thread-safe counters, flushed to a JSON file; reloaded on restart so counts and boots carry on."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self._devices: dict[str, dict[str, Any]] = {}
        self.published = 0
        self.complete = False
        if path is not None and path.exists():
            self._load(path)

    def _load(self, path: Path) -> None:
        data = json.loads(path.read_text())
        if data.get("version") != LEDGER_VERSION:
            raise ValueError(f"{path}: unsupported ledger version {data.get('version')!r}")
        self.published = int(data["published"])
        for dev_id, dev in data["devices"].items():
            self._devices[dev_id] = {"site": dev["site"], "type": dev["type"], "boot": dev.get("boot", 0)}
            for metric, buckets in dev["metrics"].items():
                self._counts[(dev_id, metric)].update({int(b): int(n) for b, n in buckets.items()})

    def previous_boot(self, device_id: str) -> int | None:
        dev = self._devices.get(device_id)
        return None if dev is None else int(dev["boot"])

    def record(self, readings: list[dict[str, Any]]) -> None:
        with self._lock:
            for r in readings:
                dev_id = r["device_id"]
                self._devices[dev_id] = {"site": r["site"], "type": r["type"], "boot": r.get("boot", 0)}
                bucket = r["ts"] - r["ts"] % BUCKET_MS
                for metric in r["metrics"]:
                    self._counts[(dev_id, metric)][bucket] += 1
            self.published += len(readings)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            devices: dict[str, Any] = {
                d: {**meta, "metrics": {}} for d, meta in sorted(self._devices.items())
            }
            for (dev_id, metric), buckets in self._counts.items():
                devices[dev_id]["metrics"][metric] = {str(b): n for b, n in sorted(buckets.items())}
            return {
                "version": LEDGER_VERSION,
                "bucket_ms": BUCKET_MS,
                "published": self.published,
                "complete": self.complete,
                "updated_ms": int(time.time() * 1000),
                "devices": devices,
            }

    def flush(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.snapshot(), separators=(",", ":")))
        os.replace(tmp, self.path)


def read_ledger(path: Path) -> tuple[dict[str, Any], list[LedgerEntry]]:
    """The ledger file's header and its entries; raises a clear error for a missing or foreign file."""
    if not path.exists():
        raise FileNotFoundError(f"no ledger at {path}: run a generator with --ledger-path {path} first")
    data = json.loads(path.read_text())
    if data.get("version") != LEDGER_VERSION:
        raise ValueError(f"{path}: not a tsdemo ledger (version {data.get('version')!r})")
    entries = [
        LedgerEntry(dev_id, dev["site"], dev["type"], metric, {int(b): int(n) for b, n in buckets.items()})
        for dev_id, dev in data["devices"].items()
        for metric, buckets in dev["metrics"].items()
    ]
    header = {k: v for k, v in data.items() if k != "devices"}
    return header, entries
