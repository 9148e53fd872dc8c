"""The real servers behind the local stack: each starts on free ports, serves a client, keeps its data
across a restart, and fails clearly when its port is taken or it dies on start."""

from __future__ import annotations

import json
import os
import queue
import socket
import sys
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from deploy.servers import (
    InfluxDB,
    Kafka,
    ManagedServer,
    Mosquitto,
    PortInUseError,
    ServerExitedError,
    create_topics,
    free_port,
    port_is_free,
)
from deploy.servers.artifacts import kafka_classpath

# -- helpers -----------------------------------------------------------------------------------------


def mqtt_client(server: Mosquitto, client_id: str, clean: bool = True) -> tuple[mqtt.Client, queue.Queue]:
    """A connected paho client (MQTT 3.1.1) whose received messages land in the returned queue."""
    received: queue.Queue = queue.Queue()
    connected: queue.Queue = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
    client.on_connect = lambda c, u, flags, rc, props: connected.put((rc, flags))
    client.on_message = lambda c, u, msg: received.put(msg)
    client.connect(server.host, server.port, keepalive=30)
    client.loop_start()
    rc, flags = connected.get(timeout=10)
    assert not rc.is_failure, rc
    return client, received


def subscribe(client: mqtt.Client, topic: str) -> None:
    done: queue.Queue = queue.Queue()
    client.on_subscribe = lambda c, u, mid, codes, props: done.put(codes)
    client.subscribe(topic, qos=1)
    codes = done.get(timeout=10)
    assert not codes[0].is_failure, codes


def close(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()


def read_all(bootstrap: str, topic: str, expected: int, timeout: float = 30) -> list[bytes]:
    """Every message of a one-partition topic from the start, without a consumer group."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=1000)
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        values: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(values) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                values.extend(r.value for r in records)
        return values
    finally:
        consumer.close()


def produce(bootstrap: str, topic: str, value: bytes) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        producer.send(topic, value).get(timeout=30)
    finally:
        producer.close()


def influx(
    server: InfluxDB, path: str, params: dict[str, str], body: bytes | None = None
) -> tuple[int, bytes]:
    url = f"{server.endpoint}{path}?{urllib.parse.urlencode(params)}"
    req = urllib.request.Request(url, data=body if body is not None else b"", method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, resp.read()


def influx_query(server: InfluxDB, db: str, q: str) -> list[list]:
    with urllib.request.urlopen(
        f"{server.endpoint}/query?{urllib.parse.urlencode({'db': db, 'q': q})}", timeout=10
    ) as resp:
        result = json.loads(resp.read())["results"][0]
    return result["series"][0]["values"] if "series" in result else []


# -- Mosquitto ---------------------------------------------------------------------------------------


def test_mosquitto_delivers_a_published_message(mosquitto: Mosquitto) -> None:
    assert mosquitto.is_running()
    assert mosquitto.endpoint == f"mqtt://127.0.0.1:{mosquitto.port}"
    sub, received = mqtt_client(mosquitto, f"sub-{uuid.uuid4().hex[:8]}")
    pub, _ = mqtt_client(mosquitto, f"pub-{uuid.uuid4().hex[:8]}")
    try:
        subscribe(sub, "test/servers/hello")
        pub.publish("test/servers/hello", b'{"v": 1}', qos=1).wait_for_publish(timeout=10)
        msg = received.get(timeout=10)
        assert (msg.topic, msg.payload) == ("test/servers/hello", b'{"v": 1}')
    finally:
        close(sub)
        close(pub)


def test_mosquitto_keeps_a_queued_message_across_a_restart(tmp_path: Path) -> None:
    """Persistence: a QoS 1 message queued for an offline persistent session survives stop and start."""
    server = Mosquitto(tmp_path / "mosquitto", free_port())
    server.start()
    try:
        server.wait_ready()
        sub, _ = mqtt_client(server, "bridge-like", clean=False)
        subscribe(sub, "test/servers/queued")
        close(sub)
        pub, _ = mqtt_client(server, "publisher")
        pub.publish("test/servers/queued", b"kept", qos=1).wait_for_publish(timeout=10)
        close(pub)

        server.restart()

        sub, received = mqtt_client(server, "bridge-like", clean=False)
        try:
            assert received.get(timeout=10).payload == b"kept"
        finally:
            close(sub)
    finally:
        server.stop()
    assert not server.is_running()


# -- Kafka -------------------------------------------------------------------------------------------


def test_kafka_round_trips_a_message(kafka: Kafka) -> None:
    assert kafka.endpoint == f"127.0.0.1:{kafka.port}"
    topic = f"roundtrip-{uuid.uuid4().hex[:8]}"
    assert create_topics(kafka.endpoint, {topic: 1}) == [topic]
    produce(kafka.endpoint, topic, b"hello kafka")
    assert read_all(kafka.endpoint, topic, expected=1) == [b"hello kafka"]


def test_create_topics_is_idempotent_and_sets_partitions(kafka: Kafka) -> None:
    topics = {"sensor-readings": 4, "sensor-readings-dlq": 1}
    create_topics(kafka.endpoint, topics)
    assert create_topics(kafka.endpoint, topics) == []
    consumer = KafkaConsumer(bootstrap_servers=kafka.endpoint)
    try:
        assert consumer.partitions_for_topic("sensor-readings") == {0, 1, 2, 3}
        assert consumer.partitions_for_topic("sensor-readings-dlq") == {0}
    finally:
        consumer.close()


@pytest.mark.slow
def test_kafka_keeps_messages_across_a_restart(tmp_path: Path) -> None:
    server = Kafka(tmp_path / "kafka", free_port(), free_port())
    server.start()
    try:
        first_ready = server.wait_ready()
        meta = (server.data_dir / "meta.properties").read_text()
        create_topics(server.endpoint, {"kept": 1})
        produce(server.endpoint, "kept", b"before restart")

        second_ready = server.restart()

        # not formatted again: the same cluster, with the message still in its log
        assert (server.data_dir / "meta.properties").read_text() == meta
        assert read_all(server.endpoint, "kept", expected=1) == [b"before restart"]
        print(f"kafka ready after {first_ready:.1f}s, after a restart {second_ready:.1f}s", file=sys.stderr)
    finally:
        server.stop()
    assert not server.is_running()


def test_kafka_classpath_is_cached_and_has_a_logging_binding(kafka: Kafka) -> None:
    started = time.monotonic()
    jars = [Path(p).name for p in kafka_classpath(kafka.cache_dir, kafka.version).split(os.pathsep)]
    assert time.monotonic() - started < 1, "a resolved classpath must come from the marker file"
    assert f"kafka_2.13-{kafka.version}.jar" in jars
    for prefix in ("log4j-core-", "log4j-slf4j-impl-", "slf4j-api-"):
        assert any(j.startswith(prefix) for j in jars), prefix


def test_kafka_logs_through_log4j2_to_its_file(kafka: Kafka) -> None:
    log = kafka.log_path.read_text()
    assert "Kafka Server started" in log or "Transition from STARTING to STARTED" in log


# -- InfluxDB ----------------------------------------------------------------------------------------


def test_influxdb_writes_and_reads_a_point(influxdb: InfluxDB) -> None:
    assert influxdb.endpoint == f"http://127.0.0.1:{influxdb.port}"
    status, _ = influx(influxdb, "/query", {"q": "CREATE DATABASE x"})
    assert status == 200
    status, _ = influx(
        influxdb, "/write", {"db": "x", "precision": "s"}, b"temp,sensor=s1 value=21.5 1700000000"
    )
    assert status == 204
    rows = influx_query(influxdb, "x", "SELECT value, sensor FROM temp")
    assert rows == [["2023-11-14T22:13:20Z", 21.5, "s1"]]


def test_influxdb_runs_continuous_queries_every_second(influxdb: InfluxDB) -> None:
    influx(influxdb, "/query", {"q": "CREATE DATABASE cq"})
    influx(
        influxdb,
        "/query",
        {"q": "CREATE CONTINUOUS QUERY per_second ON cq BEGIN "
              "SELECT mean(value) AS value INTO cq.autogen.m_1s FROM cq.autogen.m GROUP BY time(1s) END"},
    )  # fmt: skip
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        # one point now and then: the CQ aggregates each second once that second has passed
        influx(
            influxdb,
            "/write",
            {"db": "cq", "precision": "ms"},
            f"m value=2 {int(time.time() * 1000)}".encode(),
        )
        if influx_query(influxdb, "cq", "SELECT value FROM m_1s"):
            return
        time.sleep(0.5)
    pytest.fail("the continuous query wrote nothing within 15s")


def test_influxdb_keeps_data_across_a_restart_beside_another_instance(
    tmp_path: Path, influxdb: InfluxDB
) -> None:
    """A second instance runs next to the session's: its RPC port must not clash with the first's."""
    server = InfluxDB(tmp_path / "influxdb", free_port())
    server.start()
    try:
        server.wait_ready()
        assert server.rpc_port != influxdb.rpc_port
        influx(server, "/query", {"q": "CREATE DATABASE kept"})
        influx(server, "/write", {"db": "kept", "precision": "s"}, b"m value=1 1700000000")
        server.restart()
        assert influx_query(server, "kept", "SELECT value FROM m") == [["2023-11-14T22:13:20Z", 1]]
    finally:
        server.stop()


# -- failures ----------------------------------------------------------------------------------------


def test_a_taken_port_is_reported_before_start(mosquitto: Mosquitto, tmp_path: Path) -> None:
    assert not port_is_free(mosquitto.port)
    clash = Mosquitto(tmp_path / "clash", mosquitto.port)
    with pytest.raises(PortInUseError, match=f"port {mosquitto.port} for mosquitto is already in use"):
        clash.start()
    assert clash.pid is None
    clash.stop()  # never started: a no-op


def test_a_taken_controller_port_is_reported_for_kafka(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        server = Kafka(tmp_path / "kafka", free_port(), taken)
        with pytest.raises(PortInUseError, match=f"port {taken} for kafka is already in use"):
            server.start()


class _Crashing(ManagedServer):
    name = "crasher"

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def _prepare(self) -> None:
        pass

    def _command(self) -> list[str]:
        return ["/bin/sh", "-c", "echo 'fatal: bad config line 3' >&2; exit 3"]

    def _probe(self) -> bool:
        return False


def test_a_server_exiting_before_ready_raises_with_its_log(tmp_path: Path) -> None:
    server = _Crashing(tmp_path / "crasher", free_port())
    server.start()
    with pytest.raises(ServerExitedError, match="(?s)status 3.*fatal: bad config line 3"):
        server.wait_ready(timeout=10)
    assert server.stop() == 3


def test_kill_ends_the_process_at_once(tmp_path: Path) -> None:
    server = InfluxDB(tmp_path / "influxdb", free_port())
    server.start()
    server.wait_ready()
    pid = server.pid
    server.kill()
    assert not server.is_running()
    assert server.pid == pid
    assert port_is_free(server.port)
