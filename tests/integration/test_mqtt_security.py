"""Mosquitto locked down as compose and Kubernetes deploy it (deploy/compose/mosquitto/mosquitto.conf and the
files mqtt-auth.sh writes), against the real broker: anonymous clients and wrong passwords are refused, a
device publishes only to its own topic, the bridge only reads, the fleet only writes under sensors/, and the
optional TLS listener serves the same users. Passwords are random per run: none is committed."""

from __future__ import annotations

import secrets
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from deploy.servers import free_port
from deploy.servers.mqtt_security import DEPLOYED_CONFIG, MqttSecurity, MqttTls, run_auth_script

BRIDGE, FLEET, DEVICE = (secrets.token_urlsafe(16) for _ in range(3))
SECURITY = MqttSecurity(bridge_password=BRIDGE, fleet_password=FLEET, devices={"dev-7": DEVICE})


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
def secured(module_mosquitto_factory):
    return module_mosquitto_factory("secure-mqtt", security=SECURITY)


def test_the_broker_runs_the_deployed_config_with_only_container_paths_mapped(secured):
    deployed = [ln for ln in DEPLOYED_CONFIG.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    local = [ln for ln in secured.config_path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    mapped = {"listener", "persistence_location", "log_dest", "password_file", "acl_file", "include_dir"}
    assert [ln for ln in local if ln.split()[0] not in mapped | {"user"}] == \
        [ln for ln in deployed if ln.split()[0] not in mapped]
    assert "allow_anonymous false" in local
    auth = secured.state_dir / "auth"
    assert f"password_file {auth}/passwd" in local and f"acl_file {auth}/acl" in local
    # Hashed: no password in clear reaches the broker's files.
    text = (auth / "passwd").read_text()
    assert all(p not in text for p in (BRIDGE, FLEET, DEVICE)) and text.count("$7$") == 4


def test_anonymous_and_wrong_passwords_are_refused(secured):
    for user, password in ((None, None), ("dev-7", "wrong"), ("nobody", "x"), ("tsdemo-bridge", FLEET)):
        c, rc = client(secured.port, user, password)
        c.loop_stop()
        assert rc != 0, user


def test_a_device_publishes_only_to_its_own_topic_the_bridge_only_reads_the_fleet_only_writes(secured):
    got: list[str] = []
    bridge, rc = client(secured.port, "tsdemo-bridge", BRIDGE)
    assert rc == 0
    subscribed = threading.Event()
    bridge.on_message = lambda _c, _u, m: got.append(m.topic)
    bridge.on_subscribe = lambda *a: subscribed.set()
    bridge.subscribe("$share/g/sensors/#", qos=1)
    assert subscribed.wait(10)
    device, rc = client(secured.port, "dev-7", DEVICE)
    assert rc == 0
    # A device may not read what others publish either.
    peeked: list[str] = []
    device.on_message = lambda _c, _u, m: peeked.append(m.topic)
    device.subscribe("sensors/#", qos=1)
    for topic in ("sensors/lab/dev-7", "sensors/lab/dev-8", "sensors/other/dev-7/x"):
        device.publish(topic, b"{}", qos=1).wait_for_publish(10)
    bridge.publish("sensors/lab/dev-7", b"from-bridge", qos=1).wait_for_publish(10)
    fleet, rc = client(secured.port, "tsdemo-fleet", FLEET)
    assert rc == 0
    fleet.publish("sensors/lab/dev-9", b"{}", qos=1).wait_for_publish(10)
    fleet.publish("other/topic", b"{}", qos=1).wait_for_publish(10)
    time.sleep(1.0)
    for c in (bridge, device, fleet):
        c.disconnect()
        c.loop_stop()
    assert sorted(got) == ["sensors/lab/dev-7", "sensors/lab/dev-9"]
    assert peeked == []


def test_the_health_user_can_check_the_broker_with_credentials_kept_off_the_command_line(secured):
    done = subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(secured.port), "-t", "$SYS/broker/version",
                           "-C", "1", "-W", "5"], env={"XDG_CONFIG_HOME": str(secured.state_dir / "auth/health")},
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 0 and "mosquitto version" in done.stdout, done.stderr


@pytest.mark.parametrize("bad, message", [
    ({"MQTT_BRIDGE_PASSWORD_FILE": "CHANGE_ME"}, "placeholder"),
    ({"MQTT_BRIDGE_PASSWORD_FILE": "short"}, "shorter than 12"),
    ({"MQTT_BRIDGE_PASSWORD_FILE": None}, "no password file for 'tsdemo-bridge'"),
    ({"MQTT_DEVICES_FILE": "tsdemo-fleet:" + "x" * 20}, "is a service's username"),
    ({"MQTT_DEVICES_FILE": "dev/1:" + "x" * 20}, "bad MQTT username"),
], ids=["placeholder", "short", "missing", "device-as-service", "bad-username"])
def test_the_auth_script_refuses_placeholders_and_bad_input(tmp_path: Path, bad: dict, message: str):
    env = {"MQTT_AUTH_DIR": str(tmp_path / "auth")}
    for name, text in {"MQTT_BRIDGE_PASSWORD_FILE": BRIDGE, "MQTT_FLEET_PASSWORD_FILE": FLEET, **bad}.items():
        if text is not None:
            (tmp_path / name).write_text(text + "\n")
            env[name] = str(tmp_path / name)
    with pytest.raises(RuntimeError, match=message):
        run_auth_script(env)
    assert not (tmp_path / "auth" / "passwd").exists()


def make_pki(d: Path) -> None:
    """A throwaway CA and a server certificate for 127.0.0.1, under cert-manager's file names."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    d.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=tsdemo-test-ca",
            "-keyout", "ca.key", "-out", "ca.crt")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "tls.key", "-out", "tls.csr")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
            "-extfile", "san.ext", "-out", "tls.crt")


def test_tls_listener_serves_the_same_users(tmp_path, mosquitto_factory):
    make_pki(tmp_path / "pki")
    tls = MqttTls(tmp_path / "pki", free_port())
    mosquitto_factory(security=MqttSecurity(bridge_password=BRIDGE, fleet_password=FLEET, tls=tls))
    c, rc = client(tls.port, "tsdemo-fleet", FLEET, tls_ca=tmp_path / "pki/ca.crt")
    c.disconnect()
    c.loop_stop()
    assert rc == 0
    c, rc = client(tls.port, None, None, tls_ca=tmp_path / "pki/ca.crt")
    c.loop_stop()
    assert rc != 0

