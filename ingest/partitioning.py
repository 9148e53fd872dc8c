"""Kafka's default partitioning (murmur2 of the key), remembered per key.

kafka-python computes murmur2 in pure Python and sorts the topic's partitions for every record: 8%
of the bridge's CPU in a profile. A fleet has few distinct keys (one per device or gateway), so the
partition of each is computed once, by kafka-python's own ``DefaultPartitioner``, and kept while the
topic's partition count stays the same. A key always lands where Kafka's default would put it, so
consumers and other producers agree with the bridge.
"""

from __future__ import annotations

from typing import Any

from kafka.partitioner import DefaultPartitioner

#: A bound on the memory of a very large fleet's keys: past it the cache starts over.
MAX_KEYS = 1_000_000


class CachedPartitioner(DefaultPartitioner):
    def __init__(self) -> None:
        super().__init__()
        self._cache: dict[tuple[str, bytes], tuple[int, int]] = {}

    def partition(self, topic: str, key: Any, serialized_key: bytes | None, value: Any,
                  serialized_value: Any, cluster: Any) -> int:
        if serialized_key is None:  # no key: a random available partition, never cached
            return super().partition(topic, key, serialized_key, value, serialized_value, cluster)
        partitions = cluster.partitions_for_topic(topic)
        count = len(partitions) if partitions else 0
        hit = self._cache.get((topic, serialized_key))
        if hit is not None and hit[0] == count:
            return hit[1]
        chosen = super().partition(topic, key, serialized_key, value, serialized_value, cluster)
        if len(self._cache) >= MAX_KEYS:
            self._cache.clear()
        self._cache[(topic, serialized_key)] = (count, chosen)
        return chosen
