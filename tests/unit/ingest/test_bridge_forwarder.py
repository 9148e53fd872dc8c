"""The Kafka side of the bridge against a fake producer: retries in arrival order, never lost, a
record Kafka refuses as too large dead-lettered, a producer broken for good replaced, and the
paho network thread never blocked by a send."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
import pytest
from kafka.errors import KafkaError, KafkaTimeoutError, MessageSizeTooLargeError, TopicAuthorizationFailedError
from kafka.future import Future
from paho.mqtt.packettypes import PacketTypes
from prometheus_client import REGISTRY

from ingest.acks import OrderedAcks
from ingest.bridge import Bridge
from ingest.forwarder import Forwarder
from ingest.records import Message, Router
from ingest.settings import BridgeSettings


class FakeProducer:
    """Records each send and hands back a future the test resolves; ``block`` makes send() hang."""

    def __init__(self, name: str = "p") -> None:
        self.name = name
        self.sent: list[tuple[str, bytes, Future]] = []
        self.cond = threading.Condition()
        self.block = threading.Event()
        self.block.set()
        self.raise_next: Exception | None = None
        self.closed = False

    def send(self, topic, value=None, key=None, headers=None):  # noqa: ANN001 - KafkaProducer's signature
        self.block.wait()
        with self.cond:
            if self.raise_next is not None:
                exc, self.raise_next = self.raise_next, None
                self.sent.append((topic, value, Future().failure(exc)))
                self.cond.notify_all()
                raise exc
            future = Future()
            self.sent.append((topic, value, future))
            self.cond.notify_all()
        return future

    def wait_sent(self, n: int, timeout: float = 20.0) -> list[tuple[str, bytes, Future]]:
        """Block until ``n`` sends happened; fails the test if they never do."""
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.sent) >= n, timeout), f"{len(self.sent)} sends, wanted {n}"
            return list(self.sent)

    def close(self, timeout: float | None = None) -> None:
        self.closed = True
        if timeout == 0:  # like KafkaProducer: unfinished writes fail at once
            for _, _, future in self.sent:
                if not future.is_done:
                    future.failure(KafkaError("Producer is closed forcefully."))


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels or None) or 0.0


def wait_for(cond, what: str, timeout: float = 20.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


@pytest.fixture
def producers() -> list[FakeProducer]:
    return []


@pytest.fixture
def forwarder(producers: list[FakeProducer]):
    def factory() -> FakeProducer:
        producers.append(FakeProducer(f"p{len(producers)}"))
        return producers[-1]

    acked: list[int] = []
    fwd = Forwarder(Router("readings", "dlq", 1_000_000, 1_048_576), factory, max_held=1000,
                    acks=OrderedAcks(acked.extend))
    fwd.acked_mids = acked
    assert fwd.connect(threading.Event())
    fwd.start()
    yield fwd
    fwd.close(timeout_s=0)


class Done:
    """Submits messages as the bridge does and tells which were acknowledged to MQTT, in ack order."""

    def __init__(self) -> None:
        self.payloads: dict[int, bytes] = {}
        self.fwd: Forwarder | None = None

    def submit(self, fwd: Forwarder, payload: bytes) -> None:
        self.fwd = fwd
        mid = len(self.payloads) + 1
        self.payloads[mid] = payload
        fwd.submit(Message("sensors/s/d", payload, 1), time.monotonic(), fwd.acks.arrived(mid))

    @property
    def order(self) -> list[bytes]:
        return [self.payloads[mid] for mid in self.fwd.acked_mids] if self.fwd else []

    def lose_connection(self) -> None:
        self.fwd.acks.reset()  # the MQTT connection went away: the broker delivers them again


def test_failed_writes_are_sent_again_in_arrival_order_before_anything_newer(forwarder, producers):
    done = Done()
    for p in (b"1", b"2", b"3"):
        done.submit(forwarder, p)
    sent = producers[0].wait_sent(3)
    errors_before = metric("tsdemo_ingest_kafka_errors_total")
    sent[1][2].failure(KafkaTimeoutError("delivery timeout"))
    sent[0][2].failure(KafkaTimeoutError("delivery timeout"))
    assert not forwarder.kafka_ok()
    sent[2][2].success(None)
    done.submit(forwarder, b"4")  # arrives while 1 and 2 wait for their retry: must not overtake them
    sent = producers[0].wait_sent(6)
    assert [value for _, value, _ in sent[3:]] == [b"1", b"2", b"4"]
    for _, _, future in sent[3:]:
        future.success(None)
    assert metric("tsdemo_ingest_kafka_errors_total") - errors_before == 2
    wait_for(lambda: forwarder.held() == 0, "every write settled")
    assert done.order == [b"1", b"2", b"3", b"4"]
    assert forwarder.kafka_ok()


def test_an_exception_from_send_itself_is_retried_and_the_thread_survives(forwarder, producers):
    done = Done()
    producers[0].raise_next = KafkaTimeoutError("Failed to update metadata after 10.0 secs.")
    done.submit(forwarder, b"a")
    sent = producers[0].wait_sent(2)
    sent[1][2].success(None)
    wait_for(lambda: done.order == [b"a"], "the retried write to complete")
    assert forwarder.alive()


def test_a_record_kafka_refuses_as_too_large_goes_to_the_dlq_with_a_prefix(forwarder, producers):
    done = Done()
    before = metric("tsdemo_ingest_rejected_total", reason="refused_by_kafka")
    done.submit(forwarder, b"z" * 5000)
    sent = producers[0].wait_sent(1)
    sent[0][2].failure(MessageSizeTooLargeError("topic limit is 4000"))
    topic, value, future = producers[0].wait_sent(2)[1]
    assert (topic, value) == ("dlq", b"z" * 1024)
    future.success(None)
    wait_for(lambda: done.order == [b"z" * 5000], "the dead letter's ack")  # in Kafka, on the DLQ
    assert metric("tsdemo_ingest_rejected_total", reason="refused_by_kafka") - before == 1


def test_a_non_retriable_error_replaces_the_producer_once(forwarder, producers):
    done = Done()
    done.submit(forwarder, b"x")
    done.submit(forwarder, b"y")
    producers[0].wait_sent(2)[0][2].failure(TopicAuthorizationFailedError("fenced or broken for good"))
    wait_for(lambda: len(producers) == 2, "a new producer")
    assert producers[0].closed  # closing it failed "y" too, which must not ask for a third producer
    sent = producers[1].wait_sent(2)
    assert [value for _, value, _ in sent] == [b"x", b"y"]
    for _, _, future in sent:
        future.success(None)
    wait_for(lambda: done.order == [b"x", b"y"], "both acks")
    assert len(producers) == 2


def test_a_failed_write_from_a_lost_connection_is_dropped_not_retried(forwarder, producers):
    done = Done()
    left = metric("tsdemo_ingest_left_for_redelivery_total")
    done.submit(forwarder, b"old")
    sent = producers[0].wait_sent(1)
    done.lose_connection()  # the broker delivers "old" again
    sent[0][2].failure(KafkaTimeoutError("delivery timeout"))
    wait_for(lambda: forwarder.held() == 0, "the stale write to be dropped")
    assert metric("tsdemo_ingest_left_for_redelivery_total") - left == 1
    assert len(producers[0].sent) == 1
    assert done.order == []


def settings(**kw: object) -> BridgeSettings:
    return BridgeSettings(kafka_topic="readings", kafka_dlq_topic="dlq", **kw)


def mqtt_message(mid: int, payload: bytes, topic: bytes = b"sensors/s1/d1") -> mqtt.MQTTMessage:
    msg = mqtt.MQTTMessage(mid=mid, topic=topic)
    msg.payload = payload
    msg.qos = 1
    return msg


@pytest.fixture
def bridge(request: pytest.FixtureRequest):
    producer = FakeProducer()
    b = Bridge(settings(**getattr(request, "param", {})), producer_factory=lambda: producer)
    b.acks_sent: list[int] = []
    b.client.ack_many = b.acks_sent.extend
    assert b.forwarder.connect(threading.Event())
    b.forwarder.start()
    b.producer = producer
    yield b
    producer.block.set()
    b.forwarder.close(timeout_s=0)


def test_on_message_returns_while_the_producer_is_blocked(bridge):
    bridge.producer.block.clear()  # send() now hangs, as when Kafka is down and metadata is missing
    delivered = threading.Thread(target=lambda: [bridge._on_message(None, None, mqtt_message(m, b"p"))
                                                 for m in range(1, 101)])
    delivered.start()
    delivered.join(30)
    assert not delivered.is_alive(), "on_message blocked on the Kafka producer"
    assert bridge.forwarder.held() == 100
    bridge.producer.block.set()
    for _, _, future in bridge.producer.wait_sent(100):
        future.success(None)
    wait_for(lambda: bridge.acks_sent == list(range(1, 101)), "100 acks in arrival order")


@pytest.mark.parametrize("bridge", [{"max_inflight": 5}], indirect=True)
def test_the_bridge_takes_no_more_than_max_inflight_even_when_the_broker_sends_more(bridge):
    # Mosquitto 2.0.11 can overshoot our receive maximum; the network thread then waits for room.
    delivering = threading.Thread(target=lambda: [bridge._on_message(None, None, mqtt_message(m, b"p"))
                                                  for m in range(1, 7)])
    delivering.start()
    sent = bridge.producer.wait_sent(5)
    delivering.join(1.0)
    assert delivering.is_alive(), "the sixth message was taken while five were held"
    assert bridge.forwarder.held() == 5
    sent[0][2].success(None)  # one written: room for one more
    delivering.join(30)
    assert not delivering.is_alive()
    assert bridge.forwarder.held() == 5
    assert len(bridge.producer.wait_sent(6)) == 6
    bridge.shutdown(timeout_s=0)  # must not hang on the waiting network thread


def test_acks_follow_arrival_order_and_a_reconnect_voids_the_old_ones(bridge):
    for mid in (1, 2, 3):
        bridge._on_message(None, None, mqtt_message(mid, b"m%d" % mid))
    sent = bridge.producer.wait_sent(3)
    sent[1][2].success(None)
    wait_for(lambda: bridge.forwarder.held() == 2, "the second write settled")
    assert bridge.acks_sent == []
    sent[0][2].success(None)
    wait_for(lambda: bridge.acks_sent == [1, 2], "the first two acks")
    bridge._on_disconnect(bridge.client, None, None, mqtt.ReasonCode(PacketTypes.DISCONNECT, "Unspecified error"),
                          None)
    sent[2][2].success(None)  # in Kafka, but its connection is gone: the broker will resend it
    wait_for(lambda: bridge.forwarder.held() == 0, "the third write settled")
    assert bridge.acks_sent == [1, 2]


def test_while_draining_new_messages_are_neither_forwarded_nor_acknowledged(bridge):
    bridge._draining = True
    bridge._on_message(None, None, mqtt_message(7, b"late"))
    assert bridge.forwarder.held() == 0
    assert bridge.acks_sent == []




def test_the_bridge_is_ready_only_once_the_broker_confirmed_its_subscription(bridge):
    # Between CONNACK and SUBACK the broker drops what is published (no subscriber yet): a publisher
    # that waited for our health check must not start in that gap.
    bridge.client.subscribe = lambda topic, qos: (mqtt.MQTT_ERR_SUCCESS, 1)
    connack = mqtt.ReasonCode(PacketTypes.CONNACK, "Success")
    bridge._on_connect(bridge.client, None, mqtt.ConnectFlags(session_present=False), connack, None)
    assert bridge.healthy()[0] is False
    refused = mqtt.ReasonCode(PacketTypes.SUBACK, "Not authorized")
    bridge._on_subscribe(bridge.client, None, 1, [refused], None)
    assert bridge.healthy()[0] is False
    bridge._on_subscribe(bridge.client, None, 1, [mqtt.ReasonCode(PacketTypes.SUBACK, "Granted QoS 1")], None)
    assert bridge.healthy() == (True, {"mqtt": True, "subscribed": True, "kafka": True, "inflight": 0,
                                       "unacked": 0, "kafka_stalled_s": 0.0})
    bridge._on_disconnect(bridge.client, None, None, mqtt.ReasonCode(PacketTypes.DISCONNECT, "Unspecified error"),
                          None)
    bridge._on_connect(bridge.client, None, mqtt.ConnectFlags(session_present=True), connack, None)
    assert bridge.healthy()[0] is False  # subscribed again on every connection; ready again at its SUBACK
