"""Ordered MQTT acknowledgements (ingest.acks): Kafka completes out of order, acks must leave in arrival order;
across a lost connection, the old connection's messages never ack on the new one."""

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


def test_after_a_reset_late_completions_of_the_old_connection_send_nothing():
    sent: list[int] = []
    acks = OrderedAcks(sent.extend)
    old = [acks.arrived(mid) for mid in (1, 2, 3)]
    acks.done(old[0])
    acks.flush()
    assert sent == [1]
    assert acks.reset() == 2
    assert not acks.is_current(old[1])
    # The broker redelivers 2 and 3, possibly under ids it now uses for other messages.
    new = [acks.arrived(mid) for mid in (2, 3, 4)]
    assert all(acks.is_current(t) for t in new)
    acks.done(old[1])
    acks.done(old[2])
    acks.flush()
    assert sent == [1]
    assert acks.pending() == 3
    for t in reversed(new):
        acks.done(t)
    acks.flush()
    assert sent == [1, 2, 3, 4]
    assert acks.pending() == 0


def test_a_stale_completion_does_not_release_the_current_queue_early():
    sent: list[int] = []
    acks = OrderedAcks(sent.extend)
    stale = acks.arrived(9)
    acks.reset()
    first, second = acks.arrived(1), acks.arrived(2)
    acks.done(second)
    acks.done(stale)
    acks.flush()
    assert sent == []
    acks.done(first)
    acks.flush()
    assert sent == [1, 2]
