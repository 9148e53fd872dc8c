"""The bridge's Prometheus metrics, served on ``/metrics``.

Every message received ends in exactly one of: forwarded, rejected (written to the dead-letter topic)
or left for redelivery (not acknowledged, so the broker delivers it again: on shutdown or a lost
connection). ``tsdemo up`` and ``tsdemo bench ingest`` read ``tsdemo_ingest_forwarded_total``.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECEIVED = Counter("tsdemo_ingest_received_total", "MQTT messages received (redeliveries included)")
FORWARDED = Counter("tsdemo_ingest_forwarded_total", "messages written to the readings topic and acknowledged "
                    "by Kafka")
REJECTED = Counter("tsdemo_ingest_rejected_total", "messages written to the dead-letter topic", ["reason"])
LEFT = Counter("tsdemo_ingest_left_for_redelivery_total", "messages dropped unacknowledged (shutdown, lost "
               "connection): the broker delivers them again")
KAFKA_ERRORS = Counter("tsdemo_ingest_kafka_errors_total", "failed Kafka writes (each retried)")
INFLIGHT = Gauge("tsdemo_ingest_inflight", "messages the bridge holds: received and not yet acknowledged by Kafka")
ACK_LATENCY = Histogram(
    "tsdemo_ingest_kafka_ack_seconds", "time from MQTT receive to Kafka acknowledgement",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
