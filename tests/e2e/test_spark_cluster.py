"""The unchanged job against a real Spark standalone cluster (a master and a worker from spark-class)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from deploy.servers import free_port
from deploy.servers.spark_cluster import SparkMaster, SparkWorker


@pytest.fixture(scope="module")
def spark_cluster(tmp_path_factory) -> Iterator[SparkMaster]:
    root = tmp_path_factory.mktemp("spark")
    master = SparkMaster(root / "master", free_port())
    worker = SparkWorker(root / "worker", master, cores=2, memory="1g")
    try:
        master.start()
        master.wait_ready()
        worker.start()
        worker.wait_ready()
        yield master
    finally:
        worker.stop()
        master.stop()


@pytest.fixture(scope="module")
def pipeline_extra_env(spark_cluster) -> dict[str, str]:
    return {"TSDEMO_SPARK_MASTER": spark_cluster.endpoint, "SPARK_LOCAL_IP": "127.0.0.1"}


def test_the_job_runs_unchanged_on_a_standalone_cluster(pipeline, spark_cluster):
    ledger = pipeline.workdir / "ledger.json"
    pipeline.run(["generate", "--devices", "6", "--sites", "2", "--rate", "300", "--count", "900"],
                 {"TSDEMO_CLIENT_ID": "gen-cluster", "TSDEMO_LEDGER_PATH": str(ledger)})
    result = pipeline.run(["verify", "--ledger-path", str(ledger), "--wait-s", "180", "--json"], check=False)
    report = json.loads(result.stdout)
    assert report["lost"] == 0 and report["double_counted"] == 0 and report["expected"] > 900, report
    # The work ran on the cluster's executor, not in a local[*] driver.
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{spark_cluster.webui_port}/json/", timeout=5) as resp:
        status = json.load(resp)
    apps = status.get("activeapps", []) + status.get("completedapps", [])
    assert any(app["name"] == "tsdemo-processing" for app in apps), apps
