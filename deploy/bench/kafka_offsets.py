"""How many records a Kafka topic holds, from its end offsets: how the ingest bench sees messages
arrive, for the bridge and for its ``mosquitto_sub | kcat`` baseline alike."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


class EndOffsets:
    """The sum of a topic's partition end offsets (a fresh topic: the records written to it)."""

    def __init__(self, bootstrap: str, topic: str, timeout_s: float = 30.0) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, client_id="tsdemo-bench",
                                       enable_auto_commit=False)
        deadline = time.monotonic() + timeout_s
        partitions = self._consumer.partitions_for_topic(topic)
        while not partitions:
            if time.monotonic() > deadline:
                raise RuntimeError(f"topic {topic} has no partitions on {bootstrap} after {timeout_s:.0f}s")
            time.sleep(0.2)
            partitions = self._consumer.partitions_for_topic(topic)
        self._partitions = [TopicPartition(topic, p) for p in sorted(partitions)]

    def total(self) -> int:
        return sum(self._consumer.end_offsets(self._partitions).values())

    def close(self) -> None:
        self._consumer.close()


@dataclass
class Drain:
    """``(monotonic time, records)`` samples while a topic filled, and when every mover was ready."""

    samples: list[tuple[float, int]] = field(default_factory=list)
    ready_at: float | None = None
    done: bool = False


def watch_drain(offsets: EndOffsets, start: int, total: int, timeout_s: float,
                ready: Callable[[], bool] | None = None, interval_s: float = 0.1) -> Drain:
    """Sample ``offsets`` (minus ``start``) until ``total`` records arrived or ``timeout_s`` passed.

    ``ready`` is asked until it first says yes (every mover is up); that moment is ``ready_at``.
    """
    drain = Drain()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = time.monotonic()
        moved = offsets.total() - start
        drain.samples.append((now, moved))
        if drain.ready_at is None and (ready is None or ready()):
            drain.ready_at = now
        if moved >= total:
            drain.done = True
            break
        time.sleep(interval_s)
    return drain
