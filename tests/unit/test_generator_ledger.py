"""The ledger's accounting rules and its size, without a broker."""

from __future__ import annotations

import json
import random

from generators.accounting import Accountant
from generators.labels import LabelWriter, read_labels
from generators.ledger import BUCKET_MS, COMPACT_STEP_MS, DETAIL_MS, Ledger, load_ledger, read_ledger
from generators.outgoing import Batcher, CopyGroup, Item, Message

T0 = 1_700_000_000_000 - 1_700_000_000_000 % BUCKET_MS


def reading(dev: str, seq: int, ts: int, boot: int = 0, metrics=("a", "b")) -> dict:
    return {"device_id": dev, "site": "s1", "type": "t", "ts": ts, "seq": seq, "boot": boot,
            "metrics": {m: 1.0 for m in metrics}}


def message(*items: Item) -> Message:
    return Message("sensors/s1/gw-s1", b"", list(items))


def test_buckets_older_than_the_detail_horizon_merge_but_settled_cutoffs_stay_exact(tmp_path):
    detail = 10 * BUCKET_MS
    ledger = Ledger(tmp_path / "l.json", detail_ms=detail)
    rng = random.Random(3)
    stamps = sorted(T0 + rng.randrange(60 * BUCKET_MS) for _ in range(6000))  # an hour of readings
    for i, ts in enumerate(stamps):
        ledger.record([reading(f"d{i % 7}", i, ts)])
        if i % 500 == 0:
            ledger.flush()  # compaction runs at every rewrite, as in a live run
    ledger.flush()
    header, entries = read_ledger(tmp_path / "l.json")
    newest = stamps[-1]
    merged = header["merged_before_ms"]
    assert newest - detail - COMPACT_STEP_MS - BUCKET_MS <= merged <= newest - detail
    for e in entries:
        # one merged bucket plus at most the minutes since the merge boundary
        assert len(e.buckets) <= (detail + COMPACT_STEP_MS) // BUCKET_MS + 2
    # Any cutoff from the merge boundary on counts exactly what a reader expects.
    for until in range(merged, newest + 2 * BUCKET_MS, BUCKET_MS):
        want = sum(1 for i, ts in enumerate(stamps) if i % 7 == 0 and ts - ts % BUCKET_MS + BUCKET_MS <= until)
        got = next(e for e in entries if e.device_id == "d0" and e.metric == "a").count(until)
        assert got == want, until
    assert header["published"] == 6000 and header["merged_before_ms"] > T0


def test_late_section_header_counts_and_reload_carry_on(tmp_path):
    path = tmp_path / "l.json"
    ledger = Ledger(path, late_threshold_ms=30_000)
    ledger.record([reading("d1", 0, T0), reading("d1", 1, T0 + 1)])
    ledger.record([reading("d1", 2, T0 - 5 * BUCKET_MS)], late=True)
    ledger.count_extra(malformed=2, duplicates=3, messages=4)
    ledger.flush()
    f = load_ledger(path)
    assert f.header["published"] == 3 and f.header["late_published"] == 1
    assert (f.header["malformed_sent"], f.header["duplicates_sent"], f.header["messages_acked"]) == (2, 3, 4)
    assert f.header["late_threshold_ms"] == 30_000
    assert "late" not in f.header and "devices" not in f.header
    assert {(e.device_id, e.metric): e.count() for e in f.entries} == {("d1", "a"): 2, ("d1", "b"): 2}
    assert {(e.device_id, e.metric): e.buckets for e in f.late} == {
        ("d1", "a"): {T0 - 5 * BUCKET_MS: 1}, ("d1", "b"): {T0 - 5 * BUCKET_MS: 1}}
    again = Ledger(path)
    again.record([reading("d1", 0, T0 + 2, boot=1)])
    again.record([reading("d1", 1, T0 - 5 * BUCKET_MS, boot=1)], late=True)
    again.count_extra(malformed=1)
    again.flush()
    f2 = load_ledger(path)
    assert f2.header["published"] == 5 and f2.header["late_published"] == 2 and f2.header["malformed_sent"] == 3
    assert sum(e.count() for e in f2.late) == 4  # two late readings of two metrics each


def test_boots_sent_count_even_unacknowledged_so_a_restart_never_reuses_an_id(tmp_path):
    path = tmp_path / "l.json"
    ledger = Ledger(path)
    ledger.record([reading("d1", 0, T0, boot=0)])
    ledger.note_sent([reading("d1", 0, T0, boot=3)])  # a reboot's reading, sent but never acked
    ledger.flush()
    assert Ledger(path).previous_boot("d1") == 3
    assert json.loads(path.read_text())["devices"]["d1"]["boot"] == 3


def test_a_reading_sent_twice_counts_once_whichever_copy_is_acknowledged(tmp_path):
    ledger = Ledger(None)
    labels = LabelWriter(tmp_path / "labels.jsonl")
    acct = Accountant(ledger, labels)
    lab = [{"device_id": "d1", "seq": 0, "metric": "a", "kind": "spike"}]
    r = reading("d1", 0, T0)
    group = CopyGroup()
    original, copy = Item(reading=r, labels=lab, group=group), Item(reading=r, labels=lab, group=group, copy=True)
    assert acct.acked([message(copy)]) == 1  # the copy's PUBACK came first
    assert acct.acked([message(original)]) == 0
    assert ledger.published == 1 and ledger.duplicates_sent == 1
    # A reading whose first copy was refused is counted when the second is acknowledged.
    g2 = CopyGroup()
    r2 = reading("d1", 1, T0)
    assert acct.acked([message(Item(reading=r2, group=g2, copy=True))]) == 1
    assert ledger.published == 2 and ledger.duplicates_sent == 1
    acct.acked([message(Item(payload=b"{", topic="sensors/s1/d1"))])
    assert ledger.malformed_sent == 1 and ledger.published == 2
    acct.dropped([Item(labels=[{"device_id": "d1", "seq": 5, "metric": "a", "kind": "dropout"}])])
    labels.close()
    written = list(read_labels(tmp_path / "labels.jsonl"))
    assert [(x["seq"], x["kind"]) for x in written] == [(0, "spike"), (5, "dropout")]  # labels once each


def test_batcher_marks_readings_late_against_the_newest_event_time_sent():
    batcher = Batcher(batch=1, late_threshold_ms=30_000)
    stamps = [T0, T0 + 40_000, T0 + 15_000, T0 + 9_000, T0 + 50_000, T0 + 19_999]
    msgs = [m for ts in stamps for m in batcher.add([Item(reading=reading("d", 0, ts))])]
    assert [m.items[0].late for m in msgs] == [False, False, False, True, False, True]
    assert msgs[0].topic == "sensors/s1/d"


def test_bare_readings_travel_plain_unless_late_and_count_like_items(tmp_path):
    batcher = Batcher(batch=2, late_threshold_ms=30_000)
    plain = batcher.add_plain([reading("d", 0, T0), reading("e", 0, T0), reading("d", 1, T0 + 40_000)])
    (m1,) = plain
    assert m1.plain is not None and m1.items == [] and m1.readings == 2
    assert [r["seq"] for r in json.loads(m1.payload)] == [0, 0]
    # The clock went back past the threshold: the late reading becomes an Item the ledger keeps apart,
    # and the on-time one beside it an Item too.
    (m2,) = batcher.add_plain([reading("e", 1, T0 + 1_000)])
    assert m2.plain is None and [i.late for i in m2.items] == [False, True]
    # A buffer that holds items and bare readings alike makes an item message.
    batcher.add([Item(reading=reading("f", 0, T0 + 50_000))])
    (m3,) = batcher.add_plain([reading("g", 0, T0 + 50_000)])
    assert m3.plain is None and len(m3.items) == 2 and not any(i.late for i in m3.items)
    ledger = Ledger(tmp_path / "l.json")
    acct = Accountant(ledger, LabelWriter(None))
    acct.sent([m1, m2, m3])
    assert acct.acked([m1, m2, m3]) == 6
    assert ledger.published == 6 and ledger.late_published == 1 and ledger.messages_acked == 3


def test_gateway_batches_fill_per_site_and_flush_when_old():
    now = [0.0]
    batcher = Batcher(batch=3, late_threshold_ms=30_000, clock=lambda: now[0])
    out = batcher.add([Item(reading=reading("d", i, T0 + i)) for i in range(4)])
    assert [(m.topic, len(m.items)) for m in out] == [("sensors/s1/gw-s1", 3)]
    assert json.loads(out[0].payload)[2]["seq"] == 2
    assert batcher.due() == [] and batcher.pending() == 1
    now[0] = 1.0
    (aged,) = batcher.due()
    assert json.loads(aged.payload) == reading("d", 3, T0 + 3)  # a lone reading goes in the object form
    malformed = batcher.add([Item(payload=b"oops", topic="sensors/s1/d")])
    assert [(m.topic, m.payload) for m in malformed] == [("sensors/s1/d", b"oops")]


def test_the_ledger_stays_small_for_a_large_fleet(tmp_path):
    path = tmp_path / "l.json"
    ledger = Ledger(path)
    devices = 4_000
    for minute in range(30):  # half an hour, every device reporting each minute
        ledger.record([reading(f"dev-{d:06d}", minute, T0 + minute * BUCKET_MS + d, metrics=("x", "y", "z"))
                       for d in range(devices)])
        if minute % 5 == 0:
            ledger.flush()
    ledger.flush()
    per_device = path.stat().st_size / devices
    # The detail horizon plus one merged bucket, per metric: bounded whatever the run's length.
    buckets = (DETAIL_MS + COMPACT_STEP_MS) // BUCKET_MS + 2
    assert per_device < 3 * buckets * 25 + 200, per_device
