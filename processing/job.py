"""Wiring of the Spark job: session, Kafka source, its one streaming query, progress and health.

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
from servicekit.contract import metrics
from servicekit.contract.influx import PIPELINE, PIPELINE_PHASES, PIPELINE_QUERY_DLQ, PIPELINE_QUERY_WINDOWS

log = logging.getLogger("processing")

BATCH_DURATION = Gauge(metrics.PROCESSING_BATCH_DURATION_MS, "last micro-batch duration", ["query"])
INPUT_RATE = Gauge(metrics.PROCESSING_INPUT_ROWS_PER_SECOND, "input rate of the last batch", ["query"])
LATE_ROWS = Gauge(metrics.PROCESSING_LATE_ROWS, "readings dropped as later than the watermark")

REPO = Path(__file__).resolve().parents[1]

#: JVM options of the driver and executors (see build_session)
ARROW_JAVA_OPTIONS = "-Darrow.enable_unsafe_memory_access=true -Darrow.enable_null_check_for_get=false"
#: how Spark writes the checkpoint's files (offsets, commits, state store deltas): see build_session
CHECKPOINT_FILE_MANAGER = "org.apache.spark.sql.execution.streaming.checkpointing.FileSystemBasedCheckpointFileManager"


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
        # The sink takes each batch's output as pandas through Arrow, not as a row object per row.
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        # A bucket's rows reach Python in Arrow batches of at most this many rows, each made a DataFrame
        # by pyspark (10,000 by default: a dozen per bucket at 50,000-reading batches).
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "100000")
        # With a watermark Spark otherwise runs a batch without input whenever the watermark moves, to
        # evict state: a batch's full fixed cost for nothing, since the step evicts on its next batch.
        .config("spark.sql.streaming.noDataMicroBatches.enabled", "false")
        # Every value the step's rows carry to and from Python goes through Arrow's Java buffers, which
        # bounds-check and reference-count each get and set: 12-15% of the JVM's CPU samples in the job's
        # profile. Arrow's documented switches turn those checks off (the vectors are Spark's own, sized
        # by its writer). Default options, so a deployment's extraJavaOptions still apply beside them.
        .config("spark.driver.defaultJavaOptions", ARROW_JAVA_OPTIONS)
        .config("spark.executor.defaultJavaOptions", ARROW_JAVA_OPTIONS)
        # The checkpoint is a local (or mounted) directory. Spark's default manager for it goes through
        # Hadoop's FileContext, whose rename asks for the source's link status, and Hadoop without its
        # native library (pyspark ships none) answers that by starting `readlink` in a child process:
        # a fork per file, for the offset log, the commit log and each state store delta every batch
        # (walCommit and commitOffsets took ~33 ms each, the whole batch 424 ms; 8 ms, 8 ms and 344 ms
        # with this). The FileSystem-based manager, the one Spark uses for every store without FileContext,
        # renames with Java's own call: as atomic on a local or POSIX file system. It checks that the
        # target is absent before the rename instead of in it, a difference only for two jobs writing one
        # checkpoint at once, which a deployment of this job never does.
        .config("spark.sql.streaming.checkpointFileManagerClass", CHECKPOINT_FILE_MANAGER)
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
        .options(**settings.spark_kafka_options())
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
    for phase, ms in (progress.durationMs or {}).items():
        if phase in PIPELINE_PHASES:
            fields[PIPELINE_PHASES[phase]] = float(ms)
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


def record_progress(progress: list[Any], write: Any, counts: dict[int, Any] | None = None) -> None:
    """Metrics and ``pipeline`` points for finished micro-batches; never raises into the job.

    ``counts`` holds what the sink counted per batch id (late and invalid readings); each is taken.
    """
    points = [pt for p in progress for pt in pipeline_points(p, (counts or {}).pop(p.batchId, None))]
    for point in points:
        query = point["tags"]["query"]
        if query == DLQ_POINT:  # the same batch as the query's point: counted there
            continue
        BATCH_DURATION.labels(query).set(point["fields"]["batch_duration_ms"])
        INPUT_RATE.labels(query).set(point["fields"]["input_rate"])
        LATE_ROWS.inc(point["fields"]["late_rows"])
    try:
        write(points)
    except Exception:  # health points must never stop the job
        log.exception("could not write pipeline health")


#: the query's name: the ``query`` tag of its ``pipeline`` points (dashboards select on it)
QUERY = PIPELINE_QUERY_WINDOWS
#: the ``pipeline`` points with the DLQ's count carry this ``query`` tag, as the DLQ query's did
DLQ_POINT = PIPELINE_QUERY_DLQ
#: checkpoint directories of the job before it became one query: their state cannot be carried over
OLD_CHECKPOINTS = ("windows", "anomalies", "anomalies-v2", "dlq")


def checkpoint_location(settings: ProcessingSettings, buckets: int) -> Path:
    """The query's checkpoint: named after the state layout and the bucket count and shuffle partitions
    it was made with (devices are hashed into bucket keys chosen for the partitions; another count of
    either would look for a device's state under another key)."""
    from processing.stateful import STATE_VERSION

    return settings.checkpoint_dir / f"job-v{STATE_VERSION}-p{settings.shuffle_partitions}-b{buckets}"


class CheckpointError(RuntimeError):
    pass


def check_checkpoints(settings: ProcessingSettings, location: Path) -> None:
    """Refuses a checkpoint directory holding another layout's state, saying which directory to delete."""
    base = settings.checkpoint_dir
    old = [base / name for name in OLD_CHECKPOINTS if (base / name).exists()]
    old += [p for p in base.glob("job-v*") if p != location and p.is_dir()]
    if old:
        listing = " ".join(str(p) for p in old)
        raise CheckpointError(
            f"{base} holds the checkpoint of another version or bucket count of this job ({listing}); its state "
            f"cannot be carried over. Delete it (rm -rf {listing}): the job then reads Kafka again from "
            f"--starting-offsets and its writes overwrite the same points. Or give --checkpoint-dir a new place.")


def pipeline_points(progress: Any, counts: Any) -> list[dict[str, Any]]:
    """The ``pipeline`` points of one batch: the query's, with what its sink counted (late, invalid), and one
    tagged ``dlq`` with the invalid readings sent to the DLQ topic."""
    point = pipeline_point(progress)
    if counts is None:
        return [point]
    fields = point["fields"]
    fields["late_rows"] += counts.late
    fields["invalid_rows"] = counts.invalid
    fields["output_rows"] = counts.output_rows
    # The DLQ is written by the same batch: its point has that batch's health (duration, lag) and, as the
    # DLQ query's did, the invalid readings as output_rows; late rows are counted once, on the query's.
    dlq_fields = {**fields, "late_rows": 0, "output_rows": counts.invalid, "invalid_rows": counts.invalid}
    dlq = {"measurement": PIPELINE, "tags": {"query": DLQ_POINT}, "time": point["time"], "fields": dlq_fields}
    return [point, dlq]


def build_query(spark: Any, settings: ProcessingSettings, sink: Any, location: Path, buckets: int) -> Any:
    """The one streaming query: Kafka read once, parsed once, one shuffle into the stateful step."""
    from processing import transforms as T
    from processing.anomaly import DetectorConfig
    from processing.settings import duration_ms
    from processing.stateful import OUTPUT_SCHEMA, STATE_SCHEMA, bucket_function

    raw = kafka_source(spark, settings)
    keys = T.bucket_keys(spark, buckets, settings.shuffle_partitions)
    rows = T.stateful_input(
        T.parse_readings(raw, settings.max_readings, settings.max_metrics, settings.max_future_s * 1000), keys)
    step = bucket_function(duration_ms(settings.window), DetectorConfig.from_settings(settings))
    from pyspark.sql.streaming.state import GroupStateTimeout

    out = rows.withWatermark("event_time", settings.watermark).groupBy("bucket").applyInPandasWithState(
        step, OUTPUT_SCHEMA, STATE_SCHEMA, "Update", GroupStateTimeout.NoTimeout)
    query = (out.writeStream.queryName(QUERY).option("checkpointLocation", str(location))
             .outputMode("update").foreachBatch(sink).trigger(processingTime=settings.trigger).start())
    log.info("query started", extra={"fields": {"query": QUERY, "trigger": settings.trigger, "buckets": buckets,
                                                "checkpoint": str(location)}})
    return query


def dlq_writer(settings: ProcessingSettings) -> Any:
    """Sends a batch's invalid readings (the step's rows, pandas) to the DLQ topic with Spark's Kafka sink."""

    def write(spark: Any, invalid: Any) -> None:
        from processing import transforms as T

        # A message that is not JSON has no reading index (null): its header says 0, as before.
        frame = spark.createDataFrame(
            invalid[["payload", "reason", "partition", "offset", "idx"]].fillna({"idx": 0}).astype(
                {"partition": "int32", "offset": "int64", "idx": "int32"}),
            "payload binary, reason string, partition int, offset long, idx int")
        (T.dlq_records(frame).write.format("kafka").options(**settings.spark_kafka_options())
         .option("topic", settings.kafka_dlq_topic).save())

    return write


def run_job(settings: ProcessingSettings, stop: threading.Event) -> int:
    from processing.settings import duration_ms
    from processing.sink import BatchSink, SiteWindows
    from processing.supervisor import QuerySupervisor
    from servicekit.service import serve_health
    from storage.queries import InfluxQuery
    from storage.writer import InfluxWriter

    buckets = settings.buckets()
    location = checkpoint_location(settings, buckets)
    try:
        check_checkpoints(settings, location)
    except CheckpointError as exc:
        log.error("%s", exc)
        return 1
    writer = InfluxWriter(settings)
    spark = build_session(settings)
    monitor = ProgressMonitor()
    sink = BatchSink(writer, SiteWindows(InfluxQuery(settings), settings.window_ms(), duration_ms(settings.watermark)),
                     dlq_writer(settings))
    supervisor = QuerySupervisor({QUERY: lambda: build_query(spark, settings, sink, location, buckets)},
                                 settings.max_query_restarts, checkpoint_dir=settings.checkpoint_dir,
                                 checkpoints={QUERY: location})
    queries = supervisor.queries

    def health() -> tuple[bool, dict]:
        active = {name: q.isActive for name, q in queries.items()}
        return all(active.values()), {"queries": active, "failures": supervisor.restarts}

    def record(name: str, query: Any) -> bool:
        progress = monitor.new_progress(name, query)
        if progress:
            record_progress(progress, writer.write, sink.counts)
        return bool(progress)

    server = serve_health(settings.health_port, health)
    log.info("streaming", extra={"fields": {"master": settings.spark_master, "window": settings.window,
                                              "watermark": settings.watermark, "trigger": settings.trigger}})
    status = 0
    while not stop.wait(1.0):
        for name, q in list(queries.items()):
            if record(name, q):
                supervisor.progressed(name)
        if not supervisor.check():
            log.error("giving up: a query cannot run (see above)")
            status = 1
            break
    for name, q in queries.items():
        if q.isActive:
            q.stop()
        record(name, q)
    spark.stop()
    if server is not None:
        server.shutdown()
    log.info("processing stopped")
    return status
