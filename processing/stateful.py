"""The job's one stateful step: late readings, dedupe, device windows, device status and anomalies of a
bucket of devices, in pandas and numpy, with the bucket's state carried from batch to batch.

Spark calls ``step_bucket`` (through ``applyInPandasWithState``, keyed by a hash bucket of the device
id) once per bucket and micro-batch with every row the bucket got: one row per (reading, metric) for a
valid reading, one row per invalid reading (passed through for the DLQ). ``step`` is the pure part,
unit-tested without Spark. Exactness:

- **Late**: a reading at or behind the watermark (Spark's, from the previous batches) is counted, not
  used, as Spark's own stateful operators drop late rows.
- **Dedupe** on (device_id, boot, seq): the seqs seen per (device, boot) are kept as intervals, each
  with the newest event time in it. An interval whose newest reading is behind the watermark is
  forgotten: any copy of a reading in it carries the same event time, so it is late and never reaches
  the check. A device sending seq 1, 2, 3, ... keeps one interval per boot however long it runs.
- **Windows**: per (device, metric, window) the count, sum, sum of squared deviations (for the sample
  stddev, merged with Chan's formula), min, max, and first/last value with their (event time, seq).
  Every window the batch touched is emitted whole (update mode), so a write overwrites the stored
  point with the exact current value. A window is forgotten once the watermark passes its end.
- **Replays**: the output depends only on the state before the batch and the batch's rows, not on
  their order, so a batch replayed after a crash writes the same points again.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from processing.anomaly import DetectorConfig
from processing.detectors import CODES, STATE_WIDTH, new_states, run_series

#: bumped with every change of the state layout; the query's checkpoint directory is named after it
STATE_VERSION = 3
STATE_SCHEMA = "blob binary"

OUTPUT_COLUMNS = {
    "kind": "string",  # one of KINDS
    "device_id": "string", "site": "string", "type": "string", "metric": "string",
    "time": "long",  # window start (windows, status) or the reading's event time (anomalies)
    "count": "long", "sum": "double", "mean": "double", "min": "double", "max": "double", "stddev": "double",
    "first": "double", "last": "double",
    "lat": "double", "lon": "double", "battery": "double", "last_seen": "long",
    "detector": "string", "value": "double", "score": "double", "boot": "long", "seq": "long",
    "payload": "binary", "reason": "string", "partition": "int", "offset": "long", "idx": "int",
    "watermark": "long",
}
OUTPUT_SCHEMA = ", ".join(f"`{name}` {kind}" for name, kind in OUTPUT_COLUMNS.items())
WINDOW, STATUS, ANOMALY, INVALID, BUCKET = "window", "status", "anomaly", "invalid", "bucket"
KINDS = (WINDOW, STATUS, ANOMALY, INVALID, BUCKET)

#: the step's input (``processing.transforms.stateful_input``)
INPUT_COLUMNS = ("bucket", "device_id", "site", "type", "ts", "seq", "boot", "pos", "metric", "value", "lat", "lon",
                 "battery", "partition", "offset", "idx", "reason", "payload", "event_time")
_WKEY = ["device_id", "metric", "start"]
_SKEY = ["device_id", "start"]
_SERIES = ["device_id", "metric"]


@dataclass
class BucketState:
    #: (device_id, boot) -> int64 array of [first seq, last seq, newest event time] rows, sorted
    seen: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    #: open windows, indexed by device_id, metric, start
    windows: pd.DataFrame | None = None
    #: newest reading per open device window, indexed by device_id, start
    status: pd.DataFrame | None = None
    #: detector state per series, indexed by device_id, metric; columns s0..s10
    series: pd.DataFrame | None = None

    def dumps(self) -> bytes:
        return pickle.dumps(self.__dict__, protocol=5)

    @classmethod
    def loads(cls, blob: bytes) -> BucketState:
        return cls(**pickle.loads(blob))  # noqa: S301  (our own checkpoint, written by this module)


def _open_only(frame: pd.DataFrame | None, window_ms: int, watermark_ms: int) -> pd.DataFrame | None:
    """``frame`` without the rows of windows the watermark has closed (keyed by their ``start``)."""
    if frame is None or not len(frame):
        return frame
    starts = frame.index.get_level_values("start").to_numpy()
    open_ = starts + window_ms > watermark_ms
    return frame if open_.all() else frame[open_]


def step(rows: pd.DataFrame, state: BucketState, watermark_ms: int, window_ms: int,
         cfg: DetectorConfig) -> pd.DataFrame:
    """One micro-batch of one bucket: updates ``state`` in place, returns the output rows (OUTPUT_COLUMNS)."""
    invalid_mask = rows["reason"].notna().to_numpy()
    valid = rows[~invalid_mask]
    late_mask = valid["ts"].to_numpy() <= watermark_ms
    late = int(np.count_nonzero(late_mask & (valid["pos"].to_numpy() == 0)))
    valid = valid[~late_mask]

    # Dedupe, one row per reading (its first metric): the first copy of each id in the batch, if the id
    # was not seen in an earlier batch. Copies of a reading are the same bytes, so which copy is kept
    # cannot change the result.
    readings = valid[valid["pos"].to_numpy() == 0]
    readings = readings[_first_copies(readings)]
    readings = readings[_unseen_and_remember(state.seen, readings)]
    _forget_seen(state.seen, watermark_ms)
    if len(readings) < np.count_nonzero(valid["pos"].to_numpy() == 0):  # (partition, offset, idx): one copy
        copies = ["partition", "offset", "idx"]
        valid = valid[pd.MultiIndex.from_frame(valid[copies]).isin(pd.MultiIndex.from_frame(readings[copies]))]
    series = _Series.of(valid) if len(valid) else None

    out = [_windows(state, series, watermark_ms, window_ms), _status(state, readings, watermark_ms, window_ms),
           _anomalies(state, series, cfg)]
    inv = rows[invalid_mask]
    if len(inv):
        out.append(pd.DataFrame({"kind": INVALID, "payload": inv["payload"].to_numpy(),
                                 "reason": inv["reason"].to_numpy(), "partition": inv["partition"].to_numpy(),
                                 "offset": inv["offset"].to_numpy(), "idx": inv["idx"].to_numpy()}))
    out.append(pd.DataFrame({"kind": [BUCKET], "count": [late], "watermark": [watermark_ms]}))
    return pd.concat([o for o in out if len(o)], ignore_index=True).reindex(columns=list(OUTPUT_COLUMNS))


def _first_copies(readings: pd.DataFrame) -> np.ndarray:
    """Which rows are the first of their (device_id, boot, seq) in the batch."""
    keep = np.ones(len(readings), dtype=bool)
    if len(readings) < 2:
        return keep
    dcodes, _ = pd.factorize(readings["device_id"], sort=False)
    boot, seq = readings["boot"].to_numpy(np.int64), readings["seq"].to_numpy(np.int64)
    order = np.lexsort((seq, boot, dcodes))
    d, b, q = dcodes[order], boot[order], seq[order]
    keep[order[1:][(d[1:] == d[:-1]) & (b[1:] == b[:-1]) & (q[1:] == q[:-1])]] = False
    return keep


def _unseen_and_remember(seen: dict[tuple[str, int], np.ndarray], readings: pd.DataFrame) -> np.ndarray:
    """Which readings' (device_id, boot, seq) no earlier batch had; adds them to ``seen``."""
    keep = np.ones(len(readings), dtype=bool)
    if not len(readings):
        return keep
    seqs = readings["seq"].to_numpy(dtype=np.int64)
    times = readings["ts"].to_numpy(dtype=np.int64)
    for key, idx in readings.groupby(["device_id", "boot"], sort=False).indices.items():
        key = (key[0], int(key[1]))
        s, t = seqs[idx], times[idx]
        intervals = seen.get(key)
        if intervals is not None and len(intervals):
            j = np.searchsorted(intervals[:, 0], s, side="right") - 1
            dup = (j >= 0) & (s <= intervals[np.maximum(j, 0), 1])
            keep[idx[dup]] = False
            s, t = s[~dup], t[~dup]
        if len(s):
            seen[key] = _merge_intervals(intervals, s, t)
    return keep


def _merge_intervals(intervals: np.ndarray | None, seqs: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Sorted, disjoint [first, last, newest ts] rows covering ``intervals`` and the new seqs."""
    fresh = np.column_stack((seqs, seqs, times))
    both = fresh if intervals is None or not len(intervals) else np.vstack((intervals, fresh))
    both = both[np.argsort(both[:, 0], kind="stable")]
    reach = np.maximum.accumulate(both[:, 1])
    # A new interval starts where a row begins beyond everything before it reached (+1: adjacent joins).
    starts = np.flatnonzero(np.concatenate(([True], both[1:, 0] > reach[:-1] + 1)))
    return np.column_stack((both[starts, 0], np.maximum.reduceat(both[:, 1], starts),
                            np.maximum.reduceat(both[:, 2], starts)))


def _forget_seen(seen: dict[tuple[str, int], np.ndarray], watermark_ms: int) -> None:
    for key in list(seen):
        intervals = seen[key]
        live = intervals[:, 2] > watermark_ms
        if not live.all():
            if live.any():
                seen[key] = intervals[live]
            else:
                del seen[key]


@dataclass
class _Series:
    """A batch's samples in (device, metric, event time, seq) order as plain arrays: the order both the
    window figures and the detectors take them in, sorted once with integer codes (pandas' groupby and
    sort over string columns cost more than all the arithmetic here)."""

    device: np.ndarray
    metric: np.ndarray
    ts: np.ndarray
    seq: np.ndarray
    boot: np.ndarray
    value: np.ndarray
    site: np.ndarray
    type: np.ndarray
    #: where each (device, metric) series begins
    series_starts: np.ndarray

    @classmethod
    def of(cls, samples: pd.DataFrame) -> _Series:
        dcodes, _ = pd.factorize(samples["device_id"], sort=False)
        mcodes, _ = pd.factorize(samples["metric"], sort=False)
        ts, seq = samples["ts"].to_numpy(np.int64), samples["seq"].to_numpy(np.int64)
        order = np.lexsort((seq, ts, mcodes, dcodes))
        d, m = dcodes[order], mcodes[order]
        change = np.ones(len(order), dtype=bool)
        change[1:] = (d[1:] != d[:-1]) | (m[1:] != m[:-1])
        return cls(samples["device_id"].to_numpy()[order], samples["metric"].to_numpy()[order], ts[order],
                   seq[order], samples["boot"].to_numpy(np.int64)[order], samples["value"].to_numpy(np.float64)[order],
                   samples["site"].to_numpy()[order], samples["type"].to_numpy()[order], np.flatnonzero(change))


def _windows(state: BucketState, s: _Series | None, watermark_ms: int, window_ms: int) -> pd.DataFrame:
    touched = None
    if s is not None:
        start = s.ts - s.ts % window_ms
        change = np.zeros(len(start), dtype=bool)
        change[s.series_starts] = True
        change[1:] |= start[1:] != start[:-1]
        g = np.flatnonzero(change)
        last = np.append(g[1:], len(start)) - 1
        n = np.diff(np.append(g, len(start)))
        total = np.add.reduceat(s.value, g)
        dev = s.value - np.repeat(total / n, n)
        batch = pd.DataFrame({
            "n": n, "sum": total, "m2": np.add.reduceat(dev * dev, g),
            "min": np.minimum.reduceat(s.value, g), "max": np.maximum.reduceat(s.value, g),
            "first": s.value[g], "first_ts": s.ts[g], "first_seq": s.seq[g],
            "last": s.value[last], "last_ts": s.ts[last], "last_seq": s.seq[last],
            "site": s.site[last], "type": s.type[last],
        }, index=pd.MultiIndex.from_arrays([s.device[g], s.metric[g], start[g]], names=_WKEY))
        state.windows, touched = _merge(state.windows, batch, _combine)
    state.windows = _open_only(state.windows, window_ms, watermark_ms)
    if touched is None:
        return pd.DataFrame()
    n = touched["n"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        stddev = np.where(n > 1, np.sqrt(np.maximum(touched["m2"].to_numpy(), 0.0) / (n - 1)), np.nan)
    idx = touched.index
    return pd.DataFrame({
        "kind": WINDOW, "device_id": idx.get_level_values("device_id"), "site": touched["site"].to_numpy(),
        "type": touched["type"].to_numpy(), "metric": idx.get_level_values("metric"),
        "time": idx.get_level_values("start"), "count": n, "sum": touched["sum"].to_numpy(),
        "mean": touched["sum"].to_numpy() / n, "min": touched["min"].to_numpy(), "max": touched["max"].to_numpy(),
        "stddev": stddev, "first": touched["first"].to_numpy(), "last": touched["last"].to_numpy(),
    })


def _merge(old: pd.DataFrame | None, batch: pd.DataFrame, combine: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``old`` (the state, unique index) with ``batch`` (unique index) merged in: rows of keys in both
    through ``combine(old rows, batch rows)``. Returns the new state and the batch's merged rows.

    By positions (``get_indexer``) rather than ``.loc`` assignment: pandas' label-based setitem on a
    MultiIndex was most of the step's time."""
    if old is None or not len(old):
        return batch, batch
    pos = old.index.get_indexer(batch.index)
    hit = pos >= 0
    if hit.any():
        merged = combine(old.iloc[pos[hit]], batch.iloc[np.flatnonzero(hit)])
        if hit.all():
            batch = merged.set_axis(batch.index)
        else:
            batch = pd.concat([batch.iloc[np.flatnonzero(~hit)], merged.set_axis(batch.index[hit])])
        keep = np.ones(len(old), dtype=bool)
        keep[pos[hit]] = False
        old = old.iloc[np.flatnonzero(keep)]
    return pd.concat([old, batch]), batch


def _newest(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Of two device-status rows of the same window, the newer reading's."""
    older = _lex_less(b["ts"].to_numpy(), b["seq"].to_numpy(), a["ts"].to_numpy(), a["seq"].to_numpy())
    if not older.any():
        return b
    return pd.DataFrame({c: np.where(older, a[c].to_numpy(), b[c].to_numpy()) for c in b.columns})


def _combine(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Two partial aggregates of the same windows (``a`` the earlier state) as one."""
    n1, n2 = a["n"].to_numpy(), b["n"].to_numpy()
    s1, s2 = a["sum"].to_numpy(), b["sum"].to_numpy()
    n = n1 + n2
    delta = s2 / n2 - s1 / n1
    b_first = _lex_less(b["first_ts"].to_numpy(), b["first_seq"].to_numpy(),
                        a["first_ts"].to_numpy(), a["first_seq"].to_numpy())
    b_last = _lex_less(a["last_ts"].to_numpy(), a["last_seq"].to_numpy(),
                       b["last_ts"].to_numpy(), b["last_seq"].to_numpy())
    out = b.reset_index(drop=True)
    out["n"] = n
    out["sum"] = s1 + s2
    out["m2"] = a["m2"].to_numpy() + b["m2"].to_numpy() + delta * delta * n1 * n2 / n
    out["min"] = np.minimum(a["min"].to_numpy(), b["min"].to_numpy())
    out["max"] = np.maximum(a["max"].to_numpy(), b["max"].to_numpy())
    for col in ("first", "first_ts", "first_seq"):
        out[col] = np.where(b_first, b[col].to_numpy(), a[col].to_numpy())
    for col in ("last", "last_ts", "last_seq"):
        out[col] = np.where(b_last, b[col].to_numpy(), a[col].to_numpy())
    return out


def _lex_less(t1: np.ndarray, s1: np.ndarray, t2: np.ndarray, s2: np.ndarray) -> np.ndarray:
    return (t1 < t2) | ((t1 == t2) & (s1 < s2))


def _status(state: BucketState, readings: pd.DataFrame, watermark_ms: int, window_ms: int) -> pd.DataFrame:
    """Per device window, the newest reading's position and battery (the device_status points)."""
    touched = None
    if len(readings):
        dcodes, _ = pd.factorize(readings["device_id"], sort=False)
        ts, seq = readings["ts"].to_numpy(np.int64), readings["seq"].to_numpy(np.int64)
        start = ts - ts % window_ms
        order = np.lexsort((seq, ts, start, dcodes))
        d, st = dcodes[order], start[order]
        newest = order[np.flatnonzero(np.append((d[1:] != d[:-1]) | (st[1:] != st[:-1]), True))]
        pick = readings.iloc[newest]
        batch = pd.DataFrame(
            {c: pick[c].to_numpy() for c in ("ts", "seq", "lat", "lon", "battery", "site", "type")},
            index=pd.MultiIndex.from_arrays([pick["device_id"].to_numpy(), start[newest]], names=_SKEY))
        state.status, touched = _merge(state.status, batch, _newest)
    state.status = _open_only(state.status, window_ms, watermark_ms)
    if touched is None:
        return pd.DataFrame()
    idx = touched.index
    return pd.DataFrame({
        "kind": STATUS, "device_id": idx.get_level_values("device_id"), "site": touched["site"].to_numpy(),
        "type": touched["type"].to_numpy(), "time": idx.get_level_values("start"),
        "lat": touched["lat"].to_numpy(dtype=float), "lon": touched["lon"].to_numpy(dtype=float),
        "battery": touched["battery"].to_numpy(dtype=float), "last_seen": touched["ts"].to_numpy(),
    })


def _anomalies(state: BucketState, s: _Series | None, cfg: DetectorConfig) -> pd.DataFrame:
    """Each series' new values in (event time, seq) order through the detectors."""
    if s is None:
        return pd.DataFrame()
    starts = s.series_starts
    keys = pd.MultiIndex.from_arrays([s.device[starts], s.metric[starts]], names=_SERIES)
    states = new_states(len(keys))
    if state.series is not None and len(state.series):
        known = state.series.reindex(keys)
        have = known.notna().all(axis=1).to_numpy()
        states[have] = known.to_numpy()[have]
    pos, code, score = run_series(s.value, np.append(starts, len(s.value)), states, cfg)
    updated = pd.DataFrame(states, index=keys, columns=[f"s{i}" for i in range(STATE_WIDTH)])
    if state.series is None or not len(state.series):
        state.series = updated
    else:
        state.series = pd.concat([state.series.drop(keys, errors="ignore"), updated])
    if not len(pos):
        return pd.DataFrame()
    return pd.DataFrame({
        "kind": ANOMALY, "device_id": s.device[pos], "site": s.site[pos], "type": s.type[pos],
        "metric": s.metric[pos], "time": s.ts[pos], "detector": np.array(CODES, dtype=object)[code],
        "value": s.value[pos], "score": score, "boot": s.boot[pos], "seq": s.seq[pos],
    })


def bucket_function(window_ms: int, cfg: DetectorConfig) -> Any:
    """The ``applyInPandasWithState`` function: the bucket's state in, its output rows out."""

    def run(key: tuple, frames: Iterator[pd.DataFrame], group_state: Any) -> Iterator[pd.DataFrame]:
        rows = _concat(list(frames))
        state = BucketState.loads(group_state.get[0]) if group_state.exists else BucketState()
        try:
            watermark = int(group_state.getCurrentWatermarkMs())
        except Exception:  # no watermark yet (the first batch)
            watermark = -1
        out = step(rows, state, max(watermark, -1), window_ms, cfg)
        group_state.update((state.dumps(),))
        _freeze_gc_once()  # after the first step: numba's compiler and pandas' lazy imports are loaded by then
        yield out

    return run


def _concat(chunks: list[pd.DataFrame]) -> pd.DataFrame:
    """The group's rows in one frame. Spark hands a group over in many chunks (its Arrow writer also cuts
    a batch every 100 ms, so a busy machine gets dozens); ``pd.concat`` checked every column of every
    chunk for all-NA dtypes and was a third of the worker's time. Same columns in every chunk: numpy."""
    if len(chunks) == 1:
        return chunks[0]
    if not chunks:
        return pd.DataFrame(columns=list(INPUT_COLUMNS))
    return pd.DataFrame({c: np.concatenate([chunk[c].to_numpy() for chunk in chunks]) for c in chunks[0].columns})


_FROZEN = False


def _freeze_gc_once() -> None:
    """Moves what the worker holds after its imports out of the garbage collector's sight.

    pyspark's daemon calls ``gc.collect()`` after every task of a reused worker (pyspark/daemon.py);
    each full collection walks every object pandas, pyarrow, numba and pyspark created at import,
    which profiled at ~30 % of the job's Python CPU (14 % with the freeze before numba's first compile,
    so it runs once the first step is done). ``gc.freeze()`` (Python's documented tool for exactly
    this, made for pre-fork servers) puts them in a permanent generation the collection skips, so
    each collection only walks what the tasks themselves left behind.
    """
    global _FROZEN
    if not _FROZEN:
        import gc
        import warnings

        gc.collect()  # what the first step left in cycles goes now, not into the permanent generation
        gc.freeze()
        # pyspark's own serializer concatenates our output with its all-null padding rows, and pandas 2.x
        # warns about that once per task, flooding the job's log.
        warnings.filterwarnings("ignore", category=FutureWarning, message="The behavior of DataFrame concatenation")
        _FROZEN = True
