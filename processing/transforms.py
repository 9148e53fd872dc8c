"""Pure DataFrame-to-DataFrame steps of the job, so each is testable on a small in-memory frame.

Input is what Spark's Kafka source gives: ``value`` (binary), ``partition``, ``offset``.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    DoubleType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
)

READING_SCHEMA = StructType(
    [
        StructField("device_id", StringType()),
        StructField("site", StringType()),
        StructField("type", StringType()),
        StructField("ts", LongType()),
        StructField("seq", LongType()),
        StructField("boot", LongType()),
        StructField("metrics", MapType(StringType(), DoubleType())),
        StructField("lat", DoubleType()),
        StructField("lon", DoubleType()),
        StructField("battery", DoubleType()),
    ]
)

# Event times before this are a device with an unset clock, not history.
EARLIEST_TS_MS = 946_684_800_000  # 2000-01-01


def parse_readings(raw: DataFrame, max_readings: int = 10_000) -> DataFrame:
    """One row per reading found in each message, with ``reason`` null when it is valid.

    Both payload forms are parsed against the explicit schema: an object, or an array of them.
    A message that is not JSON (or not UTF-8 JSON of objects) yields one row with a reason, and so
    does an array of more than ``max_readings`` (one DLQ record, not one per reading).
    """
    text = F.col("value").cast("string")
    # One parse per message: a single reading is wrapped into a one-element array, so both forms go
    # through the same from_json (parsing an object separately meant two or three parses of it, and
    # a larger plan for the optimizer to chew on every micro-batch).
    as_array = F.when(F.ltrim(text).startswith("["), text).otherwise(F.concat(F.lit("["), text, F.lit("]")))
    parsed = F.from_json(as_array, ArrayType(READING_SCHEMA))
    with_readings = raw.select(
        "value", "partition", "offset", F.col("timestamp").alias("kafka_ts"), parsed.alias("readings")
    ).withColumn("_too_many", F.size("readings") > max_readings)
    exploded = with_readings.select(
        "value", "partition", "offset", "kafka_ts", (F.size("readings") == 0).alias("_empty"), "_too_many",
        F.posexplode_outer(F.when(~F.col("_too_many"), F.col("readings"))).alias("idx", "r"),
    )
    # Spark's permissive parser turns text that is not a reading into a row of nulls, not a null.
    all_null = F.col("r").isNull() | F.coalesce(
        *[F.col(f"r.{n}").cast("string") for n in ("device_id", "site", "type", "ts", "seq")],
        F.col("r.metrics").cast("string"),
    ).isNull()
    return exploded.select(
        "value", "partition", "offset", "kafka_ts", "idx", "r.*", all_null.alias("_missing"),
        # Spark keeps a string's raw bytes, so bad UTF-8 is still detectable here.
        (~F.is_valid_utf8(F.col("value").cast("string"))).alias("_bad_utf8"),
        "_empty", "_too_many",
    )


def _invalid_reason(max_metrics: int, max_future_ms: int) -> Column:
    metric_values = F.map_values("metrics")
    non_finite = F.exists(
        metric_values, lambda v: v.isNull() | F.isnan(v) | (F.abs(v) == F.lit(float("inf")))
    )
    # "Future" is judged against the Kafka record's timestamp, not the clock: a replayed batch must
    # classify exactly as it did the first time.
    now_ms = F.unix_millis(F.col("kafka_ts"))
    checks = [
        (F.col("_bad_utf8"), "payload is not valid UTF-8"),
        (F.col("_empty"), "empty batch"),
        (F.col("_too_many"), "too many readings in one message"),
        (F.col("_missing"), "malformed JSON or not a reading object"),
        (F.col("device_id").isNull() | (F.length("device_id") == 0), "missing or invalid device_id"),
        (F.col("site").isNull() | (F.length("site") == 0), "missing or invalid site"),
        (F.col("type").isNull() | (F.length("type") == 0), "missing or invalid type"),
        (F.col("ts").isNull(), "missing or non-integer ts"),
        (F.col("ts") < EARLIEST_TS_MS, "ts before 2000-01-01"),
        (F.col("ts") > now_ms + max_future_ms, "ts too far in the future"),
        (F.col("seq").isNull(), "missing or non-integer seq"),
        (F.col("seq") < 0, "negative seq"),
        (F.col("boot") < 0, "negative boot"),
        (F.col("metrics").isNull() | (F.size("metrics") == 0), "missing or empty metrics"),
        (F.size("metrics") > max_metrics, f"more than {max_metrics} metrics"),
        (non_finite, "non-finite or non-numeric metric value"),
    ]
    # The first failing check's text. A flat coalesce, not a chain of when/otherwise: Spark plans every
    # micro-batch again, and its optimizer took 5-6x longer over sixteen nested CASE WHENs (the
    # windows query spent about 2 s of each batch planning).
    return F.coalesce(*[F.when(condition, F.lit(text)) for condition, text in checks])


def classify(parsed: DataFrame, max_metrics: int, max_future_ms: int) -> DataFrame:
    """Adds ``reason`` (null for a valid reading) to the rows of ``parse_readings``."""
    return parsed.withColumn("reason", _invalid_reason(max_metrics, max_future_ms))


def valid_readings(classified: DataFrame) -> DataFrame:
    return classified.where(F.col("reason").isNull()).select(
        "device_id", "site", "type", "ts", "seq", F.coalesce("boot", F.lit(0)).alias("boot"), "metrics",
        "lat", "lon", "battery", F.timestamp_millis("ts").alias("event_time"),
    )


def dlq_records(classified: DataFrame) -> DataFrame:
    """Invalid readings as Kafka records: the original message bytes, the reason and origin in headers."""
    invalid = classified.where(F.col("reason").isNotNull())

    def header(key: str, value: Column) -> Column:
        return F.struct(F.lit(key).alias("key"), value.cast("string").cast("binary").alias("value"))

    return invalid.select(
        F.col("value"),
        F.array(
            header("reason", F.col("reason")),
            header("source_partition", F.col("partition")),
            header("source_offset", F.col("offset")),
            header("reading_index", F.coalesce(F.col("idx"), F.lit(0))),
        ).alias("headers"),
    )


def deduplicate(readings: DataFrame, watermark: str) -> DataFrame:
    """Drops repeated (device_id, boot, seq) within the watermark: at-least-once in, exact counts out."""
    key = ["device_id", "boot", "seq"]
    if not readings.isStreaming:  # a bounded frame (tests, backfills) has no watermark to bound state
        return readings.dropDuplicates(key)
    return readings.withWatermark("event_time", watermark).dropDuplicatesWithinWatermark(key)


def explode_metrics(readings: DataFrame) -> DataFrame:
    """One row per (reading, metric): the long form every aggregation and detector works on."""
    return readings.select(
        "device_id", "site", "type", "boot", "seq", "event_time", "lat", "lon", "battery",
        F.explode("metrics").alias("metric", "value"),
    )


def device_windows(samples: DataFrame, window: str) -> DataFrame:
    """Per device and metric and event-time window: count, sum, mean, min, max, stddev, first, last."""
    return (
        samples.groupBy(F.window("event_time", window).alias("w"), "site", "type", "device_id", "metric")
        .agg(
            F.count("value").alias("count"),
            F.sum("value").alias("sum"),
            F.min("value").alias("min"),
            F.max("value").alias("max"),
            F.stddev_samp("value").alias("stddev"),
            F.min_by("value", "event_time").alias("first"),
            F.max_by("value", "event_time").alias("last"),
            # The device's newest position and battery in the window, for the device_status points.
            F.max_by("lat", "event_time").alias("lat"),
            F.max_by("lon", "event_time").alias("lon"),
            F.max_by("battery", "event_time").alias("battery"),
            F.max("event_time").alias("last_seen"),
        )
        .select(
            F.unix_millis(F.col("w.start")).alias("window_start_ms"),
            "site", "type", "device_id", "metric", "count", "sum",
            (F.col("sum") / F.col("count")).alias("mean"),
            "min", "max", "stddev", "first", "last", "lat", "lon", "battery",
            F.unix_millis("last_seen").alias("last_seen_ms"),
        )
    )


ANOMALY_SCHEMA = (
    "site string, device_id string, type string, metric string, detector string, "
    "value double, score double, ts long, boot long, seq long"
)
# processing.anomaly.SeriesState.as_tuple, field for field; a change of layout bumps the version (the
# anomaly query's checkpoint is named after it).
_STATE_SCHEMA = (
    "n long, mean double, var double, last double, run long, updates long, slow_var double, repeats double, "
    "drift_up double, drift_down double, rest double"
)
ANOMALY_STATE_VERSION = 2


def detect_anomalies(samples: DataFrame, watermark: str, config: object | None = None) -> DataFrame:
    """Anomalies per (device, metric) from the detectors in ``processing.anomaly``, state kept by Spark."""
    from pyspark.sql.streaming.state import GroupStateTimeout

    from processing.anomaly import DetectorConfig

    cfg = config if isinstance(config, DetectorConfig) else DetectorConfig()

    def run(key: tuple, frames: object, state: object) -> object:
        import pandas as pd

        from processing.anomaly import SeriesState, observe

        series = SeriesState.from_tuple(state.get) if state.exists else SeriesState()
        out = []
        # All of the group's rows in this batch in one event-time order (Spark may hand them over in
        # several chunks). The loop walks a plain float array and looks a row up only when a detector
        # fires: building a row tuple per value was most of the query's Python time.
        chunks = list(frames)
        pdf = pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame({"value": []})
        pdf = pdf.sort_values(["event_time", "seq"], kind="stable") if len(pdf) else pdf
        values = pdf["value"].to_numpy(dtype=float)
        for i, value in enumerate(values.tolist()):
            for detector, score in observe(series, value, cfg):
                row = pdf.iloc[i]
                out.append((row["site"], row["device_id"], row["type"], row["metric"], detector, value,
                            score, int(row["event_time"].value // 1_000_000), int(row["boot"]), int(row["seq"])))
        state.update(series.as_tuple())
        columns = ["site", "device_id", "type", "metric", "detector", "value", "score", "ts", "boot", "seq"]
        yield pd.DataFrame(out, columns=columns)

    return samples.groupBy("device_id", "metric").applyInPandasWithState(
        run, ANOMALY_SCHEMA, _STATE_SCHEMA, "Update", GroupStateTimeout.NoTimeout
    )
