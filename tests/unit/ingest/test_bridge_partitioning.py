"""The cached partitioner puts every key where Kafka's default partitioner does, also after a resize."""

from __future__ import annotations

from kafka.partitioner import DefaultPartitioner

from ingest.partitioning import CachedPartitioner


class Cluster:
    def __init__(self, partitions: int) -> None:
        self.partitions = set(range(partitions))

    def topics(self) -> set[str]:
        return {"t"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions


def test_cached_choices_equal_the_default_partitioners_before_and_after_the_topic_grows():
    cached, default = CachedPartitioner(), DefaultPartitioner()
    keys = [f"dev-{i:05d}".encode() for i in range(500)]
    for partitions in (4, 4, 7):
        cluster = Cluster(partitions)
        for key in keys:
            want = default.partition("t", None, key, None, None, cluster)
            assert cached.partition("t", None, key, None, None, cluster) == want
    assert {cached.partition("t", None, None, None, None, Cluster(3)) for _ in range(50)} <= {0, 1, 2}
