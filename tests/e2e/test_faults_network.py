"""Network faults between hops (``make test-faults``): a proxy between the generator and Mosquitto and
another between the Spark job and InfluxDB add latency, refuse connections and reset them mid-stream.
``tsdemo verify`` must still report zero lost and zero double-counted readings."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.support.tcp_proxy import FaultyProxy

pytestmark = pytest.mark.faults


@pytest.fixture(scope="module")
def influx_proxy(influxdb) -> Iterator[FaultyProxy]:
    proxy = FaultyProxy("127.0.0.1", influxdb.port).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def pipeline_extra_env(influx_proxy) -> dict[str, str]:
    # Every service reaches InfluxDB through the proxy; a shorter writer timeout makes a stalled
    # connection fail and retry within the fault windows below.
    return {"TSDEMO_INFLUX_URL": f"http://127.0.0.1:{influx_proxy.port}", "TSDEMO_INFLUX_TIMEOUT_S": "5"}


def test_latency_refusals_and_resets_between_hops_lose_nothing(pipeline, influx_proxy):
    mqtt_proxy = FaultyProxy(pipeline.mosquitto.host, pipeline.mosquitto.port).start()
    ledger = pipeline.workdir / "net-ledger.json"
    try:
        pipeline.start("generator", "generate", {
            "TSDEMO_CLIENT_ID": "gen-net", "TSDEMO_LEDGER_PATH": str(ledger), "TSDEMO_DEVICES": "10",
            "TSDEMO_RATE": "100", "TSDEMO_MQTT_PORT": str(mqtt_proxy.port),
        })
        steps = [
            lambda: setattr(mqtt_proxy, "latency_s", 0.3), lambda: setattr(mqtt_proxy, "latency_s", 0.0),
            mqtt_proxy.reset_all,
            lambda: setattr(mqtt_proxy, "refusing", True), lambda: setattr(mqtt_proxy, "refusing", False),
            lambda: setattr(influx_proxy, "latency_s", 0.5), lambda: setattr(influx_proxy, "latency_s", 0.0),
            influx_proxy.reset_all,
            lambda: (setattr(influx_proxy, "refusing", True), influx_proxy.reset_all()),
            lambda: setattr(influx_proxy, "refusing", False),
        ]
        for step in steps:
            time.sleep(10)
            step()
        time.sleep(10)
        generator = pipeline.services["generator"]
        assert generator.stop() == 0, generator.tail()
    finally:
        mqtt_proxy.stop()
    result = pipeline.run(["verify", "--ledger-path", str(ledger), "--wait-s", "240", "--json"], check=False)
    report = json.loads(result.stdout)
    assert report["lost"] == 0 and report["double_counted"] == 0 and report["expected"] > 0, report
