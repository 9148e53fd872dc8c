"""Publishing over MQTT with a bounded in-flight window and a ledger of acknowledged readings.

paho-mqtt queues without limit and fails once its queue passes 65,535 messages, so the window is
ours: a semaphore taken per message and given back when the broker's PUBACK arrives.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from prometheus_client import Counter, Gauge

from generators.ledger import Ledger
from servicekit.contract import encode
from servicekit.mqtt import MqttSettings, make_client

log = logging.getLogger("generator.publisher")

ACKED = Counter("tsdemo_generator_readings_acked_total", "readings acknowledged by the broker")
SENT = Counter("tsdemo_generator_messages_sent_total", "MQTT messages handed to the client")
INFLIGHT = Gauge("tsdemo_generator_messages_inflight", "MQTT messages not yet acknowledged")


class WindowedPublisher:
    """Publishes messages at a QoS, never with more than ``max_inflight`` unacknowledged."""

    def __init__(self, settings: MqttSettings, client_id: str, qos: int, max_inflight: int, ledger: Ledger):
        self.qos = qos
        self.ledger = ledger
        self._window = threading.BoundedSemaphore(max_inflight)
        self._lock = threading.Lock()
        self._pending: dict[int, list[dict[str, Any]]] = {}
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
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)
        # A persistent session lets the broker and client finish in-flight QoS 1 flows after a
        # reconnect instead of dropping them.
        props.SessionExpiryInterval = 3600
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
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        self.connected.clear()
        if not self._closing:
            log.warning("disconnected from MQTT broker: %s; reconnecting", reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:  # noqa: ANN001
        # Holding the lock means a PUBACK that races ahead of publish() returning waits for
        # the mid to be registered.
        with self._lock:
            readings = self._pending.pop(mid, None)
        if readings is None:
            return
        if reason_code.is_failure:
            log.error("broker refused message %s: %s", mid, reason_code)
        else:
            self.ledger.record(readings)
            ACKED.inc(len(readings))
        INFLIGHT.dec()
        self._window.release()

    def publish(self, topic: str, readings: list[dict[str, Any]], stop: threading.Event) -> bool:
        """Blocks while the window is full; False when stopped before the message could go."""
        while not self._window.acquire(timeout=0.2):
            if stop.is_set():
                return False
        payload = encode(readings)
        with self._lock:
            info = self.client.publish(topic, payload, qos=self.qos)
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                self._window.release()
                raise RuntimeError(f"MQTT publish failed: {mqtt.error_string(info.rc)}")
            self._pending[info.mid] = readings
        INFLIGHT.inc()
        SENT.inc()
        return True

    def inflight(self) -> int:
        with self._lock:
            return len(self._pending)

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
