"""The generator's ledger file, as ``tsdemo verify``, the bench and the tests read it back.

The generator (``generators.ledger.Ledger``) writes it: one JSON object, rewritten atomically::

    {"version": 1, "bucket_ms": 60000, "published": N, "complete": bool, "updated_ms": ms,
     "late_published": N, "late_threshold_ms": ms|null, "malformed_sent": N, "duplicates_sent": N,
     "messages_acked": N, "unacknowledged": N, "merged_before_ms": ms,
     "devices": {device_id: {"site": s, "type": t, "boot": n, "metrics": {metric: {bucket_ms: count}}}},
     "late": {device_id: {metric: {bucket_ms: count}}}}

Counts are acknowledged readings by the event time's minute (``BUCKET_MS``); buckets before
``merged_before_ms`` are merged into one per series keyed by the last minute it covers. More in
generators/README.md, "The ledger".
"""

from __future__ import annotations

import json
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


@dataclass(frozen=True)
class LedgerFile:
    """A ledger as read back: the header, the expected counts and the late section."""

    header: dict[str, Any]
    entries: list[LedgerEntry]
    late: list[LedgerEntry]


def _entries(devices: dict[str, Any], sections: dict[str, Any]) -> list[LedgerEntry]:
    return [
        LedgerEntry(dev_id, devices[dev_id]["site"], devices[dev_id]["type"], metric,
                    {int(b): int(n) for b, n in buckets.items()})
        for dev_id, metrics in sections.items()
        for metric, buckets in metrics.items()
    ]


def load_ledger(path: Path) -> LedgerFile:
    """The ledger file's header, expected counts and late section; a clear error for a missing or foreign file."""
    if not path.exists():
        raise FileNotFoundError(f"no ledger at {path}: run a generator with --ledger-path {path} first")
    data = json.loads(path.read_text())
    if data.get("version") != LEDGER_VERSION:
        raise ValueError(f"{path}: not a tsdemo ledger (version {data.get('version')!r})")
    devices = data["devices"]
    entries = _entries(devices, {d: dev["metrics"] for d, dev in devices.items()})
    late = _entries(devices, data.get("late", {}))
    header = {k: v for k, v in data.items() if k not in ("devices", "late")}
    return LedgerFile(header, entries, late)


def read_ledger(path: Path) -> tuple[dict[str, Any], list[LedgerEntry]]:
    """The ledger file's header and its expected entries (the late section is in ``load_ledger``)."""
    ledger = load_ledger(path)
    return ledger.header, ledger.entries
