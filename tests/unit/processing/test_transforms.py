"""The job's pure transformations on small in-memory frames (a local Spark session, no Kafka)."""

import json
import time

import pytest

pyspark = pytest.importorskip("pyspark")

from processing import transforms as T  # noqa: E402

NOW_MS = int(time.time() * 1000)


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[1]").appName("tsdemo-unit")
        .config("spark.sql.shuffle.partitions", "1").config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC").getOrCreate()
    )
    yield session
    session.stop()


def frame(spark, payloads):
    from datetime import UTC, datetime

    received = datetime.fromtimestamp(NOW_MS / 1000, tz=UTC)
    rows = [(p if isinstance(p, bytes) else p.encode(), 0, i, received) for i, p in enumerate(payloads)]
    return spark.createDataFrame(rows, "value binary, partition int, offset long, timestamp timestamp")


def reading(dev="d1", seq=0, ts=NOW_MS, **extra):
    body = {"device_id": dev, "site": "s1", "type": "environment", "ts": ts, "seq": seq,
            "metrics": {"temperature": 20.0 + (seq if isinstance(seq, int) else 0), "humidity": 40.0}}
    body.update(extra)
    return body


def classified(spark, payloads):
    return T.parse_readings(frame(spark, payloads), max_metrics=4, max_future_ms=10_000)


def test_both_payload_forms_parse(spark):
    df = classified(spark, [json.dumps(reading(seq=0)), json.dumps([reading(seq=1), reading(seq=2)])])
    rows = df.orderBy("seq").collect()
    assert [r["seq"] for r in rows] == [0, 1, 2]
    assert all(r["reason"] is None for r in rows)


INVALID = [
    ("not json", "malformed JSON or not a reading object"),
    (b'{"device_id":"d\xff","site":"s","type":"t","ts":1,"seq":0,"metrics":{"x":1}}', "payload is not valid UTF-8"),
    ("[]", "empty batch"),
    ("[" * 3000 + "]" * 3000, "malformed JSON or not a reading object"),
    (json.dumps(reading(seq=-1)), "negative seq"),
    (json.dumps({k: v for k, v in reading().items() if k != "device_id"}), "missing or invalid device_id"),
    (json.dumps(reading(ts=5)), "ts before 2000-01-01"),
    (json.dumps(reading(ts=NOW_MS + 11_000)), "ts too far in the future"),
    ('{"device_id":"d","site":"s","type":"t","ts":' + str(NOW_MS) + ',"seq":0,"metrics":{"x":NaN}}',
     "non-finite or non-numeric metric value"),
    ('{"device_id":"d","site":"s","type":"t","ts":' + str(NOW_MS) + ',"seq":0,"metrics":{"x":1.5,"y":Infinity}}',
     "non-finite or non-numeric metric value"),
    ('{"device_id":"d","site":"s","type":"t","ts":' + str(NOW_MS) + ',"seq":0,"metrics":{"x":-Infinity,"y":2}}',
     "non-finite or non-numeric metric value"),
    ('{"device_id":"d","site":"s","type":"t","ts":' + str(NOW_MS) + ',"seq":0,"metrics":{"x":1.5,"y":null}}',
     "non-finite or non-numeric metric value"),
    ('{"device_id":"d","site":"s","type":"t","ts":' + str(NOW_MS) + ',"seq":0,"metrics":{"x":NaN,"y":null}}',
     "non-finite or non-numeric metric value"),
    (json.dumps(reading(metrics={f"m{i}": 1.0 for i in range(5)})), "more than 4 metrics"),
    (json.dumps(reading(metrics={})), "missing or empty metrics"),
    (json.dumps(reading(seq="seven")), "missing or non-integer seq"),
]


# Ids by position and reason: payloads holding NOW_MS would differ between pytest-xdist's workers.
@pytest.mark.parametrize("payload, reason", INVALID, ids=[f"{i}-{reason}" for i, (_, reason) in enumerate(INVALID)])
def test_invalid_readings_get_a_reason(spark, payload, reason):
    rows = classified(spark, [payload]).collect()
    assert [r["reason"] for r in rows] == [reason]


def test_an_oversized_batch_is_one_dlq_record(spark):
    payload = json.dumps([reading(seq=i) for i in range(5)])
    rows = T.parse_readings(frame(spark, [payload]), max_readings=4, max_metrics=4, max_future_ms=10_000).collect()
    assert [r["reason"] for r in rows] == ["too many readings in one message"]


def test_good_readings_beside_bad_ones_are_kept(spark):
    payload = json.dumps([reading(seq=0), reading(seq=-5), reading(seq=1)])
    df = classified(spark, [payload])
    assert sorted(r["seq"] for r in df.where("reason IS NULL").collect()) == [0, 1]
    assert all(r["payload"] is None for r in df.where("reason IS NULL").collect())  # no bytes on valid rows
    dlq = T.dlq_records(df).collect()
    assert len(dlq) == 1
    assert dlq[0]["value"] == payload.encode()
    headers = {h["key"]: h["value"].decode() for h in dlq[0]["headers"]}
    assert headers["reason"] == "negative seq" and headers["reading_index"] == "1"


def test_duplicates_are_dropped_and_windows_are_exact(spark):
    """Spark's parse and stateful input, then the stateful step (processing.stateful) on what Spark made."""
    from processing.anomaly import DetectorConfig
    from processing.stateful import WINDOW, BucketState, step

    # Two windows back, so no reading is further ahead of the receive time than max_future_ms allows.
    base = NOW_MS - NOW_MS % 10_000 - 20_000
    payloads = [json.dumps(reading(seq=i, ts=base + i * 1000)) for i in range(12)]
    payloads += payloads[3:6]  # at-least-once delivery repeats some
    payloads.reverse()  # and out of order
    payloads.append("not json")
    keys = T.bucket_keys(spark, 3, 2)
    assert len(set(keys)) == 3
    rows = T.stateful_input(classified(spark, payloads), keys).drop("event_time").toPandas()
    assert set(rows["bucket"]) <= set(keys)
    assert rows["reason"].tolist().count("malformed JSON or not a reading object") == 1
    assert rows.loc[rows["reason"].isna(), "bucket"].nunique() == 1  # a device's rows stay together
    out = step(rows, BucketState(), -1, 10_000, DetectorConfig())
    windows = {(r.time, r.metric): r for r in out[out["kind"] == WINDOW].itertuples()}
    first = windows[(base, "temperature")]
    assert first.count == 10
    assert first.mean == pytest.approx(sum(20.0 + i for i in range(10)) / 10)
    assert (first.min, first.max, first.first, first.last) == (20.0, 29.0, 20.0, 29.0)
    assert windows[(base + 10_000, "temperature")].count == 2
    assert windows[(base + 10_000, "humidity")].sum == 80.0


def test_the_bad_input_corpus_classifies_as_its_manifest_says(spark):
    """Each corpus file alone: its readings split into valid and invalid as the manifest counts them
    (the e2e test sends the same files through the whole pipeline; this pins the parser on its own)."""
    from pathlib import Path

    corpus = Path(__file__).resolve().parents[2] / "corpus"
    manifest = json.loads((corpus / "manifest.json").read_text())
    for name, expect in sorted(manifest.items()):
        if name.endswith(".gen"):
            continue
        body = (corpus / name).read_bytes()
        body = body.replace(b'"__NOW__"', str(NOW_MS).encode())
        body = body.replace(b'"__FUTURE__"', str(NOW_MS + 86_400_000).encode())
        rows = T.parse_readings(frame(spark, [body]), max_metrics=32, max_future_ms=10_000).collect()
        valid = sum(r["reason"] is None for r in rows)
        assert (valid, len(rows) - valid) == (
            expect["stored_readings"] + expect.get("duplicates", 0), expect["dlq_readings"]), (name, rows)
