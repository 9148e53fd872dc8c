"""The local stack: real servers and our services as child processes, under one state directory.

Order: Mosquitto, Kafka (KRaft), InfluxDB; then topics and storage init; then the Spark job, the
bridge and the generator. Each part must be healthy before the next starts. On stop the order is
reversed, so the generator flushes its ledger and the bridge finishes its in-flight messages
while the servers behind them are still up.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from deploy.servers import (
    InfluxDB,
    Kafka,
    ManagedServer,
    Mosquitto,
    ServerError,
    create_topics,
    start_servers,
    stop_servers,
)
from deploy.servers.mqtt_security import ANONYMOUS_DEMO
from deploy.services.components import PIPELINE, STAGE_COLLECTOR, Endpoints
from deploy.services.pipeline import Pipeline
from deploy.services.process import Process
from deploy.stack.settings import StackSettings
from servicekit.contract import KAFKA_DLQ_TOPIC, KAFKA_TOPIC

STATE_FILE = "stack.json"


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
        # The stack's own settings for each service, on top of the endpoints (the shell's TSDEMO_* are kept:
        # they are the user's).
        self.service_settings: dict[str, dict[str, str]] = {
            "processing": {"TSDEMO_CHECKPOINT_DIR": str(self.state_dir / "checkpoints" / "processing")},
            "generator": {
                "TSDEMO_DEVICES": str(settings.devices),
                "TSDEMO_SITES": str(settings.sites),
                "TSDEMO_RATE": str(settings.rate),
                "TSDEMO_COUNT": str(settings.generator_count),
                "TSDEMO_LEDGER_PATH": str(self.state_dir / "ledger" / "generator.json"),
            },
        }
        self.pipeline = Pipeline(self.endpoints, self.state_dir / "logs", ready_timeout_s=settings.ready_timeout_s,
                                 inherit_settings=True)
        self.grafana_missing: str | None = None
        self.finished: set[str] = set()  # services that ended as asked: not restarted
        if settings.grafana:
            from dashboards.local import find_grafana, missing_message

            install = find_grafana()
            if install is None:
                self.grafana_missing = missing_message(settings.grafana_port)
            else:
                from deploy.servers.grafana import Grafana

                self.servers["grafana"] = Grafana(install, self.state_dir / "grafana", settings.grafana_port,
                                                  f"http://{host}:{settings.influx_port}", host=host)

    # -- endpoints for our services --------------------------------------------------------------
    @property
    def endpoints(self) -> Endpoints:
        s = self.settings
        return Endpoints(s.host, s.mqtt_port, f"{s.host}:{s.kafka_port}", f"http://{s.host}:{s.influx_port}")

    def service_env(self) -> dict[str, str]:
        return self.endpoints.env()

    @property
    def services(self) -> dict[str, Process]:
        return self.pipeline.services

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self, say: Any = print) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.grafana_missing:
            say(self.grafana_missing)
        start_servers(self.servers, self.settings.ready_timeout_s, say, started=self.write_state)
        create_topics(self.servers["kafka"].endpoint, {KAFKA_TOPIC: 4, KAFKA_DLQ_TOPIC: 1})
        say("topics ready; initialising storage ...")
        from storage.settings import InfluxSettings
        from storage.setup import init_storage

        for action in init_storage(InfluxSettings(influx_url=self.endpoints.influx_url)):
            say(f"  {action}")
        for name in PIPELINE:
            say(f"starting {name} (log: {self.pipeline.logs / f'{name}.log'}) ...")
            self._start_service(name)
            say(f"  {name} healthy")
        say("starting the stage collector (the pipeline dashboard's stage counters) ...")
        self._start_stage_collector()
        say(f"  {STAGE_COLLECTOR} healthy")

    def _start_stage_collector(self, wait: bool = True) -> None:
        # It reads the services' /metrics on the ports they have now: (re)started after any of them.
        if STAGE_COLLECTOR in self.services:
            self.services[STAGE_COLLECTOR].stop()
        self.service_settings[STAGE_COLLECTOR] = self.pipeline.stage_collector_env()
        if wait:
            self._start_service(STAGE_COLLECTOR)
        else:
            self.pipeline.start(STAGE_COLLECTOR, extra_env=self.service_settings[STAGE_COLLECTOR], wait=False)
            self.write_state()

    def _start_service(self, name: str) -> Process:
        # Not waited for inside start(): the state file names it (for `tsdemo status`) while it comes up.
        service = self.pipeline.start(name, extra_env=self.service_settings.get(name), wait=False)
        self.write_state()
        service.wait_healthy(self.settings.ready_timeout_s)
        return service

    def stop(self, say: Any = print) -> None:
        self.pipeline.stop(say)
        stop_servers(self.servers, say)
        self.state_path().unlink(missing_ok=True)
        say("stopped")

    def restart_dead_servers(self, say: Any = print) -> None:
        """Starts again, on its port and state, any server that is no longer running (killed, crashed):
        our services reconnect on their own, and their exactness does not depend on how the server went."""
        for name, server in self.servers.items():
            if server.is_running():
                continue
            say(f"{name} is not running; restarting it\n{server.log_tail(5)}")
            try:
                start_servers({name: server}, self.settings.ready_timeout_s, say, started=self.write_state)
            except ServerError as exc:  # tried again at the next tick
                say(f"could not restart {name}: {exc}")

    def restart_dead_services(self, say: Any = print) -> None:
        restarted = []
        for name, service in list(self.services.items()):
            if name in self.finished:
                continue
            if name == "generator" and self.settings.generator_count and service.returncode == 0:
                # A bounded run that ended as asked (--generator-count: "stop the generator after this
                # many readings"): started again, it sent the count again under the next boot, and again.
                say(f"generator finished its {self.settings.generator_count:,} readings; not restarting it")
                self.finished.add(name)
                continue
            if not service.running():
                say(f"{name} exited with status {service.returncode}; restarting it\n{service.tail(5)}")
                self.pipeline.start(name, extra_env=self.service_settings.get(name), wait=False)
                self.write_state()
                restarted.append(name)
        if any(name != STAGE_COLLECTOR for name in restarted):
            self._start_stage_collector(wait=False)

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
                "pid": service.pid, "kind": "service",
                "health_url": service.health_url, "endpoint": service.health_url.rsplit("/", 1)[0],
                "log": str(service.log_path),
            }
        state = {"supervisor_pid": os.getpid(), "host": self.settings.host, "components": components,
                 "influx_url": self.endpoints.influx_url}
        tmp = self.state_path().with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self.state_path())


def read_state(state_dir: Path) -> dict[str, Any] | None:
    path = state_dir / STATE_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())
