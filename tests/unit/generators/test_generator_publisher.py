"""The publisher's handling of "no matching subscribers" (MQTT 5 reason 16) with a stand-in client: a new
message keeps its window slot, is not counted and goes again; a message sent again after a reconnect goes
again too; a PUBACK that overtakes ``publish_many`` is not lost. The real broker case (a restarted
Mosquitto forgetting the bridge's shared subscription) is in tests/integration/test_generator_broker.py."""

from __future__ import annotations

import threading

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from deploy.wait import wait_until
from generators import publisher as publisher_module
from generators.outgoing import Message
from servicekit.mqtt import MqttSettings

OK = ReasonCode(PacketTypes.PUBACK, identifier=0)
NOBODY = ReasonCode(PacketTypes.PUBACK, identifier=16)


class StandInClient:
    """Records what is published; ``ack_at_once`` answers each publish before ``publish_many`` returns."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, str, bytes]] = []
        self.on_published_many = None
        self.ack_at_once: ReasonCode | None = None
        self._mid = 0
        self._lock = threading.Lock()

    def max_queued_messages_set(self, n: int) -> None:
        pass

    def publish_many(self, messages, qos):  # noqa: ANN001, ANN201
        with self._lock:
            mids = []
            for topic, payload in messages:
                self._mid += 1
                mids.append(self._mid)
                self.sent.append((self._mid, topic, payload))
        if self.ack_at_once is not None:
            self.on_published_many(self, [(mid, self.ack_at_once) for mid in mids])
        return mids

    def ack(self, *acks: tuple[int, ReasonCode]) -> None:
        self.on_published_many(self, list(acks))


@pytest.fixture
def made(monkeypatch):
    client = StandInClient()
    monkeypatch.setattr(publisher_module, "make_client", lambda settings, client_id: client)
    monkeypatch.setattr(publisher_module, "UNROUTED_RETRY_S", 0.05)
    acked: list[Message] = []
    pub = publisher_module.WindowedPublisher(MqttSettings(), "gen", 1, 10, acked.extend, resend_window_s=3.0,
                                             resend_unrouted=True)
    yield pub, client, acked
    pub._closing = True  # noqa: SLF001


def message(n: int) -> Message:
    return Message(f"sensors/s/d{n}", f"payload-{n}".encode(), [], plain=[{"seq": n}])


def test_a_message_nobody_subscribed_to_keeps_its_slot_is_not_counted_and_goes_again(made):
    pub, client, acked = made
    first, second = message(1), message(2)
    assert pub.publish_batch([first, second], threading.Event()) == 2
    client.ack((1, NOBODY), (2, OK))
    assert acked == [second] and pub.inflight() == 1 and not pub.drain(0)
    wait_until(lambda: len(client.sent) == 3, 5, "the unrouted message sent again")
    assert client.sent[2][1:] == (first.topic, first.payload)
    client.ack((3, OK))
    assert acked == [second, first] and pub.inflight() == 0 and pub.drain(0)


def test_off_a_message_nobody_subscribed_to_counts_as_delivered(made):
    pub, client, acked = made
    pub.resend_unrouted = False
    pub.publish_batch([message(1)], threading.Event())
    client.ack((1, NOBODY))
    assert len(acked) == 1 and pub.drain(0)


def test_a_resend_nobody_took_goes_again_even_when_its_puback_overtakes_publish_many(made):
    pub, client, acked = made
    client.ack_at_once = NOBODY  # the retry timer's thread races the network thread's PUBACK
    pub._send_again([("sensors/s/d1", b"again")])  # noqa: SLF001
    client.ack_at_once = None
    wait_until(lambda: len(client.sent) == 2, 5, "the resend sent again")
    assert not pub.drain(0)  # a bounded run waits for it
    client.ack((2, OK))
    assert pub.drain(0) and acked == []  # counted when it was first acknowledged, not again


def test_a_bounded_run_waits_for_a_resend_nobody_took_while_its_retry_timer_runs(made, monkeypatch):
    """Between the reason-16 PUBACK and the retry the message is neither in flight nor filed under a mid:
    drain() returned then, the run closed, and the retry found the publisher closing (readings lost)."""
    pub, client, acked = made
    monkeypatch.setattr(publisher_module, "UNROUTED_RETRY_S", 1.0)
    pub._send_again([("sensors/s/d1", b"again")])  # noqa: SLF001
    client.ack((1, NOBODY))
    assert not pub.drain(0)
    wait_until(lambda: len(client.sent) == 2, 5, "the resend sent again")
    client.ack((2, OK))
    assert pub.drain(0) and acked == []
