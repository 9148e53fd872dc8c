"""Ordered MQTT acknowledgements.

MQTT requires PUBACKs in the order the PUBLISHes arrived, but Kafka completes writes out of order
(different partitions, retries). Each received message gets a token in arrival order; Kafka's
callback only marks it done, and one thread (the forwarder's) calls ``flush`` to acknowledge the
finished prefix in arrival order, all of it in one batch.

Packet ids only mean something on the connection they arrived on: after a reconnect the broker
delivers every unacknowledged message again, possibly under ids that now name other messages.
``reset()`` therefore forgets the old connection's messages, and their late completions ack nothing.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable


class AckToken:
    """One received message: its packet id, whether Kafka has it, and the connection it came on."""

    __slots__ = ("mid", "done", "generation")

    def __init__(self, mid: int, generation: int) -> None:
        self.mid = mid
        self.done = False
        self.generation = generation


class OrderedAcks:
    def __init__(self, send_acks: Callable[[list[int]], object]) -> None:
        self._send_acks = send_acks
        self._lock = threading.Lock()
        self._queue: deque[AckToken] = deque()
        self._generation = 0

    def arrived(self, mid: int) -> AckToken:
        """Registers a message in arrival order (from the MQTT network thread, the only one that calls
        this and ``reset``); the token's ``done`` is set once Kafka has the message."""
        token = AckToken(mid, self._generation)
        self._queue.append(token)  # deque.append is atomic: no lock on the per-message path
        return token

    @staticmethod
    def done(token: AckToken) -> None:
        token.done = True

    def flush(self) -> int:
        """Sends, as one batch, the acks of every finished message not waiting behind an unfinished
        one; returns how many."""
        with self._lock:
            # Under the lock so a reset() cannot slip between taking the prefix and sending it, and
            # two flushes cannot interleave and reorder acks.
            queue, mids = self._queue, []
            while queue and queue[0].done:
                mids.append(queue.popleft().mid)
            if mids:
                self._send_acks(mids)
        return len(mids)

    def is_current(self, token: AckToken) -> bool:
        """False once the connection the message came on is gone (the broker will deliver it again)."""
        return token.generation == self._generation

    def reset(self) -> int:
        """Forgets every unacknowledged message (call when the connection is lost); returns how many."""
        with self._lock:
            dropped = len(self._queue)
            self._queue.clear()
            self._generation += 1
        return dropped

    def pending(self) -> int:
        return len(self._queue)
