"""Micro-batches from the two places Spark's progress is recorded for a bench, and the figures taken from them."""

from __future__ import annotations

import json

import pytest

from deploy.bench.spark_batches import (
    Batch,
    figures,
    from_pipeline_rows,
    from_progress,
    from_progress_lines,
    phase_means,
    steady,
    sustained,
)

LISTENER_JSON = {"name": "noop", "timestamp": "2026-01-01T00:00:00.000Z", "batchId": 3, "numInputRows": 1000,
                 "batchDuration": 500, "durationMs": {"addBatch": 300, "triggerExecution": 500}}


def test_progress_lines_become_batches():
    (batch,) = from_progress_lines(json.dumps(LISTENER_JSON) + "\n\n")
    assert batch.rows == 1000 and batch.duration_ms == 500
    assert batch.end_s - batch.start_s == pytest.approx(0.5)
    assert batch.phases == {"addBatch": 300.0, "triggerExecution": 500.0}
    # A progress without numInputRows (as Spark's event log writes it) counts its sources' rows.
    per_source = from_progress({**{k: v for k, v in LISTENER_JSON.items() if k != "numInputRows"},
                                "sources": [{"numInputRows": 600}, {"numInputRows": 400}]})
    assert per_source == batch


def test_pipeline_points_become_batches():
    rows = [{"query": "windows", "time": 1_000_000, "input_rows": 10, "batch_duration_ms": 250,
             "add_batch_ms": 200, "wal_commit_ms": None}]
    (batch,) = from_pipeline_rows(rows)
    assert batch == Batch("windows", 10, 250.0, 1000.0, {"addBatch": 200.0})


def _batches(durations: list[float], rows: int = 100) -> list[Batch]:
    return [Batch("q", rows, d, 100.0 + i) for i, d in enumerate(durations)]


def test_steady_leaves_out_warm_up_and_empty_batches():
    batches = [Batch("q", 0, 10, 1), *_batches([9000, 800, 900, 1000])]
    assert [b.duration_ms for b in steady(batches, 1)] == [800, 900, 1000]
    assert len(steady(_batches([5.0]), 3)) == 1  # never nothing when there was input


def test_figures_rates_and_sustained_bound():
    f = figures(_batches([1000, 1000, 2000, 4000]), readings_per_row=10)
    assert f.rows == 400 and f.readings == 4000 and f.busy_s == pytest.approx(8.0)
    assert f.processing_rate == pytest.approx(500.0)
    assert f.p50_ms == pytest.approx(1500) and f.max_ms == 4000
    # batches run over a 2 s trigger: at most the processing rate is sustained
    assert sustained(f, offered_rate=5000, trigger_ms=2000) == (pytest.approx(500.0), "<=")
    quick = figures(_batches([500, 600, 700]), readings_per_row=10)
    assert sustained(quick, offered_rate=5000, trigger_ms=2000) == (5000, ">=")


def test_phase_means_sorted_by_time_spent():
    batches = [Batch("q", 1, 1, 1, {"addBatch": 100, "walCommit": 10}), Batch("q", 1, 1, 2, {"addBatch": 300})]
    assert list(phase_means(batches).items()) == [("addBatch", 200.0), ("walCommit", 5.0)]
