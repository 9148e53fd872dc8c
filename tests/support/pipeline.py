"""The running pipeline of the end-to-end tests: our services (``deploy.services.pipeline``, the same
runner as the local stack and the benches) against the session's Kafka and InfluxDB and a broker of the
module's own, each started as its container runs it (``tsdemo <command>`` plus ``TSDEMO_*`` variables)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from deploy.servers import InfluxDB, Kafka, Mosquitto, create_topics
from deploy.services.components import Endpoints
from deploy.services.pipeline import Pipeline
from servicekit.contract import KAFKA_DLQ_TOPIC, KAFKA_TOPIC
from tests.support.servers import MosquittoFactory


class PipelineUnderTest(Pipeline):
    """A ``Pipeline`` with what the tests reach for besides: its broker and its working directory."""

    def __init__(self, endpoints: Endpoints, workdir: Path, mosquitto: Mosquitto, env: Mapping[str, str]) -> None:
        # The Spark job's start (session, connector, state stores) takes 3-4 minutes when the shared 2-core
        # machine runs several suites at once; 240 s was seen to fall short there.
        super().__init__(endpoints, workdir, env, cwd=workdir, ready_timeout_s=480.0)
        self.workdir = workdir
        self.mosquitto = mosquitto


@pytest.fixture(scope="module")
def pipeline_extra_env() -> dict[str, str]:
    """Extra TSDEMO_* settings for the module's pipeline; a test module overrides this fixture."""
    return {}


@pytest.fixture(scope="module")
def pipeline(kafka: Kafka, influxdb: InfluxDB, tmp_path_factory: pytest.TempPathFactory,
             module_mosquitto_factory: MosquittoFactory, pipeline_extra_env: dict[str, str],
             ) -> Iterator[PipelineUnderTest]:
    """Processing and the bridge running; storage initialised; topics created. Each test module gets
    its own Mosquitto, InfluxDB database and Kafka topics so modules do not see each other's readings."""
    workdir = tmp_path_factory.mktemp("pipeline")
    tag = workdir.name.replace("-", "_")
    topic, dlq = f"{KAFKA_TOPIC}-{tag}", f"{KAFKA_DLQ_TOPIC}-{tag}"
    create_topics(kafka.endpoint, {topic: 4, dlq: 1})
    mosquitto = module_mosquitto_factory()
    endpoints = Endpoints.of(mosquitto, kafka, influxdb, kafka_topic=topic, kafka_dlq_topic=dlq,
                             influx_database=f"iot_{tag}")
    p = PipelineUnderTest(endpoints, workdir, mosquitto, {
        "TSDEMO_CHECKPOINT_DIR": str(workdir / "checkpoints"),
        "TSDEMO_SHUFFLE_PARTITIONS": "2", "TSDEMO_TRIGGER": "1 second", "TSDEMO_SPARK_MASTER": "local[2]",
        **pipeline_extra_env,
    })
    try:
        p.init_storage()
        p.start("processing")
        p.start("ingest")
        yield p
    finally:
        p.stop()
