"""Settings of the Spark job (``tsdemo process``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from servicekit.contract import KAFKA_DLQ_TOPIC, KAFKA_TOPIC
from servicekit.kafka import KafkaConnectionSettings
from storage.settings import InfluxSettings

_DURATION_UNITS = ("millisecond", "second", "minute", "hour")


class ProcessingSettings(InfluxSettings, KafkaConnectionSettings):
    kafka_topic: str = Field(KAFKA_TOPIC, description="Kafka topic to read readings from")
    kafka_dlq_topic: str = Field(KAFKA_DLQ_TOPIC, description="Kafka topic for invalid readings")
    starting_offsets: str = Field("earliest", description="where a new query starts: earliest or latest")
    max_offsets_per_trigger: int | None = Field(None, ge=1, description="cap on Kafka records per micro-batch")
    spark_master: str = Field("local[*]", description="Spark master URL (local[*], spark://host:7077, ...)")
    shuffle_partitions: int = Field(2, ge=1, description="spark.sql.shuffle.partitions: the tasks the stateful step "
                                    "runs in (fixed once a checkpoint exists)")
    state_buckets: int | None = Field(
        None, ge=1, description="hash buckets the fleet's devices are split into for the stateful step: each is one "
        "Python call and one state row per micro-batch (default: --shuffle-partitions, one per task; fixed once "
        "a checkpoint exists, as it names the checkpoint directory)")
    window: str = Field("10 seconds", description="event-time tumbling window length")
    watermark: str = Field("30 seconds", description="how late a reading may be and still be counted")
    trigger: str = Field("2 seconds", description="micro-batch trigger interval")
    max_metrics: int = Field(32, ge=1, description="readings with more metrics than this are invalid")
    max_readings: int = Field(10_000, ge=1, description="a message with more readings than this goes to the DLQ "
                              "whole")
    max_future_s: int = Field(
        10, ge=0, description="readings stamped further ahead of their Kafka receive time than this are invalid "
        "(must stay below the watermark, or one fast clock would make everyone else's readings late)"
    )
    anomaly_z: float = Field(5.0, gt=0, description="EWMA z-score above which a reading is an anomaly")
    anomaly_warmup: int = Field(30, ge=1, description="readings a series needs before the z-score and drift "
                                "detectors fire")
    anomaly_stuck_run: int = Field(5, ge=2, description="equal values in a row that make a stuck sensor (when "
                                   "that many are unlikely for the series: not a signal resting at a limit)")
    anomaly_drift: float = Field(8.0, ge=0, description="CUSUM of z-scores (each beyond 1) at which the drift "
                                 "detector fires: a slow drift no single reading shows (0: off)")
    checkpoint_dir: Path = Field(Path(".tsdemo/checkpoints/processing"), description="checkpoint directory "
                                 "(a shared filesystem such as HDFS or ABFS on a cluster)")
    ivy_dir: Path | None = Field(None, description="Ivy cache for Spark's Kafka connector (default: "
                                 "<repo>/.cache/ivy)")
    max_query_restarts: int = Field(
        20, ge=0, description="failures in a row of one query (each restarted from its checkpoint, no micro-batch "
        "finished in between) before the process gives up and exits non-zero")
    spark_ui: bool = Field(False, description="start the Spark web UI")
    driver_memory: str = Field("1g", description="spark.driver.memory")
    health_port: int = Field(-1, description="port for /healthz and /metrics (0: any free port, <0: off)")
    log_level: str = Field("INFO", description="log level")

    @field_validator("window", "watermark", "trigger")
    @classmethod
    def _duration(cls, value: str) -> str:
        parts = value.split()
        if len(parts) != 2 or not parts[0].isdigit() or parts[1].rstrip("s") not in _DURATION_UNITS:
            raise ValueError(f"expected a duration like '10 seconds', got {value!r}")
        return value

    @model_validator(mode="after")
    def _future_below_watermark(self) -> ProcessingSettings:
        if self.max_future_s * 1000 >= duration_ms(self.watermark):
            raise ValueError(
                f"max_future_s ({self.max_future_s}s) must be below the watermark ({self.watermark})"
            )
        return self

    def window_ms(self) -> int:
        return duration_ms(self.window)

    def buckets(self) -> int:
        return self.state_buckets or self.shuffle_partitions


def duration_ms(value: str) -> int:
    number, unit = value.split()
    scale = {"millisecond": 1, "second": 1000, "minute": 60_000, "hour": 3_600_000}[unit.rstrip("s")]
    return int(number) * scale
