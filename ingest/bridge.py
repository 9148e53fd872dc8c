"""The bridge: MQTT 5 shared subscription in, Kafka (acks=all, idempotent) out.

At-least-once: a message is acknowledged to the broker only after Kafka acknowledged its write,
in arrival order. Backpressure: the MQTT 5 receive maximum caps the messages the broker sends
before our acks, so when Kafka stalls the broker keeps the rest (in its persistent session)
instead of this process buffering without limit.
"""

from __future__ import annotations

import logging
import threading
import time

import paho.mqtt.client as mqtt
from kafka import KafkaProducer
from kafka.errors import KafkaError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import Counter, Gauge, Histogram

from ingest.acks import OrderedAcks
from ingest.settings import BridgeSettings
from servicekit.mqtt import make_client
from servicekit.service import log_event

log = logging.getLogger("ingest.bridge")

RECEIVED = Counter("tsdemo_ingest_received_total", "MQTT messages received")
FORWARDED = Counter("tsdemo_ingest_forwarded_total", "messages acknowledged by Kafka")
REJECTED = Counter("tsdemo_ingest_rejected_total", "messages sent to the DLQ", ["reason"])
KAFKA_ERRORS = Counter("tsdemo_ingest_kafka_errors_total", "failed Kafka writes (retried)")
INFLIGHT = Gauge("tsdemo_ingest_inflight", "messages received and not yet acknowledged by Kafka")
ACK_LATENCY = Histogram(
    "tsdemo_ingest_kafka_ack_seconds", "time from MQTT receive to Kafka acknowledgement",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def kafka_key(topic: str) -> bytes:
    """The topic's last segment: the device (or gateway), so its readings stay in one partition."""
    return topic.rsplit("/", 1)[-1].encode()


class Bridge:
    def __init__(self, settings: BridgeSettings) -> None:
        self.settings = settings
        self.connected = threading.Event()
        self.producer: KafkaProducer | None = None
        self.client = make_client(settings, settings.client_id, manual_ack=True)
        self.acks = OrderedAcks(lambda mid: self.client.ack(mid, 1))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self._retry_timers: set[threading.Timer] = set()
        self._closing = False
        self._kafka_failing = False

    # -- Kafka -----------------------------------------------------------------------------------
    def connect_kafka(self, stop: threading.Event) -> bool:
        delay = 0.5
        while not stop.is_set():
            try:
                self.producer = KafkaProducer(
                    bootstrap_servers=self.settings.kafka_bootstrap.split(","),
                    acks="all",
                    enable_idempotence=True,
                    linger_ms=self.settings.linger_ms,
                    client_id=self.settings.client_id,
                    bootstrap_timeout_ms=10_000,
                    **self.settings.kafka_security(),
                )
                return True
            except KafkaError as exc:
                log.warning("Kafka at %s not reachable yet (%s); retrying in %.1fs",
                            self.settings.kafka_bootstrap, exc, delay)
                stop.wait(delay)
                delay = min(delay * 2, 10)
        return False

    def _send(self, topic: str, payload: bytes, headers: list, token: list | None, received: float,
              attempt: int = 0) -> None:
        assert self.producer is not None
        future = self.producer.send(topic, value=payload, key=kafka_key(headers[0][1].decode()), headers=headers)

        def ok(_meta: object) -> None:
            self._kafka_failing = False
            ACK_LATENCY.observe(time.monotonic() - received)
            FORWARDED.inc()
            INFLIGHT.dec()
            if token is not None:
                self.acks.done(token)

        def failed(exc: Exception) -> None:
            # Not acknowledged to MQTT, so nothing is lost even if we die now; retrying here
            # avoids waiting for a reconnect to get the message again.
            KAFKA_ERRORS.inc()
            self._kafka_failing = True
            backoff = min(0.5 * 2**attempt, 10.0)
            log.warning("Kafka write failed (%s); retry %d in %.1fs", exc, attempt + 1, backoff)
            timer = threading.Timer(backoff, self._send, (topic, payload, headers, token, received, attempt + 1))
            timer.daemon = True
            self._retry_timers.add(timer)
            timer.start()

        future.add_callback(ok)
        future.add_errback(failed)

    # -- MQTT ------------------------------------------------------------------------------------
    def start_mqtt(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.settings.session_expiry_s
        props.ReceiveMaximum = self.settings.max_inflight
        self.client.connect_async(
            self.settings.mqtt_host,
            self.settings.mqtt_port,
            keepalive=self.settings.mqtt_keepalive_s,
            clean_start=False,
            properties=props,
        )
        self.client.loop_start()

    def subscription(self) -> str:
        return f"$share/{self.settings.share_group}/{self.settings.topic_filter}"

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        if reason_code.is_failure:
            log.error("MQTT connect refused: %s", reason_code)
            return
        client.subscribe(self.subscription(), qos=1)
        log_event(log, "connected to MQTT", subscription=self.subscription(), session_present=flags.session_present)
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        self.connected.clear()
        if not self._closing:
            log.warning("disconnected from MQTT: %s; reconnecting", reason_code)

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:  # noqa: ANN001
        received = time.monotonic()
        RECEIVED.inc()
        INFLIGHT.inc()
        token = self.acks.arrived(msg.mid) if msg.qos > 0 else None
        headers = [("mqtt_topic", msg.topic.encode()), ("received_ms", str(int(time.time() * 1000)).encode())]
        if len(msg.payload) > self.settings.max_message_bytes:
            reason = f"payload of {len(msg.payload)} bytes exceeds max_message_bytes {self.settings.max_message_bytes}"
            REJECTED.labels("too_large").inc()
            # The DLQ keeps the reason and the start of the payload, enough to find the sender.
            self._send(self.settings.kafka_dlq_topic, msg.payload[:1024],
                       headers + [("reason", reason.encode())], token, received)
            return
        self._send(self.settings.kafka_topic, msg.payload, headers, token, received)

    # -- lifecycle -------------------------------------------------------------------------------
    def healthy(self) -> tuple[bool, dict]:
        # kafka-python connects lazily, so "connected" means nothing before the first send; the
        # outcome of the last write is what tells whether Kafka is taking our messages.
        kafka_ok = self.producer is not None and not self._kafka_failing
        return self.connected.is_set() and kafka_ok, {
            "mqtt": self.connected.is_set(), "kafka": kafka_ok, "inflight": self.acks.pending(),
        }

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Finish what is in flight (Kafka writes and their MQTT acks), then disconnect."""
        deadline = time.monotonic() + timeout_s
        if self.producer is not None:
            while self.acks.pending() and time.monotonic() < deadline:
                self.producer.flush(timeout=max(0.1, deadline - time.monotonic()))
                time.sleep(0.05)
        left = self.acks.pending()
        if left:
            log.warning("%d messages unacknowledged at exit; the broker will deliver them again", left)
        self._closing = True
        self.client.disconnect()
        self.client.loop_stop()
        if self.producer is not None:
            self.producer.close(timeout=5)
        for timer in self._retry_timers:
            timer.cancel()


def run_bridge(settings: BridgeSettings, stop: threading.Event) -> None:
    from servicekit.service import serve_health

    bridge = Bridge(settings)
    server = serve_health(settings.health_port, bridge.healthy)
    if not bridge.connect_kafka(stop):
        return
    bridge.start_mqtt()
    last = 0.0
    while not stop.wait(5.0):
        forwarded = FORWARDED._value.get()
        log_event(log, "progress", forwarded=int(forwarded), rate=round((forwarded - last) / 5.0, 1),
                  inflight=bridge.acks.pending())
        last = forwarded
    bridge.shutdown()
    if server is not None:
        server.shutdown()
    log_event(log, "bridge stopped", forwarded=int(FORWARDED._value.get()))
