"""The local stack: real servers and our services as child processes, under one state directory.

Order: Mosquitto, Kafka (KRaft), InfluxDB; then topics and storage init; then the Spark job, the
bridge and the generator. Each part must be healthy before the next starts. On stop the order is
reversed, so the generator flushes its ledger and the bridge finishes its in-flight messages
while the servers behind them are still up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.local.mqtt_security import ANONYMOUS_DEMO
from deploy.local.servers import (
    InfluxDB,
    Kafka,
    ManagedServer,
    Mosquitto,
    create_topics,
    free_port,
    stop_process,
)
from deploy.local.settings import StackSettings
from servicekit.contract import KAFKA_DLQ_TOPIC, KAFKA_TOPIC

STATE_FILE = "stack.json"
SERVER_NAMES = ("mqtt", "kafka", "influxdb", "grafana")
SERVICE_NAMES = ("processing", "ingest", "generator")


@dataclass
class Service:
    """One of our services, run exactly as its container would: ``tsdemo <command>`` plus environment."""

    name: str
    command: str
    env: dict[str, str]
    log_path: Path
    health_port: int
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Picked now, not when the stack was planned: on a busy machine the port chosen for the generator was
        # taken by the time it started, minutes later (the Spark JVM binds ports of its own), and up failed.
        self.health_port = free_port()
        env = {**os.environ, **self.env, "TSDEMO_HEALTH_PORT": str(self.health_port)}
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "deploy.cli", self.command],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}/healthz"

    def healthy(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and http_ok(self.health_url)

    def stop(self, timeout: float = 60.0) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout, name=self.name)


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (our own local URL)
            return 200 <= resp.status < 300
    except OSError:
        return False


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class LocalStack:
    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.state_dir = settings.state_dir.resolve()
        host = settings.host
        self.servers: dict[str, ManagedServer] = {
            # The one-machine demo's named opt-in: MQTT clients need no credentials here (compose and
            # Kubernetes lock the same broker configuration down).
            "mqtt": Mosquitto(self.state_dir / "mosquitto", settings.mqtt_port, host=host, security=ANONYMOUS_DEMO),
            "kafka": Kafka(self.state_dir / "kafka", settings.kafka_port, settings.kafka_controller_port, host=host),
            "influxdb": InfluxDB(self.state_dir / "influxdb", settings.influx_port, host=host),
        }
        self.services: dict[str, Service] = {}
        self.grafana_missing: str | None = None
        if settings.grafana:
            from dashboards.local import find_grafana, missing_message

            install = find_grafana()
            if install is None:
                self.grafana_missing = missing_message(settings.grafana_port)
            else:
                from deploy.local.grafana import Grafana

                self.servers["grafana"] = Grafana(install, self.state_dir / "grafana", settings.grafana_port,
                                                  f"http://{host}:{settings.influx_port}", host=host)

    # -- endpoints for our services --------------------------------------------------------------
    def service_env(self) -> dict[str, str]:
        s = self.settings
        return {
            "TSDEMO_MQTT_HOST": s.host,
            "TSDEMO_MQTT_PORT": str(s.mqtt_port),
            "TSDEMO_KAFKA_BOOTSTRAP": f"{s.host}:{s.kafka_port}",
            "TSDEMO_INFLUX_URL": f"http://{s.host}:{s.influx_port}",
        }

    def _make_services(self) -> None:
        logs = self.state_dir / "logs"
        base = self.service_env()
        self.services = {
            "processing": Service("processing", "process", {
                **base, "TSDEMO_CHECKPOINT_DIR": str(self.state_dir / "checkpoints" / "processing"),
            }, logs / "processing.log", 0),
            "ingest": Service("ingest", "ingest", base, logs / "ingest.log", 0),
            "generator": Service("generator", "generate", {
                **base,
                "TSDEMO_DEVICES": str(self.settings.devices),
                "TSDEMO_SITES": str(self.settings.sites),
                "TSDEMO_RATE": str(self.settings.rate),
                "TSDEMO_COUNT": str(self.settings.generator_count),
                "TSDEMO_LEDGER_PATH": str(self.state_dir / "ledger" / "generator.json"),
            }, logs / "generator.log", 0),
        }

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self, say: Any = print) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.grafana_missing:
            say(self.grafana_missing)
        for name, server in self.servers.items():
            say(f"starting {name} on {server.endpoint} ...")
            server.start()
            self.write_state()
            server.wait_ready(self.settings.ready_timeout_s)
            say(f"  {name} ready")
        create_topics(self.servers["kafka"].endpoint, {KAFKA_TOPIC: 4, KAFKA_DLQ_TOPIC: 1})
        say("topics ready; initialising storage ...")
        from storage.settings import InfluxSettings
        from storage.setup import init_storage

        for action in init_storage(InfluxSettings(influx_url=self.service_env()["TSDEMO_INFLUX_URL"])):
            say(f"  {action}")
        self._make_services()
        for name in SERVICE_NAMES:
            service = self.services[name]
            say(f"starting {name} (log: {service.log_path}) ...")
            service.start()
            self.write_state()
            self._wait_service(service)
            say(f"  {name} healthy")

    def _wait_service(self, service: Service) -> None:
        deadline = time.monotonic() + self.settings.ready_timeout_s
        while time.monotonic() < deadline:
            if service.proc is not None and service.proc.poll() is not None:
                raise RuntimeError(
                    f"{service.name} exited with status {service.proc.returncode}:\n{_log_tail(service.log_path)}"
                )
            if service.healthy():
                return
            time.sleep(0.5)
        raise RuntimeError(f"{service.name} not healthy after {self.settings.ready_timeout_s:.0f}s:\n"
                           f"{_log_tail(service.log_path)}")

    def stop(self, say: Any = print) -> None:
        for name in reversed(SERVICE_NAMES):
            if name in self.services:
                say(f"stopping {name} ...")
                self.services[name].stop()
        for name in reversed(SERVER_NAMES):
            if name in self.servers:
                say(f"stopping {name} ...")
                self.servers[name].stop()
        self.state_path().unlink(missing_ok=True)
        say("stopped")

    def restart_dead_services(self, say: Any = print) -> None:
        for service in self.services.values():
            if service.proc is not None and service.proc.poll() is not None:
                say(f"{service.name} exited with status {service.proc.returncode}; restarting it\n"
                    f"{_log_tail(service.log_path, 5)}")
                service.start()
                self.write_state()

    # -- state file read by status and down ------------------------------------------------------
    def state_path(self) -> Path:
        return self.state_dir / STATE_FILE

    def write_state(self) -> None:
        components: dict[str, dict[str, Any]] = {}
        for name, server in self.servers.items():
            components[name] = {"endpoint": server.endpoint, "pid": server.pid, "kind": "server",
                                "port": server.port}
        for name, service in self.services.items():
            components[name] = {
                "pid": service.proc.pid if service.proc else None, "kind": "service",
                "health_url": service.health_url, "endpoint": service.health_url.rsplit("/", 1)[0],
                "log": str(service.log_path),
            }
        state = {"supervisor_pid": os.getpid(), "host": self.settings.host, "components": components,
                 "influx_url": self.service_env()["TSDEMO_INFLUX_URL"]}
        tmp = self.state_path().with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self.state_path())


def read_state(state_dir: Path) -> dict[str, Any] | None:
    path = state_dir / STATE_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())
