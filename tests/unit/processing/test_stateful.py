"""The job's stateful step (processing.stateful) over several micro-batches, against a direct
recomputation: windows exact whatever the duplicates, order, lateness and batch cuts; replays identical."""

from __future__ import annotations

import math
import random

import numpy as np
import pandas as pd
import pytest

from processing.anomaly import DetectorConfig
from processing.stateful import ANOMALY, BUCKET, INVALID, STATUS, WINDOW, BucketState, step

WINDOW_MS = 10_000
DELAY_MS = 30_000
BASE = 1_700_000_000_000


def sample_rows(readings: list[dict], offset0: int = 0) -> pd.DataFrame:
    """Rows as the job hands them to the step: one per (reading, metric), in the Spark input's columns."""
    rows = []
    for n, r in enumerate(readings):
        for pos, (metric, value) in enumerate(r["metrics"].items()):
            rows.append({"device_id": r["device_id"], "site": r["site"], "type": "env", "ts": r["ts"],
                         "seq": r["seq"], "boot": r["boot"], "pos": pos, "metric": metric, "value": value,
                         "lat": r.get("lat"), "lon": 1.0, "battery": 50.0, "partition": 0,
                         "offset": offset0 + n, "idx": 0, "reason": None, "payload": None})
    return pd.DataFrame(rows)


def fleet(seed: int = 3) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for d in range(5):
        for boot in (0, 1):
            for seq in range(120):
                ts = BASE + boot * 60_000 + seq * 250 + rng.randint(0, 100)
                out.append({"device_id": f"d{d}", "site": f"s{d % 2}", "ts": ts, "seq": seq, "boot": boot,
                            "lat": None if seq % 7 == 0 else float(seq),
                            "metrics": {"t": round(20 + rng.gauss(0, 1), 2), "h": float(seq % 9)}})
    return out


def run_batches(batches: list[list[dict]]) -> tuple[dict, list[pd.DataFrame], int, list[dict]]:
    """Feeds the batches in order; returns the last value of every window, the outputs, late count and the
    readings the watermark let through (first arrival of each id while not late)."""
    state, outputs, latest, late, wm, max_ts = BucketState(), [], {}, 0, -1, None
    accepted, seen = [], set()
    offset = 0
    for batch in batches:
        out = step(sample_rows(batch, offset), state, wm, WINDOW_MS, DetectorConfig())
        offset += len(batch)
        state = BucketState.loads(state.dumps())  # as Spark stores it between batches
        outputs.append(out)
        late += int(out.loc[out["kind"] == BUCKET, "count"].sum())
        for r in out[out["kind"] == WINDOW].itertuples():
            latest[(r.device_id, r.metric, r.time)] = r
        for r in batch:
            if r["ts"] > wm and (r["device_id"], r["boot"], r["seq"]) not in seen:
                seen.add((r["device_id"], r["boot"], r["seq"]))
                accepted.append(r)
        batch_max = max(r["ts"] for r in batch)
        max_ts = batch_max if max_ts is None else max(max_ts, batch_max)
        wm = max_ts - DELAY_MS
    return latest, outputs, late, accepted


def direct(readings: list[dict]) -> dict:
    rows = [(r["device_id"], m, r["ts"] - r["ts"] % WINDOW_MS, r["ts"], r["seq"], v)
            for r in readings for m, v in r["metrics"].items()]
    df = pd.DataFrame(rows, columns=["device_id", "metric", "start", "ts", "seq", "value"])
    out = {}
    for key, g in df.sort_values(["ts", "seq"]).groupby(["device_id", "metric", "start"]):
        out[key] = {"count": len(g), "sum": g.value.sum(), "min": g.value.min(), "max": g.value.max(),
                    "stddev": g.value.std(ddof=1), "first": g.value.iloc[0], "last": g.value.iloc[-1]}
    return out


def assert_windows_equal(latest: dict, expected: dict) -> None:
    assert set(latest) == set(expected)
    for key, e in expected.items():
        got = latest[key]
        assert got.count == e["count"], key
        assert got.sum == pytest.approx(e["sum"]) and got.mean == pytest.approx(e["sum"] / e["count"])
        assert (got.min, got.max, got.first, got.last) == (e["min"], e["max"], e["first"], e["last"]), key
        if e["count"] > 1:
            assert got.stddev == pytest.approx(e["stddev"], rel=1e-9, abs=1e-12)
        else:
            assert math.isnan(got.stddev)


def test_windows_over_batches_with_duplicates_and_disorder_equal_a_direct_recomputation():
    readings = fleet()
    wire = readings + random.Random(1).sample(readings, 300)  # at-least-once: copies
    random.Random(2).shuffle(wire)
    wire.sort(key=lambda r: r["ts"] // 20_000)  # roughly in time, shuffled within 20 s: nothing late
    batches = [wire[i:i + 173] for i in range(0, len(wire), 173)]
    latest, _, late, accepted = run_batches(batches)
    assert late == 0 and len(accepted) == len(readings)
    assert_windows_equal(latest, direct(readings))


def test_late_readings_are_counted_and_left_out_and_duplicates_of_forgotten_ids_stay_out():
    readings = fleet()
    early = [r for r in readings if r["boot"] == 0]
    later = [r for r in readings if r["boot"] == 1]
    stale = [dict(r, seq=1000 + r["seq"]) for r in early[:10]]  # new ids, but a minute behind
    copies = early[:25]  # ids whose intervals were forgotten: late, never counted twice
    latest, _, late, accepted = run_batches([early, later, stale + copies])
    assert late == len(stale) + len(copies)
    assert_windows_equal(latest, direct(accepted))
    assert len(accepted) == len(readings)


def test_a_replayed_batch_gives_the_same_rows_whatever_their_order():
    readings = fleet()
    first, second = readings[:500], readings[500:] + readings[:40]
    state = BucketState()
    step(sample_rows(first), state, -1, WINDOW_MS, DetectorConfig())
    blob = state.dumps()
    wm = max(r["ts"] for r in first) - DELAY_MS
    a = step(sample_rows(second, 500), BucketState.loads(blob), wm, WINDOW_MS, DetectorConfig())
    shuffled = sample_rows(second, 500).sample(frac=1.0, random_state=4)
    b = step(shuffled, BucketState.loads(blob), wm, WINDOW_MS, DetectorConfig())

    def canon(df: pd.DataFrame) -> pd.DataFrame:
        return df.sort_values(["kind", "device_id", "metric", "time", "detector"]).reset_index(drop=True)

    pd.testing.assert_frame_equal(canon(a), canon(b))
    assert set(a["kind"]) >= {WINDOW, STATUS, BUCKET}


def test_device_status_is_the_newest_reading_of_each_device_window():
    readings = fleet()
    latest_status = {}
    state, wm = BucketState(), -1
    for i in range(0, len(readings), 250):
        out = step(sample_rows(readings[i:i + 250], i), state, wm, WINDOW_MS, DetectorConfig())
        for r in out[out["kind"] == STATUS].itertuples():
            latest_status[(r.device_id, r.time)] = r
    for (device, start), r in latest_status.items():
        mine = [x for x in readings if x["device_id"] == device and x["ts"] - x["ts"] % WINDOW_MS == start]
        newest = max(mine, key=lambda x: (x["ts"], x["seq"]))
        assert r.last_seen == newest["ts"]
        assert (r.lat if not np.isnan(r.lat) else None) == newest["lat"]


def test_invalid_rows_pass_through_and_a_spike_is_an_anomaly():
    series = [{"device_id": "x", "site": "s", "ts": BASE + i * 100, "seq": i, "boot": 0,
               "metrics": {"t": 20.0 + (0.1 if i % 2 else -0.1) + (30.0 if i == 60 else 0.0)}} for i in range(80)]
    rows = sample_rows(series)
    bad = pd.DataFrame([{"reason": "negative seq", "payload": b"{...}", "partition": 3, "offset": 7, "idx": 1,
                         "pos": None, "ts": None}])
    out = step(pd.concat([rows, bad], ignore_index=True), BucketState(), -1, WINDOW_MS, DetectorConfig())
    inv = out[out["kind"] == INVALID]
    assert inv[["reason", "partition", "offset", "idx"]].values.tolist() == [["negative seq", 3, 7, 1]]
    assert inv["payload"].tolist() == [b"{...}"]
    hits = out[out["kind"] == ANOMALY]
    assert hits[["detector", "seq"]].values.tolist() == [["ewma_z", 60]]


def test_a_group_handed_over_in_chunks_is_stepped_as_one_frame():
    from processing.stateful import _concat

    rows = sample_rows(fleet()[:300])
    bad = pd.DataFrame([{"reason": "negative seq", "payload": b"x", "partition": 1, "offset": 2, "idx": None}])
    chunks = [rows.iloc[:100], pd.concat([rows.iloc[100:200], bad], ignore_index=True), rows.iloc[200:]]
    whole = step(pd.concat(chunks, ignore_index=True), BucketState(), -1, WINDOW_MS, DetectorConfig())
    parts = step(_concat(chunks), BucketState(), -1, WINDOW_MS, DetectorConfig())
    pd.testing.assert_frame_equal(whole.reset_index(drop=True), parts.reset_index(drop=True), check_dtype=False)
