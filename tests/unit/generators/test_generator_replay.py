"""Replay files: CSV and JSONL readings, rebased to now, with fresh reading ids; clear errors."""

from __future__ import annotations

import json

import pytest

from generators.replay import ReplaySource, read_readings

NOW = 1_800_000_000_000


def all_readings(source: ReplaySource) -> list[dict]:
    out = []
    while (items := source.next(0)) is not None:
        out.extend(i.reading for i in items)
    return out


def test_jsonl_objects_and_gateway_arrays_rebased_to_now_with_boots_past_the_ledger(tmp_path):
    path = tmp_path / "r.jsonl"
    base = {"site": "lab", "type": "environment", "metrics": {"temperature": 20.5}}
    lines = [
        {**base, "device_id": "a", "ts": 1_000_000, "seq": 7},
        [{**base, "device_id": "a", "ts": 1_000_500, "seq": 8}, {**base, "device_id": "b", "ts": 1_000_500, "seq": 0,
                                                                 "boot": 2}],
        {**base, "device_id": "b", "ts": 1_061_000, "seq": 1, "boot": 2, "lat": 1.5},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    known = {"a": 4}  # the ledger saw device a up to boot 4, never b
    got = all_readings(ReplaySource(path, NOW, known.get))
    assert [(r["device_id"], r["boot"], r["seq"], r["ts"]) for r in got] == [
        ("a", 5, 7, NOW), ("a", 5, 8, NOW + 500), ("b", 2, 0, NOW + 500), ("b", 2, 1, NOW + 61_000)]
    assert got[3]["lat"] == 1.5 and got[0]["metrics"] == {"temperature": 20.5}


def test_csv_with_iso_or_epoch_times_numbers_missing_seq_and_empty_cells(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text(
        "device_id,site,type,ts,temperature,humidity,battery\n"
        "d1,lab,environment,2024-05-01T12:00:00Z,20.5,40,99.5\n"
        "d1,lab,environment,1714564801000,20.6,,99.4\n"
        "d2,lab,environment,2024-05-01T12:00:02+00:00,19,41,\n"
    )
    got = all_readings(ReplaySource(path, NOW, lambda _d: None))
    assert [(r["device_id"], r["seq"], r["boot"], r["ts"] - NOW) for r in got] == [
        ("d1", 0, 0, 0), ("d1", 1, 0, 1000), ("d2", 0, 0, 2000)]
    assert got[0]["metrics"] == {"temperature": 20.5, "humidity": 40.0} and got[0]["battery"] == 99.5
    assert got[1]["metrics"] == {"temperature": 20.6} and "battery" not in got[2]


def test_a_line_that_is_not_a_reading_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"device_id": "d", "site": "s", "type": "t", "ts": 1, "metrics": {"x": 1}}) + "\n"
                    + json.dumps({"device_id": "d", "ts": 2, "metrics": {"x": 1}}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not a reading, missing site, type"):
        list(read_readings(path))
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text("device_id,site,type,ts,x\nd,s,t,yesterday,1\n")
    with pytest.raises(ValueError, match=r"bad.csv:2: bad ts 'yesterday'"):
        list(read_readings(csv_path))


def test_a_replayed_file_is_read_lazily(tmp_path):
    path = tmp_path / "big.jsonl"
    with open(path, "w") as f:
        for i in range(20_000):
            f.write(json.dumps({"device_id": "d", "site": "s", "type": "t", "ts": i, "metrics": {"x": i}}) + "\n")
    source = ReplaySource(path, NOW, lambda _d: None)
    assert source.next(0)[0].reading["ts"] == NOW
    assert len(source._ahead) < 10  # noqa: SLF001 (only what was asked for was read)
