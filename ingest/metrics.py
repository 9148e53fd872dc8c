"""The bridge's Prometheus metrics, served on ``/metrics``.

Every message received ends in exactly one of: forwarded, rejected (written to the dead-letter topic)
or left for redelivery (not acknowledged, so the broker delivers it again: on shutdown or a lost
connection). ``tsdemo up`` and ``tsdemo bench ingest`` read ``tsdemo_ingest_forwarded_total``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

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

#: kafka-python's own producer figures worth exporting: how well produce requests are filled and how
#: long they take (what ``tsdemo bench ingest`` reports beside the throughput).
PRODUCER_FIGURES = {
    "records-per-request-avg": ("tsdemo_ingest_kafka_records_per_request", "records per produce request (avg)"),
    "request-latency-avg": ("tsdemo_ingest_kafka_request_latency_ms", "produce request latency in ms (avg)"),
    "batch-size-avg": ("tsdemo_ingest_kafka_batch_bytes", "bytes per partition batch (avg)"),
    "record-queue-time-avg": ("tsdemo_ingest_kafka_record_queue_ms", "ms a record waits in the producer (avg)"),
    "compression-rate-avg": ("tsdemo_ingest_kafka_compression_rate", "compressed / uncompressed size (avg)"),
}


class ProducerFigures(Collector):
    """Reads the current producer's metrics on each scrape (the producer may be replaced)."""

    def __init__(self, read: Callable[[], dict[str, float]]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        figures = self._read()
        for key, (name, doc) in PRODUCER_FIGURES.items():
            if key in figures:
                yield GaugeMetricFamily(name, doc, value=figures[key])


def export_producer_figures(read: Callable[[], dict[str, float]]) -> ProducerFigures:
    collector = ProducerFigures(read)
    REGISTRY.register(collector)
    return collector
