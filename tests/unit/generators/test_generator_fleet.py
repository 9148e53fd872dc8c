"""The simulated fleet and its signals, without a broker: reproducible, plausible, cheap."""

from __future__ import annotations

import random
import statistics

import pytest
from pydantic import ValidationError

from generators.devicetypes import DEVICE_TYPES
from generators.faults import FaultConfig
from generators.fleet import SITE_RADIUS_DEG, build_fleet
from generators.settings import GeneratorSettings
from generators.signals import clean_values
from generators.stream import ReadingStream

DAY_MS = 86_400_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % DAY_MS  # a UTC midnight


def fingerprint(fleet) -> list:
    return [
        (d.device_id, d.site, d.type, d.lat, d.lon, d.bias, d.drift_per_h, d.phase_h, d.battery, fleet.identity(d))
        for d in fleet
    ]


def test_same_seed_same_fleet_and_another_seed_another():
    a, b, c = build_fleet(60, 4, seed=7), build_fleet(60, 4, seed=7), build_fleet(60, 4, seed=8)
    assert a.sites == b.sites and fingerprint(a) == fingerprint(b)
    assert a.sites != c.sites and fingerprint(a) != fingerprint(c)


def test_a_device_prefix_renames_the_devices_and_keeps_the_rest_of_the_fleet():
    plain, own = build_fleet(12, 3, seed=7), build_fleet(12, 3, seed=7, prefix="ctr")
    assert [d.device_id for d in own] == [d.device_id.replace("dev-", "ctr-", 1) for d in plain]
    assert [row[1:] for row in fingerprint(own)] == [row[1:] for row in fingerprint(plain)]


def test_a_device_prefix_that_would_break_a_topic_or_a_query_is_refused():
    assert GeneratorSettings(device_prefix="lab8_b").device_prefix == "lab8_b"
    for bad in ("", "a/b", "+", "Dev", "x" * 33, "a b", "-x"):
        with pytest.raises(ValidationError, match="device_prefix"):
            GeneratorSettings(device_prefix=bad)


def test_devices_spread_over_sites_and_types_near_their_site():
    fleet = build_fleet(40, 3, seed=1)
    assert {d.site.site_id for d in fleet} == {s.site_id for s in fleet.sites}
    assert len({s.site_id for s in fleet.sites}) == 3
    assert {d.type for d in fleet} == set(DEVICE_TYPES) >= {"environment", "power_meter", "air_quality", "vibration"}
    for d in fleet:
        assert abs(d.lat - d.site.lat) <= SITE_RADIUS_DEG + 1e-9 and abs(d.lon - d.site.lon) <= SITE_RADIUS_DEG + 1e-9
    for s in fleet.sites:
        assert s.city and s.country and -90 <= s.lat <= 90 and -180 <= s.lon <= 180


def test_identities_are_complete_and_serials_unique():
    fleet = build_fleet(5000, 5, seed=3)
    identities = [fleet.identity(d) for d in fleet]
    assert len({i.serial for i in identities}) == 5000
    for ident in identities[:50]:
        assert ident.manufacturer and ident.model and ident.firmware.count(".") == 2
        assert ident.installed[:2] in ("19", "20")
    manifest = list(fleet.manifest())
    assert manifest[0]["serial"] == identities[0].serial and manifest[0]["metrics"]


def test_every_type_has_several_metrics_with_units_and_ranges():
    expected = {
        "environment": {"temperature", "humidity", "pressure"},
        "power_meter": {"voltage", "current", "power"},
        "air_quality": {"pm2_5", "co2"},
        "vibration": {"rms", "peak"},
    }
    for name, metrics in expected.items():
        kind = DEVICE_TYPES[name]
        assert set(kind.metric_names) == metrics
        for m in kind.metrics:
            assert m.unit and m.low < m.high


def test_values_stay_in_physical_range_and_follow_a_daily_cycle():
    fleet = build_fleet(8, 1, seed=5)
    rng = random.Random(1)
    for device in fleet:
        day = [clean_values(device, T0 + h * 600_000, T0, rng) for h in range(144)]  # every 10 minutes
        for values in day:
            assert set(values) == set(device.kind.metric_names)
            for spec in device.kind.metrics:
                assert spec.low <= values[spec.name] <= spec.high
        if device.type == "environment":
            # Solar time: warmest in the local afternoon, coolest before dawn.
            local = [(T0 + h * 600_000) / 3_600_000 + device.site.solar_offset_h for h in range(144)]
            afternoon = [v["temperature"] for v, t in zip(day, local, strict=True) if 13 <= t % 24 <= 17]
            night = [v["temperature"] for v, t in zip(day, local, strict=True) if 1 <= t % 24 <= 5]
            assert statistics.mean(afternoon) > statistics.mean(night) + 4
        if device.type == "power_meter":
            for v in day:  # power follows from voltage and current
                assert v["power"] == pytest.approx(v["voltage"] * v["current"] * device.power_factor, rel=0.02, abs=1)


def test_per_device_bias_makes_devices_of_a_type_differ():
    fleet = build_fleet(16, 1, seed=9)
    envs = [d for d in fleet if d.type == "environment"]
    means = [statistics.mean(clean_values(d, T0 + 15 * 3_600_000, T0, random.Random(i))["temperature"]
                             for i in range(20)) for d in envs]
    assert len(set(round(m, 1) for m in means)) == len(envs)


def test_battery_drains_and_mains_devices_report_none():
    fleet = build_fleet(4, 1, seed=2)
    stream = ReadingStream(fleet, FaultConfig(), seed=2, started_ms=T0)
    first = {}
    last = {}
    for i in range(400):
        (item,) = stream.next(T0 + i * 1000)
        r = item.reading
        first.setdefault(r["device_id"], r.get("battery"))
        last[r["device_id"]] = r.get("battery")
    for device in fleet:
        if device.type == "power_meter":
            assert first[device.device_id] is None and last[device.device_id] is None
        else:
            assert last[device.device_id] < first[device.device_id]


def test_a_large_fleet_is_cheap_per_device():
    # Faker is called a bounded number of times whatever the size; identities derive lazily.
    import tracemalloc

    tracemalloc.start()
    try:
        fleet = build_fleet(20_000, 10, seed=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(fleet) == 20_000
    per_device = peak / 20_000
    assert per_device < 1500, f"{per_device:.0f} bytes per device"
