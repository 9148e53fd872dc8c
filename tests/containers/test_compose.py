"""deploy/compose/compose.yaml for real: `docker compose up` on the engine, with the project's compose
binary (.cache/tools/bin, from deploy/validate/install-tools.sh). Where the third-party images cannot be
pulled, deploy/compose/compose.standins.yaml replaces them with the stand-ins built by
deploy/images/containers.sh, and Grafana is left out (no stand-in; the log says so). The healthchecks,
start order, volumes and hardening run for real; a bounded generator run must then pass the compose
file's `verify` service: 0 lost, 0 double-counted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.local.servers import free_port
from deploy.validate import tools
from deploy.validate.compose import COMPOSE_DIR
from tests.containers.runtime import PINS

pytestmark = [pytest.mark.containers, pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

COUNT = 3000
SERVERS = ("MOSQUITTO_IMAGE", "KAFKA_IMAGE", "INFLUXDB_IMAGE")
STANDINS = COMPOSE_DIR / "compose.standins.yaml"


def say(line: str) -> None:
    print(f"compose: {line}", file=sys.stderr, flush=True)


@pytest.fixture(scope="module")
def compose(engine, tmp_path_factory) -> Iterator[tuple[list[str], dict[str, str], Path]]:
    files = ["-f", str(COMPOSE_DIR / "compose.yaml")]
    real = [PINS[k] for k in SERVERS if engine.images.list(name=PINS[k])]
    if len(real) < len(SERVERS):
        files += ["-f", str(STANDINS)]
        say(f"the pinned server images {[PINS[k] for k in SERVERS]} are not all here (no Docker Hub): using "
            f"the stand-ins of {STANDINS.name}; Grafana is left out (no stand-in), so are the grafana-api profile"
            " and Grafana's healthcheck")
    else:
        say("the real server images are here: Grafana is left out all the same (the default profile's other"
            " services do not need it)")
    workdir = tmp_path_factory.mktemp("compose")
    project = f"tsdemo-test-{workdir.name.replace('_', '-').lower()}"
    env = {**os.environ, "COMPOSE_PROJECT_NAME": project, "TSDEMO_GENERATOR_COUNT": str(COUNT),
           "TSDEMO_RATE": "250", "MQTT_HOST_PORT": str(free_port()), "GRAFANA_HOST_PORT": str(free_port())}
    cmd = [tools.find("docker-compose"), *files, "--profile", "verify"]
    yield cmd, env, workdir
    logs = subprocess.run([*cmd, "logs", "--no-color", "--timestamps"], env=env, capture_output=True, text=True)
    (workdir / "compose.log").write_text(logs.stdout + logs.stderr)
    subprocess.run([*cmd, "down", "--volumes", "--timeout", "90"], env=env, capture_output=True, text=True)


def run(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=COMPOSE_DIR)


def test_compose_up_runs_a_bounded_generator_run_that_verify_finds_exact(compose):
    cmd, env, workdir = compose
    # up waits for each depends_on condition (healthy, completed) before starting what depends on it, so it
    # returns once the generator's bounded run completed and verify started.
    up = run([*cmd, "up", "--detach", "--no-build", "--pull", "never", "--quiet-pull"], env, 600)
    assert up.returncode == 0, up.stderr[-3000:]
    wait = run([*cmd, "wait", "verify"], env, 400)
    out = run([*cmd, "logs", "--no-log-prefix", "--no-color", "verify"], env, 60).stdout
    ps = run([*cmd, "ps", "--all", "--format", "json"], env, 60).stdout
    states = [json.loads(line) for line in ps.splitlines() if line.strip()]
    summary = {s["Service"]: (s["State"], s.get("Health") or "", s.get("ExitCode")) for s in states}
    say(f"services: {summary}")
    report = json.loads(out[out.index("{"):])
    say(f"verify: {report}")
    assert report["lost"] == 0 and report["double_counted"] == 0, report
    assert report["stored"] == report["expected"] > COUNT, report
    assert wait.returncode == 0 and "exited with status code 0" in wait.stdout, (wait.stdout, wait.stderr)
    # The long-running services are up and healthy through their own healthchecks; the jobs exited 0.
    for service in ("mosquitto", "kafka", "influxdb", "ingest", "processing"):
        assert summary[service][:2] == ("running", "healthy"), (service, summary[service])
    for job in ("kafka-init", "storage-init", "generator", "verify"):
        assert summary[job][0] == "exited" and summary[job][2] == 0, (job, summary[job])
    # `docker compose stop`: each service within its stop_grace_period, with exit 0 (a SIGKILL would be 137).
    stop = run([*cmd, "stop"], env, 300)
    assert stop.returncode == 0, stop.stderr[-2000:]
    ps = run([*cmd, "ps", "--all", "--format", "json"], env, 60).stdout
    codes = {s["Service"]: s.get("ExitCode") for s in map(json.loads, filter(str.strip, ps.splitlines()))}
    say(f"exit codes after compose stop: {codes}")
    for service in ("ingest", "processing", "mosquitto", "kafka", "influxdb"):
        assert codes[service] == 0, (service, codes)
