"""Shared fixtures: the real servers (Mosquitto, Kafka, InfluxDB), each started once per test session on
free ports under a temporary state directory and stopped when the session ends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from deploy.servers import InfluxDB, Kafka, ManagedServer, Mosquitto, free_port


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's state directory; each server gets a folder in it."""
    return tmp_path_factory.mktemp("state")


S = TypeVar("S", bound=ManagedServer)


def run_server(server: S) -> Iterator[S]:
    """Started, ready, yielded, and stopped whatever happens: the body of a server fixture."""
    server.start()
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mosquitto(state_dir: Path) -> Iterator[Mosquitto]:
    yield from run_server(Mosquitto(state_dir / "mosquitto", free_port()))


@pytest.fixture(scope="session")
def kafka(state_dir: Path) -> Iterator[Kafka]:
    # The broker's jars come from the shared artifact cache (TSDEMO_CACHE_DIR or <repo>/.cache); the
    # first session on a machine resolves them from Maven Central, which takes about half a minute.
    yield from run_server(Kafka(state_dir / "kafka", free_port(), free_port()))


@pytest.fixture(scope="session")
def influxdb(state_dir: Path) -> Iterator[InfluxDB]:
    yield from run_server(InfluxDB(state_dir / "influxdb", free_port()))
