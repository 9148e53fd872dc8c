"""The anomaly detectors on plain series."""

import random

from processing.anomaly import EWMA, STUCK, DetectorConfig, SeriesState, observe

CFG = DetectorConfig(alpha=0.05, z_threshold=5.0, warmup=30, stuck_run=8)


def feed(values, state=None):
    state = state or SeriesState()
    return state, [(i, d) for i, v in enumerate(values) for d, _ in observe(state, v, CFG)]


def test_a_spike_in_a_noisy_series_fires_once_and_normal_noise_does_not():
    rng = random.Random(3)
    values = [20 + rng.gauss(0, 0.2) for _ in range(300)]
    values[200] = 35.0
    _, fired = feed(values)
    assert fired == [(200, EWMA)]


def test_a_spike_does_not_poison_the_history():
    rng = random.Random(4)
    values = [20 + rng.gauss(0, 0.2) for _ in range(100)] + [60.0] + [20 + rng.gauss(0, 0.2) for _ in range(100)]
    _, fired = feed(values)
    assert [i for i, d in fired if d == EWMA] == [100]


def test_no_alarm_during_warm_up():
    _, fired = feed([1.0, 100.0, 1.0, 50.0])
    assert [d for _, d in fired if d == EWMA] == []


def test_a_frozen_sensor_is_reported_once_per_stretch():
    rng = random.Random(5)
    values = [20 + rng.gauss(0, 0.2) for _ in range(50)] + [21.5] * 20 + [20 + rng.gauss(0, 0.2) for _ in range(5)]
    _, fired = feed(values)
    assert [(i, d) for i, d in fired if d == STUCK] == [(57, STUCK)]


def test_state_survives_a_round_trip_through_spark_state():
    state, _ = feed([1.0, 2.0, 3.0])
    again = SeriesState.from_tuple(state.as_tuple())
    assert again == state
