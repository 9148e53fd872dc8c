"""MQTT connection settings and client construction shared by the generator and the bridge.

Only imported by services that install paho-mqtt (the generator and ingest extras).

``FastClient`` is a paho-mqtt client with lean hot paths: buffered reads, batched writes, cheap
PUBLISH and PUBACK handling, and batch entry points for publishing and acknowledging.

Why a subclass and not paho as it is (measured on 2 cores; see README "Performance"): paho 2.2 reads
every packet with a ``select`` and three or four ``recv`` calls (one byte of command, the length
byte by byte, then the body), reads one packet per wake-up for a subscriber (``loop_read`` sizes its
budget from the queues, which gives 1), builds an MQTT 5 ``Properties`` object for every PUBLISH and
PUBACK even when the packet has none, writes every outgoing packet with a ``send`` of its own, wakes
its network thread with a byte on a socketpair for every packet queued from another thread, and,
with ``max_inflight_messages_set``, rescans every in-flight message on each PUBACK. Together that
held a subscriber to ~17k messages/s and made PUBACK handling 61% of the generator's time.

The subclass keeps paho for everything else (connect, session, reconnect and resend, keepalive, TLS,
auth) and overrides five of its internal methods, handing any packet it does not handle itself (QoS 2,
packets carrying properties) back to paho's own code. They are private API, so ``paho-mqtt`` is
pinned to the minor version they were written against, and ``tests/unit/servicekit/test_mqtt_fastpath.py``
checks them against paho's own encoder and decoder.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt import _packet
from paho.mqtt.client import PUBACK, PUBLISH, MQTTMessage, MQTTMessageInfo, MQTTProtocolVersion
from paho.mqtt.enums import MessageState
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import Field

from servicekit.settings import ServiceSettings

log = logging.getLogger("servicekit.mqtt")


class MqttSettings(ServiceSettings):
    mqtt_host: str = Field("127.0.0.1", description="MQTT broker host")
    mqtt_port: int = Field(1883, ge=1, le=65535, description="MQTT broker port")
    mqtt_username: str | None = Field(None, description="MQTT username (password auth)")
    mqtt_password: str | None = Field(None, description="MQTT password")
    mqtt_password_file: Path | None = Field(None, description="file holding the MQTT password")
    mqtt_tls: bool = Field(False, description="connect with TLS")
    mqtt_ca_file: Path | None = Field(None, description="CA bundle for MQTT TLS")
    mqtt_cert_file: Path | None = Field(None, description="client certificate (PEM) for MQTT TLS client auth")
    mqtt_key_file: Path | None = Field(None, description="private key (PEM) of the MQTT client certificate")
    mqtt_keepalive_s: int = Field(30, ge=5, description="MQTT keepalive in seconds")

    secret_files = (("mqtt_password", "mqtt_password_file", "MQTT password"),)

    def password(self) -> str | None:
        return self.mqtt_password


def make_client(settings: MqttSettings, client_id: str, *, manual_ack: bool = False) -> FastClient:
    """A paho MQTT 5 client (``FastClient``) with auth, TLS and reconnect backoff configured from settings."""
    client = FastClient(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    if settings.mqtt_username:
        client.username_pw_set(settings.mqtt_username, settings.password())
    if settings.mqtt_tls:
        client.tls_set(
            ca_certs=str(settings.mqtt_ca_file) if settings.mqtt_ca_file else None,
            certfile=str(settings.mqtt_cert_file) if settings.mqtt_cert_file else None,
            keyfile=str(settings.mqtt_key_file) if settings.mqtt_key_file else None,
        )
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    # paho retries a failed connection quietly: a service pointed at the wrong broker showed nothing
    # but progress lines with zero in them.
    where = f"{settings.mqtt_host}:{settings.mqtt_port}"
    client.on_connect_fail = lambda _client, _userdata: log.warning(
        "cannot reach the MQTT broker at %s (TSDEMO_MQTT_HOST, TSDEMO_MQTT_PORT); retrying every 1-30 s", where)
    return client


def connect_in_session(client: mqtt.Client, settings: MqttSettings, session_expiry_s: int,
                       receive_maximum: int | None = None) -> None:
    """Connect in the background with a persistent session (``clean_start`` false, kept ``session_expiry_s``
    after a disconnect) and start the network thread: the broker and the client then finish their in-flight
    QoS 1 flows after a reconnect instead of dropping them. ``receive_maximum`` caps what the broker sends
    before our acks."""
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = session_expiry_s
    if receive_maximum is not None:
        props.ReceiveMaximum = receive_maximum
    client.connect_async(settings.mqtt_host, settings.mqtt_port, keepalive=settings.mqtt_keepalive_s,
                         clean_start=False, properties=props)
    client.loop_start()


#: How much one ``recv`` takes from the socket, and the most one coalesced ``send`` writes.
READ_BYTES = 256 * 1024
WRITE_BYTES = 256 * 1024
#: While a firehose of packets is read, queued output (our PUBACKs) goes out this often.
FLUSH_EVERY_PACKETS = 256
#: Packets read per wake-up at most before the loop gets to its other work (keepalive, the wake-up pipe).
MAX_PACKETS_PER_READ = 20_000

PublishedBatch = list[tuple[int, ReasonCode]]
_SUCCESS = mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
_AGAIN = mqtt.MQTTErrorCode.MQTT_ERR_AGAIN
_NO_CONN = mqtt.MQTTErrorCode.MQTT_ERR_NO_CONN
_CONN_LOST = mqtt.MQTTErrorCode.MQTT_ERR_CONN_LOST
_CONNECTED = mqtt._ConnectionState.MQTT_CS_CONNECTED  # noqa: SLF001 - see the module docstring
_EMPTY_PUBLISH_PROPERTIES = Properties(PacketTypes.PUBLISH)
_REASONS: dict[int, ReasonCode] = {}


class _NoInfo:
    """Stands in for ``MQTTMessageInfo`` where nobody waits on a message: paho's has a Condition each."""

    __slots__ = ()
    mid = 0
    rc = _SUCCESS

    def _set_as_published(self) -> None:
        return None


_NO_INFO: Any = _NoInfo()


def _reason(code: int) -> ReasonCode:
    """One shared ``ReasonCode`` per PUBACK code: they are read, never changed."""
    reason = _REASONS.get(code)
    if reason is None:
        reason = _REASONS[code] = ReasonCode(PacketTypes.PUBACK, identifier=code)
    return reason


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


class FastClient(mqtt.Client):
    """paho's ``Client`` with the hot paths above; see the module docstring for why.

    ``on_published_many(client, [(mid, reason_code), ...])``, when set, replaces ``on_publish``: it
    gets every PUBACK read in one wake-up (and the QoS 0 messages written in one ``send``) at once.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0
        self._published: PublishedBatch = []
        self.on_published_many: Callable[[FastClient, PublishedBatch], object] | None = None
        self._props_byte = b"\x00" if self._protocol == MQTTProtocolVersion.MQTTv5 else b""
        # Our callers keep their own window: paho's makes it rescan every message on each PUBACK.
        self.max_inflight_messages_set(0)

    # -- reading ---------------------------------------------------------------------------------
    def _sock_recv(self, bufsize: int) -> bytes:
        avail = len(self._rbuf) - self._rpos
        if avail <= 0:
            data = super()._sock_recv(READ_BYTES)
            if len(data) <= bufsize:
                return data
            self._rbuf, self._rpos, avail = data, 0, len(data)
        pos = self._rpos
        self._rpos = end = pos + min(bufsize, avail)
        return self._rbuf[pos:end]

    def _buffered(self) -> bool:
        return self._rpos < len(self._rbuf)

    def _sock_close(self) -> None:
        self._rbuf, self._rpos = b"", 0
        super()._sock_close()

    def _packet_read(self) -> mqtt.MQTTErrorCode:
        """A whole packet waiting in the buffer is handled straight from it; anything else (a packet
        split across reads, one half-read already) goes through paho's reader, byte by byte."""
        inp = self._in_packet
        buf, pos = self._rbuf, self._rpos
        end = len(buf)
        if inp["command"] or end - pos < 2:
            return super()._packet_read()
        i, mult, length = pos + 1, 1, 0
        while i < end and i - pos <= 4:
            byte = buf[i]
            i += 1
            length += (byte & 127) * mult
            mult *= 128
            if not byte & 128:
                break
        else:
            return super()._packet_read()  # the length itself is split across reads
        if i + length > end:
            return super()._packet_read()
        self._rpos = i + length
        inp["command"], inp["packet"], inp["remaining_length"] = buf[pos], buf[i:i + length], length
        try:
            rc = self._packet_handle()
        except MalformedPacket as exc:
            self._easy_log(mqtt.MQTT_LOG_DEBUG, "Received malformed packet: %s", exc)
            rc = mqtt.MQTTErrorCode.MQTT_ERR_PROTOCOL
        finally:
            inp["command"], inp["packet"], inp["remaining_length"] = 0, bytearray(), 0
        return rc

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        """Reads every packet available now, not one per wake-up; flushes our output as it goes."""
        if self._sock is None:
            return _NO_CONN
        read = 0
        try:
            while True:
                if self._sock is None:
                    return _NO_CONN
                rc = self._packet_read()
                if rc > 0:
                    return self._loop_rc_handle(rc)
                if rc == _AGAIN and not self._buffered():
                    return _SUCCESS
                read += 1
                if read % FLUSH_EVERY_PACKETS == 0:
                    self._flush_published()
                    if self._out_packet:
                        self.loop_write()
                # Past the cap, finish what is buffered but ask the socket for no more.
                if read >= MAX_PACKETS_PER_READ and not self._buffered():
                    return _SUCCESS
        finally:
            if read:
                with self._msgtime_mutex:  # once per wake-up, not per packet as paho does
                    self._last_bytes_received = mqtt.time_func()
            self._flush_published()

    def _handle_publish(self) -> mqtt.MQTTErrorCode:
        header, packet = self._in_packet["command"], self._in_packet["packet"]
        qos = (header & 0x06) >> 1
        if qos == 2 or self._protocol != MQTTProtocolVersion.MQTTv5:
            return super()._handle_publish()
        pos = 2 + ((packet[0] << 8) | packet[1])
        topic = bytes(packet[2:pos])
        mid = 0
        if qos:
            mid = (packet[pos] << 8) | packet[pos + 1]
            pos += 2
        if packet[pos] != 0:  # it carries properties: paho decodes them
            return super()._handle_publish()
        message = MQTTMessage.__new__(MQTTMessage)
        message.timestamp = 0.0
        message.state = MessageState.MQTT_MS_INVALID
        message.dup = bool(header & 0x08)
        message.mid = mid
        message._topic = topic  # noqa: SLF001 - the slot behind MQTTMessage.topic
        message.payload = bytes(packet[pos + 1:])
        message.qos = qos
        message.retain = bool(header & 0x01)
        message.info = _NO_INFO  # an incoming message has no delivery to wait for
        message.properties = _EMPTY_PUBLISH_PROPERTIES
        self._handle_on_message(message)
        if qos and not self._manual_ack:
            return self._send_puback(mid)
        return _SUCCESS

    def _handle_on_message(self, message: MQTTMessage) -> None:
        # paho decodes the topic and walks its matcher of per-topic callbacks for every message; with
        # none registered (message_callback_add) the plain on_message is all there is to call.
        on_message = self._on_message
        if self._on_message_filtered._root._children or on_message is None:  # noqa: SLF001
            super()._handle_on_message(message)
            return
        with self._in_callback_mutex:
            try:
                on_message(self, self._userdata, message)
            except Exception as err:
                self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_message: %s", err)
                if not self.suppress_exceptions:
                    raise

    def _handle_pubackcomp(self, cmd: str) -> mqtt.MQTTErrorCode:
        if cmd != "PUBACK" or self.on_published_many is None:
            return super()._handle_pubackcomp(cmd)  # type: ignore[arg-type]
        packet = self._in_packet["packet"]
        if len(packet) > 3 and packet[3] != 0:  # it carries properties (a reason string): paho decodes it
            decoded = _packet.decode_puback(self._in_packet["command"], packet, self._protocol)
            mid, reason = decoded.mid, decoded.reason
        else:
            mid, reason = (packet[0] << 8) | packet[1], _reason(packet[2] if len(packet) > 2 else 0)
        with self._out_message_mutex:
            message = self._out_messages.pop(mid, None)
            if message is None:
                return _SUCCESS
            self._inflight_messages -= 1
        self._published.append((mid, reason))
        return _SUCCESS

    def _flush_published(self) -> None:
        if not self._published:
            return
        batch, self._published = self._published, []
        callback = self.on_published_many
        if callback is not None:
            with self._in_callback_mutex:
                callback(self, batch)

    # -- writing ---------------------------------------------------------------------------------
    def _packet_write(self) -> mqtt.MQTTErrorCode:
        """Writes runs of PUBLISH and PUBACK packets with one ``send`` each; anything else goes through
        paho's own writer (it has work to do after such packets: DISCONNECT, and so on)."""
        out = self._out_packet
        while out:
            run: list[Any] = []
            size = 0
            while out and size < WRITE_BYTES:
                packet = out.popleft()
                if packet["command"] & 0xF0 not in (PUBLISH, PUBACK):
                    out.appendleft(packet)
                    break
                run.append(packet)
                size += packet["to_process"]
            if not run:
                return super()._packet_write()
            data = b"".join(p["packet"][p["pos"]:] if p["pos"] else p["packet"] for p in run)
            try:
                written = self._sock_send(data)
            except (AttributeError, ValueError):
                out.extendleft(reversed(run))
                return _SUCCESS
            except BlockingIOError:
                out.extendleft(reversed(run))
                return _AGAIN
            except OSError as err:
                out.extendleft(reversed(run))
                self._easy_log(mqtt.MQTT_LOG_ERR, "failed to send on socket: %s", err)
                return _CONN_LOST
            with self._msgtime_mutex:
                self._last_msg_out = mqtt.time_func()
            for i, packet in enumerate(run):
                if written < packet["to_process"]:
                    packet["pos"] += written
                    packet["to_process"] -= written
                    out.extendleft(reversed(run[i:]))
                    self._flush_published()
                    return _AGAIN
                written -= packet["to_process"]
                if packet["command"] & 0xF0 == PUBLISH and packet["qos"] == 0:
                    self._qos0_written(packet)
            self._flush_published()
        return _SUCCESS

    def _qos0_written(self, packet: dict[str, Any]) -> None:
        if self.on_published_many is not None:
            self._published.append((packet["mid"], _reason(0)))
            return
        if self.on_publish is not None:
            with self._in_callback_mutex:
                self.on_publish(self, self._userdata, packet["mid"], _reason(0), Properties(PacketTypes.PUBACK))
        if packet["info"] is not None:
            packet["info"]._set_as_published()  # noqa: SLF001

    def _wake(self) -> None:
        """Tells the network thread that output is queued: once per batch, not per packet."""
        if self._sockpairW is not None:
            try:
                self._sockpairW.send(mqtt.sockpair_data)
            except BlockingIOError:
                pass
        if self._thread is None and self._on_socket_register_write is None:
            self.loop_write()  # no network thread: write now, as paho's _packet_queue does
        else:
            self._call_socket_register_write()

    def _queue_packet(self, command: int, packet: bytes, mid: int, qos: int, info: Any) -> None:
        self._out_packet.append({"command": command, "mid": mid, "qos": qos, "pos": 0, "to_process": len(packet),
                                 "packet": packet, "info": info})

    def publish_many(self, messages: Sequence[tuple[str, bytes]], qos: int) -> list[int] | None:
        """Queues PUBLISHes at QoS 0 or 1 with one lock and one wake-up; their message ids in order.

        At QoS 1, as ``publish`` does, a message published while disconnected is kept and sent after the
        reconnect (paho's session resend). At QoS 0 there is nothing to keep: None, and nothing queued,
        when not connected.
        """
        if qos not in (0, 1):
            raise ValueError("publish_many takes QoS 0 or 1")
        mids: list[int] = []
        props = self._props_byte
        with self._out_message_mutex:
            connected = self._sock is not None and self._state == _CONNECTED
            if qos == 0 and not connected:
                return None
            for topic, payload in messages:
                mid = self._mid_generate()
                topic_bytes = topic.encode()
                if qos:
                    if mid in self._out_messages:
                        raise RuntimeError("more than 65,535 messages in flight: keep a smaller window")
                    message = MQTTMessage.__new__(MQTTMessage)
                    message.timestamp = 0.0
                    message.dup = False
                    message.mid = mid
                    message._topic = topic_bytes  # noqa: SLF001
                    message.payload = payload
                    message.qos = 1
                    message.retain = False
                    message.info = _NO_INFO if self.on_published_many is not None else MQTTMessageInfo(mid)
                    message.properties = None
                    self._out_messages[mid] = message
                    if connected:
                        self._inflight_messages += 1
                        message.state = MessageState.MQTT_MS_WAIT_FOR_PUBACK
                    else:
                        message.state = MessageState.MQTT_MS_PUBLISH  # sent when the connection is back
                        mids.append(mid)
                        continue
                body_len = 2 + len(topic_bytes) + (2 if qos else 0) + len(props) + len(payload)
                head = struct.pack("!B", PUBLISH | (qos << 1)) + _remaining_length(body_len)
                fixed = struct.pack(f"!H{len(topic_bytes)}sH", len(topic_bytes), topic_bytes, mid) if qos else \
                    struct.pack(f"!H{len(topic_bytes)}s", len(topic_bytes), topic_bytes)
                self._queue_packet(PUBLISH, b"".join((head, fixed, props, payload)), mid, qos, None)
                mids.append(mid)
        if connected:
            self._wake()
        return mids

    def ack_many(self, mids: Iterable[int]) -> None:
        """PUBACKs for received QoS 1 messages (manual ack), in the order given, with one wake-up."""
        queued = False
        for mid in mids:
            self._queue_packet(PUBACK, struct.pack("!BBH", PUBACK, 2, mid), mid, 1, None)
            queued = True
        if queued:
            self._wake()
