"""Micro-batches of a Spark streaming query, from wherever they are recorded, and the figures a bench
takes from them.

The job writes one ``pipeline`` point per batch and query to InfluxDB (``input_rows``,
``batch_duration_ms`` and Spark's phases of the batch, which say where its time went); the no-op
baseline appends Spark's progress JSON. Spark's event log holds the same progress, but writing it cost
the no-op about 70 ms of each batch and the job about 150, so no bench turns it on: the subject and the
baseline run as deployed.

Rows are Kafka records; a record carries ``readings_per_row`` readings (a gateway's batch).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from deploy.bench.stats import percentile, rate
from servicekit.contract.influx import PIPELINE, PIPELINE_PHASES
from storage.queries import InfluxQuery, quote_ident


@dataclass(frozen=True)
class Batch:
    query: str
    rows: int
    duration_ms: float
    #: epoch seconds when the batch ended
    end_s: float
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def start_s(self) -> float:
        return self.end_s - self.duration_ms / 1000


def from_progress(progress: dict[str, Any]) -> Batch:
    """A batch from Spark's ``StreamingQueryProgress`` JSON (its ``timestamp`` is the batch's start)."""
    start = datetime.fromisoformat(progress["timestamp"].replace("Z", "+00:00")).timestamp()
    duration = float(progress.get("batchDuration") or progress.get("durationMs", {}).get("triggerExecution", 0))
    # The listener's JSON has numInputRows; the event log only has it per source.
    rows = progress.get("numInputRows")
    if rows is None:
        rows = sum(int(source.get("numInputRows") or 0) for source in progress.get("sources") or [])
    return Batch(progress.get("name") or "unnamed", int(rows), duration,
                 start + duration / 1000, {k: float(v) for k, v in (progress.get("durationMs") or {}).items()})


def from_progress_lines(text: str) -> list[Batch]:
    return [from_progress(json.loads(line)) for line in text.splitlines() if line.strip().startswith("{")]


def from_pipeline_rows(rows: list[dict[str, Any]]) -> list[Batch]:
    """Batches from ``pipeline`` points (``time`` in epoch ms, when the batch was reported), with the phases
    they carry under Spark's names."""
    return [Batch(r.get("query", "unnamed"), int(r.get("input_rows") or 0), float(r.get("batch_duration_ms") or 0),
                  int(r["time"]) / 1000,
                  {phase: float(r[field]) for phase, field in PIPELINE_PHASES.items() if r.get(field) is not None})
            for r in rows]


def pipeline_batches(influx: InfluxQuery, since_s: float | None = None, until_s: float | None = None) -> list[Batch]:
    """Every query's batches the job reported to InfluxDB, optionally those reported within a time range."""
    where = []
    if since_s is not None:
        where.append(f"time >= {int(since_s * 1000)}ms")
    if until_s is not None:
        where.append(f"time <= {int(until_s * 1000)}ms")
    fields = ", ".join(quote_ident(f) for f in ("input_rows", "batch_duration_ms", *PIPELINE_PHASES.values()))
    rows = influx.query(f"SELECT {fields} FROM {quote_ident(PIPELINE)}"
                        + (f" WHERE {' AND '.join(where)}" if where else "") + ' GROUP BY "query"')
    return from_pipeline_rows(rows)


def steady(batches: list[Batch], warmup: int) -> list[Batch]:
    """Batches with input, after the first ``warmup`` of them (JIT, state stores, connections)."""
    with_input = [b for b in sorted(batches, key=lambda b: b.end_s) if b.rows > 0]
    return with_input[warmup:] if len(with_input) > warmup else with_input[-1:]


@dataclass(frozen=True)
class Figures:
    """What a query's steady batches show."""

    batches: int
    rows: int
    readings: int
    busy_s: float
    wall_s: float
    p50_ms: float | None
    p95_ms: float | None
    max_ms: float | None

    @property
    def processing_rate(self) -> float:
        """Readings per second of batch time: how fast the query works while it works."""
        return rate(self.readings, self.busy_s)

    @property
    def wall_rate(self) -> float:
        """Readings per second from the first batch's start to the last one's end."""
        return rate(self.readings, self.wall_s)

    def as_dict(self) -> dict[str, Any]:
        return {"batches": self.batches, "rows": self.rows, "readings": self.readings,
                "busy_s": round(self.busy_s, 3), "wall_s": round(self.wall_s, 3),
                "batch_p50_ms": self.p50_ms, "batch_p95_ms": self.p95_ms, "batch_max_ms": self.max_ms,
                "processing_rate": round(self.processing_rate, 1), "wall_rate": round(self.wall_rate, 1)}


def figures(batches: list[Batch], readings_per_row: float) -> Figures:
    rows = sum(b.rows for b in batches)
    durations = [b.duration_ms for b in batches]
    wall = (max(b.end_s for b in batches) - min(b.start_s for b in batches)) if batches else 0.0
    return Figures(len(batches), rows, round(rows * readings_per_row), sum(durations) / 1000, wall,
                   percentile(durations, 50), percentile(durations, 95), max(durations, default=None))


def sustained(f: Figures, offered_rate: float, trigger_ms: float) -> tuple[float, str]:
    """The rate a query sustains with batches under the trigger, as far as one run at one offered rate
    shows it: at least the offered rate when 95% of batches finished within the trigger, else at most
    the processing rate (it cannot keep up with the offered rate, and batches run over the trigger)."""
    if f.p95_ms is not None and f.p95_ms <= trigger_ms:
        return offered_rate, ">="
    return f.processing_rate, "<="


def phase_means(batches: list[Batch]) -> dict[str, float]:
    """Mean milliseconds per batch in each of Spark's phases (``addBatch`` is the sink's own work)."""
    totals: dict[str, float] = {}
    for b in batches:
        for phase, ms in b.phases.items():
            totals[phase] = totals.get(phase, 0.0) + ms
    return {phase: round(ms / len(batches), 1) for phase, ms in sorted(totals.items(), key=lambda kv: -kv[1])}
