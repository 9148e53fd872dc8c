"""Rendered payloads: the generator's own bytes, repeated under new boots later in event time."""

from __future__ import annotations

import json

from deploy.bench.payloads import render_payloads, shift_copy


def test_a_copy_moves_every_reading_to_the_next_boot_and_later_in_time():
    line = b'[{"device_id":"d","ts":1000,"seq":0,"boot":0,"metrics":{}},{"device_id":"e","ts":1500,"seq":3,"boot":2}]'
    assert shift_copy(line, 0, 60_000) == line
    copied = json.loads(shift_copy(line, 2, 60_000))
    assert [(r["ts"], r["boot"], r["seq"]) for r in copied] == [(121_000, 2, 0), (121_500, 4, 3)]


def test_payloads_repeat_with_unique_ids_and_event_time_moving_forward(tmp_path):
    s = render_payloads(devices=4, sites=2, batch=2, readings=300, out_dir=tmp_path, rate=1000.0, base_max=120)
    assert s.readings == 300 and s.messages == 150 and s.readings_per_message == 2  # 3 copies of 100, not 120
    ids, newest_by_copy = set(), {}
    for topic, path in s.topic_files.items():
        assert topic.startswith("sensors/") and topic.rsplit("/", 1)[1].startswith("gw-")
        for line in path.read_bytes().splitlines():
            for r in json.loads(line):
                ids.add((r["device_id"], r["boot"], r["seq"]))
                newest_by_copy[r["boot"]] = max(newest_by_copy.get(r["boot"], 0), r["ts"])
    assert len(ids) == 300
    assert newest_by_copy[0] < newest_by_copy[1] < newest_by_copy[2]
    keyed = s.kafka_file.read_bytes().splitlines()
    assert len(keyed) == s.messages
    key, _, value = keyed[0].partition(b"\t")
    assert key.startswith(b"gw-") and json.loads(value)


def test_a_second_call_reuses_what_was_rendered(tmp_path):
    first = render_payloads(devices=2, sites=1, batch=1, readings=50, out_dir=tmp_path, rate=100.0)
    stamp = first.kafka_file.stat().st_mtime_ns
    again = render_payloads(devices=2, sites=1, batch=1, readings=50, out_dir=tmp_path, rate=100.0)
    assert again == first and again.kafka_file.stat().st_mtime_ns == stamp
