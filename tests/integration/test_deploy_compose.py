"""deploy/compose: valid against the compose specification (`docker compose config`, which needs no engine),
versions from the one env file, healthchecks and start order, and the Mosquitto config matching the local
stack's."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from deploy.servers import Mosquitto
from deploy.servers.artifacts import KAFKA_VERSION
from tests.support.validate import compose as C
from tests.support.validate import tools

PROFILES = ["large-fleet", "second-bridge", "grafana-api", "verify", "tls"]
OURS = {"storage-init", "processing", "ingest", "ingest-2", "generator", "generator-large", "dashboards-init",
        "verify"}
ONE_SHOT = {"kafka-init", "storage-init", "dashboards-init", "verify", "credentials-init", "mqtt-tls-init"}


def compose_config(*args: str, compose_dir: Path = C.COMPOSE_DIR) -> subprocess.CompletedProcess:
    return subprocess.run([tools.find("docker-compose"), *args, "config", "-q"], cwd=compose_dir,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("profiles", [[], PROFILES], ids=["default", "all-profiles"])
def test_compose_file_is_valid_for_docker_compose(profiles: list[str]):
    result = compose_config(*[a for p in profiles for a in ("--profile", p)])
    assert result.returncode == 0, result.stderr


def test_docker_compose_config_can_fail(tmp_path: Path):
    (tmp_path / "compose.yaml").write_text("services:\n  a:\n    image: busybox\n    restart_policy: always\n")
    result = compose_config(compose_dir=tmp_path)
    assert result.returncode != 0 and "restart_policy" in result.stderr


def test_every_image_is_pinned_in_the_env_file():
    env = C.read_dotenv(C.COMPOSE_DIR / ".env")
    raw = (C.COMPOSE_DIR / "compose.yaml").read_text()
    # Images only through variables of the env file, never a literal tag in compose.yaml.
    for image in re.findall(r"^\s+image:\s*(\S+)", raw, re.M):
        assert image.startswith("${"), image
    for name, svc in C.load()["services"].items():
        image = svc["image"]
        assert ":" in image and not image.endswith(":latest"), (name, image)
        if name in OURS:
            assert image.endswith(f":{env['TSDEMO_TAG']}"), (name, image)
    # The same Kafka as the local stack's.
    assert env["KAFKA_IMAGE"].endswith(f":{KAFKA_VERSION}")


def test_services_have_healthchecks_and_start_in_order():
    config = C.load()
    services = config["services"]
    for name, svc in services.items():
        if name in ONE_SHOT:
            assert svc.get("restart") in ("on-failure", "no"), name
            continue
        if name in OURS:  # the image's own HEALTHCHECK
            health = C.image_build(config, svc["image"]).config().healthcheck
            assert health and "CMD" in health.split(), f"{name}'s image has no healthcheck: {health}"
        else:
            assert "healthcheck" in svc, f"{name} has no healthcheck"
        for dep, cond in svc.get("depends_on", {}).items():
            expected = "service_completed_successfully" if dep in ONE_SHOT else "service_healthy"
            assert cond["condition"] == expected, (name, dep, cond)
    # The pipeline's order: topics and schema before the job, bridges before the generator.
    assert set(services["processing"]["depends_on"]) == {"kafka-init", "storage-init"}
    assert "ingest" in services["generator"]["depends_on"]
    assert services["ingest"]["environment"]["TSDEMO_CLIENT_ID"] != services["ingest-2"]["environment"][
        "TSDEMO_CLIENT_ID"]


def test_grafana_mounts_the_whole_provisioning_folder_and_gets_the_influx_url():
    grafana = C.load()["services"]["grafana"]
    mounts = dict(v.split(":")[:2][::-1] for v in grafana["volumes"])
    source = (C.COMPOSE_DIR / mounts["/etc/grafana/provisioning"]).resolve()
    assert source == C.REPO / "dashboards" / "provisioning"
    assert grafana["environment"]["TSDEMO_INFLUX_URL"] == "http://influxdb:8086"


def _settings(conf: str) -> dict[str, str]:
    pairs = (line.split(None, 1) for line in conf.splitlines() if line.strip() and not line.startswith("#"))
    return {key: value.strip() for key, value in pairs}


def test_the_deployed_mosquitto_config_is_locked_down_and_the_local_demo_opts_out_by_name(tmp_path: Path):
    ours = _settings((C.COMPOSE_DIR / "mosquitto" / "mosquitto.conf").read_text())
    assert ours["listener"] == "1883" and ours["allow_anonymous"] == "false"
    assert ours["password_file"] == "/mosquitto/auth/passwd" and ours["acl_file"] == "/mosquitto/auth/acl"
    # The local stack's broker runs the same file; the anonymous demo is a drop-in that says its name.
    local = Mosquitto(tmp_path / "m", 1883)
    local._prepare()
    theirs = _settings(local.config_path.read_text())
    for key in ("persistence", "autosave_interval", "max_queued_messages", "max_inflight_messages",
                "persistent_client_expiration", "allow_anonymous", "set_tcp_nodelay"):
        assert ours[key] == theirs[key], key
    drop_ins = {p.name: p.read_text() for p in (local.state_dir / "auth" / "conf.d").iterdir()}
    assert list(drop_ins) == ["anonymous-demo.conf"]
    assert "MQTT_ALLOW_ANONYMOUS_DEMO=true" in drop_ins["anonymous-demo.conf"]
    assert _settings(drop_ins["anonymous-demo.conf"]) == {"allow_anonymous": "true"}


def test_interpolation_follows_compose_rules():
    env = {"SET": "x", "EMPTY": ""}
    assert C.interpolate("$${A} ${SET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d} $SET", env) == "${A} x d  d x"
    with pytest.raises(C.ComposeError):
        C.interpolate("${UNSET:?needed}", env)


def test_services_run_what_their_build_target_and_its_base_stages_give_them():
    """The compose services' argv and environment come from their image's target in deploy/images/Dockerfile,
    with what that target inherits from the shared stages (what tests/e2e/test_compose_wiring.py starts)."""
    config = C.load()
    processing = C.service_run(config, "processing")
    assert processing.argv == ["/opt/tsdemo/entrypoint.sh", "process"]  # its own ENTRYPOINT, then its CMD
    assert processing.env["PYTHONUNBUFFERED"] == "1"  # from the shared runtime stage
    assert processing.env["TSDEMO_HEALTH_PORT"] == "8080"  # from the shared service stage
    assert processing.env["TSDEMO_CHECKPOINT_DIR"] == "/var/lib/tsdemo/checkpoints"  # its own
    assert processing.env["TSDEMO_KAFKA_BOOTSTRAP"] == "kafka:9092"  # the compose file's
    generator = C.service_run(config, "generator")
    assert generator.argv == ["tsdemo", "generate"]  # the runtime stage's ENTRYPOINT, the target's CMD
    assert generator.env["TSDEMO_LEDGER_PATH"] == "/var/lib/tsdemo/ledger/generator.json"
    assert generator.env["PATH"].startswith("/opt/venv/bin:")
    # The image of another service, with the compose file's own command.
    verify = C.service_run(config, "verify")
    assert verify.argv[:2] == ["tsdemo", "verify"] and "TSDEMO_HEALTH_PORT" not in verify.env
    assert C.service_run(config, "storage-init").argv == ["tsdemo", "storage", "init", "--wait-s", "120"]


def run_credentials_init(tmp_path: Path, **env: str) -> dict[str, Path]:
    """deploy/compose/credentials-init.sh with its volumes as directories under ``tmp_path``."""
    dirs = {name: tmp_path / name for name in ("credentials", "auth", "ingest", "generator", "grafana")}
    done = subprocess.run(
        ["sh", str(C.COMPOSE_DIR / "credentials-init.sh")], capture_output=True, text=True, timeout=60,
        env={"PATH": os.environ["PATH"], "CREDENTIALS_DIR": str(dirs["credentials"]),
             "MQTT_AUTH_DIR": str(dirs["auth"]), "INGEST_SECRETS_DIR": str(dirs["ingest"]),
             "GENERATOR_SECRETS_DIR": str(dirs["generator"]), "GRAFANA_SECRETS_DIR": str(dirs["grafana"]), **env})
    assert done.returncode == 0, done.stderr
    assert "password" not in done.stdout.replace("-password", "")  # names only, never a value
    return dirs


def test_compose_credentials_are_generated_once_kept_and_each_service_gets_only_its_own(tmp_path: Path):
    dirs = run_credentials_init(tmp_path)
    bridge = (dirs["ingest"] / "mqtt-bridge-password").read_text()
    assert len(bridge.strip()) >= 24 and bridge != (dirs["generator"] / "mqtt-fleet-password").read_text()
    assert [p.name for p in dirs["ingest"].iterdir()] == ["mqtt-bridge-password"]
    assert [p.name for p in dirs["generator"].iterdir()] == ["mqtt-fleet-password"]
    assert [p.name for p in dirs["grafana"].iterdir()] == ["grafana-admin-password"]
    assert (dirs["ingest"] / "mqtt-bridge-password").stat().st_mode & 0o777 == 0o400
    assert bridge.strip() not in (dirs["auth"] / "passwd").read_text()  # the broker gets hashes only
    # A second start keeps what the first generated; a value from credentials.env wins.
    assert run_credentials_init(tmp_path)["ingest"].joinpath("mqtt-bridge-password").read_text() == bridge
    chosen = "a-chosen-bridge-password"
    dirs = run_credentials_init(tmp_path, MQTT_BRIDGE_PASSWORD=chosen, MQTT_DEVICES="dev-1:device-one-password")
    assert (dirs["ingest"] / "mqtt-bridge-password").read_text() == chosen + "\n"
    assert [line.split(":")[0] for line in (dirs["auth"] / "passwd").read_text().splitlines()] == \
        ["tsdemo-bridge", "tsdemo-fleet", "dev-1", "tsdemo-health"]
    assert not list((dirs["auth"] / "conf.d").iterdir())
    # The named opt-in, and back.
    dirs = run_credentials_init(tmp_path, MQTT_ALLOW_ANONYMOUS_DEMO="true")
    assert [p.name for p in (dirs["auth"] / "conf.d").iterdir()] == ["anonymous-demo.conf"]
    assert not list((run_credentials_init(tmp_path)["auth"] / "conf.d").iterdir())


def test_every_mqtt_client_in_compose_signs_in_with_a_password_file_of_its_own():
    services = C.load()["services"]
    clients = {name: svc for name, svc in services.items() if "TSDEMO_MQTT_HOST" in svc.get("environment", {})}
    assert set(clients) >= {"ingest", "ingest-2", "generator", "generator-large"}
    for name, svc in clients.items():
        env = svc["environment"]
        role = "bridge" if name.startswith("ingest") else "fleet"
        assert env["TSDEMO_MQTT_USERNAME"] == f"tsdemo-{role}", name
        assert "TSDEMO_MQTT_PASSWORD" not in env, name
        secret_dir = env["TSDEMO_MQTT_PASSWORD_FILE"].rsplit("/", 1)[0]
        mounts = {v.split(":")[1]: v.split(":")[0] for v in svc["volumes"]}
        assert mounts[secret_dir] == ("ingest-secrets" if role == "bridge" else "generator-secrets"), name
    assert services["mosquitto"]["depends_on"]["credentials-init"]["condition"] == "service_completed_successfully"
    assert "mqtt-auth:/mosquitto/auth:ro" in services["mosquitto"]["volumes"]
