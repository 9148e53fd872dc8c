"""deploy/images: hadolint on the Dockerfile, and the house rules no linter knows (multi-stage, pins from
deploy/compose/.env, non-root, healthcheck, one extra per image), checked per build target through the
stages each target is built FROM and copies from. No Docker engine is needed."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.validate import tools
from tests.support.validate.compose import (
    COMPOSE_DIR,
    REPO,
    Stage,
    build_stage,
    dockerfile_args,
    dockerfile_stages,
    image_build,
    image_config,
    load,
    read_dotenv,
)

IMAGES = REPO / "deploy" / "images"
# One Dockerfile, one target per image (the other stages are shared by them).
DOCKERFILE = IMAGES / "Dockerfile"
# target -> (extra it installs, tsdemo command it runs, long-running service with /healthz?)
EXPECTED = {
    "generator": ("generator", ["generate"], True),
    "ingest": ("ingest", ["ingest"], True),
    "processing": ("processing", ["process"], True),
    "storage-init": ("storage", ["storage", "init"], False),
    "dashboards-init": ("dashboards", ["dashboards", "provision"], False),
}
VERSIONS = read_dotenv(COMPOSE_DIR / ".env")
_PIP_EXTRA = re.compile(r'pip install[^"]*"\.\[([^\]]+)\]"')


def image_targets(dockerfile: Path) -> set[str]:
    """The stages no other stage is built FROM or copies from: the images; the rest are shared stages."""
    stages = dockerfile_stages(dockerfile).values()
    used = {s.parent.name for s in stages if s.parent} | {name for s in stages for name in s.copies_from()}
    return {s.name for s in stages} - used


def stages_of_image(dockerfile: Path, target: str) -> list[Stage]:
    """Every stage building ``target`` needs: its chain and, transitively, the stages it copies from."""
    stages = dockerfile_stages(dockerfile)
    needed: dict[str, Stage] = {}
    todo = [build_stage(dockerfile, target)]
    while todo:
        for stage in todo.pop().chain():
            if stage.name not in needed:
                needed[stage.name] = stage
                todo += [stages[name] for name in stage.copies_from() if name in stages]
    return list(needed.values())


def pip_extras(stages: list[Stage]) -> list[str]:
    return [extra for s in stages for word, rest in s.steps if word == "RUN" for extra in _PIP_EXTRA.findall(rest)]


def check_house_rules(dockerfile: Path, target: str, extra: str, command: list[str], service: bool) -> None:
    """Asserts the house rules for one image, i.e. one target of ``dockerfile``."""
    chain = build_stage(dockerfile, target).chain()
    needed = stages_of_image(dockerfile, target)
    # Base images only from ARGs whose defaults are the pins in deploy/compose/.env.
    args = dockerfile_args(dockerfile)
    for stage in needed:
        if stage.parent is None:
            pin = re.fullmatch(r"\$\{(\w+)\}", stage.base)
            assert pin, f"stage {stage.name} is FROM {stage.base}, not FROM an ARG pinned in .env"
            arg = pin.group(1)
            assert arg in VERSIONS and args.get(arg) == VERSIONS[arg], \
                f"ARG {arg}={args.get(arg)} but deploy/compose/.env pins {VERSIONS.get(arg)}"
    # Multi-stage: pip runs in a build stage; the image's own chain only copies the virtualenv from it.
    assert pip_extras(chain) == [], f"{target}: pip runs in the runtime stages"
    venv_from = [m.group(1).lower() for s in chain for word, rest in s.steps if word == "COPY"
                 for m in [re.fullmatch(r"--from=(\S+) /opt/venv /opt/venv", rest)] if m]
    assert len(venv_from) == 1, f"{target}: the virtualenv comes from one build stage, not {venv_from}"
    installed = pip_extras(build_stage(dockerfile, venv_from[0]).chain())
    assert installed == [extra], f"{target}: its virtualenv (from {venv_from[0]}) has {installed}, not [{extra!r}]"
    # Only this service's extra, in all the image is made of.
    assert pip_extras(needed) == [extra], pip_extras(needed)
    cfg = image_config(dockerfile, target)
    user = (cfg.user or "").split(":")[0]
    assert user.isdigit() and int(user) >= 1000, f"{target} runs as {cfg.user!r}, not a numeric non-root user"
    assert cfg.healthcheck, f"{target}: every image says how its health is known"
    if service:
        assert "CMD" in cfg.healthcheck.split(), cfg.healthcheck
        assert cfg.env.get("TSDEMO_HEALTH_PORT") == "8080", cfg.env
    else:
        assert cfg.healthcheck == "NONE", cfg.healthcheck  # a one-shot job: its exit code is its health
    assert cfg.cmd[: len(command)] == command, cfg.cmd


def dockerfiles() -> list[Path]:
    return sorted(IMAGES.rglob("Dockerfile"))


def test_one_dockerfile_with_a_target_per_service_each_with_a_readme_and_the_ignore_file():
    assert dockerfiles() == [DOCKERFILE], "one Dockerfile; a new image is a new target in it"
    assert image_targets(DOCKERFILE) == set(EXPECTED)
    for name in EXPECTED:
        assert (IMAGES / name / "README.md").is_file(), name
    # BuildKit's per-Dockerfile ignore file: the context is the repository root with .venv and .cache.
    ignore = [line for line in (IMAGES / "Dockerfile.dockerignore").read_text().splitlines()
              if line and not line.startswith("#")]
    assert ignore[0] == "*" and "!.venv/" not in ignore and "!.cache/" not in ignore, ignore


@pytest.mark.parametrize("dockerfile", dockerfiles(), ids=lambda p: str(p.relative_to(IMAGES)))
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


def test_every_base_image_arg_defaults_to_the_env_file_pin():
    args = dockerfile_args(DOCKERFILE)
    assert args and all(VERSIONS.get(arg) == value for arg, value in args.items()), (args, VERSIONS)


@pytest.mark.parametrize("target", sorted(EXPECTED))
def test_image_follows_the_house_rules(target: str):
    check_house_rules(DOCKERFILE, target, *EXPECTED[target])


# The real Dockerfile, broken one way at a time: the rules must catch each (old text, new text, target).
BREAKAGES = {
    "no USER": ("USER 10001:10001\n", "", "ingest"),
    "USER only in a stage the image does not inherit": (
        "USER 10001:10001\n", "", "generator",
        "RUN python -m venv /opt/pip && python -m venv --without-pip /opt/venv\n",
        "RUN python -m venv /opt/pip && python -m venv --without-pip /opt/venv\nUSER 10001:10001\n"),
    "root USER": ("USER 10001:10001\n", "USER root\n", "storage-init"),
    "unpinned runtime base": ("FROM ${PYTHON_IMAGE} AS runtime", "FROM python:3.11-slim AS runtime", "ingest"),
    "unpinned base of a stage it copies from": ("FROM ${JRE_IMAGE} AS jre", "FROM eclipse-temurin:17-jre AS jre",
                                                "processing"),
    "ARG default other than .env": ("ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm",
                                    "ARG PYTHON_IMAGE=python:3.12-slim-bookworm", "dashboards-init"),
    "another extra": ('".[ingest]"', '".[ingest,processing]"', "ingest"),
    "an extra installed in the shared build stage": (
        "RUN touch README.md\n", 'RUN touch README.md\nRUN /opt/pip/bin/pip install --no-compile ".[local]"\n',
        "generator"),
    "no healthcheck": ("HEALTHCHECK NONE\n", "", "dashboards-init"),
    "a service without its health port": ("ENV TSDEMO_HEALTH_PORT=8080\n", "", "generator"),
    "another command": ('CMD ["ingest"]', 'CMD ["generate"]', "ingest"),
    "pip in the runtime stages": ("COPY deploy/images/healthcheck.py /opt/tsdemo/healthcheck.py\n",
                                  "COPY deploy/images/healthcheck.py /opt/tsdemo/healthcheck.py\n"
                                  'RUN pip install --no-compile ".[local]"\n', "processing"),
    "the virtualenv of another image": ("COPY --from=build-storage /opt/venv", "COPY --from=build-dashboards /opt/venv",
                                        "storage-init"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_house_rules_can_fail(breakage: str, tmp_path: Path):
    old, new, target, *more = BREAKAGES[breakage]
    text = DOCKERFILE.read_text()
    for a, b in [(old, new), *zip(more[::2], more[1::2], strict=True)]:
        assert a in text, f"the Dockerfile no longer has {a!r}: update this breakage"
        text = text.replace(a, b, 1)
    broken = tmp_path / "Dockerfile"
    broken.write_text(text)
    with pytest.raises(AssertionError):
        check_house_rules(broken, target, *EXPECTED[target])


def test_processing_image_bakes_the_connector_matching_pyspark():
    build = stages_of_image(DOCKERFILE, "processing")
    assert any("bake_connector.py --cache /opt/tsdemo/cache" in rest for s in build for _, rest in s.steps)
    assert image_config(DOCKERFILE, "processing").env["TSDEMO_CACHE_DIR"] == "/opt/tsdemo/cache"
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
    builds = {name: image_build(compose, s["image"]) for name, s in compose["services"].items() if "build" in s}
    assert {b.target for b in builds.values()} == set(EXPECTED)
    for name, build in builds.items():
        assert build.dockerfile == DOCKERFILE, (name, build)
        image = compose["services"][name]["image"]
        assert image == f"{VERSIONS['TSDEMO_REGISTRY']}/{build.target}:{VERSIONS['TSDEMO_TAG']}", (name, image)


# -- the processing image's Kubernetes path, without Kubernetes ---------------------------------------------


@pytest.mark.slow
def test_processing_driver_mode_runs_the_job_under_spark_submit(kafka, influxdb, tmp_path: Path):
    """What the Spark Operator's driver pod does: entrypoint.sh `driver` -> spark-submit (client mode) ->
    spark_main.py -> `tsdemo process`, which must get healthy with the connector only on Spark's classpath
    (as bake_connector.py puts it into the image): under spark-submit the job's spark.jars.packages is
    never resolved, so an empty Ivy directory is given on purpose."""
    import os

    import pyspark

    from deploy.servers import create_topics, free_port
    from deploy.servers.artifacts import retrieve_spark_kafka_connector
    from deploy.services.process import spawn

    sys.path.insert(0, str(IMAGES / "processing"))
    try:
        from bake_connector import artifact_name
    finally:
        sys.path.remove(str(IMAGES / "processing"))
    spark_home = Path(pyspark.__file__).parent
    have = {artifact_name(j.name) for j in (spark_home / "jars").glob("*.jar")}
    # The connector as `make setup` cached it, minus what pyspark ships (bake_connector.py's rule).
    connector = [j for j in retrieve_spark_kafka_connector(tmp_path / "jars") if artifact_name(j.name) not in have]
    assert any(j.name.startswith("spark-sql-kafka-0-10_") for j in connector), connector
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
    driver = spawn("spark driver", ["bash", str(IMAGES / "processing" / "entrypoint.sh"), "driver", "--master",
                                    "local[2]", "--conf", "spark.driver.host=127.0.0.1", "--jars",
                                    ",".join(map(str, connector)), str(IMAGES / "processing" / "spark_main.py")],
                   tmp_path / "driver.log", env, health_port=port)
    try:
        driver.wait_healthy(240)
        assert not (tmp_path / "empty-ivy" / "jars").exists()  # the packages were not resolved, as said
    finally:
        driver.stop(90)


def test_hadolint_finds_nothing_in_the_compose_stand_ins():
    """deploy/images/standins: the server images deploy/images/containers.sh builds where Docker Hub is out of reach."""
    standins = IMAGES / "standins" / "standins.Dockerfile"
    result = subprocess.run(
        [tools.find("hadolint"), "--no-color", "--failure-threshold", "info", str(standins)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
