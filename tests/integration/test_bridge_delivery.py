"""The bridge (``tsdemo ingest`` as a real process) against the real Mosquitto and Kafka: payloads arrive
unchanged and complete through kill -9, SIGTERM, a Kafka outage and a shared subscription of two.

Every test publishes messages carrying unique ids on its own topic prefix, share group, client ids and
Kafka topics, then reads the Kafka topics back and compares. "Complete" means every message the broker
acknowledged to the publisher is in Kafka; duplicates are allowed only where a crash can cause them.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil
import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.partitioner.default import murmur2

from deploy.servers import Kafka, Mosquitto, create_topics, free_port
from deploy.services.components import Endpoints
from deploy.services.pipeline import Pipeline
from deploy.services.process import Process
from deploy.wait import wait_until

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Run:
    """One test's private names (topic prefix, share group, Kafka topics) and its bridges."""

    uid: str
    mosquitto: Mosquitto
    kafka_endpoint: str
    tmp: Path
    kafka_client: str = "kafka-python"
    bridges: Pipeline = field(init=False)

    def __post_init__(self) -> None:
        host, port = self.mosquitto.endpoint.removeprefix("mqtt://").rsplit(":", 1)
        self.bridges = Pipeline(Endpoints(host, int(port), self.kafka_endpoint, kafka_topic=self.topic,
                                          kafka_dlq_topic=self.dlq), self.tmp, {
            "TSDEMO_TOPIC_FILTER": f"{self.prefix}/#",
            "TSDEMO_SHARE_GROUP": f"g{self.uid}",
            # The sessions these tests leave on the shared broker go away on their own.
            "TSDEMO_SESSION_EXPIRY_S": "600",
            "TSDEMO_LOG_LEVEL": "INFO",
            "TSDEMO_KAFKA_CLIENT": self.kafka_client,
        }, ready_timeout_s=60)

    @property
    def prefix(self) -> str:
        return f"t{self.uid}"

    @property
    def topic(self) -> str:
        return f"readings-{self.uid}"

    @property
    def dlq(self) -> str:
        return f"readings-dlq-{self.uid}"

    def bridge(self, name: str, **env: object) -> Process:
        """A bridge, started and healthy, with client id ``<name>-<uid>``; the same name is the same MQTT
        session (and the same log), so calling this again after a stop or a crash restarts it."""
        return self.bridges.start(name, "ingest", {"TSDEMO_CLIENT_ID": f"{name}-{self.uid}",
                                                   **{f"TSDEMO_{k.upper()}": str(v) for k, v in env.items()}})


@contextlib.contextmanager
def make_run(mosquitto: Mosquitto, kafka_endpoint: str, tmp_path: Path, kafka_client: str = "kafka-python"
             ) -> Iterator[Run]:
    run = Run(uuid.uuid4().hex[:8], mosquitto, kafka_endpoint, tmp_path, kafka_client)
    create_topics(kafka_endpoint, {run.topic: 4, run.dlq: 1})
    try:
        yield run
    finally:
        for bridge in run.bridges.services.values():
            bridge.kill()


@pytest.fixture
def run(mosquitto: Mosquitto, kafka: Kafka, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Run]:
    """One test's names and bridges; parametrize it indirectly with a Kafka client to run both."""
    with make_run(mosquitto, kafka.endpoint, tmp_path, getattr(request, "param", "kafka-python")) as r:
        yield r


#: The bridge's two Kafka clients (ingest.forwarder.make_producer): the tests that matter run on both.
BOTH_CLIENTS = pytest.mark.parametrize("run", ["kafka-python", "confluent"], indirect=True)


# -- publishing and reading back ------------------------------------------------------------------


class Publisher:
    """Publishes QoS 1 messages with unique ids over ``devices`` device topics; knows which were acked."""

    def __init__(self, run: Run, devices: int = 8, pad: int = 0) -> None:
        self.run, self.devices, self.pad = run, devices, pad
        self.sent: dict[str, bytes] = {}  # id -> payload
        self.topics: dict[str, str] = {}  # id -> MQTT topic
        self._infos: dict[str, mqtt.MQTTMessageInfo] = {}
        self._seq = Counter()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{run.uid}-{uuid.uuid4().hex[:4]}",
                                  protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(100)
        self.client.connect(run.mosquitto.host, run.mosquitto.port)
        self.client.loop_start()
        self._thread: threading.Thread | None = None

    def message(self, n: int) -> tuple[str, str, bytes]:
        device = f"d{n % self.devices}"
        mid = f"{self.run.uid}-{n}"
        body = {"id": mid, "device_id": device, "seq": self._seq[device], "pad": "x" * self.pad}
        self._seq[device] += 1
        return mid, f"{self.run.prefix}/site/{device}", json.dumps(body).encode()

    def publish(self, start: int, stop: int, pace_s: float = 0.0) -> None:
        for n in range(start, stop):
            mid, topic, payload = self.message(n)
            self.publish_raw(mid, topic, payload)
            if pace_s:
                time.sleep(pace_s)

    def publish_raw(self, mid: str, topic: str, payload: bytes) -> None:
        self.sent[mid], self.topics[mid] = payload, topic
        self._infos[mid] = self.client.publish(topic, payload, qos=1)

    def stream(self, start: int, stop: int, pace_s: float) -> threading.Thread:
        """Publish in the background (one message per ``pace_s``)."""
        self._thread = threading.Thread(target=self.publish, args=(start, stop, pace_s), daemon=True)
        self._thread.start()
        return self._thread

    def acked(self, timeout: float = 120) -> set[str]:
        """Wait for the background stream and every PUBACK; returns the ids the broker acknowledged."""
        if self._thread is not None:
            self._thread.join(timeout)
        for info in self._infos.values():
            info.wait_for_publish(timeout)
        acked = {mid for mid, info in self._infos.items() if info.is_published()}
        assert acked == set(self._infos), f"{len(self._infos) - len(acked)} messages not acknowledged by the broker"
        return acked

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class TopicReader:
    """Reads a Kafka topic from the beginning, all partitions, without a consumer group."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        parts = self.consumer.partitions_for_topic(topic) or set()
        self.partitions = [TopicPartition(topic, p) for p in sorted(parts)]
        assert self.partitions, f"topic {topic} has no partitions"
        self.consumer.assign(self.partitions)
        self.consumer.seek_to_beginning(*self.partitions)
        self.records: list = []

    def ids(self) -> Counter:
        return Counter(json.loads(r.value)["id"] for r in self.records)

    def poll(self) -> None:
        for batch in self.consumer.poll(timeout_ms=500).values():
            self.records.extend(batch)

    def read_until(self, expected: set[str], timeout: float = 120) -> Counter:
        """Read until every expected id is there, then to the end; returns how often each id came."""
        wait_until(lambda: self.poll() or expected <= set(self.ids()), timeout, f"{len(expected)} ids in Kafka",
                   every=0.1, detail=lambda: f"missing {len(expected - set(self.ids()))} of {len(expected)}")
        self.drain()
        return self.ids()

    def drain(self) -> None:
        end = self.consumer.end_offsets(self.partitions)
        while any(self.consumer.position(tp) < end[tp] for tp in self.partitions):
            self.poll()

    def close(self) -> None:
        self.consumer.close()


def check_unchanged(reader: TopicReader, pub: Publisher) -> None:
    """Every record carries the published bytes, keyed by the device, with the topic header."""
    for rec in reader.records:
        mid = json.loads(rec.value)["id"]
        headers = dict(rec.headers)
        assert rec.value == pub.sent[mid]
        assert headers["mqtt_topic"].decode() == pub.topics[mid]
        assert rec.key.decode() == pub.topics[mid].rsplit("/", 1)[-1]
        assert int(headers["received_ms"]) > 1_600_000_000_000


# -- the tests --------------------------------------------------------------------------------------


@BOTH_CLIENTS
def test_payloads_go_unchanged_keyed_in_order_and_oversized_ones_to_the_dlq_with_the_reason(run: Run):
    bridge = run.bridge("b0", max_message_bytes=4096)
    pub = Publisher(run, devices=5)
    pub.publish(0, 300)
    odd = b"\x00\xff not json at all \xfe"  # the bridge does not parse: processing decides
    pub.publish_raw("odd", f"{run.prefix}/site/d1", odd)
    big = json.dumps({"id": "big", "pad": "y" * 10_000}).encode()
    pub.publish_raw("big", f"{run.prefix}/site/d2", big)
    pub.acked()

    readings = TopicReader(run.kafka_endpoint, run.topic)
    wait_until(lambda: readings.poll() or len(readings.records) >= 301, 60, "301 records")
    readings.drain()
    odd_records = [r for r in readings.records if r.value == odd]
    assert len(odd_records) == 1 and odd_records[0].key == b"d1"
    readings.records = [r for r in readings.records if r.value != odd]
    assert readings.ids() == Counter({f"{run.uid}-{n}": 1 for n in range(300)})
    check_unchanged(readings, pub)
    # A device's readings share a partition and keep their order in it.
    by_device: dict[str, list[tuple[int, int, int]]] = {}
    for rec in readings.records:
        body = json.loads(rec.value)
        by_device.setdefault(body["device_id"], []).append((rec.partition, rec.offset, body["seq"]))
    for device, recs in by_device.items():
        assert len({p for p, _, _ in recs}) == 1, device
        assert [seq for _, _, seq in sorted(recs)] == list(range(len(recs))), device
    # Whichever client a bridge runs, a key lands where Kafka's default partitioner puts it.
    for rec in readings.records:
        assert rec.partition == (murmur2(rec.key) & 0x7FFFFFFF) % 4, (run.kafka_client, rec.key)

    dlq = TopicReader(run.kafka_endpoint, run.dlq)
    wait_until(lambda: dlq.poll() or dlq.records, 60, "the dead letter")
    (dead,) = dlq.records
    headers = dict(dead.headers)
    assert dead.value == big  # it fits in a Kafka record: kept whole, so it can be replayed
    assert headers["mqtt_topic"] == f"{run.prefix}/site/d2".encode()
    assert headers["payload_bytes"] == str(len(big)).encode()
    assert b"exceeds the bridge's limit of 4096" in headers["reason"]

    assert bridge.metric("tsdemo_ingest_received_total") == 302
    wait_until(lambda: bridge.metric("tsdemo_ingest_forwarded_total") == 301, 60, "forwarded == 301")
    assert bridge.metric("tsdemo_ingest_rejected_total", reason="too_large") == 1
    assert bridge.metric("tsdemo_ingest_inflight") == 0
    assert bridge.metric("tsdemo_ingest_kafka_ack_seconds_count") == 302
    code, health = bridge.health()
    assert code == 200 and health["mqtt"] and health["kafka"], health
    assert bridge.stop(90) == 0
    pub.close()


@pytest.mark.slow
def test_sigterm_mid_stream_finishes_what_is_in_flight_so_a_restart_delivers_each_message_once(run: Run):
    bridge = run.bridge("b0")
    pub = Publisher(run)
    pub.stream(0, 3000, pace_s=0.002)
    wait_until(lambda: bridge.metric("tsdemo_ingest_forwarded_total") >= 800, 60, "800 forwarded")
    assert bridge.stop(90) == 0
    assert "bridge stopped" in bridge.tail()
    bridge = run.bridge("b0")  # same client id: the same session, with what arrived meanwhile
    acked = pub.acked()
    reader = TopicReader(run.kafka_endpoint, run.topic)
    counts = reader.read_until(acked)
    # A clean stop acknowledges exactly what Kafka has, so nothing comes twice.
    assert {mid: n for mid, n in counts.items() if n > 1} == {}
    assert set(counts) == acked
    check_unchanged(reader, pub)
    pub.close()


@pytest.mark.slow
@BOTH_CLIENTS
def test_kill_9_mid_stream_and_restart_loses_nothing(run: Run):
    bridge = run.bridge("b0", max_inflight=200)
    pub = Publisher(run)
    pub.stream(0, 4000, pace_s=0.002)
    for _ in range(2):  # the second time while the stream still fills the session
        wait_until(lambda b=bridge: b.metric("tsdemo_ingest_forwarded_total") >= 700, 60, "700 forwarded")
        bridge.kill()
        time.sleep(1)  # the stream goes on into the dead bridge's session
        bridge = run.bridge("b0", max_inflight=200)
    acked = pub.acked()
    reader = TopicReader(run.kafka_endpoint, run.topic)
    counts = reader.read_until(acked)
    assert set(counts) == acked, f"missing: {sorted(acked - set(counts))[:10]}"
    check_unchanged(reader, pub)
    pub.close()


class Sampler:
    """Samples a bridge's RSS, in-flight gauge and /healthz status in the background until stopped."""

    def __init__(self, bridge: Process, every_s: float = 0.25) -> None:
        self.bridge, self.every_s = bridge, every_s
        self.peak_rss, self.peak_inflight = 0, 0.0
        self.codes: list[int] = []  # a list: copying it while the sampler appends is safe
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.peak_rss = max(self.peak_rss, psutil.Process(self.bridge.pid).memory_info().rss)
                self.peak_inflight = max(self.peak_inflight, self.bridge.metric("tsdemo_ingest_inflight"))
                self.codes.append(self.bridge.health()[0])
            except (OSError, psutil.Error):
                pass  # a sample lost to a slow answer changes no peak that matters

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def own_kafka(tmp_path: Path) -> Iterator[Kafka]:
    """A Kafka of this test's own, to stop without disturbing the session's."""
    with Kafka(tmp_path / "kafka", free_port(), free_port()) as server:
        yield server


@pytest.mark.slow
@pytest.mark.parametrize("kafka_client", ["kafka-python", "confluent"])
def test_kafka_down_for_20s_loses_nothing_keeps_memory_bounded_and_recovers_alone(
    mosquitto: Mosquitto, own_kafka: Kafka, tmp_path: Path, kafka_client: str
):
    max_inflight, pad = 50, 8000
    with make_run(mosquitto, own_kafka.endpoint, tmp_path, kafka_client) as run:
        bridge = run.bridge("b0", max_inflight=max_inflight)
        pub = Publisher(run, pad=pad)
        pub.publish(0, 500)
        wait_until(lambda: bridge.metric("tsdemo_ingest_forwarded_total") >= 500, 60, "the warm-up forwarded")
        baseline = psutil.Process(bridge.pid).memory_info().rss

        sampler = Sampler(bridge)
        own_kafka.stop()
        down_since = time.monotonic()
        outage = 4000  # 4000 x 8 kB = 32 MB published while Kafka is away
        pub.stream(500, 500 + outage, pace_s=0.003)
        while time.monotonic() - down_since < 20:
            time.sleep(0.5)
        codes_while_down = set(list(sampler.codes))
        own_kafka.start()
        own_kafka.wait_ready()
        acked = pub.acked()

        reader = TopicReader(own_kafka.endpoint, run.topic)
        counts = reader.read_until(acked, timeout=240)
        wait_until(bridge.healthy, 60, "the bridge to be healthy again", detail=bridge.tail)  # recovered alone
        sampler.stop()
        growth = (sampler.peak_rss - baseline) / 1e6
        print(f"\nKafka outage: RSS {baseline / 1e6:.1f} MB before, peak +{growth:.1f} MB; "
              f"peak in flight {sampler.peak_inflight:.0f} of {max_inflight}; {len(acked)} acked, "
              f"{sum(counts.values()) - len(counts)} duplicates; /healthz while down: {sorted(codes_while_down)}")
        assert set(counts) == acked
        check_unchanged(reader, pub)
        # Neither during the outage nor while the backlog drained after it did the bridge hold more
        # than max_inflight (Mosquitto 2.0.11 sends more than that once acks flow again).
        assert 0 < sampler.peak_inflight <= max_inflight
        assert sampler.peak_rss - baseline < outage * pad // 2, f"RSS grew {growth:.1f} MB"
        assert 503 in codes_while_down  # the outage showed in /healthz
        assert bridge.proc is not None and bridge.proc.poll() is None
        pub.close()


@pytest.mark.slow
def test_two_bridges_share_the_load_and_together_deliver_everything_exactly_as_published(run: Run):
    bridges = [run.bridge("b0"), run.bridge("b1")]
    pub = Publisher(run)
    pub.publish(0, 2000)
    acked = pub.acked()
    reader = TopicReader(run.kafka_endpoint, run.topic)
    counts = reader.read_until(acked)
    assert counts == Counter({mid: 1 for mid in acked})
    check_unchanged(reader, pub)
    shares = [b.metric("tsdemo_ingest_forwarded_total") for b in bridges]
    assert sum(shares) == 2000 and min(shares) > 0, shares
    pub.close()


@pytest.mark.slow
def test_a_killed_members_share_waits_in_its_session_and_arrives_when_it_returns(run: Run):
    max_inflight = 20
    a = run.bridge("a", max_inflight=max_inflight)
    b = run.bridge("b", max_inflight=max_inflight)
    pub = Publisher(run)
    pub.stream(0, 1000, pace_s=0.002)
    wait_until(lambda: a.metric("tsdemo_ingest_forwarded_total") >= 200, 60, "a to forward 200")
    a.kill()
    pub.acked()
    pub.publish(1000, 2000)  # all of these while a is dead
    acked = pub.acked()

    a = run.bridge("a", max_inflight=max_inflight)  # the same client id: its session, with its share
    reader = TopicReader(run.kafka_endpoint, run.topic)
    counts = reader.read_until(acked)
    assert set(counts) == acked
    check_unchanged(reader, pub)
    # Nothing was published after a came back, yet it received far more than the max_inflight it could
    # have held unacknowledged when killed: Mosquitto kept a's share of the later messages for it.
    assert a.metric("tsdemo_ingest_received_total") > 5 * max_inflight
    assert b.proc is not None and b.proc.poll() is None
    pub.close()
