"""Mosquitto locked down: passwords, ACLs (a device publishes only to its own topic, the bridge only
subscribes) and TLS, against the real broker."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from deploy.local.mqtt_security import MqttSecurity, MqttTls
from deploy.local.servers import Mosquitto, free_port

pytestmark = pytest.mark.integration

USERS = {"tsdemo-bridge": "b-secret", "tsdemo-fleet": "f-secret", "dev-7": "d7-secret"}


def client(port: int, user: str | None, password: str | None, tls_ca: Path | None = None) -> tuple[mqtt.Client, int]:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{user}-{free_port()}", protocol=mqtt.MQTTv5)
    if user:
        c.username_pw_set(user, password)
    if tls_ca:
        c.tls_set(ca_certs=str(tls_ca))
    done = threading.Event()
    result = {}

    def on_connect(_c, _u, _f, reason_code, _p):  # noqa: ANN001
        result["rc"] = reason_code.value
        done.set()

    c.on_connect = on_connect
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert done.wait(10)
    return c, result["rc"]


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    broker = Mosquitto(tmp_path_factory.mktemp("secure-mqtt"), free_port(), security=MqttSecurity(USERS))
    broker.start()
    broker.wait_ready()
    yield broker
    broker.stop()


def test_anonymous_and_wrong_passwords_are_refused(secured):
    for user, password in ((None, None), ("dev-7", "wrong"), ("nobody", "x")):
        c, rc = client(secured.port, user, password)
        c.loop_stop()
        assert rc != 0, user


def test_a_device_publishes_only_to_its_own_topic_and_the_bridge_only_reads(secured):
    got: list[str] = []
    bridge, rc = client(secured.port, "tsdemo-bridge", USERS["tsdemo-bridge"])
    assert rc == 0
    subscribed = threading.Event()
    bridge.on_message = lambda _c, _u, m: got.append(m.topic)
    bridge.on_subscribe = lambda *a: subscribed.set()
    bridge.subscribe("$share/g/sensors/#", qos=1)
    assert subscribed.wait(10)
    device, rc = client(secured.port, "dev-7", USERS["dev-7"])
    assert rc == 0
    for topic in ("sensors/lab/dev-7", "sensors/lab/dev-8"):
        device.publish(topic, b"{}", qos=1).wait_for_publish(10)
    bridge.publish("sensors/lab/dev-7", b"from-bridge", qos=1).wait_for_publish(10)
    fleet, rc = client(secured.port, "tsdemo-fleet", USERS["tsdemo-fleet"])
    fleet.publish("sensors/lab/dev-9", b"{}", qos=1).wait_for_publish(10)
    fleet.publish("other/topic", b"{}", qos=1).wait_for_publish(10)
    import time

    time.sleep(1.0)
    for c in (bridge, device, fleet):
        c.disconnect()
        c.loop_stop()
    assert sorted(got) == ["sensors/lab/dev-7", "sensors/lab/dev-9"]


def test_tls_listener(tmp_path):
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp_path)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=tsdemo-test-ca",
            "-keyout", "ca.key", "-out", "ca.crt")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
            "-out", "server.csr")
    (tmp_path / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.ext", "-out", "server.crt")
    tls = MqttTls(tmp_path / "ca.crt", tmp_path / "server.crt", tmp_path / "server.key")
    broker = Mosquitto(tmp_path / "broker", free_port(), security=MqttSecurity(USERS, tls=tls))
    broker.start()
    try:
        broker.wait_ready()
        c, rc = client(broker.port, "dev-7", USERS["dev-7"], tls_ca=tmp_path / "ca.crt")
        c.disconnect()
        c.loop_stop()
        assert rc == 0
    finally:
        broker.stop()
