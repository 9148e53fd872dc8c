"""An independent count of received payloads, by the pipeline's rules, to hold a ledger against.

A subscriber that saw every message feeds the payloads here in arrival order: malformed payloads
are counted apart (as processing would send them to its dead-letter queue), each reading id
(device_id, boot, seq) counts once, and a reading further behind the newest event time received
than the late threshold counts as late. The result has the ledger's shape, so a test can assert
that the ledger equals what the broker delivered. It shares no code with the ledger's bookkeeping
on purpose: it is the second opinion.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from servicekit.contract.ledger import BUCKET_MS, LedgerEntry

#: processing's own bound (processing/transforms.py EARLIEST_TS_MS): 2000-01-01
EARLIEST_TS_MS = 946_684_800_000

Counts = dict[tuple[str, str], dict[int, int]]


def _valid(r: Any) -> bool:
    if not isinstance(r, dict):
        return False
    if not all(isinstance(r.get(k), str) and r[k] for k in ("device_id", "site", "type")):
        return False
    ts, seq, boot = r.get("ts"), r.get("seq"), r.get("boot", 0)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (ts, seq, boot)):
        return False
    if ts < EARLIEST_TS_MS or seq < 0 or boot < 0:
        return False
    metrics = r.get("metrics")
    return (
        isinstance(metrics, dict) and len(metrics) > 0
        and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in metrics.values())
    )


def parse_payload(payload: bytes) -> tuple[list[dict[str, Any]], int]:
    """The valid readings in a payload and the number of invalid ones (a non-JSON payload: 1)."""
    try:
        body = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return [], 1
    items = body if isinstance(body, list) else [body]
    valid = [r for r in items if _valid(r)]
    return valid, max(len(items) - len(valid), 0 if items else 1)


@dataclass
class Tally:
    late_threshold_ms: int
    counts: Counts = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    late: Counts = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    messages: int = 0
    malformed: int = 0
    duplicates: int = 0
    readings: int = 0
    late_readings: int = 0
    newest_ts: int | None = None
    seen: set[tuple[str, int, int]] = field(default_factory=set)

    def add(self, payload: bytes) -> None:
        self.messages += 1
        readings, invalid = parse_payload(payload)
        self.malformed += invalid
        for r in readings:
            ts = r["ts"]
            is_late = self.newest_ts is not None and self.newest_ts - ts > self.late_threshold_ms
            self.newest_ts = ts if self.newest_ts is None else max(self.newest_ts, ts)
            key = (r["device_id"], r.get("boot", 0), r["seq"])
            if key in self.seen:
                self.duplicates += 1
                continue
            self.seen.add(key)
            self.readings += 1
            self.late_readings += is_late
            target = self.late if is_late else self.counts
            for metric in r["metrics"]:
                target[(r["device_id"], metric)][ts - ts % BUCKET_MS] += 1

    @staticmethod
    def of_entries(entries: list[LedgerEntry]) -> dict[tuple[str, str], dict[int, int]]:
        """A ledger section in the same shape as ``counts``, for comparing."""
        out: dict[tuple[str, str], dict[int, int]] = {}
        for e in entries:
            target = out.setdefault((e.device_id, e.metric), {})
            for b, n in e.buckets.items():
                target[b] = target.get(b, 0) + n
        return out

    def plain(self, counts: Counts) -> dict[tuple[str, str], dict[int, int]]:
        return {k: dict(v) for k, v in counts.items()}
