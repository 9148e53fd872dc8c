"""The ledger's bookkeeping and verify's comparison, without servers."""

from deploy.checks.verify import _cutoff, compare
from generators.ledger import Ledger
from servicekit.contract.ledger import BUCKET_MS, read_ledger


def reading(dev: str, seq: int, ts: int, metrics=("a", "b")) -> dict:
    return {"device_id": dev, "site": "s1", "type": "t", "ts": ts, "seq": seq, "boot": 2,
            "metrics": {m: 1.0 for m in metrics}}


def test_ledger_round_trips_and_reloads(tmp_path):
    path = tmp_path / "ledger.json"
    ledger = Ledger(path)
    ledger.record([reading("d1", 0, 1_000), reading("d1", 1, BUCKET_MS + 5), reading("d2", 0, 10)])
    ledger.complete = True
    ledger.flush()
    header, entries = read_ledger(path)
    assert header["published"] == 3 and header["complete"] is True
    counts = {(e.device_id, e.metric): e.count() for e in entries}
    assert counts == {("d1", "a"): 2, ("d1", "b"): 2, ("d2", "a"): 1, ("d2", "b"): 1}
    d1a = next(e for e in entries if e.device_id == "d1" and e.metric == "a")
    assert d1a.count(until_ms=BUCKET_MS) == 1  # only the first minute has settled
    again = Ledger(path)
    assert again.previous_boot("d1") == 2 and again.previous_boot("nope") is None
    again.record([reading("d1", 0, 2_000)])
    assert again.published == 4


def test_compare_reports_lost_and_double_counted():
    ledger = Ledger(None)
    ledger.record([reading("d1", i, 1_000 + i) for i in range(5)] + [reading("d2", 0, 1_000)])
    snapshot = ledger.snapshot()
    from servicekit.contract.ledger import LedgerEntry

    entries = [
        LedgerEntry(d, v["site"], v["type"], m, {int(b): n for b, n in bk.items()})
        for d, v in snapshot["devices"].items() for m, bk in v["metrics"].items()
    ]
    exact = compare(entries, {("d1", "a"): 5, ("d1", "b"): 5, ("d2", "a"): 1, ("d2", "b"): 1}, None)
    assert exact.ok and exact.expected == 12
    off = compare(entries, {("d1", "a"): 4, ("d1", "b"): 7, ("d2", "a"): 1, ("x", "a"): 3}, None)
    assert (off.lost, off.double_counted) == (1 + 1, 2)
    assert off.unknown_series == ["x/a"] and not off.ok


def test_cutoff_is_none_once_every_generator_finished():
    assert _cutoff([{"complete": True, "updated_ms": 5}], 90) is None
    cut = _cutoff([{"complete": False, "updated_ms": 10 * BUCKET_MS + 123}], 30)
    assert cut == 9 * BUCKET_MS


def test_late_readings_may_or_may_not_be_stored_but_no_more():
    from servicekit.contract.ledger import LedgerEntry

    entries = [LedgerEntry("d", "s", "t", "a", {0: 10})]
    late = [LedgerEntry("d", "s", "t", "a", {0: 3})]
    for got, lost, double in ((10, 0, 0), (12, 0, 0), (13, 0, 0), (14, 0, 1), (9, 1, 0)):
        r = compare(entries, {("d", "a"): got}, None, late)
        assert (r.lost, r.double_counted) == (lost, double), got
    assert compare(entries, {("d", "a"): 12}, None, late).late_stored == 2


def test_cutoff_never_falls_inside_merged_minutes():
    assert _cutoff([{"complete": False, "updated_ms": 10 * BUCKET_MS, "merged_before_ms": 12 * BUCKET_MS}], 0) \
        == 12 * BUCKET_MS


def test_a_problem_series_is_located_to_its_minutes_with_merged_minutes_as_one():
    from deploy.checks.verify import _differing_minutes
    from servicekit.contract.ledger import LedgerEntry

    m = BUCKET_MS
    # Minutes before 3m were merged by the ledger into the bucket keyed 2m.
    sent = [LedgerEntry("d1", "s", "t", "a", {2 * m: 30, 3 * m: 10, 4 * m: 10})]
    late = [LedgerEntry("d1", "s", "t", "a", {4 * m: 2})]

    class Stored:
        def stored_counts_by_minute(self, device_id, metric, since_ms, until_ms):
            assert (device_id, metric, since_ms) == ("d1", "a", 0)
            return {0: 10, m: 10, 2 * m: 10, 3 * m: 7, 4 * m: 12, 5 * m: 1}

    found = _differing_minutes({"device_id": "d1", "metric": "a"}, sent, late, Stored(), None, 3 * m)
    assert found == [
        {"minute_ms": 3 * m, "expected": 10, "stored": 7, "late": 0},
        {"minute_ms": 5 * m, "expected": 0, "stored": 1, "late": 0},
    ]
