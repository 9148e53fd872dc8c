"""What each micro-batch writes: device windows, device status, site windows, anomalies (one InfluxDB
write), invalid readings (the DLQ topic), and the batch's late and invalid counts for ``pipeline``.

Writes are synchronous and raise on failure, so a failed batch fails the query and is replayed from
the checkpoint. Every window point's timestamp is its window start and every anomaly's its reading's
event time, so a replayed batch overwrites the same points instead of adding to them. Each batch carries
the full aggregate-so-far of every device window it touched (``processing.stateful``), so the stored
value is always the exact current one.

Site windows are summed from device windows. The sink keeps the open windows' device figures in a
driver-side cache, filled from the batches it wrote; after a (re)start it reads back from InfluxDB only
windows an earlier run may have written (``SiteWindows``), so a steady stream never queries.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from prometheus_client import Counter

from processing.stateful import ANOMALY, BUCKET, INVALID, STATUS, WINDOW
from servicekit.contract.influx import ANOMALY as ANOMALY_MEASUREMENT
from servicekit.contract.influx import DEVICE_STATUS, DEVICE_WINDOW, SITE_WINDOW
from servicekit.contract.influx import DEVICE_WINDOW_FIELDS as DEVICE_FIELDS
from servicekit.contract.metrics import PROCESSING_READINGS_STORED
from storage.queries import InfluxQuery
from storage.writer import InfluxWriter

log = logging.getLogger("processing.sink")

# The pipeline's stored stage: what the device windows' counts grew by, counted once the batch is written.
READINGS_STORED = Counter(PROCESSING_READINGS_STORED, "readings added to the stored device windows")


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and not math.isfinite(value))


def _records(frame: pd.DataFrame, columns: Iterable[str]) -> Iterable[dict[str, Any]]:
    cols = list(columns)
    for values in zip(*(frame[c].tolist() for c in cols), strict=True):
        yield dict(zip(cols, values, strict=True))


def device_points(windows: pd.DataFrame) -> list[dict[str, Any]]:
    return [{"measurement": DEVICE_WINDOW,
             "tags": {"site": r["site"], "type": r["type"], "device_id": r["device_id"], "metric": r["metric"]},
             "fields": {k: (int(r[k]) if k == "count" else r[k]) for k in DEVICE_FIELDS if _present(r[k])},
             "time": int(r["time"])}
            for r in _records(windows, ("site", "type", "device_id", "metric", "time", *DEVICE_FIELDS))]


def device_status_points(status: pd.DataFrame) -> list[dict[str, Any]]:
    """Per device and window: newest position, battery and event time (for maps and battery panels)."""
    points = []
    for r in _records(status, ("site", "type", "device_id", "time", "lat", "lon", "battery", "last_seen")):
        fields = {k: r[k] for k in ("lat", "lon", "battery") if _present(r[k])}
        fields["last_seen_ms"] = float(r["last_seen"])
        points.append({"measurement": DEVICE_STATUS,
                       "tags": {"site": r["site"], "type": r["type"], "device_id": r["device_id"]},
                       "fields": fields, "time": int(r["time"])})
    return points


def anomaly_points(anomalies: pd.DataFrame) -> list[dict[str, Any]]:
    """One point per anomalous reading, at the reading's event time, so a replay overwrites it."""
    return [{"measurement": ANOMALY_MEASUREMENT,
             "tags": {"site": r["site"], "device_id": r["device_id"], "type": r["type"], "metric": r["metric"],
                      "detector": r["detector"]},
             "fields": {"value": r["value"], "score": r["score"], "seq": float(r["seq"]), "boot": float(r["boot"])},
             "time": int(r["time"])}
            for r in _records(anomalies, ("site", "device_id", "type", "metric", "detector", "value", "score",
                                          "seq", "boot", "time"))]


def site_points(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    points = []
    for row in rows:
        count = int(row["count"])
        points.append(
            {
                "measurement": SITE_WINDOW,
                "tags": {"site": row["site"], "type": row["type"], "metric": row["metric"]},
                "fields": {"count": count, "sum": row["sum"], "mean": row["sum"] / count, "min": row["min"],
                           "max": row["max"], "devices": int(row["devices"])},
                "time": int(row["time"]),
            }
        )
    return points


SiteKey = tuple[str, str, str, int]  # site, type, metric, window start


class SiteWindows:
    """Site windows from the device windows of the open event-time windows, kept on the driver.

    After a start, a window an earlier run may have written to (its start at or before ``horizon``: the
    newest event time the checkpoint's watermark implies, or the first batch's newest window) is read
    back from InfluxDB once, the first time a batch touches it; windows beyond it are new. A window
    leaves the cache when the watermark passes its end: no reading can reach it any more.
    """

    def __init__(self, query: InfluxQuery, window_ms: int, watermark_ms: int) -> None:
        self.query = query
        self.window_ms = window_ms
        self.watermark_ms = watermark_ms
        self.devices: dict[SiteKey, dict[str, tuple[int, float, float, float]]] = {}
        self.horizon: int | None = None
        self.read_backs = 0
        #: readings the last update added to the device windows (per device and window, the largest
        #: count increase over its metrics: a reading carries each metric of its type once)
        self.added = 0

    def update(self, windows: pd.DataFrame, watermark: int) -> list[dict[str, Any]]:
        """Takes a batch's device windows; returns the site windows they changed (site_points rows)."""
        touched: set[SiteKey] = set()
        if len(windows):
            rows = list(_records(windows, ("site", "type", "metric", "time", "device_id", "count", "sum", "min",
                                           "max")))
            keys = [(r["site"], r["type"], r["metric"], int(r["time"])) for r in rows]
            if self.horizon is None:
                self.horizon = max(watermark + self.watermark_ms, max(k[3] for k in keys))
            missing = {k for k in keys if k not in self.devices and k[3] <= self.horizon}
            if missing:
                self._read_back(missing)
            added: dict[tuple[str, int], int] = {}
            for key, r in zip(keys, rows, strict=True):
                figures = self.devices.setdefault(key, {})
                count = int(r["count"])
                grew = count - figures.get(r["device_id"], (0,))[0]
                reading = (r["device_id"], key[3])
                added[reading] = max(added.get(reading, 0), grew)
                figures[r["device_id"]] = (count, r["sum"], r["min"], r["max"])
                touched.add(key)
            self.added = sum(added.values())
        else:
            self.added = 0
        out = []
        for key in touched:
            figures = self.devices[key].values()
            out.append({"site": key[0], "type": key[1], "metric": key[2], "time": key[3],
                        "count": sum(f[0] for f in figures), "sum": sum(f[1] for f in figures),
                        "min": min(f[2] for f in figures), "max": max(f[3] for f in figures),
                        "devices": len(figures)})
        for key in [k for k in self.devices if k[3] + self.window_ms <= watermark]:
            del self.devices[key]
        return out

    def _read_back(self, keys: set[SiteKey]) -> None:
        self.read_backs += 1
        starts = [k[3] for k in keys]
        stored = self.query.query_retrying(
            f'SELECT "count", "sum", "min", "max" FROM "{DEVICE_WINDOW}" '
            f"WHERE time >= {min(starts)}ms AND time <= {max(starts)}ms "
            'GROUP BY "site", "type", "metric", "device_id"')
        for key in keys:
            self.devices[key] = {}
        for row in stored:
            key = (row.get("site"), row.get("type"), row.get("metric"), int(row["time"]))
            if key in keys and row.get("count") is not None:
                self.devices[key][row["device_id"]] = (int(row["count"]), row["sum"], row["min"], row["max"])


@dataclass(frozen=True)
class BatchCounts:
    """What a batch dropped, for its ``pipeline`` point."""

    late: int
    invalid: int
    output_rows: int


class BatchSink:
    """The foreachBatch function of the job's query."""

    def __init__(self, writer: InfluxWriter, site_windows: SiteWindows,
                 write_dlq: Callable[[Any, pd.DataFrame], None]) -> None:
        self.writer = writer
        self.site_windows = site_windows
        self.write_dlq = write_dlq
        #: batch id -> counts, taken by the driver's progress loop (a replayed batch overwrites its own)
        self.counts: dict[int, BatchCounts] = {}

    def __call__(self, batch_df: Any, batch_id: int) -> None:
        out = batch_df.toPandas()
        kind = out["kind"].to_numpy()
        buckets = out[kind == BUCKET]
        late = int(buckets["count"].sum()) if len(buckets) else 0
        watermark = int(buckets["watermark"].max()) if len(buckets) else -1
        invalid = out[kind == INVALID]
        if len(invalid):
            self.write_dlq(batch_df.sparkSession, invalid)
        windows = out[kind == WINDOW]
        points = (device_points(windows) + device_status_points(out[kind == STATUS])
                  + site_points(self.site_windows.update(windows, watermark)) + anomaly_points(out[kind == ANOMALY]))
        written = self.writer.write(points) if points else 0
        READINGS_STORED.inc(self.site_windows.added)
        self.counts[batch_id] = BatchCounts(late, len(invalid), written)
        if len(self.counts) > 1000:  # the progress loop takes them; a stopped loop must not grow this
            del self.counts[min(self.counts)]
        log.info("batch written", extra={"fields": {"batch": batch_id, "points": written, "late": late,
                                                    "invalid": len(invalid), "watermark": watermark,
                                                    "device_windows": int(np.count_nonzero(kind == WINDOW))}})
