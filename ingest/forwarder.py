"""Writes the bridge's records to Kafka on a thread of its own and retries each until Kafka has it.

paho-mqtt runs ``on_message`` on its network thread, the one that also sends keepalives and PUBACKs.
``KafkaProducer.send`` can block for up to ``max_block_ms`` (it waits for metadata when Kafka is down
or a topic is missing) and raises on the spot for some errors, either of which would stall or kill
that thread. So the bridge only queues here, and this thread does the sending.

Retries: the producer retries a failed write itself, idempotently and in partition order, until
``delivery_timeout_ms``; a write that still fails (or could not even be handed to the producer) comes
back here and is sent again after a backoff that grows per round of failures, up to 10 s. While a
write waits for its retry, newer ones wait behind it so a device's readings keep their order. A
producer that failed for good (a non-retriable error) is replaced before the next send.

What the forwarder holds is bounded by ``max_held``: ``wait_for_room`` makes the caller (the MQTT
network thread) wait while it is full (see ``ingest.bridge`` for why the broker's receive maximum is
not enough). kafka-python 3's record accumulator has no ``buffer_memory`` limit of its own, so this
is the only bound on the bridge's memory.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from kafka import KafkaProducer
from kafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError

from ingest.metrics import ACK_LATENCY, FORWARDED, INFLIGHT, KAFKA_ERRORS, LEFT, REJECTED
from ingest.records import REFUSED_KEEP_BYTES, KafkaRecord, Message, Router
from ingest.settings import BridgeSettings

log = logging.getLogger("ingest.forwarder")

#: how long ``send`` may block this thread waiting for metadata before the write counts as failed
MAX_BLOCK_MS = 10_000
#: writes waiting this long with none acknowledged mean Kafka is not taking them (the producer's own
#: retries hide an outage from us until delivery_timeout_ms)
STALLED_S = 10.0
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 10.0
TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)

ProducerFactory = Callable[[], KafkaProducer]


def make_producer(settings: BridgeSettings) -> KafkaProducer:
    """The idempotent, acks=all producer; raises ``KafkaError`` when no broker answers."""
    return KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap.split(","),
        acks="all",
        enable_idempotence=True,
        linger_ms=settings.linger_ms,
        client_id=settings.client_id,
        max_request_size=settings.kafka_max_request_bytes,
        delivery_timeout_ms=settings.kafka_delivery_timeout_ms,
        request_timeout_ms=min(30_000, settings.kafka_delivery_timeout_ms - settings.linger_ms),
        max_block_ms=MAX_BLOCK_MS,
        bootstrap_timeout_ms=10_000,
        # Reconnect within seconds of Kafka coming back, not after the default backoff of up to 30 s.
        reconnect_backoff_max_ms=5_000,
        **settings.kafka_security(),
    )


@dataclass(eq=False)
class Pending:
    """A message on its way to Kafka."""

    seq: int  # arrival order: retries go out in it
    msg: Message
    record: KafkaRecord
    received: float  # time.monotonic() at receipt
    done: Callable[[], object]  # Kafka has it: acknowledge it to the broker
    current: Callable[[], bool]  # False once its MQTT connection is gone (the broker delivers it again)
    producer: int = field(default=-1)  # which producer it was last handed to


class Forwarder:
    def __init__(self, router: Router, producer_factory: ProducerFactory, max_held: int) -> None:
        self.router = router
        self.max_held = max_held
        self._factory = producer_factory
        self._producer: KafkaProducer | None = None
        self._producer_no = 0
        self._renew = False
        self._cond = threading.Condition()
        self._queue: deque[Pending] = deque()
        self._retry: list[tuple[int, Pending]] = []  # a heap in arrival order
        self._retry_at = 0.0
        self._round = 0
        self._held = 0
        self._seq = itertools.count()
        self._failing = False
        self._progress_at = time.monotonic()  # last ack from Kafka, or when the bridge last went idle
        self._stopped = False
        self._thread: threading.Thread | None = None

    # -- producer ---------------------------------------------------------------------------------
    def connect(self, stop: threading.Event) -> bool:
        """Create the producer, retrying until Kafka answers; False if ``stop`` was set first."""
        delay = 0.5
        while not stop.is_set() and not self._stopped:
            try:
                self._producer = self._factory()
                self._producer_no += 1
                return True
            except KafkaError as exc:
                log.warning("Kafka not reachable yet (%s); retrying in %.1fs", exc, delay)
                stop.wait(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)
        return False

    def _renew_producer(self) -> None:
        old, self._producer = self._producer, None
        self._renew = False
        # First, so the old producer's writes failing as it closes do not ask for another renewal.
        self._producer_no += 1
        log.warning("replacing the Kafka producer after a non-retriable error")
        if old is not None:
            try:
                # No wait: its unfinished writes fail, come back through _failed and are sent again.
                old.close(timeout=0)
            except Exception:  # noqa: BLE001 - a broken producer may fail to close too; it is dropped anyway
                log.exception("closing the old Kafka producer failed")
        self.connect(threading.Event())  # returns only once connected or closing

    # -- the bridge's side --------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="kafka-forwarder", daemon=True)
        self._thread.start()

    def wait_for_room(self, give_up: threading.Event) -> bool:
        """Block while ``max_held`` messages are held; False if ``give_up`` was set first."""
        with self._cond:
            while self._held >= self.max_held and not give_up.is_set():
                self._cond.wait(0.5)  # woken by each release; the timeout only notices give_up
            return not give_up.is_set()

    def submit(self, msg: Message, received: float, done: Callable[[], object], current: Callable[[], bool]) -> None:
        """Queue one message; returns at once. ``done`` runs once Kafka has acknowledged it."""
        record = self.router.route(msg)
        with self._cond:
            self._queue.append(Pending(next(self._seq), msg, record, received, done, current))
            if self._held == 0:
                self._progress_at = time.monotonic()
            self._held += 1
            INFLIGHT.inc()
            self._cond.notify()

    def held(self) -> int:
        """Messages queued, at the producer or waiting for a retry."""
        with self._cond:
            return self._held

    def stalled_s(self) -> float:
        """Seconds since Kafka last acknowledged a write while writes wait; 0 when nothing waits."""
        with self._cond:
            return time.monotonic() - self._progress_at if self._held else 0.0

    def kafka_ok(self) -> bool:
        """Kafka takes our writes: the last one did not fail and waiting ones do not wait for long."""
        return self._producer is not None and self.alive() and not self._failing and self.stalled_s() < STALLED_S

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop sending; what is not in Kafka yet is left for the broker to deliver again."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s + MAX_BLOCK_MS / 1000)
        if self._producer is not None:
            self._producer.close(timeout=timeout_s)
        with self._cond:
            left = len(self._queue) + len(self._retry)
            self._queue.clear()
            self._retry.clear()
        if left:
            LEFT.inc(left)

    # -- the sending thread -------------------------------------------------------------------------
    def _next(self) -> Pending | None:
        with self._cond:
            while not self._stopped:
                if self._retry and (not self._queue or self._retry[0][0] < self._queue[0].seq):
                    wait = self._retry_at - time.monotonic()
                    if wait <= 0:
                        return heapq.heappop(self._retry)[1]
                    self._cond.wait(wait)
                elif self._queue:
                    return self._queue.popleft()
                else:
                    self._cond.wait()
        return None

    def _run(self) -> None:
        while (item := self._next()) is not None:
            if not item.current():
                self._release(item, left=True)
                continue
            if self._renew:
                self._renew_producer()
            if self._producer is None:  # closing while a new producer was being made
                self._release(item, left=True)
                continue
            self._send(item, self._producer)

    def _send(self, item: Pending, producer: KafkaProducer) -> None:
        rec = item.record
        item.producer = self._producer_no
        try:
            future = producer.send(rec.topic, value=rec.value, key=rec.key, headers=rec.headers)
        except Exception as exc:  # noqa: BLE001 - whatever it is, the write is retried, not lost
            self._failed(item, exc)
            return
        future.add_callback(self._written, item)
        future.add_errback(self._failed, item)

    def _written(self, item: Pending, _metadata: object) -> None:
        ACK_LATENCY.observe(time.monotonic() - item.received)
        if item.record.rejected is None:
            FORWARDED.inc()
        else:
            REJECTED.labels(item.record.rejected).inc()
        with self._cond:
            if self._failing:
                log.info("Kafka writes succeed again")
            self._failing = False
            self._round = 0
            self._progress_at = time.monotonic()
        self._release(item)
        item.done()

    def _failed(self, item: Pending, exc: BaseException) -> None:
        if isinstance(exc, TOO_LARGE) and len(item.record.value) > REFUSED_KEEP_BYTES:
            # Kafka's limit is below the one we were given: sending it again would fail forever and
            # hold back every acknowledgement after it.
            log.warning("Kafka refused a %d-byte record from %s as too large; dead-lettering it",
                        len(item.record.value), item.msg.topic)
            item.record = self.router.dead_letter(
                item.msg, "refused_by_kafka", f"Kafka refused the record: {exc}", keep_bytes=REFUSED_KEEP_BYTES
            )
            self._schedule(item, backoff=False)
            return
        KAFKA_ERRORS.inc()
        retriable = getattr(exc, "retriable", False) or isinstance(exc, TOO_LARGE)
        if not retriable and item.producer == self._producer_no:
            self._renew = True
        with self._cond:
            if not self._failing:
                log.warning("Kafka write failed (%r); retrying until it succeeds", exc)
            self._failing = True
        self._schedule(item, backoff=True)

    def _schedule(self, item: Pending, backoff: bool) -> None:
        if not item.current():
            self._release(item, left=True)
            return
        with self._cond:
            now = time.monotonic()
            if backoff and self._retry_at <= now:
                # A new round of failures: a backoff for all of them, not one per message, so a
                # thousand writes failing together are retried together.
                self._retry_at = now + min(FIRST_BACKOFF_S * 2**self._round, MAX_BACKOFF_S)
                self._round += 1
            heapq.heappush(self._retry, (item.seq, item))
            self._cond.notify()

    def _release(self, item: Pending, left: bool = False) -> None:
        with self._cond:
            self._held -= 1
            INFLIGHT.dec()
            self._cond.notify_all()
        if left:
            LEFT.inc()
