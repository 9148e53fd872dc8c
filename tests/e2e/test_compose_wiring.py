"""deploy/compose wired end to end without a Docker engine: our services run natively with exactly the
argv and environment the compose file (plus their image's ENTRYPOINT, CMD and ENV) gives them, in the
compose file's start order. Only what a container would see differently is mapped: the compose hostnames
to the test's servers, the health port to a free one, container paths (volumes, /opt/venv) to local ones.
Mosquitto runs with deploy/compose/mosquitto/mosquitto.conf itself (listener and paths mapped), locked down
with the password and ACL files the compose file's own credentials-init step writes (run natively too), and
the bridge and the generator sign in with the passwords it hands them.

Then a bounded generator run must be verified by the compose file's `verify` service: zero lost, zero
double counted.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.servers import Mosquitto, create_topics, free_port
from deploy.servers.mqtt_security import PreparedAuth
from deploy.services.process import Process, spawn
from tests.support.validate import compose as C

REPO = C.REPO
# Started by the test's fixtures instead of from the compose file (they are not our images).
SERVERS = {"credentials-init", "mqtt-tls-init", "mosquitto", "kafka", "kafka-init", "influxdb", "grafana"}
# Default-profile services plus the check; grafana-api needs a Grafana, which this machine does not run.
RUN = ["storage-init", "processing", "ingest", "generator", "verify"]
COUNT = 2000


def run_credentials_init(config: dict, workdir: Path) -> Path:
    """The compose file's credentials-init, natively: its script (bind-mounted from deploy/compose) with its
    environment, each volume a directory under ``workdir/volumes`` as Mapper maps them. Returns the broker's
    auth directory."""
    svc = config["services"]["credentials-init"]
    paths: dict[str, Path] = {}
    for vol in svc["volumes"]:
        source, target = vol.split(":")[:2]
        paths[target] = (C.COMPOSE_DIR / source).resolve() if source.startswith(".") else workdir / "volumes" / source

    def local(value: str) -> str:
        for target, path in sorted(paths.items(), key=lambda p: -len(p[0])):
            if value == target or value.startswith(target + "/"):
                return str(path) + value[len(target):]
        return value

    env = {**os.environ, **{k: local(str(v)) for k, v in svc["environment"].items()}}
    assert svc["entrypoint"] == ["/bin/sh"]
    done = subprocess.run(["sh", *map(local, svc["command"])], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return Path(local("/mosquitto/auth"))


def start_order(config: dict, names: list[str]) -> list[str]:
    """``names`` ordered so each comes after the services it depends on (compose's own start order)."""
    done: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"dependency cycle: {' -> '.join(path + (name,))}"
        if name in done or name in SERVERS:
            return
        for dep in config["services"][name].get("depends_on", {}):
            visit(dep, path + (name,))
        done.append(name)

    for name in names:
        visit(name, ())
    return [n for n in done if n in names]


class Mapper:
    """Translates a container's view (hostnames, ports, paths) to this machine's."""

    def __init__(self, workdir: Path, mosquitto: Mosquitto, kafka_endpoint: str, influx_url: str) -> None:
        import pyspark

        self.workdir = workdir
        venv_bin = Path(sys.executable).parent
        self.values = {  # whole values of variables
            "TSDEMO_MQTT_HOST": {"mosquitto": mosquitto.host},
            "TSDEMO_MQTT_PORT": {"1883": str(mosquitto.port)},
        }
        self.strings = {  # anywhere in a value or an argument
            "kafka:9092": kafka_endpoint,
            "http://influxdb:8086": influx_url,
            "/opt/venv/bin/python": sys.executable,
            "/opt/venv/lib/python3.11/site-packages/pyspark": str(Path(pyspark.__file__).parent),
            # The connector cache the image bakes; `make setup` fills the same one here.
            "/opt/tsdemo/cache": os.environ.get("TSDEMO_CACHE_DIR") or str(REPO / ".cache"),
            "/opt/tsdemo/entrypoint.sh": str(REPO / "deploy/images/processing/entrypoint.sh"),
        }
        self.path = f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"

    def run(self, svc: C.ServiceRun) -> tuple[list[str], dict[str, str], Path, int | None]:
        home = self.workdir / svc.name  # the image's WORKDIR, /var/lib/tsdemo
        home.mkdir(exist_ok=True)
        strings = dict(self.strings)
        for target, volume in sorted(svc.mounts.items(), key=lambda m: -len(m[0])):
            local = self.workdir / "volumes" / volume
            local.mkdir(parents=True, exist_ok=True)
            strings[target] = str(local)
        strings["/var/lib/tsdemo"] = str(home)

        def fix(value: str) -> str:
            for old, new in strings.items():
                value = value.replace(old, new)
            return value

        env = {}
        health_port = None
        for key, value in svc.env.items():
            if key in ("PATH", "JAVA_HOME"):  # this machine's own (JAVA_HOME of the image's JRE)
                continue
            if key == "TSDEMO_HEALTH_PORT":
                health_port = free_port()
                value = str(health_port)
            value = self.values.get(key, {}).get(value, value)
            env[key] = fix(value)
        argv = [fix(a) for a in svc.argv]
        leftovers = [f"{k}={v}" for k, v in env.items() if re.search(r"/opt/|/var/lib/tsdemo|\b(mosquitto|kafka|"
                                                                  r"influxdb|grafana):\d", v)]
        leftovers += [a for a in argv if a.startswith(("/opt/", "/var/lib/tsdemo"))]
        assert not leftovers, f"{svc.name}: container-only values this test does not map: {leftovers}"
        if argv[0] == "tsdemo":
            argv = [sys.executable, "-m", "deploy.cli", *argv[1:]]
        # No TSDEMO_* from the developer's shell: the service sees only what compose gives it.
        base = {k: v for k, v in os.environ.items() if not k.startswith("TSDEMO_")}
        return argv, {**base, **env, "PATH": self.path}, home, health_port


def tail(log: Path, n: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:]) if log.exists() else ""


@pytest.fixture(scope="module")
def wiring(kafka, influxdb, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("compose-wiring")
    tag = workdir.name.replace("-", "_")
    # Overridden the way a shell overrides .env: a database and topics of this test's own.
    overrides = {
        "TSDEMO_KAFKA_TOPIC": f"sensor-readings-{tag}",
        "TSDEMO_KAFKA_DLQ_TOPIC": f"sensor-readings-dlq-{tag}",
        "TSDEMO_INFLUX_DATABASE": f"iot_{tag}",
        "TSDEMO_GENERATOR_COUNT": str(COUNT),
        "TSDEMO_RATE": "250",
    }
    config = C.load(overrides)
    # What the broker mounts at /mosquitto/auth is the volume credentials-init wrote.
    mosquitto = Mosquitto(workdir / "mosquitto", free_port(),
                          security=PreparedAuth(run_credentials_init(config, workdir)))
    mapper = Mapper(workdir, mosquitto, kafka.endpoint, influxdb.endpoint)
    running: list[Process] = []
    results: dict[str, tuple[int, Path]] = {}
    try:
        mosquitto.start()
        mosquitto.wait_ready()
        # kafka-init's work, from its own TOPICS setting (name:partitions ...).
        topics = config["services"]["kafka-init"]["environment"]["TOPICS"].split()
        create_topics(kafka.endpoint, {t.split(":")[0]: int(t.split(":")[1]) for t in topics})
        for name in start_order(config, RUN):
            svc = C.service_run(config, name)
            argv, env, home, port = mapper.run(svc)
            log, stdout = workdir / f"{name}.log", workdir / f"{name}.out"
            with open(stdout, "ab") as out:
                child = spawn(name, argv, log, env, stdout=out, cwd=home, health_port=port)
            dependents = [s for s in RUN if name in config["services"][s].get("depends_on", {})]
            conditions = {config["services"][s]["depends_on"][name]["condition"] for s in dependents}
            if "service_completed_successfully" in conditions or not dependents and port is None:
                code = child.proc.wait(timeout=600)
                results[name] = (code, stdout)
                assert code == 0, f"{name} exited {code}:\n{tail(stdout)}\n{tail(log)}"
                continue
            running.append(child)
            if port is not None:
                child.wait_healthy(300)
        yield config, results, workdir
    finally:
        for child in reversed(running):
            child.stop(90)
        mosquitto.stop()


def test_compose_start_order_puts_each_service_after_what_it_needs():
    config = C.load()
    order = start_order(config, RUN)
    assert order.index("storage-init") < order.index("processing")
    assert order.index("ingest") < order.index("generator") < order.index("verify")


def test_a_bounded_generator_run_is_verified_exactly_through_the_compose_wiring(wiring):
    config, results, workdir = wiring
    code, stdout = results["verify"]
    report = json.loads(stdout.read_text())
    assert report["lost"] == 0 and report["double_counted"] == 0, report
    assert report["expected"] == report["stored"] > COUNT, report
    ledger = json.loads((workdir / "volumes" / "ledger" / "generator.json").read_text())
    assert ledger["published"] == COUNT and ledger["complete"], ledger
    assert code == 0
