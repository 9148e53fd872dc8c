"""The images of deploy/images, run as containers on a real Docker engine through testcontainers-python.

`make test-containers` (deploy/images/containers.sh) finds or starts the engine, builds the images
(tsdemo/<name>:<TSDEMO_TAG>) and the compose stand-ins, then runs these tests with DOCKER_HOST set. Run by
hand: `deploy/images/containers.sh test [pytest args]`. Without an engine or an image the tests fail and
say so: a test that cannot run here is not a pass.

Containers run on the host's network: they reach the native Mosquitto, Kafka and InfluxDB of the session
fixtures (tests/conftest.py) on 127.0.0.1, and each service gets its own free health port.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import docker
import pytest
from testcontainers.core.container import DockerContainer

from tests.containers.runtime import JOBS, SERVICES, image, remove


@pytest.fixture(scope="session")
def engine() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"no Docker engine answers ({exc}); run `make test-containers`, which finds or starts one")
    missing = [image(n) for n in SERVICES + JOBS if not client.images.list(name=image(n))]
    if missing:
        pytest.fail(f"images not built: {missing}; `deploy/images/containers.sh build` builds them")
    yield client
    client.close()


@pytest.fixture
def started() -> Iterator[Callable[[DockerContainer], DockerContainer]]:
    """Starts containers and removes every one at the end, printing the logs of those that failed."""
    running: list[DockerContainer] = []

    def start(c: DockerContainer) -> DockerContainer:
        running.append(c.start())
        return c

    yield start
    for c in reversed(running):
        remove(c)


