"""End to end through the real Mosquitto, bridge, Kafka, Spark and InfluxDB: exact counts."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from deploy.wait import wait_until


def stored_rows(pipeline, query: str) -> list[dict]:
    from storage.queries import InfluxQuery
    from storage.settings import InfluxSettings

    settings = InfluxSettings(influx_url=pipeline.env["TSDEMO_INFLUX_URL"],
                              influx_database=pipeline.env["TSDEMO_INFLUX_DATABASE"])
    return InfluxQuery(settings).query(query)


def test_generated_readings_are_stored_exactly_per_device_and_metric(pipeline):
    ledger = pipeline.workdir / "ledger.json"
    gen_env = {"TSDEMO_CLIENT_ID": "gen-e2e", "TSDEMO_LEDGER_PATH": str(ledger)}
    pipeline.run(["generate", "--devices", "8", "--sites", "2", "--rate", "400", "--count", "2000",
                  "--batch", "4"], gen_env)
    header = json.loads(ledger.read_text())
    assert header["published"] == 2000 and header["complete"]
    result = pipeline.run(["verify", "--ledger-path", str(ledger), "--wait-s", "120", "--json"],
                          check=False)
    report = json.loads(result.stdout)
    assert report["lost"] == 0 and report["double_counted"] == 0, report
    # 8 devices over 4 types: each reading carries its type's metrics, so the total is known too.
    assert report["expected"] == report["stored"] > 2000
    assert result.returncode == 0


def test_a_mosquitto_pub_reading_is_counted_with_its_mean(pipeline):
    now = int(time.time() * 1000)
    readings = [
        {"device_id": "cli-1", "site": "lab", "type": "environment", "ts": now + i, "seq": i,
         "metrics": {"temperature": value}}
        for i, value in enumerate((20.5, 21.5, 23.0))
    ]
    for r in readings + readings[:1]:  # the first one twice: at-least-once must not double count
        subprocess.run(
            ["mosquitto_pub", "-h", pipeline.mosquitto.host, "-p", str(pipeline.mosquitto.port), "-q", "1",
             "-t", "sensors/lab/cli-1", "-m", json.dumps(r)],
            check=True, timeout=10,
        )
    query = ('SELECT sum("count") AS n, sum("sum") AS s FROM "device_window" '
             "WHERE \"device_id\" = 'cli-1' AND \"metric\" = 'temperature'")
    rows = wait_until(lambda: (r := stored_rows(pipeline, query)) and r[0]["n"] == 3 and r, 120,
                      "the three readings stored", every=1.0, detail=lambda: str(stored_rows(pipeline, query)))
    assert rows and rows[0]["n"] == 3, rows
    assert rows[0]["s"] / rows[0]["n"] == pytest.approx(65.0 / 3)
    window = stored_rows(pipeline, 'SELECT "count", "mean" FROM "device_window" '
                                   "WHERE \"device_id\" = 'cli-1' AND \"metric\" = 'temperature'")
    if len(window) == 1:  # the three readings fell into one 10 s window
        assert window[0]["count"] == 3 and window[0]["mean"] == pytest.approx(65.0 / 3)


def test_a_bridge_retiring_mid_stream_loses_no_reading_end_to_end(pipeline):
    """Two bridges share the stream; one retires (POST /retire, as the Kubernetes preStop hook sends it on a
    scale-down) while the generator publishes. It never comes back, yet `tsdemo verify` finds every reading."""
    import urllib.request

    leaving = pipeline.start("ingest-retiring", "ingest", {"TSDEMO_CLIENT_ID": "tsdemo-bridge-retiring"})
    # The first test's fleet and ledger (device ids do not depend on the seed): the generator carries the
    # ledger on with new boots, so verify checks both runs against everything stored for those devices.
    ledger = pipeline.workdir / "ledger.json"
    before = json.loads(ledger.read_text())["published"] if ledger.exists() else 0
    generator = pipeline.start("generator-e2e", "generate", {"TSDEMO_CLIENT_ID": "gen-e2e",
                                                             "TSDEMO_LEDGER_PATH": str(ledger)},
                               args=["--devices", "8", "--sites", "2", "--rate", "400", "--count", "4000",
                                     "--batch", "4"], wait=False)

    def has_its_share() -> bool:  # of the stream
        assert generator.running(), generator.tail()
        return leaving.metric("tsdemo_ingest_forwarded_total") >= 100

    wait_until(has_its_share, 120, "the retiring bridge to forward its share", detail=leaving.tail)
    assert generator.running()  # mid-stream
    request = urllib.request.Request(f"http://127.0.0.1:{leaving.health_port}/retire", method="POST")
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 202
    assert leaving.proc.wait(120) == 0, leaving.tail()
    assert '"msg": "bridge retired"' in leaving.tail(100)
    assert generator.proc.wait(120) == 0, generator.tail()
    header = json.loads(ledger.read_text())
    assert header["published"] == before + 4000 and header["complete"]
    result = pipeline.run(["verify", "--ledger-path", str(ledger), "--wait-s", "120", "--json"], check=False)
    report = json.loads(result.stdout)
    assert report["lost"] == 0 and report["double_counted"] == 0, report
    assert result.returncode == 0
