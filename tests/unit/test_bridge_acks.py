"""Acknowledgements across a lost connection: the old connection's messages never ack on the new one."""

from __future__ import annotations

from ingest.acks import OrderedAcks


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
