"""Fault injection, without a broker: each fault at its configured rate, every anomaly labelled, and
the same seed giving the same stream.

Rates are checked against the binomial expectation: the observed count must lie within four
standard deviations of n*p, which at the sizes used here is 5 to 12% of the rate (a rate applied
twice, to the wrong readings or not at all fails). Every stream here is seeded, so the checks are
deterministic and cannot flake.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest

from generators.faults import ANOMALY_KINDS, MALFORMED_KINDS, FaultConfig, malformed_payload
from generators.fleet import build_fleet
from generators.stream import ReadingStream
from servicekit.contract.labels import LABEL_FIELDS
from tests.support.tally import parse_payload

T0 = 1_700_000_000_000
STEP_MS = 100


def drive(config: FaultConfig, n: int, devices: int = 50, seed: int = 11):
    """n readings at 10/s from a seeded fleet: [(now_ms, items)], the final drain as (None, items)."""
    fleet = build_fleet(devices, 5, seed)
    stream = ReadingStream(fleet, config, seed, T0)
    calls = [(T0 + i * STEP_MS, stream.next(T0 + i * STEP_MS)) for i in range(n)]
    calls.append((None, stream.drain()))
    return stream, calls


def readings(calls):
    return [i.reading for _, items in calls for i in items if i.reading is not None]


def labels(calls):
    return [lab for _, items in calls for i in items if not i.copy for lab in i.labels or ()]


def assert_rate(observed: int, eligible: int, p: float) -> None:
    expected = eligible * p
    sd = math.sqrt(eligible * p * (1 - p))
    assert abs(observed - expected) <= 4 * sd, f"{observed} of {eligible} (expected {expected:.0f} +- {4 * sd:.0f})"


def test_without_faults_the_stream_is_clean_and_exact():
    stream, calls = drive(FaultConfig(), 5000)
    rs = readings(calls)
    assert len(rs) == stream.generated == 5000
    assert all(len(items) == 1 and items[0].reading is not None and not items[0].labels for _, items in calls[:-1])
    assert calls[-1][1] == []
    ids = {(r["device_id"], r["boot"], r["seq"]) for r in rs}
    assert len(ids) == 5000
    assert all(r["ts"] == now for now, items in calls[:-1] for r in [items[0].reading])


ALL = FaultConfig(
    anomaly_rate=0.03, duplicate_rate=0.03, out_of_order_rate=0.03, late_rate=0.03, clock_skew_rate=0.2,
    offline_rate=0.005, offline_duration_ms=3000, reboot_rate=0.005, malformed_rate=0.03,
)


def _flat(calls):
    return [(now, i.reading, i.payload, i.labels, i.copy) for now, items in calls for i in items]


def test_same_seed_same_readings_and_faults_another_seed_others():
    _, a = drive(ALL, 4000, seed=5)
    _, b = drive(ALL, 4000, seed=5)
    _, c = drive(ALL, 4000, seed=6)
    assert _flat(a) == _flat(b)
    assert _flat(a) != _flat(c)


def test_only_labelled_values_differ_from_the_clean_stream_and_every_dropout_is_labelled():
    n = 20_000
    _, clean = drive(FaultConfig(), n)
    _, faulty = drive(FaultConfig(anomaly_rate=0.02), n)
    labelled = {(lab["device_id"], lab["seq"], lab["metric"]): lab for lab in labels(faulty)}
    assert labelled
    sent = {(r["device_id"], r["seq"]): r for r in readings(faulty)}
    differing, dropped = set(), set()
    for r in readings(clean):
        got = sent.get((r["device_id"], r["seq"]))
        if got is None:
            dropped.update((r["device_id"], r["seq"], m) for m in r["metrics"])
            continue
        assert got["ts"] == r["ts"]
        for metric, value in r["metrics"].items():
            if got["metrics"][metric] != value:
                differing.add((r["device_id"], r["seq"], metric))
                lab = labelled.get((r["device_id"], r["seq"], metric))
                assert lab is not None, f"unlabelled anomaly {r['device_id']} seq {r['seq']} {metric}"
                assert lab["value"] == got["metrics"][metric] and lab["normal"] == value
    assert dropped == {k for k, lab in labelled.items() if lab["kind"] == "dropout"}
    # Labels on readings that look normal are only the first readings of stuck-at episodes and a
    # drift's or spike's value pinned at a physical limit.
    quiet = {k for k, lab in labelled.items() if lab["kind"] != "dropout"} - differing
    assert len(quiet) <= 0.1 * len(labelled)


def test_labels_have_the_documented_fields_and_every_kind_appears():
    _, calls = drive(FaultConfig(anomaly_rate=0.03), 20_000)
    labs = labels(calls)
    assert set(LABEL_FIELDS) == {"device_id", "site", "type", "metric", "boot", "seq", "ts", "kind", "value",
                                 "normal", "episode"}  # as documented in generators/README.md
    for lab in labs:
        assert set(lab) == set(LABEL_FIELDS)
    episodes = {(lab["device_id"], lab["episode"]): lab["kind"] for lab in labs}
    kinds = Counter(episodes.values())
    assert set(kinds) == set(ANOMALY_KINDS)
    for kind in ANOMALY_KINDS:  # drawn uniformly
        assert kinds[kind] > 0.15 * len(episodes), kinds


def test_anomalies_start_at_their_rate():
    p, n = 0.05, 30_000
    _, calls = drive(FaultConfig(anomaly_rate=p), n)
    labs = labels(calls)
    episodes = {(lab["device_id"], lab["episode"]) for lab in labs}
    affected = {(lab["device_id"], lab["boot"], lab["seq"]) for lab in labs}
    # A reading can start an episode only on a device not already in one.
    eligible = n - (len(affected) - len(episodes))
    assert_rate(len(episodes), eligible, p)


def test_duplicates_at_their_rate_with_the_same_id_and_content():
    p, n = 0.1, 40_000
    _, calls = drive(FaultConfig(duplicate_rate=p), n)
    rs = readings(calls)
    copies = [i for _, items in calls for i in items if i.copy]
    assert len(rs) - len({(r["device_id"], r["boot"], r["seq"]) for r in rs}) == len(copies)
    for c in copies:
        assert c.group is not None and c.reading is not None
    assert_rate(len(copies), n, p)


def test_malformed_payloads_at_their_rate_all_rejected_and_of_every_kind():
    p, n = 0.1, 40_000
    _, calls = drive(FaultConfig(malformed_rate=p), n)
    payloads = [i.payload for _, items in calls for i in items if i.payload is not None]
    assert all(parse_payload(pl) == ([], 1) for pl in payloads)
    assert all(b"\n" not in pl for pl in payloads)
    assert_rate(len(payloads), n, p)
    assert len(readings(calls)) == n  # a malformed payload comes besides the reading, not instead
    sample = {"device_id": "d", "site": "s", "type": "t", "ts": T0, "seq": 3, "boot": 0, "metrics": {"a": 1.0}}
    assert {k: parse_payload(malformed_payload(sample, k))[1] for k in MALFORMED_KINDS} == dict.fromkeys(
        MALFORMED_KINDS, 1)


@pytest.mark.parametrize("rate_field, delay_field, delay_ms", [
    ("late_rate", "late_delay_ms", 120_000),
    ("out_of_order_rate", "out_of_order_delay_ms", 5_000),
])
def test_late_and_out_of_order_readings_at_their_rate_behind_by_the_delay(rate_field, delay_field, delay_ms):
    p, n = 0.1, 40_000
    _, calls = drive(FaultConfig(**{rate_field: p, delay_field: delay_ms}), n)
    behind = Counter(now - items[0].reading["ts"] for now, items in calls[:-1])
    assert set(behind) == {0, delay_ms}
    assert_rate(behind[delay_ms], n, p)


def test_clock_skew_per_device_at_its_rate_and_within_its_bound():
    p, devices = 0.3, 6000
    _, calls = drive(FaultConfig(clock_skew_rate=p, clock_skew_max_ms=10_000), devices, devices=devices)
    skews = {items[0].reading["device_id"]: items[0].reading["ts"] - now for now, items in calls[:-1]}
    assert len(skews) == devices
    skewed = [s for s in skews.values() if s]
    assert all(abs(s) <= 10_000 for s in skewed) and min(skewed) < -5000 and max(skewed) > 5000
    assert_rate(len(skewed), devices, p)


def test_reboots_at_their_rate_increment_boot_and_restart_seq():
    p, n = 0.05, 30_000
    _, calls = drive(FaultConfig(reboot_rate=p), n)
    last: dict[str, tuple[int, int]] = {}
    reboots = 0
    for r in readings(calls):
        prev = last.get(r["device_id"])
        if prev is not None:
            if r["boot"] != prev[0]:
                assert r["boot"] == prev[0] + 1 and r["seq"] == 0
                reboots += 1
            else:
                assert r["seq"] == prev[1] + 1
        last[r["device_id"]] = (r["boot"], r["seq"])
    # A reboot before a device's very first reading (50 devices) does not show as a change of boot.
    assert_rate(reboots, n - 50, p)


def test_offline_bursts_at_their_rate_send_the_backlog_in_order_when_back():
    p, n = 0.03, 30_000
    stream, calls = drive(FaultConfig(offline_rate=p, offline_duration_ms=4000), n)
    held = episodes = releases = 0
    for now, items in calls:
        rs = [i.reading for i in items]
        if now is None:
            held += len(rs)
            episodes += len({r["device_id"] for r in rs})
            continue
        if len(rs) > 1:
            releases += 1
            episodes += 1
            held += len(rs) - 1
            assert len({r["device_id"] for r in rs}) == 1
            assert [r["seq"] for r in rs] == list(range(rs[0]["seq"], rs[0]["seq"] + len(rs)))
            assert all(r["ts"] < now for r in rs[:-1]) and rs[-1]["ts"] == now
    assert len(readings(calls)) == n == stream.generated  # nothing lost: buffered, then sent
    # The reading a device goes offline at is drawn; the others it holds, and the one it comes back
    # with, are not.
    eligible = n - (held - episodes) - releases
    assert_rate(episodes, eligible, p)
