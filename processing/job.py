"""Wiring of the Spark job: session, Kafka source, the windows, anomalies and DLQ queries, health.

The same code runs on ``local[*]`` and on a cluster: only ``--spark-master`` changes.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from prometheus_client import Gauge

from processing.settings import ProcessingSettings
from servicekit.contract import PIPELINE

log = logging.getLogger("processing")

BATCH_DURATION = Gauge("tsdemo_processing_batch_duration_ms", "last micro-batch duration", ["query"])
INPUT_RATE = Gauge("tsdemo_processing_input_rows_per_second", "input rate of the last batch", ["query"])
LATE_ROWS = Gauge("tsdemo_processing_late_rows_total", "readings dropped as later than the watermark")

REPO = Path(__file__).resolve().parents[1]


def kafka_connector() -> str:
    import pyspark

    return f"org.apache.spark:spark-sql-kafka-0-10_2.13:{pyspark.__version__}"


def build_session(settings: ProcessingSettings) -> Any:
    import os

    from pyspark.sql import SparkSession

    ivy = settings.ivy_dir or Path(os.environ.get("TSDEMO_CACHE_DIR") or REPO / ".cache") / "ivy"
    builder = (
        SparkSession.builder.appName("tsdemo-processing")
        .master(settings.spark_master)
        .config("spark.jars.packages", kafka_connector())
        .config("spark.jars.ivy", str(Path(ivy).resolve()))
        .config("spark.sql.shuffle.partitions", str(settings.shuffle_partitions))
        .config("spark.ui.enabled", str(settings.spark_ui).lower())
        .config("spark.driver.memory", settings.driver_memory)
        .config("spark.sql.session.timeZone", "UTC")
        # Stopping a query interrupts its thread; without this Spark logs an error for it.
        .config("spark.sql.streaming.stopActiveRunOnRestart", "true")
        # The console progress bar is for a terminal: in a service's log it is a flood of
        # carriage-return lines between the JSON records.
        .config("spark.ui.showConsoleProgress", "false")
    )
    if not os.environ.get("PYSPARK_PYTHON"):
        import sys

        # Python workers default to "python3" on PATH, which need not be the interpreter with pandas
        # and pyarrow; on a cluster the executors' image must hold the same path (ours do).
        os.environ["PYSPARK_PYTHON"] = sys.executable
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def kafka_source(spark: Any, settings: ProcessingSettings) -> Any:
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap)
        .option("subscribe", settings.kafka_topic)
        .option("startingOffsets", settings.starting_offsets)
    )
    if settings.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", settings.max_offsets_per_trigger)
    return reader.load()


def kafka_lag(progress: Any) -> int | None:
    """Records behind the newest Kafka offsets after this batch, summed over partitions."""
    import json

    total = None
    for source in progress.sources or []:
        try:
            latest = json.loads(source.latestOffset) if source.latestOffset else None
            end = json.loads(source.endOffset) if source.endOffset else None
        except (TypeError, ValueError):
            continue
        if not isinstance(latest, dict) or not isinstance(end, dict):
            continue
        for topic, partitions in latest.items():
            for partition, offset in partitions.items():
                total = (total or 0) + max(0, int(offset) - int(end.get(topic, {}).get(partition, offset)))
    return total


def pipeline_point(progress: Any) -> dict[str, Any]:
    """The ``pipeline`` measurement from one query progress event."""
    late = sum(op.numRowsDroppedByWatermark for op in progress.stateOperators)
    state_rows = sum(op.numRowsTotal for op in progress.stateOperators)
    fields: dict[str, Any] = {
        "input_rows": int(progress.numInputRows),
        "input_rate": float(progress.inputRowsPerSecond or 0.0),
        "processing_rate": float(progress.processedRowsPerSecond or 0.0),
        "batch_duration_ms": float(progress.batchDuration),
        "state_rows": int(state_rows),
        "late_rows": int(late),
        "output_rows": int(progress.sink.numOutputRows if progress.sink else 0),
    }
    if progress.name == "dlq":  # what the DLQ query writes is exactly the invalid readings
        fields["invalid_rows"] = fields["output_rows"]
    lag = kafka_lag(progress)
    if lag is not None:
        fields["kafka_lag"] = lag
    watermark = (progress.eventTime or {}).get("watermark")
    if watermark:
        from datetime import datetime

        wm = datetime.fromisoformat(watermark.replace("Z", "+00:00")).timestamp()
        fields["watermark_delay_ms"] = float(max(0.0, time.time() - wm) * 1000)
    return {
        "measurement": PIPELINE,
        "tags": {"query": progress.name or "unnamed"},
        "fields": fields,
        "time": int(time.time() * 1000),
    }


class ProgressMonitor:
    """Finds each query's micro-batches that finished since the last look.

    Polled from the driver's main loop rather than a Python ``StreamingQueryListener``: Spark calls
    a Python listener through py4j for every event and builds the event field by field across the
    bridge, which profiled at 10-25% of the JVM's CPU. A poll reads the last progress as one JSON
    string, and reads the recent list only when batches finished faster than the polls.
    """

    def __init__(self) -> None:
        self._last: dict[str, tuple[str, int]] = {}  # query name -> (run id, last batch id seen)

    def new_progress(self, name: str, query: Any) -> list[Any]:
        last = query.lastProgress
        if last is None:
            return []
        run_id, seen = self._last.get(name, ("", -1))
        if last.runId != run_id:  # a restarted query: a new run, whose batch ids go on from the checkpoint
            seen = -1
        if last.batchId <= seen:
            return []
        self._last[name] = (last.runId, last.batchId)
        if last.batchId == seen + 1:
            return [last]
        # Batches finished between two looks (or before the first look at this run): the recent
        # list holds them, as far back as spark.sql.streaming.numRecentProgressUpdates.
        return [p for p in query.recentProgress if p.batchId > seen]


def record_progress(progress: list[Any], write: Any) -> None:
    """Metrics and ``pipeline`` points for finished micro-batches; never raises into the job."""
    points = [pipeline_point(p) for p in progress]
    for point in points:
        query = point["tags"]["query"]
        BATCH_DURATION.labels(query).set(point["fields"]["batch_duration_ms"])
        INPUT_RATE.labels(query).set(point["fields"]["input_rate"])
        LATE_ROWS.inc(point["fields"]["late_rows"])
    try:
        write(points)
    except Exception:  # health points must never stop the job
        log.exception("could not write pipeline health")


def run_job(settings: ProcessingSettings, stop: threading.Event) -> int:
    from processing import transforms as T
    from processing.anomaly import DetectorConfig
    from processing.settings import duration_ms
    from processing.sink import AnomalySink, WindowSink
    from processing.supervisor import QuerySupervisor
    from servicekit.service import serve_health
    from storage.queries import InfluxQuery
    from storage.writer import InfluxWriter

    writer = InfluxWriter(settings)
    spark = build_session(settings)

    monitor = ProgressMonitor()
    raw = kafka_source(spark, settings)
    parsed = T.parse_readings(raw, settings.max_readings)
    classified = T.classify(parsed, settings.max_metrics, settings.max_future_s * 1000)
    ckpt = settings.checkpoint_dir
    samples = T.explode_metrics(T.deduplicate(T.valid_readings(classified), settings.watermark))
    windows = T.device_windows(samples, settings.window)
    detector = DetectorConfig.from_settings(settings)
    sink = WindowSink(writer, InfluxQuery(settings), duration_ms(settings.window))

    def start(name: str, frame: Any, *, sink_fn: Any = None, kafka_topic: str | None = None,
              trigger: str = settings.trigger, checkpoint: str | None = None) -> Any:
        writer_ = frame.writeStream.queryName(name).option("checkpointLocation", str(ckpt / (checkpoint or name)))
        if sink_fn is not None:
            writer_ = writer_.outputMode("update").foreachBatch(sink_fn)
        else:
            writer_ = (writer_.format("kafka").option("kafka.bootstrap.servers", settings.kafka_bootstrap)
                       .option("topic", kafka_topic))
        query = writer_.trigger(processingTime=trigger).start()
        log.info("query started", extra={"fields": {"query": name, "trigger": trigger}})
        return query

    plans = {
        "windows": lambda: start("windows", windows, sink_fn=sink),
        # The checkpoint is named after the detectors' state layout: Spark refuses to restore state of
        # another schema, so a new layout starts afresh instead of failing at every restart.
        "anomalies": lambda: start("anomalies", T.detect_anomalies(samples, settings.watermark, detector),
                                   sink_fn=AnomalySink(writer), trigger=settings.side_trigger,
                                   checkpoint=f"anomalies-v{T.ANOMALY_STATE_VERSION}"),
        "dlq": lambda: start("dlq", T.dlq_records(classified), kafka_topic=settings.kafka_dlq_topic,
                             trigger=settings.side_trigger),
    }
    supervisor = QuerySupervisor(plans, settings.max_query_restarts, checkpoint_dir=ckpt)
    queries = supervisor.queries

    def health() -> tuple[bool, dict]:
        active = {name: q.isActive for name, q in queries.items()}
        return all(active.values()), {"queries": active, "failures": supervisor.restarts}

    server = serve_health(settings.health_port, health)
    log.info("streaming", extra={"fields": {"master": settings.spark_master, "window": settings.window,
                                              "watermark": settings.watermark, "trigger": settings.trigger}})
    status = 0
    while not stop.wait(1.0):
        for name, q in list(queries.items()):
            if progress := monitor.new_progress(name, q):
                record_progress(progress, writer.write)
                supervisor.progressed(name)
        if not supervisor.check():
            log.error("giving up: a query cannot run (see above)")
            status = 1
            break
    for name, q in queries.items():
        if q.isActive:
            q.stop()
        if progress := monitor.new_progress(name, q):
            record_progress(progress, writer.write)
    spark.stop()
    if server is not None:
        server.shutdown()
    log.info("processing stopped")
    return status
