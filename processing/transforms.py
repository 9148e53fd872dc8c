"""Pure DataFrame-to-DataFrame steps of the job, so each is testable on a small in-memory frame.

Input is what Spark's Kafka source gives: ``value`` (binary), ``partition``, ``offset``.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
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


def parse_readings(raw: DataFrame, max_readings: int = 10_000, max_metrics: int = 32,
                   max_future_ms: int = 10_000) -> DataFrame:
    """One row per reading found in each message, with ``reason`` null when it is valid.

    Both payload forms are parsed against the explicit schema: an object, or an array of them.
    A message that is not JSON (or not UTF-8 JSON of objects) yields one row with a reason, and so
    does an array of more than ``max_readings`` (one DLQ record, not one per reading).

    What is a property of the message is worked out once per message, before the explode: whether its
    bytes are UTF-8, parse and size. Each reading is then classified on its own exploded row by plain
    expressions, with no higher-order function (``transform``/``exists`` lambdas run interpreted, row by
    row, and keep their projection out of Spark's generated code; an ``exists`` over the message's
    readings, there to keep valid messages' bytes out of the explode, sat in the explode's select, which
    Spark evaluates after the explode: it ran again for every reading).
    The explode and the projections after it are one generated-code stage, so a message's bytes are
    copied only into its invalid rows (``payload``, for the DLQ record); valid rows carry none.
    """
    text = F.col("value").cast("string")
    # One parse per message: a single reading is wrapped into a one-element array, so both forms go
    # through the same from_json (parsing an object separately meant two or three parses of it, and
    # a larger plan for the optimizer to chew on every micro-batch).
    as_array = F.when(F.ltrim(text).startswith("["), text).otherwise(F.concat(F.lit("["), text, F.lit("]")))
    parsed = F.from_json(as_array, ArrayType(READING_SCHEMA))
    messages = raw.select(
        "value", "partition", "offset", F.col("timestamp").alias("kafka_ts"), parsed.alias("readings"),
        # Spark keeps a string's raw bytes, so bad UTF-8 is still detectable here.
        (~F.is_valid_utf8(text)).alias("_bad_utf8"),
    )
    message_reason = F.coalesce(
        F.when(F.col("_bad_utf8"), F.lit("payload is not valid UTF-8")),
        F.when(F.size("readings") == 0, F.lit("empty batch")),
        F.when(F.size("readings") > max_readings, F.lit("too many readings in one message")),
        F.when(F.col("readings").isNull(), F.lit(MALFORMED)),
    )
    exploded = messages.select(
        "value", "partition", "offset", "kafka_ts", message_reason.alias("_message_reason"),
        F.posexplode_outer(F.when(F.size("readings") <= max_readings, F.col("readings"))).alias("idx", "r"),
    )
    reason = F.coalesce("_message_reason", _invalid_reason(F.col("r"), max_metrics, max_future_ms))
    return exploded.select(
        F.when(reason.isNotNull(), F.col("value")).alias("payload"), "partition", "offset", "kafka_ts", "idx",
        "r.*", reason.alias("reason"),
    )


MALFORMED = "malformed JSON or not a reading object"


def _invalid_reason(r: Column, max_metrics: int, max_future_ms: int) -> Column:
    """Why the reading ``r`` (a struct of READING_SCHEMA) is invalid; null when it is valid."""
    values = F.map_values(r["metrics"])
    # Any value null (not a number in the JSON), NaN or infinite, without a lambda (see parse_readings):
    # array_max and array_min skip nulls, and NaN sorts above every number in Spark, so a NaN shows as
    # the maximum.
    biggest, smallest = F.array_max(values), F.array_min(values)
    non_finite = (F.size(F.array_compact(values)) < F.size(values)) | F.coalesce(
        F.isnan(biggest) | (biggest == F.lit(float("inf"))) | (smallest == F.lit(float("-inf"))), F.lit(False))
    # "Future" is judged against the Kafka record's timestamp, not the clock: a replayed batch must
    # classify exactly as it did the first time.
    now_ms = F.unix_millis(F.col("kafka_ts"))
    # Spark's permissive parser turns text that is not a reading into a row of nulls, not a null.
    missing = r.isNull() | (r["device_id"].isNull() & r["site"].isNull() & r["type"].isNull()
                            & r["ts"].isNull() & r["seq"].isNull() & r["metrics"].isNull())
    checks = [
        (missing, MALFORMED),
        (r["device_id"].isNull() | (F.length(r["device_id"]) == 0), "missing or invalid device_id"),
        (r["site"].isNull() | (F.length(r["site"]) == 0), "missing or invalid site"),
        (r["type"].isNull() | (F.length(r["type"]) == 0), "missing or invalid type"),
        (r["ts"].isNull(), "missing or non-integer ts"),
        (r["ts"] < EARLIEST_TS_MS, "ts before 2000-01-01"),
        (r["ts"] > now_ms + max_future_ms, "ts too far in the future"),
        (r["seq"].isNull(), "missing or non-integer seq"),
        (r["seq"] < 0, "negative seq"),
        (r["boot"] < 0, "negative boot"),
        (r["metrics"].isNull() | (F.size(r["metrics"]) == 0), "missing or empty metrics"),
        (F.size(r["metrics"]) > max_metrics, f"more than {max_metrics} metrics"),
        (non_finite, "non-finite or non-numeric metric value"),
    ]
    # The first failing check's text. A flat coalesce, not a chain of when/otherwise: Spark plans every
    # micro-batch again, and its optimizer took 5-6x longer over sixteen nested CASE WHENs (the
    # windows query spent about 2 s of each batch planning).
    return F.coalesce(*[F.when(condition, F.lit(text)) for condition, text in checks])


def dlq_headers(reason: Column, partition: Column, offset: Column, idx: Column) -> Column:
    """The DLQ record's headers: why, and where the message came from (which reading of it)."""

    def header(key: str, value: Column) -> Column:
        return F.struct(F.lit(key).alias("key"), value.cast("string").cast("binary").alias("value"))

    return F.array(header("reason", reason), header("source_partition", partition),
                   header("source_offset", offset), header("reading_index", F.coalesce(idx, F.lit(0))))


def dlq_records(classified: DataFrame) -> DataFrame:
    """Invalid readings as Kafka records: the original message bytes, the reason and origin in headers."""
    invalid = classified.where(F.col("reason").isNotNull())
    return invalid.select(F.col("payload").alias("value"),
                          dlq_headers(F.col("reason"), F.col("partition"), F.col("offset"), F.col("idx"))
                          .alias("headers"))


def bucket_keys(spark: SparkSession, buckets: int, partitions: int) -> list[int]:
    """``buckets`` grouping keys that Spark's hash partitioning (Murmur3 of the key, mod ``partitions``)
    spreads as evenly as possible over the shuffle partitions: with the first ``buckets`` integers, two
    of four could share a task while another task idles. Deterministic for (buckets, partitions)."""
    rows = spark.range(64 * max(buckets, partitions)).select(
        F.col("id").cast("int").alias("key"), F.pmod(F.hash(F.col("id").cast("int")), F.lit(partitions)).alias("p")
    ).collect()
    by_partition: dict[int, list[int]] = {}
    for row in rows:
        by_partition.setdefault(row["p"], []).append(row["key"])
    keys: list[int] = []
    while len(keys) < buckets:  # round-robin over the partitions
        for p in range(partitions):
            if len(keys) < buckets and by_partition.get(p):
                keys.append(by_partition[p].pop(0))
    return keys


def stateful_input(classified: DataFrame, keys: list[int]) -> DataFrame:
    """The rows the stateful step gets (``processing.stateful``): one per (valid reading, metric), one per
    invalid reading; ``bucket`` (one of ``keys``, by a hash of the device id) keeps each device's rows
    together; ``event_time`` (null when invalid) carries the watermark."""
    valid = F.col("reason").isNull()
    exploded = classified.select(
        "*", F.posexplode_outer(F.when(valid, F.col("metrics"))).alias("pos", "metric", "value"))
    index = F.pmod(F.when(valid, F.xxhash64("device_id")).otherwise(F.xxhash64("partition", "offset")),
                   F.lit(len(keys)))
    bucket = F.element_at(F.array(*[F.lit(k) for k in keys]), (index + 1).cast("int"))
    return exploded.select(
        bucket.alias("bucket"), "device_id", "site", "type", "ts", "seq",
        F.coalesce("boot", F.lit(0)).alias("boot"), "pos", "metric", "value", "lat", "lon", "battery",
        "partition", "offset", "idx", "reason", "payload",
        F.when(valid, F.timestamp_millis("ts")).alias("event_time"),
    )
