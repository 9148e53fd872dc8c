"""The bridge: MQTT 5 shared subscription in, Kafka (acks=all, idempotent) out.

At-least-once: a message is acknowledged to the broker only after Kafka acknowledged its write, in
arrival order (``ingest.acks``). Until then the broker keeps it in this bridge's persistent session
(clean start off, a session expiry, a client id stable per instance), so a bridge killed at any
moment gets it again when it comes back under the same client id.

Backpressure: the MQTT 5 receive maximum we send (``max_inflight``) asks the broker to hand us no
more unacknowledged messages than that; when Kafka is slow or down our acks stop, so the broker stops
sending and keeps the rest queued in our session. It resumes by itself as acks flow again. The
bridge enforces the same bound itself, because Mosquitto 2.0.11 overshoots the receive maximum once
a backlog is queued for a session: each in-order ack releases up to a whole window from the queue
(eclipse-mosquitto/mosquitto#2301; after a Kafka outage we saw ~3,800 in flight against 50). When
it holds ``max_inflight`` messages, ``on_message`` waits for room before taking the next, so paho
stops reading the socket and TCP pushes back on the broker, which keeps the rest. While it waits,
paho sends no keepalive: if Kafka stays stalled for 1.5 keepalive intervals the broker drops the
connection, and on reconnecting it delivers the unacknowledged messages again (duplicates, never
loss).

Load sharing: several bridges subscribe to ``$share/<group>/<filter>`` and the broker deals the
messages out among them. Mosquitto deals round-robin over every member of the group, connected or
not, and keeps what it dealt to an absent member (its unacknowledged messages too) in that member's
session: another member does not take them over. A bridge that goes away must come back under its
client id before its session expires, or what it held is lost with the session.

Retiring (POST /retire on the health port, from loopback: a Kubernetes preStop hook on a scale-down)
is how a bridge goes away for good without that loss: it unsubscribes from the shared subscription,
so the broker deals it nothing new, drains what its session already holds into Kafka, acknowledges
it, and disconnects with session expiry 0, so the broker deletes the session. Any other stop keeps
the session for a restart under the same client id.
"""

from __future__ import annotations

import functools
import logging
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import REGISTRY

from ingest.acks import OrderedAcks
from ingest.forwarder import Forwarder, ProducerFactory, make_producer
from ingest.metrics import LEFT, RECEIVED, export_producer_figures
from ingest.records import Message, Router
from ingest.settings import BridgeSettings
from servicekit.contract.metrics import INGEST_FORWARDED
from servicekit.mqtt import connect_in_session, make_client
from servicekit.service import log_event, serve_health

log = logging.getLogger("ingest.bridge")


class Bridge:
    def __init__(self, settings: BridgeSettings, producer_factory: ProducerFactory | None = None) -> None:
        self.settings = settings
        self.connected = threading.Event()
        # Ready means the broker confirmed the subscription: between CONNACK and SUBACK it drops what is
        # published to the topics (no subscriber yet), so a health check that passed at CONNACK let a
        # publisher that started on it lose its first messages.
        self.subscribed = threading.Event()
        self.client = make_client(settings, settings.client_id, manual_ack=True)
        # Looked up at each call, not bound here, so a test can watch the acks go out.
        self.acks = OrderedAcks(lambda mids: self.client.ack_many(mids))
        router = Router(settings.kafka_topic, settings.kafka_dlq_topic, settings.max_message_bytes,
                        settings.kafka_max_request_bytes)
        self.forwarder = Forwarder(router, producer_factory or functools.partial(make_producer, settings),
                                   max_held=settings.max_inflight, acks=self.acks)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self._stopping = threading.Event()  # wakes on_message out of wait_for_room at shutdown
        self._draining = False
        self._intake = threading.Lock()  # makes "check draining, then register" one step
        self._closing = False

    def start(self, stop: threading.Event) -> bool:
        """Connect to Kafka (waiting for it), then to MQTT; False if ``stop`` was set first."""
        if not self.forwarder.connect(stop):
            return False
        self.forwarder.start()
        self.start_mqtt()
        return True

    # -- MQTT ------------------------------------------------------------------------------------
    def start_mqtt(self) -> None:
        connect_in_session(self.client, self.settings, self.settings.session_expiry_s, self.settings.max_inflight)

    def subscription(self) -> str:
        return f"$share/{self.settings.share_group}/{self.settings.topic_filter}"

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        if reason_code.is_failure:
            log.error("MQTT connect refused: %s", reason_code)
            return
        # Subscribing again on a resumed session changes nothing and covers a session that expired.
        client.subscribe(self.subscription(), qos=1)
        log_event(log, "connected to MQTT", subscription=self.subscription(), session_present=flags.session_present)
        self.connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:  # noqa: ANN001
        refused = [code for code in reason_codes if code.is_failure]
        for code in refused:
            log.error("subscription to %s refused: %s", self.subscription(), code)
        if reason_codes and not refused:
            self.subscribed.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        self.connected.clear()
        self.subscribed.clear()
        # The broker delivers every unacknowledged message again on the next connection; their
        # writes still under way only add duplicates, and their acks must not go out on it.
        dropped = self.acks.reset()
        if not self._closing:
            log.warning("disconnected from MQTT (%s) with %d messages unacknowledged; reconnecting",
                        reason_code, dropped)

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:  # noqa: ANN001
        # Runs on paho's network thread, which also carries keepalives and acks: never touch Kafka
        # here; only wait when max_inflight messages are held (see the module docstring).
        received = time.monotonic()
        # Outside the intake lock: shutdown takes that lock and must be able to end this wait.
        if not self.forwarder.wait_for_room(self._stopping):
            self._leave()
            return
        with self._intake:
            if self._draining:
                self._leave()  # not acknowledged: it stays in our session for the next start
                return
            message = Message(msg.topic, msg.payload, int(time.time() * 1000))
            self.forwarder.submit(message, received, self.acks.arrived(msg.mid) if msg.qos else None)

    @staticmethod
    def _leave() -> None:
        RECEIVED.inc()
        LEFT.inc()

    # -- lifecycle -------------------------------------------------------------------------------
    def healthy(self) -> tuple[bool, dict]:
        # kafka-python connects lazily, so a producer's existence says little; the outcome of the
        # last write tells whether Kafka is taking our messages.
        mqtt_ok, kafka_ok = self.connected.is_set(), self.forwarder.kafka_ok()
        subscribed = mqtt_ok and self.subscribed.is_set()
        return subscribed and kafka_ok, {
            "mqtt": mqtt_ok, "subscribed": subscribed, "kafka": kafka_ok, "inflight": self.forwarder.held(),
            "unacked": self.acks.pending(),
            "kafka_stalled_s": round(self.forwarder.stalled_s(), 1),
        }

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Take no new messages, finish those in flight (Kafka writes and their acks), then disconnect."""
        self._stopping.set()
        with self._intake:
            # Under the lock: a message that got past the check is registered, so pending() counts it.
            self._draining = True
        deadline = time.monotonic() + timeout_s
        while self.acks.pending() and time.monotonic() < deadline:
            time.sleep(0.05)
        left = self.acks.pending()
        if left:
            log.warning("%d messages unacknowledged at exit; the broker will deliver them again", left)
        self._closing = True
        if self.connected.is_set() and not self._acks_delivered():
            log.warning("the broker did not confirm our last acks; it may deliver those messages again")
        self.client.disconnect()
        self.client.loop_stop()
        self.forwarder.close()

    def _acks_delivered(self, timeout_s: float = 5.0) -> bool:
        """A round trip behind our last acks: True once the broker has processed them.

        Closing right after the DISCONNECT loses what is still unread on either side: with messages
        still arriving, our close resets the connection and the broker may drop our last PUBACKs
        unread. The broker handles a client's packets in order, so its answer to an UNSUBSCRIBE
        queued after them means they were processed. The topic is one we never subscribe to, so the
        unsubscribe changes nothing in the session.
        """
        return self._unsubscribe(f"tsdemo/ack-barrier/{self.settings.client_id}", timeout_s)

    def _unsubscribe(self, topic: str, timeout_s: float) -> bool:
        """UNSUBSCRIBE ``topic``; True once the broker answered."""
        answered = threading.Event()
        self.client.on_unsubscribe = lambda *_args: answered.set()
        rc, _mid = self.client.unsubscribe(topic)
        return rc == mqtt.MQTT_ERR_SUCCESS and answered.wait(timeout_s)

    def retire(self, timeout_s: float) -> bool:
        """Leave for good, leaving nothing behind (see the module docstring); True once the session is
        ended. Without a connection, or with the session not drained within ``timeout_s``, it stops as
        ``shutdown`` does instead: the session is kept, and what it holds waits for this client id."""
        deadline = time.monotonic() + timeout_s
        # The answer comes behind the messages already on their way to us, which wait for room in the
        # forwarder: the whole timeout, not a few seconds.
        if not (self.connected.is_set() and self._unsubscribe(self.subscription(), timeout_s)):
            log.warning("the broker did not confirm leaving the shared subscription within %.0fs (or we are not "
                        "connected); stopping with the session kept", timeout_s)
            self.shutdown(max(0.0, deadline - time.monotonic()))
            return False
        taken = self.forwarder.submitted()
        if not self._drained(deadline):
            log.warning("the session was not drained within %.0fs; stopping with the session kept", timeout_s)
            self.shutdown(0.0)
            return False
        self._stopping.set()
        with self._intake:
            self._draining = True
        self._closing = True
        props = Properties(PacketTypes.DISCONNECT)
        props.SessionExpiryInterval = 0  # the broker deletes the session: nothing waits in it
        self.client.disconnect(properties=props)
        self.client.loop_stop()
        self.forwarder.close()
        log_event(log, "left the shared subscription and ended the session",
                  drained=self.forwarder.submitted() - taken)
        return True

    def _drained(self, deadline: float) -> bool:
        """Waits until the session holds nothing more for us. Mosquitto sends queued messages as our
        acks free its window, ahead of its answer to a later packet: once nothing is unacknowledged and
        a round trip behind our acks brought nothing new (twice, a moment apart), the queue is empty."""
        quiet = 0
        while time.monotonic() < deadline:
            if self.acks.pending() or self.forwarder.held():
                quiet = 0
                time.sleep(0.05)
                continue
            taken = self.forwarder.submitted()
            if self._acks_delivered() and self.forwarder.submitted() == taken and not self.acks.pending():
                quiet += 1
                if quiet == 2:
                    return True
                time.sleep(0.2)
            else:
                quiet = 0
        return False


def _forwarded() -> int:
    return int(REGISTRY.get_sample_value(INGEST_FORWARDED) or 0)


def run_bridge(settings: BridgeSettings, stop: threading.Event) -> int:
    """Run until ``stop`` is set or POST /retire; returns the exit status (1 if the forwarding thread died)."""
    bridge = Bridge(settings)
    export_producer_figures(bridge.forwarder.producer_metrics)
    retire = threading.Event()

    def _retire() -> tuple[int, dict]:
        retire.set()
        stop.set()
        return 202, {"status": "retiring", "client_id": settings.client_id}

    server = serve_health(settings.health_port, bridge.healthy, actions={"/retire": _retire})
    status = 0
    try:
        if not bridge.start(stop):
            return 0
        last = _forwarded()
        while not stop.wait(5.0):
            if not bridge.forwarder.alive():
                log.error("the Kafka forwarding thread died; exiting so the bridge is restarted")
                status = 1
                break
            forwarded = _forwarded()
            log_event(log, "progress", forwarded=forwarded, rate=round((forwarded - last) / 5.0, 1),
                      inflight=bridge.forwarder.held())
            last = forwarded
        # retire() stops as shutdown() does when it cannot retire.
        if retire.is_set() and status == 0 and bridge.retire(settings.retire_timeout_s):
            log_event(log, "bridge retired", forwarded=_forwarded())
        else:
            if not (retire.is_set() and status == 0):
                bridge.shutdown(settings.shutdown_timeout_s)
            log_event(log, "bridge stopped", forwarded=_forwarded())
    finally:
        if server is not None:
            server.shutdown()
    return status
