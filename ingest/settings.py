"""Settings of the MQTT to Kafka bridge (``tsdemo ingest``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from servicekit.contract import KAFKA_DLQ_TOPIC, KAFKA_TOPIC, TOPIC_FILTER
from servicekit.kafka import KafkaConnectionSettings
from servicekit.mqtt import MqttSettings


class BridgeSettings(MqttSettings, KafkaConnectionSettings):
    client_id: str = Field("tsdemo-bridge-0", description="MQTT client id; stable per bridge instance (the broker "
                           "keeps this instance's session, and its share of the messages, under it)")
    share_group: str = Field("tsdemo", description="shared subscription group ($share/<group>/...)")
    topic_filter: str = Field(TOPIC_FILTER, description="MQTT topic filter to bridge")
    session_expiry_s: int = Field(3600, ge=0, description="MQTT session expiry: how long the broker keeps "
                                  "our session and queue while the bridge is away")
    kafka_topic: str = Field(KAFKA_TOPIC, description="Kafka topic for readings")
    kafka_dlq_topic: str = Field(KAFKA_DLQ_TOPIC, description="Kafka topic for rejected messages")
    kafka_max_request_bytes: int = Field(1_048_576, ge=1024, description="largest Kafka record the bridge "
                                         "writes (producer max_request_size); keep it at or below the "
                                         "topics' max.message.bytes")
    linger_ms: int = Field(5, ge=0, description="Kafka producer linger: batching against latency")
    kafka_batch_bytes: int = Field(1_048_576, ge=1024, description="Kafka producer batch size per partition "
                                   "(batch_size): how many records one produce request can carry")
    kafka_client: Literal["kafka-python", "confluent"] = Field(
        "kafka-python", description="Kafka client library: kafka-python (the default) or confluent (librdkafka; "
        "the ingest-librdkafka extra, about twice as fast per message)")
    kafka_compression: Literal["none", "gzip", "lz4", "snappy", "zstd"] = Field(
        "none", description="Kafka producer compression (lz4, snappy and zstd need their Python codec installed)")
    kafka_delivery_timeout_ms: int = Field(120_000, ge=1000, description="how long the Kafka producer retries "
                                           "a write before the bridge retries it itself")
    max_inflight: int = Field(1000, ge=1, le=65_535, description="MQTT messages taken but not yet in Kafka "
                              "(MQTT 5 receive maximum: the broker holds the rest)")
    max_message_bytes: int = Field(1_000_000, ge=1, description="larger payloads go to the DLQ")
    shutdown_timeout_s: float = Field(30.0, ge=0, description="on SIGTERM, how long to wait for the messages in "
                                      "flight before leaving them to the broker to deliver again")
    retire_timeout_s: float = Field(240.0, gt=0, description="on POST /retire (a scale-down), how long to drain "
                                    "the session into Kafka; past it the bridge stops as on SIGTERM, its session kept")
    health_port: int = Field(-1, description="port for /healthz and /metrics (0: any free port, <0: off)")
    log_level: str = Field("INFO", description="log level")

    @field_validator("kafka_delivery_timeout_ms")
    @classmethod
    def _covers_linger(cls, value: int, info: ValidationInfo) -> int:
        # kafka-python refuses a delivery timeout shorter than linger + request timeout (1 s at least here).
        if value < info.data.get("linger_ms", 0) + 1000:
            raise ValueError("must be at least linger_ms + 1000")
        return value
