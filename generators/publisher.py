"""Publishing over MQTT with a bounded in-flight window, reporting acknowledged messages in batches.

paho-mqtt queues without limit and fails once its queue passes 65,535 messages, so the window is
ours: a count of messages handed to the client and not yet settled. The generator's thread hands
over as many messages as the window has room for in one ``FastClient.publish_many`` call (one lock,
one wake-up of the network thread), and the network thread reports the PUBACKs it read in one
wake-up as one batch (at QoS 0, the messages written in one ``send``): the ledger is updated and the
window reopened once per batch, never once per message. paho reconnects on its own with the backoff
set in ``servicekit.mqtt.make_client``; at QoS 1 it keeps unacknowledged messages and sends them
again after a reconnect; at QoS 0 we wait for the connection rather than let paho drop the message,
and what was queued but not written when a connection dropped is given back to the window unsent
(and uncounted: at QoS 0 the ledger counts what was written).

Mosquitto saves its store to disk periodically, so a broker killed without warning loses what it
acknowledged since the last save. The publisher therefore keeps what was acknowledged in the last
``resend_window_s`` seconds before the connection was lost and sends it again after every reconnect:
the same reading ids, which processing deduplicates, so nothing is counted twice and nothing
acknowledged is lost. The window is counted back from the disconnect, not from the reconnect: a
broker that takes longer than the window to come back must not shrink the resend to nothing.

A PUBACK can also say that no one subscribed (MQTT 5 reason 16, "no matching subscribers"): the broker
has dropped the message. That happens after a broker restart, because Mosquitto 2.0 does not restore a
shared subscription from its store: until the bridge subscribes again, what arrives is dropped. Such a
message is not counted; it keeps its window slot and is sent again every ``UNROUTED_RETRY_S`` until a
subscriber takes it (the same reading ids: a copy that did get through is deduplicated downstream).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge

from generators.outgoing import Message
from servicekit.contract import metrics as m
from servicekit.mqtt import FastClient, MqttSettings, PublishedBatch, connect_in_session, make_client

log = logging.getLogger("generator.publisher")

SENT = Counter(m.GENERATOR_MESSAGES_SENT, "MQTT messages handed to the client")
ACKED_MESSAGES = Counter(m.GENERATOR_MESSAGES_ACKED, "MQTT messages acknowledged by the broker")
REFUSED = Counter(m.GENERATOR_MESSAGES_REFUSED, "MQTT messages the broker refused")
INFLIGHT = Gauge(m.GENERATOR_MESSAGES_INFLIGHT, "MQTT messages not yet acknowledged")
RESENT = Counter(m.GENERATOR_MESSAGES_RESENT, "acknowledged messages sent again after a reconnect")
UNROUTED = Counter(m.GENERATOR_MESSAGES_UNROUTED, "messages the broker had no subscriber for, sent again")
# Counted by the run loop (the accountant decides what is a new reading): the pipeline's published stage.
READINGS_ACKED = Counter(m.GENERATOR_READINGS_ACKED, "readings acknowledged by the broker, each counted once")
#: A cap on the resend buffer whatever the rate: at most this many recent messages are kept.
RESEND_MAX_MESSAGES = 20_000
#: PUBACK reason code 16: the broker accepted the message but no subscription matched it, so it is gone.
NO_MATCHING_SUBSCRIBERS = 16
#: How long a message nobody subscribed to waits before it is sent again.
UNROUTED_RETRY_S = 0.5
_NOT_YET = object()  # no PUBACK read yet for a mid
#: MQTT 5 session expiry: the broker keeps our session (and the flows of in-flight messages) this long.
SESSION_EXPIRY_S = 3600


class WindowedPublisher:
    """Publishes messages at a QoS, never with more than ``max_inflight`` unacknowledged.

    ``on_acked`` gets the acknowledged messages of each batch, on the MQTT network thread.
    """

    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        qos: int,
        max_inflight: int,
        on_acked: Callable[[list[Message]], Any],
        *,
        resend_window_s: float = 0.0,
        resend_unrouted: bool = False,
    ) -> None:
        self.qos = qos
        self.max_inflight = max_inflight
        self.resend_window_s = resend_window_s
        self.resend_unrouted = resend_unrouted and qos > 0
        self._unrouted_logged = 0.0
        self._recent: collections.deque[tuple[float, str, bytes]] = collections.deque(maxlen=RESEND_MAX_MESSAGES)
        # Messages sent again (after a reconnect, or nobody had subscribed), by mid: already counted, so
        # their PUBACK settles nothing, but a bounded run waits for them before it ends.
        self._resend_mids: dict[int, tuple[str, bytes]] = {}
        # Messages sent again that nobody had subscribed to, waiting on the retry timer: in neither
        # _resend_mids nor the window meanwhile, and a bounded run must not end before they go.
        self._resend_held = 0
        self._connected_before = False
        self._lost_at = 0.0  # time.monotonic() when the connection was last seen lost
        self.on_acked = on_acked
        self._cond = threading.Condition()
        self._inflight = 0  # handed to the client and not settled yet
        self._pending: dict[int, Message] = {}
        # PUBACKs that overtook publish_many returning the mids; see publish_batch().
        self._early: dict[int, Any] = {}
        self.refused = 0
        self.connected = threading.Event()
        self.client: FastClient = make_client(settings, client_id)
        self.client.max_queued_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_published_many = self._on_published
        self._settings = settings
        self._closing = False

    def start(self) -> None:
        connect_in_session(self.client, self._settings, SESSION_EXPIRY_S)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        if reason_code.is_failure:
            log.error("MQTT connect refused: %s", reason_code)
            return
        log.info("connected to MQTT broker", extra={"fields": {"session_present": flags.session_present}})
        if self._connected_before:
            self._resend_recent()
        self._connected_before = True
        self.connected.set()

    def _resend_recent(self) -> None:
        # Runs in paho's network thread, which reads no PUBACK before each mid is registered.
        horizon = self._lost_at - self.resend_window_s
        with self._cond:
            recent = [(topic, payload) for at, topic, payload in self._recent if at >= horizon]
        if not recent:
            return
        self._send_again(recent)
        RESENT.inc(len(recent))
        log.info("sent the last %.1fs of acknowledged messages again", self.resend_window_s,
                 extra={"fields": {"messages": len(recent)}})

    def _send_again(self, messages: list[tuple[str, bytes]]) -> None:
        if self._closing:
            return
        early = self._publish(messages, messages, self._resend_mids) or []
        unrouted = [message for message, reason in early if self._unrouted(reason)]
        with self._cond:
            self._resend_held += len(unrouted)  # under the lock drain() checks: it sees no gap
            if not self._resend_mids:
                self._cond.notify_all()
        if unrouted:
            self._retry_later(unrouted, self._send_held_again)

    def _send_held_again(self, messages: list[tuple[str, bytes]]) -> None:
        try:
            self._send_again(messages)  # registers their new mids first, so drain() never sees a gap
        finally:
            with self._cond:
                self._resend_held -= len(messages)
                self._cond.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        # paho calls this for every failed reconnect attempt too: only the first loss counts.
        if self.connected.is_set():
            self._lost_at = time.monotonic()
        self.connected.clear()
        if self.qos == 0:
            # paho drops the QoS 0 packets it had not written yet: they were never sent, so they are
            # given back to the window uncounted.
            with self._cond:
                unsent = len(self._pending)
                self._pending.clear()
                self._release(unsent)
        if not self._closing:
            log.warning("disconnected from MQTT broker: %s; reconnecting", reason_code)

    def _on_published(self, client: FastClient, batch: PublishedBatch) -> None:
        settled: list[tuple[Message, Any]] = []
        unrouted_again: list[tuple[str, bytes]] = []
        with self._cond:
            for mid, reason in batch:
                again = self._resend_mids.pop(mid, None)
                if again is not None:
                    if self._unrouted(reason):
                        unrouted_again.append(again)
                        self._resend_held += 1  # under the lock drain() checks: it sees no gap
                    elif not self._resend_mids:
                        self._cond.notify_all()
                    continue
                message = self._pending.pop(mid, None)
                if message is None:
                    self._early[mid] = reason
                else:
                    settled.append((message, reason))
        if settled:
            self._settle(settled)
        if unrouted_again:
            self._retry_later(unrouted_again, self._send_held_again)

    def _unrouted(self, reason: Any) -> bool:
        return self.resend_unrouted and reason is not None and reason.value == NO_MATCHING_SUBSCRIBERS

    def _settle(self, settled: list[tuple[Message, Any]]) -> None:
        acked, unrouted = [], []
        try:
            for message, reason in settled:
                if self._unrouted(reason):
                    unrouted.append(message)
                elif reason is not None and reason.is_failure:
                    self.refused += 1
                    REFUSED.inc()
                    log.error("broker refused a message on %s: %s", message.topic, reason)
                else:
                    acked.append(message)
            if acked:
                ACKED_MESSAGES.inc(len(acked))
                self.on_acked(acked)
                if self.resend_window_s and self.qos > 0:
                    now = time.monotonic()
                    with self._cond:
                        self._recent.extend((now, m.topic, m.payload) for m in acked)
        finally:
            with self._cond:
                self._release(len(settled) - len(unrouted))
            if unrouted:
                self._retry_later(unrouted, self._send_held)

    def _retry_later(self, messages: list[Any], send: Callable[[list[Any]], Any]) -> None:
        """``send(messages)`` after ``UNROUTED_RETRY_S``: new messages with their window slots still held,
        or messages sent again (topic and payload), already counted."""
        UNROUTED.inc(len(messages))
        now = time.monotonic()
        if now - self._unrouted_logged > 10:
            self._unrouted_logged = now
            log.warning("the broker had no subscriber for %d messages (is the bridge subscribed?); sending them "
                        "again every %.1f s", len(messages), UNROUTED_RETRY_S)
        timer = threading.Timer(UNROUTED_RETRY_S, send, [messages])
        timer.daemon = True
        timer.start()

    def _release(self, n: int) -> None:
        """Give ``n`` window slots back (the caller holds ``_cond``)."""
        if n:
            self._inflight -= n
            INFLIGHT.set(self._inflight)
            self._cond.notify_all()

    def publish_batch(self, messages: list[Message], stop: threading.Event) -> int:
        """Hands ``messages`` over in order as the window allows, blocking while it is full; returns how
        many went (all of them, unless ``stop`` was set first)."""
        done = 0
        while done < len(messages):
            with self._cond:
                while self._inflight >= self.max_inflight:
                    if stop.is_set():
                        return done
                    self._cond.wait(0.2)
                room = min(self.max_inflight - self._inflight, len(messages) - done)
                self._inflight += room
            chunk = messages[done:done + room]
            if self.qos == 0 and not self._wait_connected(stop):
                with self._cond:
                    self._release(room)
                return done
            if not self._send_held(chunk):  # QoS 0 raced a disconnect: nothing was queued; wait for it
                self.connected.clear()
                with self._cond:
                    self._release(room)
                continue
            done += room
        return done

    def _send_held(self, chunk: list[Message]) -> bool:
        """Publishes ``chunk``, whose window slots the caller took; False when nothing was queued."""
        if self._closing:
            return False
        settled = self._publish(chunk, [(m.topic, m.payload) for m in chunk], self._pending)
        if settled is None:
            return False
        SENT.inc(len(chunk))
        if settled:
            self._settle(settled)
        return True

    def _publish(self, items: list[Any], messages: list[tuple[str, bytes]],
                 table: dict[int, Any]) -> list[tuple[Any, Any]] | None:
        """Publishes ``messages`` and files each of ``items`` under its mid in ``table`` (pending or sent
        again); returns the items whose PUBACK overtook ``publish_many``'s return (on the caller's thread,
        not the network thread), each with its reason; None when nothing was queued (QoS 0, disconnected)."""
        mids = self.client.publish_many(messages, self.qos)
        if mids is None:
            return None
        early = []
        with self._cond:
            INFLIGHT.set(self._inflight)
            for mid, item in zip(mids, items, strict=True):
                reason = self._early.pop(mid, _NOT_YET) if self._early else _NOT_YET
                if reason is _NOT_YET:
                    table[mid] = item
                else:
                    early.append((item, reason))
        return early

    def _wait_connected(self, stop: threading.Event) -> bool:
        while not self.connected.wait(0.2):
            if stop.is_set():
                return False
        return True

    def inflight(self) -> int:
        with self._cond:
            return self._inflight

    def unacknowledged_readings(self) -> int:
        with self._cond:
            return sum(m.readings for m in self._pending.values())

    def drain(self, timeout_s: float) -> bool:
        """Wait until every message is acknowledged; True when none is left."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._inflight == 0 and not self._resend_mids and not self._resend_held, timeout_s)

    def close(self) -> None:
        self._closing = True
        self.client.disconnect()
        self.client.loop_stop()
