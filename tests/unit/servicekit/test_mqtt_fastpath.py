"""FastClient's hand-written packets and parsing agree with paho's own encoder and decoder.

The overrides in ``servicekit.mqtt.FastClient`` use paho's private API; these tests pin what they
rely on, so a paho upgrade that changes it fails here rather than in a pipeline.
"""

from __future__ import annotations

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt import _packet

from servicekit.mqtt import FastClient


def client(protocol: int = mqtt.MQTTv5) -> FastClient:
    return FastClient(mqtt.CallbackAPIVersion.VERSION2, client_id="t", protocol=protocol)


class Idle:
    """A socket nothing is read from or written to: the tests read paho's queues instead."""

    def close(self) -> None:
        return None


class Chunks(Idle):
    """A non-blocking socket whose reads return the given chunks, one per call, then would block."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def recv(self, n: int) -> bytes:
        if not self.chunks:
            raise BlockingIOError
        return self.chunks.pop(0)


def decode_stream(data: bytes) -> list[tuple[int, bytes]]:
    """(first byte, body) of each packet in ``data``, reading the remaining length as MQTT defines it."""
    out, pos = [], 0
    while pos < len(data):
        header, mult, length = data[pos], 1, 0
        pos += 1
        while True:
            byte = data[pos]
            pos += 1
            length += (byte & 127) * mult
            mult *= 128
            if not byte & 128:
                break
        out.append((header, data[pos:pos + length]))
        pos += length
    return out


@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311])
@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("size", [0, 1, 120, 127, 128, 16_380, 16_384, 2_097_152])
def test_published_packets_decode_with_paho(protocol: int, qos: int, size: int):
    c = client(protocol)
    c._sock = Idle()  # "connected" for queueing; nothing is sent: the test reads the queue
    c._state = mqtt._ConnectionState.MQTT_CS_CONNECTED
    c._on_socket_register_write = lambda *_a: None  # no network thread and no inline write
    payloads = [(f"sensors/site-{i}/dev-{i}", bytes([i % 256]) * size) for i in range(3)]
    mids = c.publish_many(payloads, qos)
    c._sock = None
    assert len(mids) == 3 and len(set(mids)) == 3
    packets = [p["packet"] for p in c._out_packet]
    for (topic, payload), mid, raw in zip(payloads, mids, packets, strict=True):
        ((header, body),) = decode_stream(bytes(raw))
        decoded = _packet.decode_publish(header, body, protocol)
        assert (decoded.topic, decoded.qos, decoded.payload) == (topic.encode(), qos, payload)
        assert decoded.mid == (mid if qos else 0)
    if qos:
        assert set(c._out_messages) == set(mids)


def test_acks_are_pubacks_paho_decodes_in_the_order_given():
    c = client()
    c._on_socket_register_write = lambda *_a: None
    c._thread = object()  # as under loop_start: queue, do not write inline
    c.ack_many([5, 1, 65535])
    decoded = [_packet.decode_puback(h, b, mqtt.MQTTv5).mid for raw in (p["packet"] for p in c._out_packet)
               for h, b in decode_stream(bytes(raw))]
    assert decoded == [5, 1, 65535]


def test_buffered_reads_hand_paho_exactly_the_bytes_asked_for():
    c = client()
    stream = b"".join(bytes([i % 256]) * (i % 7 + 1) for i in range(2000))
    chunks = [stream[i:i + 4096] for i in range(0, len(stream), 4096)]

    c._sock = Chunks(chunks)
    got, sizes = [], [1, 3, 2, 500, 1, 7, 9000]
    try:
        while True:
            got.append(c._sock_recv(sizes[len(got) % len(sizes)]))
            assert len(got[-1]) <= sizes[(len(got) - 1) % len(sizes)]
    except BlockingIOError:
        pass
    assert b"".join(got) == stream


@pytest.mark.parametrize("chunk", [1, 7, 1000, 65_536])
def test_packets_split_anywhere_across_reads_arrive_whole_and_in_order(chunk: int):
    sender = client()
    sender._sock = Idle()
    sender._state = mqtt._ConnectionState.MQTT_CS_CONNECTED
    sender._on_socket_register_write = lambda *_a: None
    sent = [(f"sensors/s/d{i}", bytes([i % 256]) * (i * 37 % 700)) for i in range(200)]
    sender.publish_many(sent, 1)
    stream = b"".join(bytes(p["packet"]) for p in sender._out_packet)
    chunks = [stream[i:i + chunk] for i in range(0, len(stream), chunk)]

    receiver = client()
    receiver._sock = Chunks(chunks)
    receiver._manual_ack = True
    got: list[tuple[str, bytes, int]] = []
    receiver.on_message = lambda _c, _u, m: got.append((m.topic, m.payload, m.qos))
    while chunks:
        assert receiver.loop_read() == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
    assert got == [(t, p, 1) for t, p in sent]
