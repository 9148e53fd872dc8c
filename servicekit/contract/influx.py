"""InfluxDB's side of the contract: the database, each measurement with its tags and fields, the
retention policies and rollups, for every writer (processing, storage, the stage collector) and reader
(dashboards, checks, the local stack) to import rather than spell out.

Every measurement processing writes lands in the database's default retention policy ``raw``;
storage's continuous queries roll the window measurements up into ``rollup_1m`` and ``rollup_1h``.
"""

from __future__ import annotations

INFLUX_DATABASE = "iot"

# -- retention policies and rollups (storage init creates them) -----------------------------------
RAW_RP = "raw"  # the database's default policy: every measurement processing writes lands here
ROLLUP_1M_RP = "rollup_1m"
ROLLUP_1H_RP = "rollup_1h"
# Continuous queries storage creates are named with this prefix, so init can drop its own stale
# ones without touching anybody else's.
CQ_PREFIX = "tsdemo_"

# -- measurements: name, tags, fields -------------------------------------------------------------
#: Per device, metric and event-time window (the time is the window start): the exact aggregate so far.
DEVICE_WINDOW = "device_window"
DEVICE_WINDOW_TAGS = ("site", "type", "device_id", "metric")
DEVICE_WINDOW_FIELDS = ("count", "sum", "mean", "min", "max", "stddev", "first", "last")

#: Per site, type, metric and window: the device windows summed, and how many devices had one.
SITE_WINDOW = "site_window"
SITE_WINDOW_TAGS = ("site", "type", "metric")
SITE_WINDOW_FIELDS = ("count", "sum", "mean", "min", "max", "devices")

DEVICE_WINDOW_1M = f"{DEVICE_WINDOW}_1m"
DEVICE_WINDOW_1H = f"{DEVICE_WINDOW}_1h"
SITE_WINDOW_1M = f"{SITE_WINDOW}_1m"
SITE_WINDOW_1H = f"{SITE_WINDOW}_1h"

#: Per device and window: newest lat, lon, battery and last_seen_ms (maps and battery panels).
DEVICE_STATUS = "device_status"
DEVICE_STATUS_TAGS = ("site", "type", "device_id")
DEVICE_STATUS_FIELDS = ("lat", "lon", "battery", "last_seen_ms")

#: One point per anomalous reading and detector, at the reading's event time.
ANOMALY = "anomaly"
ANOMALY_TAGS = ("site", "device_id", "type", "metric", "detector")
ANOMALY_FIELDS = ("value", "score", "seq", "boot")

#: Processing's health: one point per micro-batch and streaming query (tag ``query``).
PIPELINE = "pipeline"
PIPELINE_TAGS = ("query",)
#: Spark's phases of a batch (its progress's ``durationMs``) -> the ``pipeline`` field with their milliseconds:
#: where a batch's time went, without Spark's event log (writing it cost the job ~150 ms of each batch).
PIPELINE_PHASES = {"addBatch": "add_batch_ms", "queryPlanning": "query_planning_ms", "walCommit": "wal_commit_ms",
                   "commitOffsets": "commit_offsets_ms", "latestOffset": "latest_offset_ms", "getBatch": "get_batch_ms"}
PIPELINE_FIELDS = ("input_rows", "input_rate", "processing_rate", "batch_duration_ms", "state_rows", "late_rows",
                   "output_rows", "kafka_lag", "watermark_delay_ms", *PIPELINE_PHASES.values())
#: the ``query`` tag of the job's own points, and of the points carrying the batch's DLQ count
PIPELINE_QUERY_WINDOWS = "windows"
PIPELINE_QUERY_DLQ = "dlq"

#: Cumulative readings (or messages) through each stage, as that stage's own Prometheus counter reports
#: it, written by the stage collector (``tsdemo storage stages``) in every deployment.
STAGE = "stage"
STAGE_TAG = "stage"
STAGE_FIELD = "total"
STAGE_PUBLISHED = "published"  # readings the broker acknowledged to the generators
STAGE_BRIDGED = "bridged"  # MQTT messages the bridges had acknowledged by Kafka (a gateway batch is one)
STAGE_REJECTED = "rejected"  # messages the bridges sent to the dead-letter topic
STAGE_STORED = "stored"  # readings processing added to InfluxDB's windows
STAGES = (STAGE_PUBLISHED, STAGE_BRIDGED, STAGE_REJECTED, STAGE_STORED)

#: Fields written as integers; every other field is a float (InfluxDB fixes a field's type per shard).
#: Rollup measurements are written by continuous queries, which keep the raw fields' types.
INTEGER_FIELDS: dict[str, frozenset[str]] = {
    DEVICE_WINDOW: frozenset({"count"}),
    SITE_WINDOW: frozenset({"count", "devices"}),
    PIPELINE: frozenset(),
    ANOMALY: frozenset(),
    STAGE: frozenset(),
}
