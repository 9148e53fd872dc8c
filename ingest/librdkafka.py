"""The bridge's optional librdkafka producer (confluent-kafka), behind kafka-python's interface.

kafka-python stays the default client. Measured on 2 cores, its ``send`` and its network thread were
over half of the bridge's CPU per message even after batching was fixed (``tsdemo bench ingest``
shows both clients' figures side by side), so ``TSDEMO_KAFKA_CLIENT=confluent`` (the
``ingest-librdkafka`` extra) selects librdkafka, which batches, compresses and retries in C.

The adapter gives the forwarder what it uses of ``KafkaProducer``: ``send(...)`` returning something
with ``add_both``, ``close(timeout)`` and ``metrics()``, plus ``serve()``: delivery results (and
librdkafka's logs and statistics) arrive only while ``serve`` runs, on the caller's thread. The
forwarder calls it on its sending thread, each time it looks for finished writes. A poll thread of
our own, as kafka-python has, handed every batch of results to another Python thread; with four
bridges on two cores that cost showed: CPU per 1,000 readings at 1, 2 and 4 bridges was 50 and 59 %
apart in two ``bench ingest --repeats 5`` runs, and 33 and 6 % apart with ``serve`` in the runs
interleaved with them.

Two settings keep it interchangeable with kafka-python: the same murmur2 partitioner as Kafka's Java
and Python clients (librdkafka's default is CRC32), so a device's readings land in the same partition
whichever client a bridge runs; and the same idempotent, acks=all delivery.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka import KafkaException, Producer
from kafka.errors import KafkaConnectionError, KafkaError, MessageSizeTooLargeError

from ingest.settings import BridgeSettings

log = logging.getLogger("ingest.librdkafka")

#: librdkafka's local queue full: wait this long for deliveries before trying the produce again.
FULL_WAIT_S = 0.01
STATS_INTERVAL_MS = 2000


class DeliveryFailed(KafkaError):
    """A librdkafka delivery error as the forwarder's retry logic reads kafka-python's errors."""

    def __init__(self, err: RdKafkaError) -> None:
        super().__init__(f"{err.name()}: {err.str()}")
        # Timeouts, purges at close and broker errors are worth another try; a fatal error (the
        # idempotent producer fenced, say) wants a new producer.
        self.retriable = not err.fatal()


def _failure(err: RdKafkaError) -> KafkaError:
    if err.code() in (RdKafkaError.MSG_SIZE_TOO_LARGE, RdKafkaError._MSG_SIZE_TOO_LARGE):
        return MessageSizeTooLargeError(err.str())
    return DeliveryFailed(err)


class _Delivery:
    """One record's delivery: the forwarder's callback and its argument, called once with the outcome."""

    __slots__ = ("fn", "arg")

    def __init__(self) -> None:
        self.fn: Callable[[Any, object], object] | None = None
        self.arg: Any = None

    def add_both(self, fn: Callable[[Any, object], object], arg: Any) -> None:
        self.fn, self.arg = fn, arg

    def __call__(self, err: RdKafkaError | None, _msg: object) -> None:
        if self.fn is not None:
            self.fn(self.arg, _failure(err) if err is not None else None)


def config(settings: BridgeSettings) -> dict[str, Any]:
    """librdkafka's configuration for the bridge's settings (the same meaning as kafka-python's)."""
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "client.id": settings.client_id,
        "acks": "all",
        "enable.idempotence": True,
        "partitioner": "murmur2_random",
        "linger.ms": settings.linger_ms,
        "batch.size": settings.kafka_batch_bytes,
        "compression.type": settings.kafka_compression,
        "message.max.bytes": settings.kafka_max_request_bytes,
        "delivery.timeout.ms": settings.kafka_delivery_timeout_ms,
        "request.timeout.ms": min(30_000, settings.kafka_delivery_timeout_ms - settings.linger_ms),
        "reconnect.backoff.max.ms": 5_000,
        "statistics.interval.ms": STATS_INTERVAL_MS,
        "logger": log,
    }
    security = settings.kafka_security()
    conf["security.protocol"] = security["security_protocol"]
    if "sasl_mechanism" in security:
        conf.update({"sasl.mechanism": security["sasl_mechanism"], "sasl.username": security["sasl_plain_username"],
                     "sasl.password": security["sasl_plain_password"]})
    if "ssl_cafile" in security:
        conf["ssl.ca.location"] = security["ssl_cafile"]
    return conf


class LibrdkafkaProducer:
    def __init__(self, settings: BridgeSettings, connect_timeout_s: float = 10.0) -> None:
        self._stats: dict[str, float] = {}
        conf = config(settings)
        conf["stats_cb"] = self._on_stats
        self._producer = Producer(conf)
        try:
            # kafka-python's constructor fails when no broker answers; the forwarder relies on that.
            self._producer.list_topics(timeout=connect_timeout_s)
        except KafkaException as exc:
            raise KafkaConnectionError(str(exc)) from exc

    def serve(self) -> None:
        """Runs the delivery callbacks of the writes finished since the last call; never waits."""
        self._producer.poll(0)

    def send(self, topic: str, value: bytes, key: bytes | None = None,
             headers: list[tuple[str, bytes]] | None = None) -> _Delivery:
        delivery = _Delivery()
        while True:
            try:
                self._producer.produce(topic, value, key, headers=headers, on_delivery=delivery)
                return delivery
            except BufferError:
                # The local queue is full (queue.buffering.max.*): let deliveries drain it, as
                # kafka-python's send blocks for room.
                self._producer.poll(FULL_WAIT_S)
            except KafkaException as exc:
                raise _failure(exc.args[0]) from exc

    def close(self, timeout: float | None = None) -> None:
        if timeout == 0:
            # Like kafka-python: unfinished writes fail at once (the forwarder sends them again).
            self._producer.purge(in_queue=True, in_flight=True)
        else:
            self._producer.flush(timeout if timeout is not None else -1)
        self._producer.poll(0)  # the purged records' failures

    def _on_stats(self, text: str) -> None:
        stats = json.loads(text)
        brokers = [b for b in stats.get("brokers", {}).values() if b.get("nodeid", -1) >= 0]
        produce_requests = sum(b.get("req", {}).get("Produce", 0) for b in brokers)
        sent = stats.get("txmsgs", 0)
        figures = {"records-per-request-avg": sent / produce_requests if produce_requests else 0.0}
        rtts = [b["rtt"]["avg"] for b in brokers if b.get("rtt", {}).get("cnt")]
        if rtts:
            figures["request-latency-avg"] = sum(rtts) / len(rtts) / 1000.0  # µs -> ms
        sizes = [t["batchsize"]["avg"] for t in stats.get("topics", {}).values() if t.get("batchsize", {}).get("cnt")]
        if sizes:
            figures["batch-size-avg"] = sum(sizes) / len(sizes)
        self._stats = figures

    def metrics(self) -> dict[str, dict[str, float]]:
        return {"producer-metrics": dict(self._stats)}
