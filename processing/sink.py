"""What each micro-batch writes: device windows, the site windows derived from them, pipeline health.

Writes are synchronous and raise on failure, so a failed batch fails the query and is replayed from
the checkpoint. Every point's timestamp is its window start, so a replayed batch overwrites the
same points instead of adding to them. The query runs in update mode: each batch carries the full
aggregate-so-far of every window it touched, so the stored value is always the exact current one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

from servicekit.contract import DEVICE_WINDOW, SITE_WINDOW
from storage.queries import InfluxQuery
from storage.schema import ANOMALY, DEVICE_STATUS
from storage.writer import InfluxWriter

log = logging.getLogger("processing.sink")

DEVICE_FIELDS = ("count", "sum", "mean", "min", "max", "stddev", "first", "last")


def device_points(rows: Iterable[Any]) -> list[dict[str, Any]]:
    points = []
    for row in rows:
        fields = {k: row[k] for k in DEVICE_FIELDS if row[k] is not None and not _bad_float(row[k])}
        points.append(
            {
                "measurement": DEVICE_WINDOW,
                "tags": {"site": row["site"], "type": row["type"], "device_id": row["device_id"],
                         "metric": row["metric"]},
                "fields": fields,
                "time": int(row["window_start_ms"]),
            }
        )
    return points


def device_status_points(rows: Iterable[Any]) -> list[dict[str, Any]]:
    """Per device and window: newest position, battery and event time (for maps and battery panels)."""
    newest: dict[tuple[str, int], Any] = {}
    for row in rows:
        key = (row["device_id"], int(row["window_start_ms"]))
        if key not in newest or row["last_seen_ms"] > newest[key]["last_seen_ms"]:
            newest[key] = row
    points = []
    for (device_id, start), row in newest.items():
        fields = {k: row[k] for k in ("lat", "lon", "battery") if row[k] is not None and not _bad_float(row[k])}
        fields["last_seen_ms"] = float(row["last_seen_ms"])
        points.append({"measurement": DEVICE_STATUS,
                       "tags": {"site": row["site"], "type": row["type"], "device_id": device_id},
                       "fields": fields, "time": start})
    return points


def anomaly_points(rows: Iterable[Any]) -> list[dict[str, Any]]:
    """One point per anomalous reading, at the reading's event time, so a replay overwrites it."""
    return [
        {
            "measurement": ANOMALY,
            "tags": {"site": r["site"], "device_id": r["device_id"], "type": r["type"], "metric": r["metric"],
                     "detector": r["detector"]},
            "fields": {"value": r["value"], "score": r["score"], "seq": float(r["seq"]), "boot": float(r["boot"])},
            "time": int(r["ts"]),
        }
        for r in rows
    ]


def _bad_float(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def site_window_query(start_ms: int, end_ms: int, window_ms: int) -> str:
    """Site windows recomputed from the stored device windows of the same window: summed counts and
    sums, min of mins, max of maxes, and how many devices reported; exact whatever the batch held."""
    return (
        f'SELECT sum("count") AS "count", sum("sum") AS "sum", min("min") AS "min", max("max") AS "max", '
        f'count("count") AS "devices" FROM "{DEVICE_WINDOW}" '
        f"WHERE time >= {start_ms}ms AND time <= {end_ms}ms "
        f'GROUP BY time({window_ms}ms), "site", "type", "metric" fill(none)'
    )


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


class WindowSink:
    """The foreachBatch function of the windows query."""

    def __init__(self, writer: InfluxWriter, query: InfluxQuery, window_ms: int) -> None:
        self.writer = writer
        self.query = query
        self.window_ms = window_ms

    def __call__(self, batch_df: Any, batch_id: int) -> None:
        rows = batch_df.collect()
        if not rows:
            return
        written = self.writer.write(device_points(rows) + device_status_points(rows))
        starts = [int(r["window_start_ms"]) for r in rows]
        site_rows = self.query.query_retrying(site_window_query(min(starts), max(starts), self.window_ms))
        written += self.writer.write(site_points(site_rows))
        log.info("batch written", extra={"fields": {"batch": batch_id, "device_rows": len(rows), "points": written}})


class AnomalySink:
    """The foreachBatch function of the anomalies query."""

    def __init__(self, writer: InfluxWriter) -> None:
        self.writer = writer

    def __call__(self, batch_df: Any, batch_id: int) -> None:
        rows = batch_df.collect()
        if rows:
            self.writer.write(anomaly_points(rows))
