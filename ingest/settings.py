"""Settings of the MQTT to Kafka bridge (``tsdemo ingest``)."""

from __future__ import annotations

from pydantic import Field

from servicekit.contract import KAFKA_DLQ_TOPIC, KAFKA_TOPIC, TOPIC_FILTER
from servicekit.mqtt import MqttSettings


class BridgeSettings(MqttSettings):
    client_id: str = Field("tsdemo-bridge-0", description="MQTT client id; stable per bridge instance")
    share_group: str = Field("tsdemo", description="shared subscription group ($share/<group>/...)")
    topic_filter: str = Field(TOPIC_FILTER, description="MQTT topic filter to bridge")
    session_expiry_s: int = Field(3600, ge=0, description="MQTT session expiry: how long the broker keeps "
                                  "our queue while the bridge is away")
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, comma separated")
    kafka_topic: str = Field(KAFKA_TOPIC, description="Kafka topic for readings")
    kafka_dlq_topic: str = Field(KAFKA_DLQ_TOPIC, description="Kafka topic for rejected messages")
    kafka_security_protocol: str = Field("PLAINTEXT", description="Kafka security protocol (PLAINTEXT, SSL, "
                                         "SASL_PLAINTEXT, SASL_SSL)")
    kafka_sasl_mechanism: str | None = Field(None, description="Kafka SASL mechanism (PLAIN, SCRAM-SHA-512)")
    kafka_sasl_username: str | None = Field(None, description="Kafka SASL username")
    kafka_sasl_password: str | None = Field(None, description="Kafka SASL password")
    max_inflight: int = Field(1000, ge=1, le=65_535, description="MQTT messages taken but not yet in Kafka "
                              "(MQTT 5 receive maximum: the broker holds the rest)")
    max_message_bytes: int = Field(1_048_576, ge=1, description="larger payloads go to the DLQ")
    linger_ms: int = Field(5, ge=0, description="Kafka producer linger: batching against latency")
    health_port: int = Field(-1, description="port for /healthz and /metrics (0: any free port, <0: off)")
    log_level: str = Field("INFO", description="log level")

    def kafka_security(self) -> dict:
        extra: dict = {"security_protocol": self.kafka_security_protocol}
        if self.kafka_sasl_mechanism:
            extra.update(
                sasl_mechanism=self.kafka_sasl_mechanism,
                sasl_plain_username=self.kafka_sasl_username,
                sasl_plain_password=self.kafka_sasl_password,
            )
        return extra
