"""The Spark job end to end on real servers: exact windows whatever happens upstream."""

from __future__ import annotations

import json
import os
import random
import signal
import time

import pytest
from kafka import KafkaConsumer

from deploy.wait import wait_until
from tests.support.mqtt_publish import publish_all, reading


def influx(pipeline):
    from storage.queries import InfluxQuery
    from storage.settings import InfluxSettings

    return InfluxQuery(InfluxSettings(influx_url=pipeline.env["TSDEMO_INFLUX_URL"],
                                      influx_database=pipeline.env["TSDEMO_INFLUX_DATABASE"]))


#: How long the windows of what a test published may take to show in InfluxDB.
WAIT_S = 150.0


def device_counts(pipeline, prefix: str) -> dict[str, int]:
    rows = influx(pipeline).query(
        f'SELECT sum("count") AS n FROM "device_window" WHERE "device_id" =~ /^{prefix}/ GROUP BY "device_id"'
    )
    return {r["device_id"]: int(r["n"]) for r in rows}


def test_duplicated_and_out_of_order_readings_give_exact_windows(pipeline):
    now = int(time.time() * 1000)
    sent = [reading(f"dup-{d}", s, now - 5000 + s * 7, 20.0 + s % 5) for d in range(4) for s in range(150)]
    wire = sent + random.Random(1).sample(sent, 200)  # at-least-once: 200 resent
    random.Random(2).shuffle(wire)  # and in any order
    host, port = pipeline.mosquitto.host, pipeline.mosquitto.port
    publish_all(host, port, [(f"sensors/lab/{r['device_id']}", r) for r in wire])
    wait_until(lambda: device_counts(pipeline, "dup-") == {f"dup-{d}": 150 for d in range(4)}, WAIT_S,
               "150 readings of each dup- device", every=1.0, detail=lambda: str(device_counts(pipeline, "dup-")))
    rows = influx(pipeline).query('SELECT sum("sum") AS s, sum("count") AS n FROM "device_window" '
                                  "WHERE \"device_id\" = 'dup-0'")
    assert rows[0]["s"] == pytest.approx(sum(20.0 + s % 5 for s in range(150)))


def test_invalid_readings_go_to_the_dlq_with_a_reason_and_good_ones_beside_them_are_kept(pipeline):
    now = int(time.time() * 1000)
    good = [reading("mix-1", s, now + s, 1.0) for s in range(3)]
    bad_seq = {**reading("mix-1", 99, now, 1.0), "seq": -4}
    messages = [
        ("sensors/lab/mix-1", [good[0], bad_seq, good[1]]),
        ("sensors/lab/mix-1", b"{not json"),
        ("sensors/lab/mix-1", good[2]),
    ]
    publish_all(pipeline.mosquitto.host, pipeline.mosquitto.port, messages, client_id="dlq-pub")
    wait_until(lambda: device_counts(pipeline, "mix-") == {"mix-1": 3}, WAIT_S, "the 3 good mix-1 readings",
               every=1.0, detail=lambda: str(device_counts(pipeline, "mix-")))
    consumer = KafkaConsumer(pipeline.env["TSDEMO_KAFKA_DLQ_TOPIC"], bootstrap_servers=pipeline.env[
        "TSDEMO_KAFKA_BOOTSTRAP"], auto_offset_reset="earliest", consumer_timeout_ms=20_000)
    reasons = {}
    for record in consumer:
        headers = {k: v.decode() for k, v in record.headers}
        reasons[record.value] = headers["reason"]
        if len(reasons) >= 2:
            break
    consumer.close()
    assert reasons[b"{not json"] == "malformed JSON or not a reading object"
    assert reasons[json.dumps([good[0], bad_seq, good[1]]).encode()] == "negative seq"
    assert pipeline.services["processing"].healthy()


def test_readings_later_than_the_watermark_are_counted_as_late_not_stored(pipeline):
    now = int(time.time() * 1000)
    host, port = pipeline.mosquitto.host, pipeline.mosquitto.port
    publish_all(host, port, [("sensors/lab/late-0", reading("late-0", 0, now, 1.0))], client_id="late-pub")
    wait_until(lambda: device_counts(pipeline, "late-") == {"late-0": 1}, WAIT_S, "the one late-0 reading",
               every=1.0, detail=lambda: str(device_counts(pipeline, "late-")))

    def late_rows() -> int:
        rows = influx(pipeline).query('SELECT sum("late_rows") AS n FROM "pipeline"')
        return int(rows[0]["n"]) if rows and rows[0]["n"] is not None else 0

    before = late_rows()
    # Ten minutes behind: far beyond the 30 s watermark the first reading moved up.
    stale = [reading("late-0", s, now - 600_000 + s, 2.0) for s in range(1, 6)]
    publish_all(host, port, [("sensors/lab/late-0", r) for r in stale], client_id="late-pub")
    wait_until(lambda: late_rows() - before >= 5, WAIT_S, "5 late rows counted", every=1.0,
               detail=lambda: str(late_rows() - before))
    assert device_counts(pipeline, "late-") == {"late-0": 1}


def test_a_spike_is_detected_and_stored_as_an_anomaly(pipeline):
    now = int(time.time() * 1000)
    rng = random.Random(9)
    values = [20.0 + rng.gauss(0, 0.2) for _ in range(80)]
    values[60] = 45.0
    series = [reading("spike-0", s, now - 8000 + s * 100, v) for s, v in enumerate(values)]
    publish_all(pipeline.mosquitto.host, pipeline.mosquitto.port,
                [("sensors/lab/spike-0", series[i:i + 10]) for i in range(0, 80, 10)], client_id="spike-pub")

    def found():
        rows = influx(pipeline).query("SELECT \"value\", \"seq\" FROM \"anomaly\" WHERE \"device_id\" = 'spike-0'")
        return [(r["detector"] if "detector" in r else None, int(r["seq"])) for r in rows] or None

    wait_until(found, WAIT_S, "the spike stored as an anomaly", every=1.0)
    hits = influx(pipeline).query("SELECT \"value\", \"seq\" FROM \"anomaly\" WHERE \"device_id\" = 'spike-0' "
                                  'GROUP BY "detector"')
    assert [(h["detector"], int(h["seq"]), h["value"]) for h in hits] == [("ewma_z", 60, 45.0)]


def test_kill_9_of_the_driver_and_a_restart_leave_every_window_exact(pipeline):
    host, port = pipeline.mosquitto.host, pipeline.mosquitto.port
    now = int(time.time() * 1000)
    first = [reading(f"crash-{d}", s, now + s * 10, float(s)) for d in range(3) for s in range(200)]
    publish_all(host, port, [(f"sensors/lab/{r['device_id']}", r) for r in first], client_id="crash-pub")
    wait_until(lambda: sum(device_counts(pipeline, "crash-").values()) > 0, WAIT_S, "the first crash- windows",
               every=1.0)
    processing = pipeline.services["processing"]
    os.kill(processing.proc.pid, signal.SIGKILL)
    processing.proc.wait()
    second = [reading(f"crash-{d}", s, now + s * 10, float(s)) for d in range(3) for s in range(200, 400)]
    publish_all(host, port, [(f"sensors/lab/{r['device_id']}", r) for r in second], client_id="crash-pub")
    pipeline.start("processing", "process")
    expected = {f"crash-{d}": 400 for d in range(3)}
    wait_until(lambda: device_counts(pipeline, "crash-") == expected, WAIT_S, "400 readings of each crash- device",
               every=1.0, detail=lambda: str(device_counts(pipeline, "crash-")))
    rows = influx(pipeline).query('SELECT sum("sum") AS s FROM "device_window" WHERE "device_id" = \'crash-1\'')
    assert rows[0]["s"] == pytest.approx(sum(range(400)))


def test_detections_are_scored_against_the_generators_ground_truth(pipeline):
    labels = pipeline.workdir / "labels.jsonl"
    pipeline.run(["generate", "--devices", "6", "--sites", "2", "--rate", "500", "--count", "4000",
                  "--anomaly-rate", "0.01", "--seed", "11"],
                 {"TSDEMO_CLIENT_ID": "gen-anomalies", "TSDEMO_LEDGER_PATH": str(pipeline.workdir / "anom.json"),
                  "TSDEMO_LABELS_PATH": str(labels)})
    assert labels.exists() and labels.read_text().strip()

    def scored():
        result = pipeline.run(["anomalies", "score", "--labels-path", str(labels), "--json"])
        return json.loads(result.stdout)

    report = wait_until(lambda: (lambda r: r if r["detections"] and r["per_kind"].get("spike", {}).get("found")
                                  else None)(scored()), 120, "detections that found a spike", every=1.0,
                        detail=lambda: json.dumps(scored()))
    print("anomaly scores:", json.dumps(report))
    assert 0.0 < report["precision"] <= 1.0 and 0.0 < report["recall"] <= 1.0
    assert report["per_kind"]["spike"]["recall"] >= 0.5  # a spike of 4-8 noise widths is plain to see
