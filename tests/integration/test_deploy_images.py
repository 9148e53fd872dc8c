"""deploy/images: hadolint on every Dockerfile, and the house rules no linter knows (multi-stage, pins from
deploy/compose/.env, non-root, healthcheck, one extra per image). No Docker engine is needed."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from deploy.validate import tools
from deploy.validate.compose import COMPOSE_DIR, REPO, dockerfile_instructions, image_config, load, read_dotenv

pytestmark = pytest.mark.integration

IMAGES = REPO / "deploy" / "images"
# image -> (extra it installs, tsdemo command it runs, long-running service with /healthz?)
EXPECTED = {
    "generator": ("generator", ["generate"], True),
    "ingest": ("ingest", ["ingest"], True),
    "processing": ("processing", ["process"], True),
    "storage-init": ("storage", ["storage", "init"], False),
    "dashboards-init": ("dashboards", ["dashboards", "provision"], False),
}
VERSIONS = read_dotenv(COMPOSE_DIR / ".env")


def dockerfiles() -> list[Path]:
    return sorted(IMAGES.glob("*/Dockerfile"))


def test_there_is_an_image_per_service_each_with_a_readme_and_an_ignore_file():
    assert {p.parent.name for p in dockerfiles()} == set(EXPECTED)
    for name in EXPECTED:
        assert (IMAGES / name / "README.md").is_file(), name
        # BuildKit's per-Dockerfile ignore file: the context is the repository root with .venv and .cache.
        ignore = [line for line in (IMAGES / name / "Dockerfile.dockerignore").read_text().splitlines()
                  if line and not line.startswith("#")]
        assert ignore[0] == "*" and "!.venv/" not in ignore and "!.cache/" not in ignore, name


@pytest.mark.parametrize("dockerfile", dockerfiles(), ids=lambda p: p.parent.name)
def test_hadolint_finds_nothing(dockerfile: Path):
    result = subprocess.run(
        [tools.find("hadolint"), "--no-color", "--failure-threshold", "info", str(dockerfile)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_can_fail(tmp_path: Path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    result = subprocess.run([tools.find("hadolint"), "--no-color", str(bad)], capture_output=True, text=True)
    assert result.returncode != 0 and "DL3007" in result.stdout


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_image_follows_the_house_rules(name: str):
    extra, command, service = EXPECTED[name]
    dockerfile = IMAGES / name / "Dockerfile"
    steps = dockerfile_instructions(dockerfile)
    froms = [rest for word, rest in steps if word == "FROM"]
    assert len(froms) >= 2 and any(" AS build" in f for f in froms), "multi-stage: a build stage and a runtime"
    # Base images come from ARGs whose defaults are the pins in deploy/compose/.env.
    args = dict(rest.split("=", 1) for word, rest in steps if word == "ARG" and "=" in rest)
    for arg, value in args.items():
        assert VERSIONS.get(arg) == value, f"ARG {arg}={value} but deploy/compose/.env pins {VERSIONS.get(arg)}"
    assert all(f.split()[0].startswith("${") for f in froms), froms
    # Only this service's extra.
    installs = re.findall(r'pip install[^"]*"\.\[([^\]]+)\]"', dockerfile.read_text())
    assert installs == [extra], installs
    final = steps[max(i for i, (word, _) in enumerate(steps) if word == "FROM"):]
    users = [rest for word, rest in final if word == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and int(users[-1].split(":")[0]) >= 1000, users
    health = [rest for word, rest in final if word == "HEALTHCHECK"]
    assert len(health) == 1, "every image says how its health is known"
    cfg = image_config(dockerfile)
    if service:
        assert "CMD" in health[0] and cfg.env.get("TSDEMO_HEALTH_PORT") == "8080", (health, cfg.env)
    else:
        assert health[0] == "NONE"  # a one-shot job: its exit code is its health
    assert cfg.cmd[: len(command)] == command, cfg.cmd


def test_processing_image_bakes_the_connector_matching_pyspark():
    text = (IMAGES / "processing" / "Dockerfile").read_text()
    assert "bake_connector.py --cache /opt/tsdemo/cache" in text
    assert image_config(IMAGES / "processing" / "Dockerfile").env["TSDEMO_CACHE_DIR"] == "/opt/tsdemo/cache"
    assert importlib.metadata.version("pyspark") == VERSIONS["SPARK_VERSION"]


def test_bake_connector_skips_jars_spark_already_has():
    sys.path.insert(0, str(IMAGES / "processing"))
    try:
        from bake_connector import artifact_name
    finally:
        sys.path.remove(str(IMAGES / "processing"))
    assert artifact_name("kafka-clients-3.9.2.jar") == "kafka-clients"
    assert artifact_name("spark-sql-kafka-0-10_2.13-4.2.0.jar") == "spark-sql-kafka-0-10_2.13"
    assert artifact_name("zstd-jni-1.5.6-4.jar") == "zstd-jni"


def test_processing_entrypoint_passes_other_commands_to_tsdemo(tmp_path: Path):
    script = IMAGES / "processing" / "entrypoint.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "SPARK_HOME": str(tmp_path)}
    result = subprocess.run(["bash", str(script), "process", "--help"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and "TSDEMO_SPARK_MASTER" in result.stdout, result.stderr


# -- each image has only its own extra: does its command still start? ---------------------------------------

_BLOCKER = textwrap.dedent(
    """
    import sys, importlib.abc
    blocked = set(sys.argv[1].split(","))
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in blocked:
                raise ModuleNotFoundError(f"No module named {name!r} (not in this image's extra)", name=name)
    sys.meta_path.insert(0, Block())
    from deploy.cli import main
    sys.exit(main(sys.argv[2:] + ["--help"]))
    """
)


def _closure(extra: str) -> set[str]:
    """Distributions an image with ``tsdemo[extra]`` has: the core dependencies, the extra's, transitively."""
    from packaging.requirements import Requirement

    own = [Requirement(r) for r in importlib.metadata.requires("tsdemo") or []]
    extras, todo_extras = set(), [extra, ""]
    todo: list = []
    while todo_extras:  # tsdemo[local] names tsdemo[generator,...]: follow our own extras first
        e = todo_extras.pop()
        if e in extras:
            continue
        extras.add(e)
        for r in own:
            if r.marker is None or r.marker.evaluate({"extra": e}):
                if r.name == "tsdemo":
                    todo_extras += list(r.extras)
                else:
                    todo.append(r)
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = req.name.lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            sub = importlib.metadata.requires(req.name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        todo += [r for r in map(Requirement, sub) if r.marker is None or r.marker.evaluate({"extra": ""})]
    return seen


def _blocked_modules(extra: str) -> set[str]:
    allowed = _closure(extra) | {"pip", "setuptools", "wheel"}
    blocked = set()
    for module, dists in importlib.metadata.packages_distributions().items():
        if module.startswith("_") or module in sys.stdlib_module_names:
            continue
        if not any(d.lower().replace("_", "-") in allowed for d in dists) and "tsdemo" not in dists:
            blocked.add(module)
    return blocked


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_image_command_starts_with_only_its_extra_installed(name: str):
    extra, command, _service = EXPECTED[name]
    blocked = _blocked_modules(extra)
    assert "paho" in blocked or extra in ("generator", "ingest")  # the blocker is doing something
    result = subprocess.run([sys.executable, "-c", _BLOCKER, ",".join(sorted(blocked)), *command],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"`tsdemo {' '.join(command)} --help` with only [{extra}]:\n{result.stderr[-2000:]}"


def test_the_import_blocker_lets_a_complete_install_start():
    # The control for the test above: with every extra, nothing the command needs is blocked.
    blocked = _blocked_modules("local")
    result = subprocess.run([sys.executable, "-c", _BLOCKER, ",".join(sorted(blocked)), "generate"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_image_list_matches_the_compose_builds():
    compose = load()
    built = {Path(s["build"]["dockerfile"]).parent.name for s in compose["services"].values() if "build" in s}
    assert built == set(EXPECTED)


# -- the processing image's Kubernetes path, without Kubernetes ---------------------------------------------


@pytest.mark.slow
def test_processing_driver_mode_runs_the_job_under_spark_submit(kafka, influxdb, tmp_path: Path):
    """What the Spark Operator's driver pod does: entrypoint.sh `driver` -> spark-submit (client mode) ->
    spark_main.py -> `tsdemo process`, which must get healthy with the connector only on Spark's classpath
    (as bake_connector.py puts it into the image): under spark-submit the job's spark.jars.packages is
    never resolved, so an empty Ivy directory is given on purpose."""
    import os
    import signal
    import time
    import urllib.request

    import pyspark

    from deploy.local.artifacts import default_cache_dir
    from deploy.local.servers import create_topics, free_port

    sys.path.insert(0, str(IMAGES / "processing"))
    try:
        from bake_connector import artifact_name
    finally:
        sys.path.remove(str(IMAGES / "processing"))
    spark_home = Path(pyspark.__file__).parent
    have = {artifact_name(j.name) for j in (spark_home / "jars").glob("*.jar")}
    # Spark's own retrieve of the connector (`make setup`); its file names carry the organisation.
    connector = [j for j in (default_cache_dir() / "ivy" / "jars").glob("*.jar")
                 if artifact_name(j.name.split("_", 1)[1]) not in have]
    assert any("spark-sql-kafka" in j.name for j in connector), "run `make setup` (python -m deploy.local.artifacts)"
    topic = f"sensor-readings-driver-{tmp_path.name}"
    create_topics(kafka.endpoint, {topic: 1, f"{topic}-dlq": 1})
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TSDEMO_")}
    env.update({
        "SPARK_HOME": str(spark_home), "SPARK_DRIVER_BIND_ADDRESS": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "TSDEMO_SPARK_MASTER": "local[2]", "TSDEMO_KAFKA_BOOTSTRAP": kafka.endpoint, "TSDEMO_KAFKA_TOPIC": topic,
        "TSDEMO_KAFKA_DLQ_TOPIC": f"{topic}-dlq", "TSDEMO_INFLUX_URL": influxdb.endpoint,
        "TSDEMO_INFLUX_DATABASE": "iot_driver_mode", "TSDEMO_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
        "TSDEMO_HEALTH_PORT": str(port), "TSDEMO_IVY_DIR": str(tmp_path / "empty-ivy"),
    })
    subprocess.run([sys.executable, "-m", "deploy.cli", "storage", "init"], env=env, check=True, capture_output=True)
    log = tmp_path / "driver.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["bash", str(IMAGES / "processing" / "entrypoint.sh"), "driver", "--master", "local[2]",
             "--conf", "spark.driver.host=127.0.0.1", "--jars", ",".join(map(str, connector)),
             str(IMAGES / "processing" / "spark_main.py")],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"not healthy after 240 s:\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            time.sleep(1)
        assert not (tmp_path / "empty-ivy" / "jars").exists()  # the packages were not resolved, as said
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
