"""Replay: a CSV or JSONL file of readings played back, at its original timing or at a fixed rate.

Event times are rebased to now. At the original timing one offset does it (the file's first reading
becomes "now"), so the spacing between readings is the file's, late and out-of-order ones included.
At a fixed rate each reading is stamped with the time it is sent: a constant offset would drift away
from the wall clock whenever the rate differs from the file's, and the pipeline's watermark (shared
with every other generator) would then drop one side's readings as late.

Reading ids are rebased too: each device's boots are shifted past the highest boot the ledger has
seen for it, so replaying a file twice never reuses a (device_id, boot, seq) the pipeline would drop
as a duplicate. Readings without ``seq`` are numbered in file order. No faults are injected into a
replay. The file is read lazily, so its size does not matter.

JSONL: one reading object (the contract's form) or one array of them per line.
CSV: a header row; the columns device_id, site, type, ts (epoch ms or ISO 8601), and optionally seq,
boot, lat, lon, battery; every other column is a metric (an empty cell: not measured).
"""

from __future__ import annotations

import csv
import json
from collections import deque
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from generators.outgoing import Item
from generators.pacing import RatePacer

REQUIRED = ("device_id", "site", "type", "ts", "metrics")
CSV_FIELDS = {"device_id", "site", "type", "ts", "seq", "boot", "lat", "lon", "battery"}
#: Readings looked ahead to find those due at the original timing.
LOOKAHEAD = 5000


def _ts_ms(value: Any) -> int:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def _from_csv(row: dict[str, str]) -> dict[str, Any]:
    reading: dict[str, Any] = {k: row[k] for k in ("device_id", "site", "type") if row.get(k)}
    if row.get("ts"):
        reading["ts"] = row["ts"]
    for k in ("seq", "boot"):
        if row.get(k):
            reading[k] = int(row[k])
    for k in ("lat", "lon", "battery"):
        if row.get(k):
            reading[k] = float(row[k])
    reading["metrics"] = {k: float(v) for k, v in row.items() if k not in CSV_FIELDS and k and v not in ("", None)}
    return reading


def read_readings(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, reading) for each reading in a CSV or JSONL file, validated, ``ts`` in epoch ms."""
    with open(path, encoding="utf-8", newline="") as f:
        if path.suffix.lower() == ".csv":
            rows: Iterator[tuple[int, Any]] = ((i + 2, _from_csv(row)) for i, row in enumerate(csv.DictReader(f)))
        else:
            rows = ((i + 1, json.loads(line)) for i, line in enumerate(f) if line.strip())
        for line, body in rows:
            for reading in body if isinstance(body, list) else [body]:
                if not isinstance(reading, dict):
                    raise ValueError(f"{path}:{line}: not a reading object")
                missing = [k for k in REQUIRED if reading.get(k) in (None, "", {})]
                if missing:
                    raise ValueError(f"{path}:{line}: not a reading, missing {', '.join(missing)}")
                try:
                    reading["ts"] = _ts_ms(reading["ts"])
                except ValueError as exc:
                    raise ValueError(f"{path}:{line}: bad ts {reading['ts']!r}") from exc
                yield line, reading


class ReplaySource:
    """A :class:`generators.stream.Source` over a file of readings."""

    def __init__(
        self, path: Path, now_ms: int, previous_boot: Callable[[str], int | None], *, stamp_now: bool = False
    ) -> None:
        self.path = path
        self.base_ms = now_ms
        self.stamp_now = stamp_now
        self.generated = 0
        self._previous_boot = previous_boot
        self._readings = read_readings(path)
        self._ahead: deque[dict[str, Any]] = deque()
        self._first_ts: int | None = None
        self._boot_offset: dict[str, int] = {}
        self._seq: dict[tuple[str, int], int] = {}
        self._exhausted = False

    def _fill(self, n: int) -> None:
        while len(self._ahead) < n and not self._exhausted:
            try:
                _line, r = next(self._readings)
            except StopIteration:
                self._exhausted = True
                return
            if self._first_ts is None:
                self._first_ts = r["ts"]
            self._ahead.append(r)

    def due_by(self, elapsed_ms: float) -> int:
        """How many readings are due ``elapsed_ms`` after the start, at the file's own timing."""
        due = 0
        while due < LOOKAHEAD:
            if due == len(self._ahead):
                self._fill(due + 1)
                if due == len(self._ahead):
                    break
            if self._ahead[due]["ts"] - self._first_ts > elapsed_ms:  # type: ignore[operator]
                break
            due += 1
        return due

    @property
    def exhausted(self) -> bool:
        self._fill(1)
        return not self._ahead

    def next(self, now_ms: int) -> list[Item] | None:
        self._fill(1)
        if not self._ahead:
            return None
        r = self._ahead.popleft()
        dev = r["device_id"]
        offset = self._boot_offset.get(dev)
        if offset is None:
            prev = self._previous_boot(dev)
            offset = self._boot_offset[dev] = 0 if prev is None else prev + 1
        boot = int(r.get("boot", 0)) + offset
        seq = r.get("seq")
        if seq is None:
            seq = self._seq.get((dev, boot), 0)
            self._seq[(dev, boot)] = seq + 1
        ts = now_ms if self.stamp_now else r["ts"] - self._first_ts + self.base_ms  # type: ignore[operator]
        reading = {**r, "ts": ts, "seq": int(seq), "boot": boot}
        self.generated += 1
        return [Item(reading=reading)]

    def drain(self) -> list[Item]:
        return []


class FileTimingPacer(RatePacer):
    """Paces a replay at the file's original timing instead of at a steady rate."""

    def __init__(self, source: ReplaySource, start: float) -> None:
        super().__init__(rate=0.0, start=start)
        self.source = source

    def due(self, now: float) -> int:
        if self.source.exhausted:
            return 1  # one more call lets the run loop see the end of the file
        # A microsecond of slack: 10.1 - 10.0 is 0.0999... in floating point.
        return self.source.due_by((now - self.start) * 1000 + 1e-3)
