"""The generator's numpy fast path draws readings like the per-reading path does."""

from __future__ import annotations

import random
import statistics

import pytest

from generators.faults import FaultConfig
from generators.fleet import build_fleet
from generators.signals import clean_values
from generators.stream import ReadingStream
from generators.ticks import FleetTick

T0 = 1_780_000_000_000


def test_readings_follow_the_fleet_in_turn_with_seq_battery_and_specs():
    fleet = build_fleet(12, 3, seed=5)
    batteries = {d.device_id: d.battery for d in fleet}
    tick = FleetTick(fleet, 5, T0)
    first = tick.readings(10, 30, T0 + 1000)  # wraps round the fleet more than twice
    assert [r["device_id"] for r in first] == [fleet[(10 + i) % 12].device_id for i in range(30)]
    for device in fleet:
        mine = [r for r in first if r["device_id"] == device.device_id]
        assert [r["seq"] for r in mine] == list(range(len(mine)))
        assert device.seq == len(mine)
        if device.battery is not None:
            assert mine[0]["battery"] == round(batteries[device.device_id], 2)
            assert [r["battery"] for r in mine] == sorted((r["battery"] for r in mine), reverse=True)
    for r in first:
        kind = next(d for d in fleet if d.device_id == r["device_id"]).kind
        assert tuple(r["metrics"]) == kind.metric_names and r["ts"] == T0 + 1000 and r["type"] == kind.name
        for spec in kind.metrics:
            value = r["metrics"][spec.name]
            assert spec.low <= value <= spec.high and value == round(value, spec.decimals)
        if "power" in r["metrics"]:
            m = r["metrics"]
            pf = next(d for d in fleet if d.device_id == r["device_id"]).power_factor
            assert m["power"] == pytest.approx(min(15_000.0, m["voltage"] * m["current"] * pf), abs=0.051)


def test_passes_shorter_than_the_fleet_touch_only_their_devices_and_continue_each_seq():
    fleet = build_fleet(12, 3, seed=5)
    tick = FleetTick(fleet, 5, T0)
    seen: dict[str, list[int]] = {}
    start = 9
    for n in (5, 7, 1, 12, 3):  # wrapping round the fleet's end, shorter and as long as the fleet
        before = {d.device_id: d.seq for d in fleet}
        batch = tick.readings(start, n, T0 + 1000)
        touched = {r["device_id"] for r in batch}
        assert all(d.seq == before[d.device_id] for d in fleet if d.device_id not in touched)
        for r in batch:
            seen.setdefault(r["device_id"], []).append(r["seq"])
        start = (start + n) % 12
    for device in fleet:
        assert seen[device.device_id] == list(range(device.seq))
        if device.battery is not None:
            assert device.battery >= 0


def test_the_same_seed_draws_the_same_readings():
    a = FleetTick(build_fleet(8, 2, seed=9), 9, T0).readings(0, 50, T0)
    b = FleetTick(build_fleet(8, 2, seed=9), 9, T0).readings(0, 50, T0)
    c = FleetTick(build_fleet(8, 2, seed=10), 10, T0).readings(0, 50, T0)
    assert a == b and a != c


def test_values_have_the_per_reading_paths_distribution():
    # Same fleet and moment: the means and spreads of each metric agree with clean_values' draws.
    fleet = build_fleet(40, 4, seed=3)
    tick = FleetTick(fleet, 3, T0)
    fast = tick.readings(0, 40 * 200, T0 + 3_600_000)
    rng = random.Random(1)
    slow = [(d, clean_values(d, T0 + 3_600_000, T0, rng)) for _ in range(200) for d in fleet]
    for kind in {d.kind for d in fleet}:
        for spec in kind.metrics:
            f = [r["metrics"][spec.name] for r in fast if r["type"] == kind.name]
            s = [v[spec.name] for d, v in slow if d.kind is kind]
            scale = max(statistics.pstdev(s), 10 ** -spec.decimals)
            assert abs(statistics.fmean(f) - statistics.fmean(s)) < 0.1 * scale + 10 ** -spec.decimals, spec.name
            assert statistics.pstdev(f) == pytest.approx(statistics.pstdev(s), rel=0.2, abs=10 ** -spec.decimals)


def test_only_a_fault_free_stream_takes_the_fast_path():
    fleet = build_fleet(4, 1, seed=1)
    assert ReadingStream(fleet, FaultConfig(), 1, T0).vectorised
    faulty = ReadingStream(build_fleet(4, 1, seed=1), FaultConfig(duplicate_rate=0.1), 1, T0)
    assert not faulty.vectorised
    with pytest.raises(RuntimeError):
        faulty.next_many(T0, 4)
