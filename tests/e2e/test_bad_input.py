"""The bad-input corpus (tests/corpus) through the whole pipeline: every bad reading in the DLQ with a
reason, every good reading beside it stored, and the counts add up."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from kafka import KafkaConsumer

from deploy.wait import wait_until
from tests.support.mqtt_publish import publish_all

CORPUS = Path(__file__).resolve().parents[1] / "corpus"


def corpus_messages(now_ms: int) -> list[tuple[str, bytes]]:
    messages = []
    for name in sorted(json.loads((CORPUS / "manifest.json").read_text())):
        if name.endswith(".gen"):
            continue
        body = (CORPUS / name).read_bytes()
        body = body.replace(b'"__NOW__"', str(now_ms).encode())
        body = body.replace(b'"__FUTURE__"', str(now_ms + 86_400_000).encode())
        messages.append(("sensors/corpus/c", body))
    huge = json.dumps({"device_id": "c-huge", "site": "corpus", "type": "environment", "ts": now_ms, "seq": 0,
                       "metrics": {"temperature": 1.0}, "pad": "x" * (2 << 20)}).encode()
    messages.append(("sensors/corpus/c-huge", huge))
    return messages


def test_every_bad_reading_lands_in_the_dlq_and_the_counts_add_up(pipeline):
    manifest = json.loads((CORPUS / "manifest.json").read_text())
    expect_stored = sum(m["stored_readings"] for m in manifest.values())
    expect_dlq = sum(m["dlq_readings"] for m in manifest.values())
    expect_bridge_dlq = sum(m.get("bridge_dlq", 0) for m in manifest.values())
    duplicates = sum(m.get("duplicates", 0) for m in manifest.values())
    published = expect_stored + expect_dlq + duplicates

    publish_all(pipeline.mosquitto.host, pipeline.mosquitto.port, corpus_messages(int(time.time() * 1000)),
                client_id="corpus-pub")

    from storage.queries import InfluxQuery
    from storage.settings import InfluxSettings

    query = InfluxQuery(InfluxSettings(influx_url=pipeline.env["TSDEMO_INFLUX_URL"],
                                       influx_database=pipeline.env["TSDEMO_INFLUX_DATABASE"]))

    def stored() -> int:
        # One metric per corpus reading, so summed window counts are readings.
        rows = query.query('SELECT sum("count") AS n FROM "device_window" WHERE "site" = \'corpus\'')
        return int(rows[0]["n"]) if rows else 0

    consumer = KafkaConsumer(pipeline.env["TSDEMO_KAFKA_DLQ_TOPIC"],
                             bootstrap_servers=pipeline.env["TSDEMO_KAFKA_BOOTSTRAP"],
                             auto_offset_reset="earliest", consumer_timeout_ms=5_000)
    processing_dlq, bridge_dlq = [], []

    def all_in() -> bool:
        for record in consumer:
            headers = {k: v.decode() for k, v in record.headers}
            assert headers.get("reason"), headers
            (processing_dlq if "source_offset" in headers else bridge_dlq).append(headers["reason"])
        return (len(processing_dlq) >= expect_dlq and len(bridge_dlq) >= expect_bridge_dlq
                and stored() >= expect_stored)

    with contextlib.suppress(TimeoutError):  # what is missing, the assertions below say
        wait_until(all_in, 180, "every dead letter and stored reading", every=0)
    consumer.close()
    time.sleep(3)  # a wrong extra record or stored reading would show up by now
    assert stored() == expect_stored
    assert len(processing_dlq) == expect_dlq, sorted(processing_dlq)
    assert len(bridge_dlq) == expect_bridge_dlq and "exceeds" in bridge_dlq[0]
    assert stored() + len(processing_dlq) + duplicates == published
    assert pipeline.services["processing"].healthy() and pipeline.services["ingest"].healthy()
