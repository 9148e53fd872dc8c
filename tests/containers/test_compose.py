"""deploy/compose/compose.yaml for real: `docker compose up` on the engine, with the project's compose
binary (.cache/tools/bin, from tests/support/validate/install-tools.sh). Where the third-party images cannot be
pulled, deploy/compose/compose.standins.yaml replaces them with the stand-ins built by
deploy/images/containers.sh, and Grafana is left out (no stand-in; the log says so). The healthchecks,
start order, volumes and hardening run for real; a bounded generator run must then pass the compose
file's `verify` service (run as deploy/README.md runs it): 0 lost, 0 double-counted. The broker is the
compose file's locked-down one: credentials-init writes the password file and each service's own password,
and an anonymous client is refused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.servers import free_port
from tests.containers.runtime import PINS
from tests.support.validate import tools
from tests.support.validate.compose import COMPOSE_DIR, load

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # the whole pipeline, in containers

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
    # The healthchecks run as written, with more patience: on this 2-core machine, loaded by other test runs
    # to a load average of 30, one check of Kafka's (a JVM start) took longer than its 15 s timeout and
    # `up` gave up on a broker that was starting fine.
    patience = workdir / "compose.patience.yaml"
    patience.write_text(
        "services:\n"
        + "".join(f"  {name}:\n    healthcheck: {{timeout: 60s, retries: 30, start_period: 120s}}\n"
                  for name in ("mosquitto", "kafka", "influxdb", "ingest", "processing"))
    )
    files += ["-f", str(patience)]
    project = f"tsdemo-test-{workdir.name.replace('_', '-').lower()}"
    env = {**os.environ, "COMPOSE_PROJECT_NAME": project, "TSDEMO_GENERATOR_COUNT": str(COUNT),
           "TSDEMO_RATE": "250", "MQTT_HOST_PORT": str(free_port()), "GRAFANA_HOST_PORT": str(free_port())}
    cmd = [tools.find("docker-compose"), *files]
    yield cmd, env, workdir
    logs = subprocess.run([*cmd, "logs", "--no-color", "--timestamps"], env=env, capture_output=True, text=True)
    (workdir / "compose.log").write_text(logs.stdout + logs.stderr)
    say(f"logs of every service: {workdir / 'compose.log'}")
    subprocess.run([*cmd, "--profile", "verify", "down", "--volumes", "--timeout", "90"], env=env,
                   capture_output=True, text=True)


def run(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=COMPOSE_DIR)


def services(cmd: list[str], env: dict[str, str]) -> dict[str, tuple[str, str, int | None]]:
    """Each service's (state, health, exit code), from `docker compose ps`."""
    ps = run([*cmd, "ps", "--all", "--format", "json"], env, 60).stdout
    states = [json.loads(line) for line in ps.splitlines() if line.strip()]
    return {s["Service"]: (s["State"], s.get("Health") or "", s.get("ExitCode")) for s in states}


def test_compose_up_runs_a_bounded_generator_run_that_verify_finds_exact(compose):
    cmd, env, workdir = compose
    # up waits for each depends_on condition (healthy, completed) before starting what depends on it.
    up = run([*cmd, "up", "--detach", "--no-build", "--pull", "never", "--quiet-pull"], env, 600)
    assert up.returncode == 0, up.stderr[-3000:]
    # Then, as deploy/README.md runs it, the verify service once the generator's bounded run is over and the
    # Spark job is up (its start takes minutes on a loaded machine; verify's own wait is 180 s).
    deadline = time.monotonic() + 600
    while True:
        summary = services(cmd, env)
        if summary["generator"][0] == "exited" and summary["processing"][1] == "healthy":
            break
        # (processing may be "unhealthy" for a while: a slow start outlasts its start period on a loaded machine)
        assert summary["generator"][2] in (0, None) and summary["processing"][0] == "running", summary
        assert time.monotonic() < deadline, f"after 600 s: {summary}"
        time.sleep(5)
    # The compose file's own verify command with a longer wait: it returns as soon as everything is stored,
    # and a Spark job starved on a loaded machine needs minutes more than compose's 180 s.
    command = load()["services"]["verify"]["command"]
    command[command.index("--wait-s") + 1] = "600"
    verify = run([*cmd, "--profile", "verify", "run", "-T", "--rm", "--no-deps", "verify", *command], env, 700)
    summary = services(cmd, env)
    say(f"services: {summary}")
    report = json.loads(verify.stdout[verify.stdout.index("{"):])
    say(f"verify: { {k: report[k] for k in ('expected', 'stored', 'lost', 'double_counted')} }")
    assert report["lost"] == 0 and report["double_counted"] == 0, report
    assert report["stored"] == report["expected"] > COUNT, report
    assert verify.returncode == 0, verify.stderr[-2000:]
    # The long-running services are up and healthy through their own healthchecks; the jobs exited 0.
    for service in ("mosquitto", "kafka", "influxdb", "ingest", "processing"):
        assert summary[service][:2] == ("running", "healthy"), (service, summary[service])
    for job in ("credentials-init", "kafka-init", "storage-init", "generator"):
        assert summary[job][0] == "exited" and summary[job][2] == 0, (job, summary[job])
    # The broker is locked down (allow_anonymous false, credentials-init's password file): the bridge and the
    # generator signed in with their own passwords above, and a client without any is refused.
    anonymous = run([*cmd, "exec", "-T", "mosquitto", "mosquitto_sub", "-t", "$SYS/broker/version", "-C", "1",
                     "-W", "5", "-i", "anonymous-check"], env, 60)
    say(f"anonymous subscribe: exit {anonymous.returncode}: {(anonymous.stdout + anonymous.stderr).strip()}")
    assert anonymous.returncode != 0 and "not authori" in (anonymous.stdout + anonymous.stderr).lower(), anonymous
    health = run([*cmd, "exec", "-T", "-e", "XDG_CONFIG_HOME=/mosquitto/auth/health", "mosquitto", "mosquitto_sub",
                  "-t", "$SYS/broker/version", "-C", "1", "-W", "5", "-i", "health-check"], env, 60)
    assert health.returncode == 0 and "mosquitto" in health.stdout.lower(), health  # the control: signed in
    # `docker compose stop`: each service within its stop_grace_period, with exit 0 (a SIGKILL would be 137).
    stop = run([*cmd, "stop"], env, 300)
    assert stop.returncode == 0, stop.stderr[-2000:]
    codes = {name: code for name, (_, _, code) in services(cmd, env).items()}
    say(f"exit codes after compose stop: {codes}")
    for service in ("ingest", "processing", "mosquitto", "influxdb"):
        assert codes[service] == 0, (service, codes)
    # A JVM ends with 143 (128 + SIGTERM) once its shutdown hooks ran, as the official Kafka image does; a
    # broker that outlived the grace period would be 137 (SIGKILL).
    assert codes["kafka"] in (0, 143), codes
