"""Ordered MQTT acknowledgements: Kafka completes out of order, acks must leave in arrival order."""

import random
import threading

from ingest.acks import OrderedAcks


def test_acks_wait_for_earlier_messages():
    sent: list[int] = []
    acks = OrderedAcks(sent.extend)
    tokens = [acks.arrived(mid) for mid in (11, 12, 13)]
    acks.done(tokens[2])
    acks.done(tokens[1])
    assert acks.flush() == 0
    assert sent == []
    acks.done(tokens[0])
    assert acks.flush() == 3
    assert sent == [11, 12, 13]
    assert acks.pending() == 0


def test_a_flush_sends_the_finished_prefix_as_one_batch():
    batches: list[list[int]] = []
    acks = OrderedAcks(batches.append)
    tokens = [acks.arrived(mid) for mid in range(1, 6)]
    for t in (tokens[0], tokens[1], tokens[3]):
        acks.done(t)
    assert acks.flush() == 2
    acks.done(tokens[2])
    acks.done(tokens[4])
    assert acks.flush() == 3
    assert batches == [[1, 2], [3, 4, 5]]


def test_acks_stay_ordered_under_concurrent_completion_and_flushes():
    sent: list[int] = []
    acks = OrderedAcks(sent.extend)
    tokens = [acks.arrived(mid) for mid in range(1, 2001)]
    order = tokens[:]
    random.Random(7).shuffle(order)

    def complete(part: list) -> None:
        for t in part:
            acks.done(t)
            acks.flush()

    threads = [threading.Thread(target=complete, args=(order[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    acks.flush()
    assert sent == list(range(1, 2001))
