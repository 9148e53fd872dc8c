"""Ordered MQTT acknowledgements: Kafka completes out of order, acks must leave in arrival order."""

import random
import threading

from ingest.acks import OrderedAcks


def test_acks_wait_for_earlier_messages():
    sent: list[int] = []
    acks = OrderedAcks(sent.append)
    tokens = [acks.arrived(mid) for mid in (11, 12, 13)]
    assert acks.done(tokens[2]) == 0
    assert acks.done(tokens[1]) == 0
    assert sent == []
    assert acks.done(tokens[0]) == 3
    assert sent == [11, 12, 13]
    assert acks.pending() == 0


def test_acks_stay_ordered_under_concurrent_completion():
    sent: list[int] = []
    acks = OrderedAcks(sent.append)
    tokens = [acks.arrived(mid) for mid in range(1, 2001)]
    order = tokens[:]
    random.Random(7).shuffle(order)
    threads = [threading.Thread(target=lambda part=order[i::4]: [acks.done(t) for t in part]) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sent == list(range(1, 2001))
