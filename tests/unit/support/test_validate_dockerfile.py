"""tests/support/validate/compose.py reading a multi-stage Dockerfile: a build target's ENV, ENTRYPOINT, CMD, USER
and HEALTHCHECK through the chain of stages it is built FROM, and compose services that name a target."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.validate import compose as C

DOCKERFILE = """\
# syntax=docker/dockerfile:1.7
ARG BASE_IMAGE=python:3.11-slim
ARG OTHER_IMAGE=debian:12

FROM ${BASE_IMAGE} AS build
ENV BUILD_ONLY=1
USER 0

FROM --platform=linux/amd64 ${BASE_IMAGE} AS Base
ENV PATH=/opt/venv/bin:$PATH \\
    SHARED=base
USER 10001:10001
ENTRYPOINT ["tsdemo"]
CMD ["--help"]

FROM base AS service
ENV SHARED=service PORT=8080
HEALTHCHECK CMD ["python", "/opt/health.py"]

FROM service AS one
COPY --from=build /opt/venv /opt/venv
CMD ["one", "--fast"]

FROM service AS two
ENV PATH=/opt/two/bin:$PATH
ENTRYPOINT ["/opt/two/entrypoint.sh"]

FROM ${OTHER_IMAGE}
ENV LAST=1
"""


@pytest.fixture
def dockerfile(tmp_path: Path) -> Path:
    path = tmp_path / "Dockerfile"
    path.write_text(DOCKERFILE)
    return path


def test_stages_are_linked_to_the_stages_they_are_built_from(dockerfile: Path):
    stages = C.dockerfile_stages(dockerfile)
    assert list(stages) == ["build", "base", "service", "one", "two", "5"]  # unnamed: its index
    assert [s.name for s in stages["one"].chain()] == ["base", "service", "one"]
    assert stages["base"].parent is None and stages["base"].base == "${BASE_IMAGE}"
    assert stages["one"].copies_from() == ["build"]
    assert C.dockerfile_args(dockerfile) == {"BASE_IMAGE": "python:3.11-slim", "OTHER_IMAGE": "debian:12"}


def test_a_target_inherits_env_entrypoint_user_and_healthcheck(dockerfile: Path):
    cfg = C.image_config(dockerfile, "one")
    assert cfg.entrypoint == ["tsdemo"] and cfg.cmd == ["one", "--fast"]
    # ENV of every stage in the chain, later stages winning; none from the build stage it only copies from.
    assert cfg.env == {"PATH": "/opt/venv/bin:", "SHARED": "service", "PORT": "8080"}
    assert cfg.user == "10001:10001" and cfg.healthcheck == 'CMD ["python", "/opt/health.py"]'


def test_a_new_entrypoint_resets_the_inherited_cmd(dockerfile: Path):
    cfg = C.image_config(dockerfile, "two")
    assert cfg.entrypoint == ["/opt/two/entrypoint.sh"] and cfg.cmd == []
    assert cfg.env["PATH"] == "/opt/two/bin:/opt/venv/bin:"  # $PATH is the inherited value


def test_without_a_target_the_last_stage_is_built(dockerfile: Path):
    cfg = C.image_config(dockerfile)
    assert cfg.env == {"LAST": "1"} and cfg.entrypoint == [] and cfg.user is None and cfg.healthcheck is None
    assert C.image_config(dockerfile, "BUILD").env == {"BUILD_ONLY": "1"}  # stage names ignore case


def test_an_unknown_target_or_a_shell_form_command_is_refused(dockerfile: Path, tmp_path: Path):
    with pytest.raises(C.ComposeError, match="no stage named 'three'"):
        C.image_config(dockerfile, "three")
    shell = tmp_path / "Shell.Dockerfile"
    shell.write_text("FROM python:3.11-slim AS a\nCMD tsdemo generate\n")
    with pytest.raises(C.ComposeError, match="exec"):
        C.image_config(shell, "a")


def test_a_compose_service_runs_its_build_targets_config(dockerfile: Path, tmp_path: Path):
    compose_dir = tmp_path / "compose"
    compose_dir.mkdir()
    (compose_dir / ".env").write_text("TAG=1\n")
    (compose_dir / "compose.yaml").write_text(
        "services:\n"
        "  one:\n    image: x/one:${TAG}\n    build: {context: .., dockerfile: Dockerfile, target: one}\n"
        "    environment: {PORT: '9090'}\n"
        "  two:\n    image: x/two:${TAG}\n    build: {context: .., dockerfile: Dockerfile, target: two}\n"
        "    command: [driver]\n"
        "  again:\n    image: x/one:${TAG}\n    command: [other]\n"
    )
    config = C.load(compose_dir=compose_dir)
    one = C.service_run(config, "one", compose_dir)
    assert one.argv == ["tsdemo", "one", "--fast"] and one.env["PORT"] == "9090" and one.env["SHARED"] == "service"
    assert C.service_run(config, "two", compose_dir).argv == ["/opt/two/entrypoint.sh", "driver"]
    assert C.service_run(config, "again", compose_dir).argv == ["tsdemo", "other"]  # the image `one` builds
    assert C.image_build(config, "x/two:1", compose_dir) == C.ImageBuild(dockerfile, "two")
