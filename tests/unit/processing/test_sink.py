"""The sink's site windows (driver-side cache, read-back only after a start) and the job's checkpoint guard."""

from __future__ import annotations

import pandas as pd
import pytest

from processing.sink import SiteWindows, device_points, site_points

W = 10_000


class FakeInflux:
    """Stored device windows, answered as storage.queries.InfluxQuery would (tags merged into rows)."""

    def __init__(self, rows):
        self.rows = rows
        self.queries = []

    def query_retrying(self, influxql):
        self.queries.append(influxql)
        return self.rows


def windows(*rows):
    return pd.DataFrame([{"site": "s", "type": "t", "metric": "m", "time": start, "device_id": dev, "count": n,
                          "sum": total, "min": lo, "max": hi} for dev, start, n, total, lo, hi in rows])


def test_after_a_start_earlier_windows_are_read_back_once_and_new_ones_never():
    stored = [{"site": "s", "type": "t", "metric": "m", "time": 0, "device_id": "old", "count": 4, "sum": 8.0,
               "min": 1.0, "max": 3.0},
              {"site": "s", "type": "t", "metric": "m", "time": 0, "device_id": "a", "count": 1, "sum": 1.0,
               "min": 1.0, "max": 1.0}]
    influx = FakeInflux(stored)
    cache = SiteWindows(influx, W, 30_000)
    # The first batch after a restart: the checkpoint's watermark says earlier runs saw event times to 30 s.
    out = cache.update(windows(("a", 0, 2, 3.0, 1.0, 2.0)), watermark=0)
    assert out == [{"site": "s", "type": "t", "metric": "m", "time": 0, "count": 6, "sum": 11.0, "min": 1.0,
                    "max": 3.0, "devices": 2}]  # a's stored figures replaced by the batch's, old's kept
    assert len(influx.queries) == 1
    cache.update(windows(("a", 0, 3, 6.0, 1.0, 3.0), ("b", 0, 1, 5.0, 5.0, 5.0)), watermark=0)
    assert len(influx.queries) == 1  # cached
    out = cache.update(windows(("a", 90_000, 1, 1.0, 1.0, 1.0)), watermark=50_000)
    assert len(influx.queries) == 1  # beyond the horizon: no earlier run wrote it
    assert out[0]["devices"] == 1
    assert (("s", "t", "m", 0)) not in cache.devices  # the watermark passed its end


def test_a_fresh_start_reads_back_only_what_its_first_batch_touched():
    influx = FakeInflux([])
    cache = SiteWindows(influx, W, 30_000)
    cache.update(windows(("a", 100_000, 1, 1.0, 1.0, 1.0)), watermark=-1)
    cache.update(windows(("a", 110_000, 1, 1.0, 1.0, 1.0)), watermark=-1)
    assert len(influx.queries) == 1


def test_added_counts_the_readings_the_stored_windows_grew_by():
    influx = FakeInflux([{"site": "s", "type": "t", "metric": "m", "time": 0, "device_id": "a", "count": 4,
                          "sum": 4.0, "min": 1.0, "max": 1.0}])
    cache = SiteWindows(influx, W, 30_000)
    cache.update(windows(("a", 0, 6, 6.0, 1.0, 1.0), ("b", 0, 3, 3.0, 1.0, 1.0)), watermark=0)
    assert cache.added == 2 + 3  # a had 4 stored by an earlier run
    # Two metrics per reading: a device window grows by one reading, not two.
    cache.update(windows(("c", 0, 2, 2.0, 1.0, 1.0)).assign(metric="n"), watermark=0)
    both = pd.concat([windows(("c", 0, 3, 3.0, 1.0, 1.0)), windows(("c", 0, 3, 3.0, 1.0, 1.0)).assign(metric="n")])
    cache.update(both, watermark=0)
    assert cache.added == 3  # m (new to the cache, read back: nothing stored) 0 -> 3; n 2 -> 3
    cache.update(both.assign(count=4), watermark=0)
    assert cache.added == 1
    cache.update(windows(("a", 0, 6, 6.0, 1.0, 1.0)), watermark=0)  # a replayed batch adds nothing
    assert cache.added == 0
    cache.update(windows(), watermark=0)
    assert cache.added == 0


def test_points_leave_out_missing_figures():
    frame = pd.DataFrame([{"site": "s", "type": "t", "device_id": "d", "metric": "m", "time": 0, "count": 1,
                           "sum": 2.0, "mean": 2.0, "min": 2.0, "max": 2.0, "stddev": float("nan"), "first": 2.0,
                           "last": 2.0}])
    (point,) = device_points(frame)
    assert "stddev" not in point["fields"] and point["fields"]["count"] == 1
    (site,) = site_points([{"site": "s", "type": "t", "metric": "m", "time": 0, "count": 2, "sum": 3.0,
                            "min": 1.0, "max": 2.0, "devices": 2}])
    assert site["fields"]["mean"] == 1.5


def test_a_checkpoint_of_the_three_query_job_stops_the_new_one_naming_it(tmp_path):
    from processing.job import CheckpointError, check_checkpoints, checkpoint_location
    from processing.settings import ProcessingSettings

    settings = ProcessingSettings(checkpoint_dir=tmp_path)
    location = checkpoint_location(settings, settings.buckets())
    check_checkpoints(settings, location)  # empty: fine
    location.mkdir()
    check_checkpoints(settings, location)  # its own: fine
    (tmp_path / "anomalies-v2").mkdir()
    with pytest.raises(CheckpointError, match="anomalies-v2"):
        check_checkpoints(settings, location)
    (tmp_path / "anomalies-v2").rmdir()
    other = checkpoint_location(ProcessingSettings(checkpoint_dir=tmp_path, state_buckets=7), 7)
    with pytest.raises(CheckpointError, match="job-v"):
        check_checkpoints(ProcessingSettings(checkpoint_dir=tmp_path, state_buckets=7), other)


def test_each_batch_gives_the_querys_pipeline_point_and_the_dlqs_with_the_same_health():
    from types import SimpleNamespace

    from processing.job import pipeline_points
    from processing.sink import BatchCounts

    op = SimpleNamespace(numRowsDroppedByWatermark=2, numRowsTotal=5)
    progress = SimpleNamespace(stateOperators=[op], numInputRows=100, inputRowsPerSecond=50.0,
                               processedRowsPerSecond=80.0, batchDuration=1200, sink=None, sources=[],
                               eventTime={}, name="windows", batchId=7,
                               durationMs={"addBatch": 900, "walCommit": 40, "triggerExecution": 1200})
    query, dlq = pipeline_points(progress, BatchCounts(late=3, invalid=4, output_rows=90))
    assert query["tags"] == {"query": "windows"} and dlq["tags"] == {"query": "dlq"}
    assert query["fields"]["late_rows"] == 5 and query["fields"]["invalid_rows"] == 4
    assert dlq["fields"]["output_rows"] == 4 and dlq["fields"]["late_rows"] == 0
    assert dlq["fields"]["batch_duration_ms"] == query["fields"]["batch_duration_ms"] == 1200.0
    # Spark's phases, so a bench (or a dashboard) sees where a batch's time went without Spark's event log
    assert query["fields"]["add_batch_ms"] == 900.0 and query["fields"]["wal_commit_ms"] == 40.0
    assert "trigger_execution_ms" not in query["fields"]  # that one is batch_duration_ms
