"""The bridge's Prometheus metrics, served on ``/metrics``.

Every message received ends in exactly one of: forwarded, rejected (written to the dead-letter topic)
or left for redelivery (not acknowledged, so the broker delivers it again: on shutdown or a lost
connection). The names are the contract's (``servicekit.contract.metrics``): the stage collector,
``tsdemo up`` and ``tsdemo bench ingest`` read ``INGEST_FORWARDED``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from servicekit.contract import metrics as m

RECEIVED = Counter(m.INGEST_RECEIVED, "MQTT messages received (redeliveries included)")
FORWARDED = Counter(m.INGEST_FORWARDED, "messages written to the readings topic and acknowledged "
                    "by Kafka")
REJECTED = Counter(m.INGEST_REJECTED, "messages written to the dead-letter topic", ["reason"])
LEFT = Counter(m.INGEST_LEFT_FOR_REDELIVERY, "messages dropped unacknowledged (shutdown, lost "
               "connection): the broker delivers them again")
KAFKA_ERRORS = Counter(m.INGEST_KAFKA_ERRORS, "failed Kafka writes (each retried)")
INFLIGHT = Gauge(m.INGEST_INFLIGHT, "messages the bridge holds: received and not yet acknowledged by Kafka")
ACK_LATENCY = Histogram(
    m.INGEST_KAFKA_ACK_SECONDS, "time from MQTT receive to Kafka acknowledgement",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)

#: kafka-python's own producer figures worth exporting: how well produce requests are filled and how
#: long they take (what ``tsdemo bench ingest`` reports beside the throughput).
PRODUCER_FIGURES = {
    "records-per-request-avg": (m.INGEST_KAFKA_RECORDS_PER_REQUEST, "records per produce request (avg)"),
    "request-latency-avg": (m.INGEST_KAFKA_REQUEST_LATENCY_MS, "produce request latency in ms (avg)"),
    "batch-size-avg": (m.INGEST_KAFKA_BATCH_BYTES, "bytes per partition batch (avg)"),
    "record-queue-time-avg": (m.INGEST_KAFKA_RECORD_QUEUE_MS, "ms a record waits in the producer (avg)"),
    "compression-rate-avg": (m.INGEST_KAFKA_COMPRESSION_RATE, "compressed / uncompressed size (avg)"),
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
