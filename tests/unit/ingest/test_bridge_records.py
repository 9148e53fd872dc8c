"""What the bridge writes for a message: the payload unchanged, or a dead letter that says why."""

from __future__ import annotations

import pytest

from ingest.records import Message, Router, kafka_key, record_size
from ingest.settings import BridgeSettings

KAFKA_LIMIT = 1_048_576


def router(max_payload: int = 1_000_000, max_record: int = KAFKA_LIMIT) -> Router:
    return Router("readings", "readings-dlq", max_payload, max_record)


def test_a_reading_goes_unchanged_keyed_by_the_topics_last_segment():
    payload = b'{"device_id":"d-7","seq":1}\xff not even utf-8'
    rec = router().route(Message("sensors/site-a/d-7", payload, 1_700_000_000_123))
    assert rec.topic == "readings"
    assert rec.value is payload
    assert rec.key == b"d-7" == kafka_key("sensors/site-a/d-7")
    assert rec.headers == [("mqtt_topic", b"sensors/site-a/d-7"), ("received_ms", b"1700000000123")]
    assert rec.rejected is None


def test_a_payload_at_the_limit_is_forwarded_and_one_byte_more_is_rejected():
    r = router(max_payload=100)
    assert r.route(Message("sensors/s/d", b"x" * 100, 1)).topic == "readings"
    rec = r.route(Message("sensors/s/d", b"x" * 101, 1))
    assert rec.topic == "readings-dlq"
    assert rec.rejected == "too_large"


def test_a_dead_letter_keeps_the_original_bytes_when_they_fit_in_kafka():
    payload = bytes(range(256)) * 400  # 102,400 bytes: over the bridge's limit, well under Kafka's
    rec = router(max_payload=65_536).route(Message("sensors/s/gw-s", payload, 5))
    headers = dict(rec.headers)
    assert rec.value == payload
    assert rec.key == b"gw-s"
    assert headers["mqtt_topic"] == b"sensors/s/gw-s"
    assert headers["payload_bytes"] == b"102400"
    assert b"102400 bytes" in headers["reason"] and b"65536" in headers["reason"]


def test_a_dead_letter_keeps_the_leading_bytes_that_fit_when_the_payload_is_larger_than_kafka_allows():
    payload = b"0123456789" * 300_000  # 3 MB
    rec = router().route(Message("sensors/s/d", payload, 5))
    assert rec.topic == "readings-dlq"
    assert payload.startswith(rec.value)
    assert len(rec.value) > KAFKA_LIMIT - 1024  # nearly all the room Kafka gives, not a token prefix
    assert record_size(rec.key, rec.value, rec.headers) <= KAFKA_LIMIT
    assert dict(rec.headers)["payload_bytes"] == b"3000000"


def test_a_record_too_large_for_kafka_because_of_its_topic_is_rejected_even_under_the_payload_limit():
    topic = "sensors/" + "s" * 3000 + "/d"  # the topic goes into a header: the record outgrows Kafka's limit
    rec = router(max_payload=10_000, max_record=10_000).route(Message(topic, b"x" * 9_000, 5))
    assert rec.topic == "readings-dlq"
    assert b"Kafka request limit" in dict(rec.headers)["reason"]
    assert record_size(rec.key, rec.value, rec.headers) <= 10_000


def test_dead_letter_can_keep_just_a_prefix():
    rec = router().dead_letter(Message("sensors/s/d", b"y" * 5000, 5), "refused_by_kafka", "no", keep_bytes=1024)
    assert rec.value == b"y" * 1024
    assert rec.rejected == "refused_by_kafka"


@pytest.mark.parametrize("topic_len", [10, 200, 1000])
def test_with_the_default_settings_a_payload_at_the_limit_fits_a_kafka_record(topic_len: int):
    # The producer raises at send() for a record over max_request_size; the defaults must leave
    # room for the key and headers of any reasonable topic.
    s = BridgeSettings()
    topic = "sensors/site/" + "d" * topic_len
    payload = b"x" * s.max_message_bytes
    rec = Router("t", "dlq", s.max_message_bytes, s.kafka_max_request_bytes).route(Message(topic, payload, 1))
    assert rec.topic == "t"
    assert record_size(rec.key, rec.value, rec.headers) <= s.kafka_max_request_bytes


@pytest.mark.parametrize("headroom", range(0, 400, 7))
def test_the_size_shortcut_never_passes_a_record_over_the_kafka_limit(headroom: int):
    topic = "sensors/site-with-a-long-name/gw-site-with-a-long-name"
    limit = 50_000
    rec = router(max_payload=10 * limit, max_record=limit).route(Message(topic, b"y" * (limit - headroom), 1))
    if rec.rejected is None:
        assert record_size(rec.key, rec.value, rec.headers) <= limit
