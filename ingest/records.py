"""What the bridge writes to Kafka for one MQTT message.

A payload goes to the readings topic unchanged, keyed by the MQTT topic's last segment (the device,
or the gateway of a batch) so a device's readings share a partition and stay in order, with the
headers ``mqtt_topic`` and ``received_ms``. The bridge does not parse it: processing validates.

The only messages the bridge rejects are those it cannot forward: larger than ``max_message_bytes``
or than a Kafka record may be. They go to the dead-letter topic with a ``reason`` header and
``payload_bytes``, the original size. The dead-letter value is the original bytes whole when they fit
in a Kafka record (so a message rejected by a limit set below Kafka's can be replayed unchanged), and
otherwise the leading bytes that fit: a payload over Kafka's limit cannot be stored whole anywhere in
Kafka, and its start, with the topic header, is enough to find the sender and the cause.
"""

from __future__ import annotations

from dataclasses import dataclass

from kafka.record.default_records import DefaultRecordBatchBuilder

Headers = list[tuple[str, bytes]]

#: what a dead letter keeps when Kafka itself refused the record as too large: Kafka's limit is then
#: lower than we were told, so only a small start is sure to fit
REFUSED_KEEP_BYTES = 1024
#: More than a record batch's header (61 bytes) and one record's varints and header framing ever take.
RECORD_OVERHEAD_BOUND = 256


def kafka_key(mqtt_topic: str) -> bytes:
    """The topic's last segment: the device (or gateway), so its readings stay in one partition."""
    return mqtt_topic.rsplit("/", 1)[-1].encode()


def record_size(key: bytes, value: bytes, headers: Headers) -> int:
    """The bytes a record takes in a batch of its own, as the Kafka producer counts them."""
    # The producer checks exactly this against max_request_size; asking the same function keeps the
    # bridge's check and the producer's from disagreeing by a few bytes of framing.
    return DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)


@dataclass(frozen=True, slots=True)
class Message:
    """An MQTT message as the bridge received it."""

    topic: str
    payload: bytes
    received_ms: int

    def headers(self) -> Headers:
        return [("mqtt_topic", self.topic.encode()), ("received_ms", str(self.received_ms).encode())]


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    topic: str
    key: bytes
    value: bytes
    headers: Headers
    #: why it goes to the dead-letter topic (a metric label); None for a reading
    rejected: str | None = None


@dataclass(frozen=True, slots=True)
class Router:
    """Chooses the record for each message: the readings topic, or the dead-letter topic with a reason."""

    topic: str
    dlq_topic: str
    max_payload_bytes: int
    max_record_bytes: int

    def route(self, msg: Message) -> KafkaRecord:
        key, headers = kafka_key(msg.topic), msg.headers()
        size = len(msg.payload)
        if size > self.max_payload_bytes:
            return self.dead_letter(
                msg, "too_large", f"payload of {size} bytes exceeds the bridge's limit of {self.max_payload_bytes}"
            )
        # The exact size takes kafka-python's estimator, which the producer runs again on send; only a
        # payload near the limit needs it (a batch's framing and a record's varints stay well under
        # RECORD_OVERHEAD_BOUND).
        if size + len(key) + sum(len(k) + len(v) for k, v in headers) + RECORD_OVERHEAD_BOUND <= self.max_record_bytes:
            return KafkaRecord(self.topic, key, msg.payload, headers)
        record_bytes = record_size(key, msg.payload, headers)
        if record_bytes > self.max_record_bytes:
            return self.dead_letter(
                msg, "too_large",
                f"record of {record_bytes} bytes exceeds the Kafka request limit of {self.max_record_bytes}",
            )
        return KafkaRecord(self.topic, key, msg.payload, headers)

    def dead_letter(self, msg: Message, label: str, reason: str, keep_bytes: int | None = None) -> KafkaRecord:
        """The dead-letter record: the original bytes, or as many leading bytes as fit (or ``keep_bytes``)."""
        key = kafka_key(msg.topic)
        headers = msg.headers() + [("reason", reason.encode()), ("payload_bytes", str(len(msg.payload)).encode())]
        # An empty value's length takes one byte to encode, a long one's up to five: room for the difference.
        room = self.max_record_bytes - record_size(key, b"", headers) - 4
        if keep_bytes is not None:
            room = min(room, keep_bytes)
        value = msg.payload if len(msg.payload) <= room else msg.payload[: max(room, 0)]
        return KafkaRecord(self.dlq_topic, key, value, headers, rejected=label)
