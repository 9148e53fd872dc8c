"""``tsdemo up`` as a user runs it (on free ports, without Grafana): its progress line shows the
published rate, read from the generator's own counter, and the stage collector the stack runs feeds the
pipeline dashboard's stage query, as provisioned, with the published, bridged and stored stages."""

from __future__ import annotations

import re
import time
from pathlib import Path

from dashboards import interpolate, provisioning
from dashboards.conventions import PIPELINE_UID
from deploy.servers import free_port
from deploy.services.process import spawn, tsdemo
from deploy.wait import wait_until
from servicekit.contract.influx import STAGE_BRIDGED, STAGE_PUBLISHED, STAGE_STORED
from storage.queries import InfluxQuery
from storage.settings import InfluxSettings

RATE = re.compile(r"(published|bridged msgs|stored) ([\d,]+)/s")


def progress_rates(log: Path) -> dict[str, float]:
    """The rates of the newest progress line in ``tsdemo up``'s output."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("published ")]
    return {name: float(n.replace(",", "")) for name, n in RATE.findall(lines[-1])} if lines else {}


def stage_rates(query: InfluxQuery, since_ms: int) -> dict[str, float]:
    """The pipeline dashboard's stage query (panel 1, target A) over the run: each stage's peak rate."""
    panel = next(p for p in provisioning.dashboards()[PIPELINE_UID]["panels"] if p["id"] == 1)
    statement = next(t["query"] for t in panel["targets"] if t["refId"] == "A")
    sql = interpolate.interpolate(statement, from_ms=since_ms, to_ms=int(time.time() * 1000), interval_ms=5_000)
    peaks: dict[str, float] = {}
    for row in query.query(sql):
        if row.get("per_second") is not None:
            peaks[row["stage"]] = max(peaks.get(row["stage"], 0.0), row["per_second"])
    return peaks


def test_tsdemo_up_shows_the_published_rate_and_feeds_the_dashboards_stage_query(tmp_path):
    influx_port = free_port()
    settings = {
        "TSDEMO_STATE_DIR": str(tmp_path / "stack"), "TSDEMO_GRAFANA": "false",
        "TSDEMO_MQTT_PORT": str(free_port()), "TSDEMO_KAFKA_PORT": str(free_port()),
        "TSDEMO_KAFKA_CONTROLLER_PORT": str(free_port()), "TSDEMO_INFLUX_PORT": str(influx_port),
        "TSDEMO_DEVICES": "10", "TSDEMO_RATE": "100", "TSDEMO_PROGRESS_INTERVAL_S": "2",
        "TSDEMO_READY_TIMEOUT_S": "420",
        # The services take the user's settings too: a small, quick Spark job.
        "TSDEMO_SHUFFLE_PARTITIONS": "2", "TSDEMO_TRIGGER": "1 second", "TSDEMO_SPARK_MASTER": "local[2]",
    }
    started_ms = int(time.time() * 1000)
    log = tmp_path / "up.log"
    up = spawn("up", tsdemo("up"), log, settings)
    try:
        up.wait_running_until(lambda: all(progress_rates(log).get(s, 0) > 0 for s in ("published", "stored")),
                              600, "a progress line with a published and a stored rate")
        query = InfluxQuery(InfluxSettings(influx_url=f"http://127.0.0.1:{influx_port}"))
        wanted = (STAGE_PUBLISHED, STAGE_BRIDGED, STAGE_STORED)
        wait_until(lambda: all(stage_rates(query, started_ms).get(s, 0) > 0 for s in wanted), 120,
                   "the dashboard's stage query to return published, bridged and stored", every=1.0,
                   detail=lambda: f"{stage_rates(query, started_ms)}\n{up.tail()}")
    finally:
        status = up.stop(240)
    assert status == 0, up.tail()
    assert "stopped" in log.read_text()
