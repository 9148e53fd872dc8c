"""Writes the bridge's records to Kafka on a thread of its own and retries each until Kafka has it.

paho-mqtt runs ``on_message`` on its network thread, the one that also sends keepalives and PUBACKs.
``KafkaProducer.send`` can block for up to ``max_block_ms`` (it waits for metadata when Kafka is down
or a topic is missing) and raises on the spot for some errors, either of which would stall or kill
that thread. So the bridge only queues here, and this thread does the sending.

The hot path costs a few attribute writes per message: the network thread appends one ``Pending``
slot per message to a deque; this thread takes every queued slot at once and hands each to the
producer; Kafka's callback only marks its slot done and appends it to a second deque; this thread
then settles the finished ones in one go (metrics counted per run, the MQTT acks of the finished
prefix sent as one batch by ``OrderedAcks.flush``). Threads wake each other only when the other one
is asleep with nothing in flight; while writes are at Kafka it looks for finished ones every
``SETTLE_S``: never a wake-up per message. Flow control is a comparison of two counters, each written by one
thread (``_submitted`` by the network thread, ``_released`` by this one).

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
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable

from kafka import KafkaProducer
from kafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError

from ingest.acks import AckToken, OrderedAcks
from ingest.metrics import ACK_LATENCY, FORWARDED, INFLIGHT, KAFKA_ERRORS, LEFT, RECEIVED, REJECTED
from ingest.partitioning import CachedPartitioner
from ingest.records import REFUSED_KEEP_BYTES, KafkaRecord, Message, Router
from ingest.settings import BridgeSettings

log = logging.getLogger("ingest.forwarder")

#: how long ``send`` may block this thread waiting for metadata before the write counts as failed
MAX_BLOCK_MS = 10_000
#: writes waiting this long with none acknowledged mean Kafka is not taking them (the producer's own
#: retries hide an outage from us until delivery_timeout_ms)
STALLED_S = 10.0
#: While writes are at Kafka, the sending thread settles finished ones this often (the most an
#: acknowledgement waits for it).
SETTLE_S = 0.002
#: A producer that delivers its results only when served (``serve()``, librdkafka) is served at each
#: settle, and this often when nothing is at Kafka (its logs and statistics).
IDLE_SERVE_S = 0.05
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 10.0
TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)

ProducerFactory = Callable[[], KafkaProducer]


def make_producer(settings: BridgeSettings) -> KafkaProducer:
    """The idempotent, acks=all producer; raises ``KafkaError`` when no broker answers."""
    if settings.kafka_client == "confluent":
        from ingest.librdkafka import LibrdkafkaProducer  # the optional extra: imported only when chosen

        return LibrdkafkaProducer(settings)  # type: ignore[return-value] - the part of the interface we use
    return KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap.split(","),
        acks="all",
        enable_idempotence=True,
        linger_ms=settings.linger_ms,
        # kafka-python's 16 KiB default holds ~8 gateway messages per partition batch, so each produce
        # request carried ~14 records and Kafka (one request per connection at a time) set the pace.
        batch_size=settings.kafka_batch_bytes,
        compression_type=None if settings.kafka_compression == "none" else settings.kafka_compression,
        partitioner=CachedPartitioner(),
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


class Pending:
    """One message on its way to Kafka: the bridge's only per-message object besides paho's."""

    __slots__ = ("seq", "msg", "record", "received", "token", "producer")

    def __init__(self, seq: int, msg: Message, received: float, token: AckToken | None) -> None:
        self.seq = seq  # arrival order: retries go out in it
        self.msg = msg
        self.record: KafkaRecord | None = None  # routed by the sending thread
        self.received = received  # time.monotonic() at receipt
        self.token = token  # its place in the MQTT ack order; None at QoS 0 (nothing to ack)
        self.producer = -1  # which producer it was last handed to


class Forwarder:
    def __init__(self, router: Router, producer_factory: ProducerFactory, max_held: int,
                 acks: OrderedAcks | None = None) -> None:
        self.router = router
        self.max_held = max_held
        self.acks = acks or OrderedAcks(lambda _mids: None)
        self._factory = producer_factory
        self._producer: KafkaProducer | None = None
        self._producer_no = 0
        self._renew = False
        self._cond = threading.Condition()
        self._queue: deque[Pending] = deque()  # from the network thread, in arrival order
        self._finished: deque[Pending] = deque()  # in Kafka (or on the DLQ), not yet settled
        self._left: deque[Pending] = deque()  # dropped: their connection is gone
        self._retry: list[tuple[int, Pending]] = []  # a heap in arrival order
        self._retry_at = 0.0
        self._round = 0
        self._seq = 0  # written by the network thread only
        self._submitted = 0  # written by the network thread only
        self._released = 0  # written by the sending thread only
        # Read when /metrics is scraped: a gauge set by the sending thread went stale while that thread
        # sat in a blocked send or a producer renewal during a Kafka outage, just when it matters.
        INFLIGHT.set_function(self.held)
        self._sleeping = False  # the sending thread waits for new messages, with none at Kafka: wake it
        self._intake_waiting = False  # the network thread waits for room: wake it
        self._failing = False
        self._progress_at = time.monotonic()  # last ack from Kafka, or when the bridge last went idle
        self._stopped = False
        self._serves = False  # the producer runs its callbacks only in serve(), on this thread
        self._thread: threading.Thread | None = None

    # -- producer ---------------------------------------------------------------------------------
    def connect(self, stop: threading.Event) -> bool:
        """Create the producer, retrying until Kafka answers; False if ``stop`` was set first."""
        delay = 0.5
        while not stop.is_set() and not self._stopped:
            try:
                self._producer = self._factory()
                self._serves = hasattr(self._producer, "serve")
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

    def producer_metrics(self) -> dict[str, float]:
        """kafka-python's own producer figures (records per request, request latency, ...)."""
        producer = self._producer
        if producer is None:
            return {}
        try:
            # Grouped by kafka-python (producer-metrics, producer-node-metrics, ...): the names don't clash.
            return {k: float(v) for group in producer.metrics().values() for k, v in group.items()
                    if isinstance(v, int | float)}
        except Exception:  # noqa: BLE001 - figures for a report; a producer being replaced has none
            return {}

    # -- the bridge's side (the MQTT network thread) ------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="kafka-forwarder", daemon=True)
        self._thread.start()

    def wait_for_room(self, give_up: threading.Event) -> bool:
        """Block while ``max_held`` messages are held; False if ``give_up`` was set first."""
        if self._submitted - self._released < self.max_held:
            return not give_up.is_set()
        with self._cond:
            self._intake_waiting = True
            try:
                while self._submitted - self._released >= self.max_held and not give_up.is_set():
                    self._cond.wait(0.5)  # woken by a release; the timeout only notices give_up
            finally:
                self._intake_waiting = False
            return not give_up.is_set()

    def submit(self, msg: Message, received: float, token: AckToken | None = None) -> None:
        """Queue one message; returns at once. Its ``token`` is marked done once Kafka has it."""
        if self._submitted == self._released:
            self._progress_at = received
        self._seq += 1
        self._queue.append(Pending(self._seq, msg, received, token))
        self._submitted += 1
        if self._sleeping:
            self._wake()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def submitted(self) -> int:
        """Messages taken so far (the bridge's retirement watches it for arrivals)."""
        return self._submitted

    def held(self) -> int:
        """Messages taken and not yet settled: queued, at the producer or waiting for a retry."""
        return self._submitted - self._released

    def stalled_s(self) -> float:
        """Seconds since Kafka last acknowledged a write while writes wait; 0 when nothing waits."""
        return time.monotonic() - self._progress_at if self.held() else 0.0

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
        self._settle()
        with self._cond:
            left = len(self._queue) + len(self._retry)
            self._queue.clear()
            self._retry.clear()
        if left:
            LEFT.inc(left)

    # -- the sending thread -------------------------------------------------------------------------
    def _take(self) -> list[Pending]:
        """Everything there is to send now, in arrival order; waits while there is nothing to do."""
        waited = False
        while not self._stopped:
            retry, queue = self._retry, self._queue
            if retry and self._retry_at <= time.monotonic():
                # Due retries go first; newer messages wait behind them so a device keeps its order.
                with self._cond:
                    due = [heapq.heappop(retry)[1] for _ in range(len(retry))]
                due.extend(queue.popleft() for _ in range(len(queue)))
                return due
            if queue and not retry:
                return [queue.popleft() for _ in range(len(queue))]
            if self._finished or self._left or waited and self._serves:
                return []  # nothing to send, but something to settle (or a producer to serve)
            with self._cond:
                if self._queue and not self._retry:
                    continue
                idle = False
                if self._retry:
                    wait: float | None = max(self._retry_at - time.monotonic(), 0.0)
                elif self.held() > len(self._queue):
                    # Writes are at Kafka: look for finished ones every SETTLE_S rather than have each
                    # of Kafka's callbacks wake this thread (a wake-up per message).
                    wait = SETTLE_S
                else:
                    idle = True
                    wait = IDLE_SERVE_S if self._serves else None
                self._sleeping = idle
                # Checked again under the lock: a submit that saw _sleeping False before we set it has
                # already queued its message, and one that sees it True waits for this wait to notify.
                if not (idle and self._queue):
                    self._cond.wait(wait)
                    waited = True
                self._sleeping = False
        return []

    def _run(self) -> None:
        while not self._stopped:
            items = self._take()
            if items:
                RECEIVED.inc(sum(1 for i in items if i.record is None))
            for item in items:
                if not self._current(item):
                    self._left.append(item)
                    continue
                if self._renew:
                    self._renew_producer()
                if self._producer is None:  # closing while a new producer was being made
                    self._left.append(item)
                    continue
                self._send(item, self._producer)
            if self._serves and self._producer is not None:
                self._producer.serve()  # type: ignore[attr-defined] - only where _serves says it has one
            self._settle()

    def _current(self, item: Pending) -> bool:
        return item.token is None or self.acks.is_current(item.token)

    def _send(self, item: Pending, producer: KafkaProducer) -> None:
        rec = item.record
        if rec is None:
            rec = item.record = self.router.route(item.msg)
        item.producer = self._producer_no
        try:
            future = producer.send(rec.topic, value=rec.value, key=rec.key, headers=rec.headers)
        except Exception as exc:  # noqa: BLE001 - whatever it is, the write is retried, not lost
            self._failed(item, exc)
            return
        future.add_both(self._completed, item)

    def _completed(self, item: Pending, result: object) -> None:
        """Kafka's callback (on its I/O thread): only marks the slot, unless the write failed."""
        if isinstance(result, BaseException):
            self._failed(item, result)
            return
        if item.token is not None:
            item.token.done = True
        self._failing = False
        self._finished.append(item)  # the sending thread looks for it within SETTLE_S

    def _settle(self) -> None:
        """Counts what Kafka finished since the last call, acks the finished prefix, frees room."""
        finished, left = self._finished, self._left
        if not finished and not left:
            return
        now = time.monotonic()
        forwarded = released = 0
        rejected: Counter[str] = Counter()
        while finished:
            item = finished.popleft()
            released += 1
            ACK_LATENCY.observe(now - item.received)
            if item.record.rejected is None:  # type: ignore[union-attr]
                forwarded += 1
            else:
                rejected[item.record.rejected] += 1  # type: ignore[union-attr]
        dropped = len(left)
        left.clear()
        if forwarded:
            FORWARDED.inc(forwarded)
        for reason, n in rejected.items():
            REJECTED.labels(reason).inc(n)
        if dropped:
            LEFT.inc(dropped)
        if released:
            self._round = 0
            self._progress_at = now
        self.acks.flush()
        self._released += released + dropped
        if self._intake_waiting:
            with self._cond:
                self._cond.notify_all()

    def _failed(self, item: Pending, exc: BaseException) -> None:
        if isinstance(exc, TOO_LARGE) and len(item.record.value) > REFUSED_KEEP_BYTES:  # type: ignore[union-attr]
            # Kafka's limit is below the one we were given: sending it again would fail forever and
            # hold back every acknowledgement after it.
            log.warning("Kafka refused a %d-byte record from %s as too large; dead-lettering it",
                        len(item.record.value), item.msg.topic)  # type: ignore[union-attr]
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
        if not self._current(item):
            self._left.append(item)
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
