"""The faults a fleet can be configured with, each with its own rate, and how each is injected.

Every fault is drawn from its own random stream (``FaultConfig`` with the fault seed), apart from the
signal values, so a run with faults sends the same clean values as one without wherever no fault
hit. Rates are probabilities per reading (clock skew: per device); each is exact in expectation and
the tests check the observed rates against binomial tolerances.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

from generators.devicetypes import MetricSpec

ANOMALY_KINDS = ("spike", "stuck_at", "drift", "dropout")
#: Episode length in readings (inclusive range) per anomaly kind.
ANOMALY_LENGTHS = {"spike": (1, 1), "stuck_at": (5, 20), "drift": (10, 30), "dropout": (3, 10)}
MALFORMED_KINDS = ("truncated", "not_json", "missing_seq", "text_ts", "empty_metrics")


@dataclass(frozen=True)
class FaultConfig:
    """Rates and sizes of the injected faults; all zero (the default) means a clean, exact stream."""

    anomaly_rate: float = 0.0
    duplicate_rate: float = 0.0
    out_of_order_rate: float = 0.0
    out_of_order_delay_ms: int = 5_000
    late_rate: float = 0.0
    late_delay_ms: int = 120_000
    clock_skew_rate: float = 0.0
    clock_skew_max_ms: int = 10_000
    offline_rate: float = 0.0
    offline_duration_ms: int = 60_000
    reboot_rate: float = 0.0
    malformed_rate: float = 0.0

    @property
    def clean(self) -> bool:
        """No fault at all: every reading is on time, once, from a healthy device."""
        return not (self.anomaly_rate or self.duplicate_rate or self.out_of_order_rate or self.late_rate
                    or self.clock_skew_rate or self.offline_rate or self.reboot_rate or self.malformed_rate)

    @classmethod
    def from_settings(cls, s: Any) -> FaultConfig:
        return cls(
            anomaly_rate=s.anomaly_rate, duplicate_rate=s.duplicate_rate,
            out_of_order_rate=s.out_of_order_rate, out_of_order_delay_ms=int(s.out_of_order_delay_s * 1000),
            late_rate=s.late_rate, late_delay_ms=int(s.late_delay_s * 1000),
            clock_skew_rate=s.clock_skew_rate, clock_skew_max_ms=int(s.clock_skew_max_s * 1000),
            offline_rate=s.offline_rate, offline_duration_ms=int(s.offline_duration_s * 1000),
            reboot_rate=s.reboot_rate, malformed_rate=s.malformed_rate,
        )


@dataclass(slots=True)
class Anomaly:
    """An anomaly episode on one device: what it does and how many readings it still affects."""

    episode: int
    kind: str
    #: the metric it corrupts; None for a dropout, which suppresses the whole reading
    metric: str | None
    length: int
    #: signed size: a spike's offset, or the offset a drift reaches at its last reading
    magnitude: float
    step: int = 0
    stuck: float | None = None

    @property
    def done(self) -> bool:
        return self.step >= self.length


def start_anomaly(episode: int, metrics: tuple[MetricSpec, ...], rng: random.Random) -> Anomaly:
    kind = rng.choice(ANOMALY_KINDS)
    low, high = ANOMALY_LENGTHS[kind]
    spec = rng.choice(metrics)
    sign = rng.choice((-1.0, 1.0))
    size = rng.uniform(4.0, 8.0) if kind == "spike" else rng.uniform(2.0, 4.0)
    return Anomaly(
        episode=episode,
        kind=kind,
        metric=None if kind == "dropout" else spec.name,
        length=rng.randint(low, high),
        magnitude=sign * size * spec.spread,
    )


def apply_anomaly(anomaly: Anomaly, values: dict[str, float], spec: MetricSpec | None) -> float | None:
    """Corrupts ``values`` in place for one reading of the episode; returns the value sent (None: dropped)."""
    anomaly.step += 1
    if spec is None:  # dropout
        return None
    normal = values[spec.name]
    if anomaly.kind == "spike":
        value = spec.clamp(normal + anomaly.magnitude)
        if value == normal:  # pinned at a physical limit: spike the other way
            value = spec.clamp(normal - anomaly.magnitude)
    elif anomaly.kind == "stuck_at":
        if anomaly.stuck is None:
            anomaly.stuck = normal
        value = anomaly.stuck
    else:  # drift: an offset that grows linearly over the episode
        value = spec.clamp(normal + anomaly.magnitude * anomaly.step / anomaly.length)
    values[spec.name] = value
    return value


def malformed_payload(reading: dict[str, Any], kind: str) -> bytes:
    """A payload the pipeline must reject into its dead-letter queue as exactly one record.

    Built from a real reading of the device, as a buggy firmware would send it. None contains a
    newline, so ``mosquitto_pub -l`` can replay rendered payloads line by line.
    """
    body = json.dumps(reading, separators=(",", ":"))
    if kind == "truncated":
        return body[: len(body) // 2].encode()
    if kind == "not_json":
        return f"{reading['device_id']};{reading['ts']};{';'.join(map(str, reading['metrics'].values()))}".encode()
    broken = dict(reading)
    if kind == "missing_seq":
        del broken["seq"]
    elif kind == "text_ts":
        broken["ts"] = f"@{reading['ts']}"
    elif kind == "empty_metrics":
        broken["metrics"] = {}
    else:
        raise ValueError(f"unknown malformed kind {kind!r}")
    return json.dumps(broken, separators=(",", ":")).encode()


def clock_skew_ms(config: FaultConfig, rng: random.Random) -> int:
    """A device's clock offset: zero, or with probability ``clock_skew_rate`` up to the max either way."""
    if rng.random() >= config.clock_skew_rate or config.clock_skew_max_ms < 1:
        return 0
    skew = 0
    while skew == 0:
        skew = rng.randint(-config.clock_skew_max_ms, config.clock_skew_max_ms)
    return skew
