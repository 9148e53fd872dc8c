"""The worker processes' share of the fleet and of the work, and their ledger: what a worker ships and
the main process adds up is the ledger one process would have kept."""

from __future__ import annotations

import queue
import random

import pytest
from pydantic import ValidationError

from generators.fleet import build_fleet
from generators.ledger import Ledger, boot_keys, count_keys, plain_boot_keys, plain_count_keys
from generators.run import make_ledger, make_source
from generators.settings import GeneratorSettings
from generators.workers import ShippingLedger, _apply, shares, whole_shares
from servicekit.contract.ledger import BUCKET_MS

T0 = 1_700_000_000_000 - 1_700_000_000_000 % BUCKET_MS


def test_the_parts_of_a_fleet_are_whole_sites_and_cover_it_once():
    fleet = build_fleet(23, 5, seed=7)
    parts = [fleet.part(k, 2) for k in range(2)]
    assert [[s.site_id for s in p.sites] for p in parts] == [[s.site_id for s in fleet.sites[k::2]] for k in range(2)]
    ids = [d.device_id for p in parts for d in p]
    assert sorted(ids) == sorted(d.device_id for d in fleet) and len(set(ids)) == 23
    for p in parts:
        assert {d.site.site_id for d in p} == {s.site_id for s in p.sites}


@pytest.mark.parametrize("total, weights", [(10_000, [12, 11]), (7, [1, 1, 1]), (0, [3, 2]), (5, [10, 1])])
def test_counts_split_in_proportion_and_add_up_exactly(total, weights):
    split = whole_shares(total, weights)
    assert sum(split) == total
    assert all(abs(n - x) < 1 for n, x in zip(split, shares(total, weights), strict=True))


def test_processes_need_whole_sites_and_the_simulated_fleet(tmp_path):
    with pytest.raises(ValidationError, match="cannot exceed the number of sites"):
        GeneratorSettings(sites=2, processes=3)
    replay = tmp_path / "r.jsonl"
    replay.write_text("")
    with pytest.raises(ValidationError, match="a replay is one stream"):
        GeneratorSettings(sites=2, processes=2, replay_path=replay)
    assert GeneratorSettings(sites=2, processes=2).processes == 2


def reading(dev: str, site: str, seq: int, ts: int, boot: int = 0, metrics=("a", "b")) -> dict:
    return {"device_id": dev, "site": site, "type": "t", "ts": ts, "seq": seq, "boot": boot,
            "metrics": {m: 1.0 for m in metrics}}


def test_what_workers_ship_adds_up_to_the_ledger_one_process_keeps(tmp_path):
    rng = random.Random(5)
    batches = []
    for _ in range(60):
        part = rng.randrange(2)
        site = f"s{part}"
        batch = [reading(f"d{part}-{rng.randrange(4)}", site, rng.randrange(1000),
                         T0 + rng.randrange(5 * BUCKET_MS), boot=rng.randrange(2),
                         metrics=rng.choice([("a", "b"), ("a",)])) for _ in range(rng.randrange(1, 30))]
        batches.append((part, batch, rng.random() < 0.2))
    one = Ledger(tmp_path / "one.json", late_threshold_ms=30_000)
    main = Ledger(tmp_path / "main.json", late_threshold_ms=30_000)
    out: queue.Queue = queue.Queue()
    workers = [ShippingLedger(k, {}, out) for k in range(2)]
    last: dict = {}
    labels = type("Labels", (), {"written": [], "write": lambda self, ls: self.written.extend(ls)})()
    for i, (part, batch, late) in enumerate(batches):
        one.note_sent(batch)
        one.record(batch, late=late)
        one.count_extra(messages=1, duplicates=i % 3)
        workers[part].note_boots(boot_keys(batch))
        workers[part].add_counts(count_keys(batch, late))
        workers[part].count_extra(messages=1, duplicates=i % 3)
        workers[part].labels.write([{"i": i}])
        if i % 7 == 0:
            workers[part].flush()
    one.note_sent([reading("d9", "s1", 0, T0, boot=4)])  # sent, never acknowledged: its boot still counts
    workers[1].note_boots(boot_keys([reading("d9", "s1", 0, T0, boot=4)]))
    for w in workers:
        w.flush()
    while not out.empty():
        kind, part, shipment = out.get()
        assert kind == "counts"
        _apply(main, labels, shipment, last)
    for ledger in (one, main):
        ledger.complete = True
    a, b = one.snapshot(), main.snapshot()
    for s in (a, b):
        s.pop("updated_ms")
    assert a == b
    assert b["published"] == sum(len(batch) for _, batch, _ in batches) and b["late_published"] > 0
    assert main.previous_boot("d9") == 4
    assert sorted(x["i"] for x in labels.written) == list(range(60))


def test_plain_readings_are_keyed_as_any_readings_are():
    settings = GeneratorSettings(devices=20, sites=2, batch=10)
    source = make_source(settings, make_ledger(settings, None), T0)
    one_pass = source.next_many(T0, 45)
    two_passes = one_pass + source.next_many(T0 + 1000, 30)
    for readings in (one_pass, two_passes, one_pass[:1], []):
        assert plain_count_keys(readings) == count_keys(readings)
        assert plain_boot_keys(readings) == boot_keys(readings)
