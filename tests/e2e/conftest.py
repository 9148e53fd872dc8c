"""A running pipeline for end-to-end tests: our services as subprocesses against the session's servers,
started exactly as their containers run them (``tsdemo <command>`` plus ``TSDEMO_*`` variables)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from deploy.servers import Mosquitto, create_topics, free_port, stop_process
from servicekit.contract import KAFKA_DLQ_TOPIC, KAFKA_TOPIC


@dataclass
class ServiceProc:
    name: str
    proc: subprocess.Popen
    log: Path
    health_port: int

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        return stop_process(self.proc, timeout, sig, self.name)


@dataclass
class Pipeline:
    env: dict[str, str]
    workdir: Path
    mosquitto: Mosquitto
    services: dict[str, ServiceProc] = field(default_factory=dict)

    def start(self, name: str, command: str | list[str], extra_env: dict[str, str] | None = None,
              wait_healthy: float = 240) -> ServiceProc:
        log = self.workdir / f"{name}.log"
        port = free_port()
        env = {**os.environ, **self.env, **(extra_env or {}), "TSDEMO_HEALTH_PORT": str(port)}
        out = open(log, "ab")  # noqa: SIM115 (the child keeps it)
        args = [command] if isinstance(command, str) else command
        proc = subprocess.Popen([sys.executable, "-m", "deploy.cli", *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True)
        svc = ServiceProc(name, proc, log, port)
        self.services[name] = svc
        deadline = time.monotonic() + wait_healthy
        while wait_healthy and not svc.healthy():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}):\n{svc.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not healthy after {wait_healthy}s:\n{svc.tail()}")
            time.sleep(0.5)
        return svc

    def run(self, command: list[str], extra_env: dict[str, str] | None = None, timeout: float = 300,
            check: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, **self.env, **(extra_env or {})}
        result = subprocess.run([sys.executable, "-m", "deploy.cli", *command], env=env, cwd=self.workdir,
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"tsdemo {' '.join(command)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def stop_all(self) -> None:
        for svc in reversed(list(self.services.values())):
            svc.stop()


@pytest.fixture(scope="module")
def pipeline_extra_env() -> dict[str, str]:
    """Extra TSDEMO_* settings for the module's pipeline; a test module overrides this fixture."""
    return {}


@pytest.fixture(scope="module")
def pipeline(kafka, influxdb, tmp_path_factory, pipeline_extra_env) -> Iterator[Pipeline]:
    """Processing and the bridge running; storage initialised; topics created. Each test module gets
    its own Mosquitto, InfluxDB database and Kafka topics so modules do not see each other's readings."""
    workdir = tmp_path_factory.mktemp("pipeline")
    mosquitto = Mosquitto(workdir / "mosquitto", free_port())
    tag = workdir.name.replace("-", "_")
    topic, dlq = f"{KAFKA_TOPIC}-{tag}", f"{KAFKA_DLQ_TOPIC}-{tag}"
    create_topics(kafka.endpoint, {topic: 4, dlq: 1})
    env = {
        "TSDEMO_MQTT_HOST": mosquitto.host, "TSDEMO_MQTT_PORT": str(mosquitto.port),
        "TSDEMO_KAFKA_BOOTSTRAP": kafka.endpoint, "TSDEMO_KAFKA_TOPIC": topic, "TSDEMO_KAFKA_DLQ_TOPIC": dlq,
        "TSDEMO_INFLUX_URL": influxdb.url if hasattr(influxdb, "url") else influxdb.endpoint,
        "TSDEMO_INFLUX_DATABASE": f"iot_{tag}",
        "TSDEMO_CHECKPOINT_DIR": str(workdir / "checkpoints"),
        "TSDEMO_SHUFFLE_PARTITIONS": "2", "TSDEMO_TRIGGER": "1 second", "TSDEMO_SPARK_MASTER": "local[2]",
        **pipeline_extra_env,
    }
    p = Pipeline(env, workdir, mosquitto)
    try:
        mosquitto.start()
        mosquitto.wait_ready()
        p.run(["storage", "init"])
        p.start("processing", "process")
        p.start("ingest", "ingest")
        yield p
    finally:
        p.stop_all()
        mosquitto.stop()
