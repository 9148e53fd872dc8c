"""Fixtures of the real servers: Mosquitto, Kafka and InfluxDB, each started once per test session on free
ports under a temporary state directory and stopped when the session ends; and factories for what a test
needs of its own on them (fresh Kafka topics, a private broker), in the style of quix-streams'
``topic_factory``."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from deploy.servers import InfluxDB, Kafka, Mosquitto, create_topics, free_port
from deploy.servers.mqtt_security import ANONYMOUS_DEMO, MqttSecurity, PreparedAuth


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's state directory; each server gets a folder in it."""
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="session")
def mosquitto(state_dir: Path) -> Iterator[Mosquitto]:
    with Mosquitto(state_dir / "mosquitto", free_port()) as server:
        yield server


@pytest.fixture(scope="session")
def kafka(state_dir: Path) -> Iterator[Kafka]:
    # The broker's jars come from the shared artifact cache (TSDEMO_CACHE_DIR or <repo>/.cache); the
    # first session on a machine resolves them from Maven Central, which takes about half a minute.
    with Kafka(state_dir / "kafka", free_port(), free_port()) as server:
        yield server


@pytest.fixture(scope="session")
def influxdb(state_dir: Path) -> Iterator[InfluxDB]:
    with InfluxDB(state_dir / "influxdb", free_port()) as server:
        yield server


TopicFactory = Callable[..., str]


@pytest.fixture(scope="session")
def topic_factory(kafka: Kafka) -> TopicFactory:
    """``topic_factory(prefix="t", partitions=4)``: a new topic on the session's Kafka, named uniquely, created
    and ready; tests that share the broker never see each other's records."""

    def make(prefix: str = "t", partitions: int = 4) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        create_topics(kafka.endpoint, {name: partitions})
        return name

    return make


MosquittoFactory = Callable[..., Mosquitto]


def _mosquitto_factory(stack: ExitStack, root: Path) -> MosquittoFactory:
    def make(name: str = "mosquitto", security: MqttSecurity | PreparedAuth = ANONYMOUS_DEMO) -> Mosquitto:
        return stack.enter_context(Mosquitto(root / f"{name}-{uuid.uuid4().hex[:6]}", free_port(),
                                             security=security))
    return make


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[MosquittoFactory]:
    """``mosquitto_factory(name, security=...)``: a broker of the test's own, running (stopped at its end),
    to configure, stop or fill without disturbing the session's."""
    with ExitStack() as stack:
        yield _mosquitto_factory(stack, tmp_path)


@pytest.fixture(scope="module")
def module_mosquitto_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoFactory]:
    """``mosquitto_factory`` for a whole test module (its pipeline's broker, say)."""
    with ExitStack() as stack:
        yield _mosquitto_factory(stack, tmp_path_factory.mktemp("brokers"))
