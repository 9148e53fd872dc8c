"""Mosquitto 2 as a child process, running the deployed broker configuration with the users and ACLs its
security gives, and a real MQTT CONNECT as its readiness check."""

from __future__ import annotations

import contextlib
import os
import pwd
import socket
from pathlib import Path

from deploy.servers.base import ManagedServer, client_host
from deploy.servers.mqtt_security import ANONYMOUS_DEMO, MqttSecurity, PreparedAuth, broker_config

MOSQUITTO_BIN = "/usr/sbin/mosquitto"


def mqtt_connect_ok(host: str, port: int, timeout: float = 2.0, *, any_answer: bool = False) -> bool:
    """A real MQTT 3.1.1 CONNECT; True when the broker answers CONNACK "accepted" (or, with
    ``any_answer``, any CONNACK: a broker with auth on refuses the anonymous probe, but it answers)."""
    client_id = f"tsdemo-probe-{os.getpid()}".encode()
    # protocol name "MQTT", level 4, flags: clean session, keep-alive 10s; payload: the client id
    body = b"\x00\x04MQTT\x04\x02\x00\x0a" + len(client_id).to_bytes(2, "big") + client_id
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(bytes([0x10, len(body)]) + body)
        reply = b""
        while len(reply) < 4:
            chunk = sock.recv(4 - len(reply))
            if not chunk:
                return False
            reply += chunk
        with contextlib.suppress(OSError):
            sock.sendall(b"\xe0\x00")  # DISCONNECT, so the broker logs a clean goodbye
    return reply == b"\x20\x02\x00\x00" or (any_answer and reply[:2] == b"\x20\x02")


class Mosquitto(ManagedServer):
    """Mosquitto 2 with persistence, so queued QoS 1 messages of persistent sessions survive a restart.

    It runs the deployed configuration (deploy/compose/mosquitto/mosquitto.conf, paths mapped) with the users
    and ACLs ``security`` gives; ``ANONYMOUS_DEMO``, the named opt-in of the one-machine demo and most tests,
    lets clients in without credentials."""

    name = "mosquitto"
    ready_timeout = 15.0

    def __init__(self, state_dir: Path, port: int, host: str = "127.0.0.1", *,
                 security: MqttSecurity | PreparedAuth = ANONYMOUS_DEMO) -> None:
        super().__init__(state_dir, port, host)
        self.security = security
        self.config_path = self.state_dir / "mosquitto.conf"
        self.data_dir = self.state_dir / "data"
        self.log_path = self.state_dir / "mosquitto.log"

    @property
    def endpoint(self) -> str:
        return f"mqtt://{client_host(self.host)}:{self.port}"

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        auth_dir = self.security.prepare(self.state_dir, self.host)
        self.config_path.write_text(broker_config(
            port=self.port, host=self.host, data_dir=self.data_dir, auth_dir=auth_dir, log_path=self.log_path,
            user=pwd.getpwuid(os.geteuid()).pw_name))

    def _command(self) -> list[str]:
        return [MOSQUITTO_BIN, "-c", str(self.config_path)]

    def _probe(self) -> bool:
        # With credentials required, the broker refusing our anonymous probe still shows it serves clients.
        return mqtt_connect_ok(client_host(self.host), self.port, any_answer=not self.security.anonymous)


