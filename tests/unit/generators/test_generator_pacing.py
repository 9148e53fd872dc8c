"""The pacer and the rate meter on a simulated clock: the schedule logic alone, with no timing in the
test itself. Whether a real process on this machine holds the rate is the benchmark's question
(``RunReport.rate.within``), not a CI assertion."""

from __future__ import annotations

import json
import random

from generators.pacing import RateMeter, RatePacer
from generators.replay import FileTimingPacer, ReplaySource


def simulate(rate: float, seconds: float, cost_s: float = 0.0, stall_every_s: float = 0.0, stall_s: float = 0.0,
             seed: int = 1):
    """The run loop's use of pacer and meter, on a fake clock with jitter, stalls and a cost per reading."""
    rng = random.Random(seed)
    now, start = 100.0, 100.0
    pacer, meter = RatePacer(rate, start), RateMeter(start, rate)
    generated, next_stall = 0, start + stall_every_s
    last = start
    while now - start < seconds:
        due = pacer.due(now)
        n = min(max(due, 0), 5000)
        pacer.took(n)
        generated += n
        now += n * cost_s
        if n:
            last = now
        meter.tick(now, generated)
        now += 0.01 + rng.uniform(-0.005, 0.005)  # the loop's sleep, never exact
        if stall_every_s and now >= next_stall:
            now += stall_s  # a ledger rewrite, a GC pause, a full in-flight window
            next_stall += stall_every_s
    return meter.report(last, generated)


def test_the_rate_holds_over_every_minute_despite_jitter_and_stalls():
    report = simulate(rate=2000, seconds=300, cost_s=20e-6, stall_every_s=15, stall_s=0.8)
    assert report.within(0.05), report
    assert abs(report.achieved - 2000) / 2000 < 0.005
    assert report.worst_window is not None and report.worst_window >= 0.97 * 2000
    assert report.best_window is not None and report.best_window <= 1.03 * 2000


def test_a_generator_too_slow_for_its_target_is_reported_as_missing_it():
    report = simulate(rate=2000, seconds=120, cost_s=600e-6)  # at most ~1,600 readings/s
    assert not report.within(0.05)
    assert report.achieved < 0.9 * 2000


def test_the_meter_sees_one_slow_minute_in_a_long_run():
    meter = RateMeter(0.0, 100.0)
    count = 0
    for second in range(1, 301):
        count += 80 if 120 < second <= 180 else 100
        meter.tick(float(second), count)
    report = meter.report()
    assert report.worst_window is not None and report.worst_window < 0.85 * 100
    assert not report.within(0.05)
    assert report.achieved == count / 300


def test_a_short_run_is_judged_on_its_overall_rate():
    report = simulate(rate=500, seconds=10)
    assert report.worst_window is None and report.within(0.05)


def test_replay_at_the_original_timing(tmp_path):
    path = tmp_path / "r.jsonl"
    offsets = [0, 100, 250, 250, 1000]
    path.write_text("".join(json.dumps({"device_id": "d", "site": "s", "type": "t", "ts": 5_000 + o,
                                        "metrics": {"x": 1}}) + "\n" for o in offsets))
    source = ReplaySource(path, 1_000_000, lambda _d: None)
    pacer = FileTimingPacer(source, start=10.0)
    taken = []
    for elapsed in (0.0, 0.05, 0.1, 0.3, 0.9, 1.0, 1.5):
        for _ in range(pacer.due(10.0 + elapsed)):
            items = source.next(0)
            if items is None:
                break
            taken.append((elapsed, items[0].reading["ts"]))
    assert taken == [(0.0, 1_000_000), (0.1, 1_000_100), (0.3, 1_000_250), (0.3, 1_000_250), (1.0, 1_001_000)]
    assert pacer.due(20.0) == 1 and source.next(0) is None  # the end of the file shows
