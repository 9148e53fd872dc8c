"""Publishing over MQTT with a bounded in-flight window, reporting each acknowledged message.

paho-mqtt queues without limit and fails once its queue passes 65,535 messages, so the window is
ours: a semaphore taken per message and given back when the broker's PUBACK arrives (at QoS 0,
when paho has written the message to the socket). paho reconnects on its own with the backoff set
in ``servicekit.mqtt.make_client``; at QoS 1 it keeps unacknowledged messages and sends them again
after a reconnect, at QoS 0 we wait for the connection rather than let paho drop the message.

Mosquitto saves its store to disk periodically, so a broker killed without warning loses what it
acknowledged since the last save. The publisher therefore keeps what was acknowledged in the last
``resend_window_s`` seconds before the connection was lost and sends it again after every reconnect:
the same reading ids, which processing deduplicates, so nothing is counted twice and nothing
acknowledged is lost. The window is counted back from the disconnect, not from the reconnect: a
broker that takes longer than the window to come back must not shrink the resend to nothing.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import Counter, Gauge

from generators.outgoing import Message
from servicekit.mqtt import MqttSettings, make_client

log = logging.getLogger("generator.publisher")

SENT = Counter("tsdemo_generator_messages_sent_total", "MQTT messages handed to the client")
ACKED_MESSAGES = Counter("tsdemo_generator_messages_acked_total", "MQTT messages acknowledged by the broker")
REFUSED = Counter("tsdemo_generator_messages_refused_total", "MQTT messages the broker refused")
INFLIGHT = Gauge("tsdemo_generator_messages_inflight", "MQTT messages not yet acknowledged")
RESENT = Counter("tsdemo_generator_messages_resent_total", "acknowledged messages sent again after a reconnect")
#: A cap on the resend buffer whatever the rate: at most this many recent messages are kept.
RESEND_MAX_MESSAGES = 20_000
#: MQTT 5 session expiry: the broker keeps our session (and the flows of in-flight messages) this long.
SESSION_EXPIRY_S = 3600


class WindowedPublisher:
    """Publishes messages at a QoS, never with more than ``max_inflight`` unacknowledged."""

    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        qos: int,
        max_inflight: int,
        on_acked: Callable[[Message], Any],
        *,
        resend_window_s: float = 0.0,
    ) -> None:
        self.qos = qos
        self.resend_window_s = resend_window_s
        self._recent: collections.deque[tuple[float, str, bytes]] = collections.deque(maxlen=RESEND_MAX_MESSAGES)
        self._resend_mids: set[int] = set()
        self._connected_before = False
        self._lost_at = 0.0  # time.monotonic() when the connection was last seen lost
        self.on_acked = on_acked
        self._window = threading.BoundedSemaphore(max_inflight)
        self._lock = threading.Lock()
        self._pending: dict[int, Message] = {}
        # PUBACKs that overtook publish() returning the mid; see publish().
        self._early: dict[int, Any] = {}
        self.refused = 0
        self.connected = threading.Event()
        self.client = make_client(settings, client_id)
        # paho's own limit must sit above ours so it never refuses a message we let through.
        self.client.max_inflight_messages_set(min(max_inflight, 65_535))
        self.client.max_queued_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self._settings = settings
        self._closing = False

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        # A persistent session lets the broker and client finish in-flight QoS 1 flows after a
        # reconnect instead of dropping them.
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        self.client.connect_async(
            self._settings.mqtt_host,
            self._settings.mqtt_port,
            keepalive=self._settings.mqtt_keepalive_s,
            clean_start=False,
            properties=props,
        )
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        if reason_code.is_failure:
            log.error("MQTT connect refused: %s", reason_code)
            return
        log.info("connected to MQTT broker", extra={"fields": {"session_present": flags.session_present}})
        if self._connected_before:
            self._resend_recent(client)
        self._connected_before = True
        self.connected.set()

    def _resend_recent(self, client: mqtt.Client) -> None:
        # Runs in paho's network thread, so no PUBACK can arrive before each mid is registered.
        horizon = self._lost_at - self.resend_window_s
        with self._lock:
            recent = [(topic, payload) for at, topic, payload in self._recent if at >= horizon]
        for topic, payload in recent:
            info = client.publish(topic, payload, qos=self.qos)
            with self._lock:
                self._resend_mids.add(info.mid)
        if recent:
            RESENT.inc(len(recent))
            log.info("sent the last %.1fs of acknowledged messages again", self.resend_window_s,
                     extra={"fields": {"messages": len(recent)}})

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        # paho calls this for every failed reconnect attempt too: only the first loss counts.
        if self.connected.is_set():
            self._lost_at = time.monotonic()
        self.connected.clear()
        if not self._closing:
            log.warning("disconnected from MQTT broker: %s; reconnecting", reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:  # noqa: ANN001
        # Runs in paho's network thread, which holds paho's message lock: publish() must never hold
        # our lock while calling into paho, or the two would wait for each other.
        with self._lock:
            if mid in self._resend_mids:
                self._resend_mids.discard(mid)
                return
            message = self._pending.pop(mid, None)
            if message is None:
                self._early[mid] = reason_code
                return
        self._settle(message, reason_code)

    def _settle(self, message: Message, reason_code: Any) -> None:
        try:
            if reason_code is not None and reason_code.is_failure:
                self.refused += 1
                REFUSED.inc()
                log.error("broker refused a message on %s: %s", message.topic, reason_code)
            else:
                ACKED_MESSAGES.inc()
                self.on_acked(message)
                if self.resend_window_s and self.qos > 0:
                    with self._lock:
                        self._recent.append((time.monotonic(), message.topic, message.payload))
        finally:
            INFLIGHT.dec()
            self._window.release()

    def publish(self, message: Message, stop: threading.Event) -> bool:
        """Blocks while the window is full; False when stopped before the message could go."""
        while not self._window.acquire(timeout=0.2):
            if stop.is_set():
                return False
        INFLIGHT.inc()
        while True:
            if self.qos == 0 and not self._wait_connected(stop):
                self._give_back()
                return False
            info = self.client.publish(message.topic, message.payload, qos=self.qos)
            if info.rc == mqtt.MQTT_ERR_SUCCESS or (info.rc == mqtt.MQTT_ERR_NO_CONN and self.qos > 0):
                break  # at QoS 1 paho keeps a message published while disconnected and sends it later
            if info.rc != mqtt.MQTT_ERR_NO_CONN:
                self._give_back()
                raise RuntimeError(f"MQTT publish failed: {mqtt.error_string(info.rc)}")
            self.connected.clear()  # QoS 0 raced a disconnect: paho dropped it, so send it again
        SENT.inc()
        with self._lock:
            early = self._early.pop(info.mid, None)
            if early is None:
                self._pending[info.mid] = message
                return True
        self._settle(message, early)
        return True

    def _give_back(self) -> None:
        INFLIGHT.dec()
        self._window.release()

    def _wait_connected(self, stop: threading.Event) -> bool:
        while not self.connected.wait(0.2):
            if stop.is_set():
                return False
        return True

    def inflight(self) -> int:
        with self._lock:
            return len(self._pending)

    def unacknowledged_readings(self) -> int:
        with self._lock:
            return sum(m.readings for m in self._pending.values())

    def drain(self, timeout_s: float) -> bool:
        """Wait until every message is acknowledged; True when none is left."""
        deadline = time.monotonic() + timeout_s
        while self.inflight() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.inflight() == 0

    def close(self) -> None:
        self._closing = True
        self.client.disconnect()
        self.client.loop_stop()
