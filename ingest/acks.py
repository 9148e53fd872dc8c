"""Ordered MQTT acknowledgements.

MQTT requires PUBACKs in the order the PUBLISHes arrived, but Kafka completes writes out of order
(different partitions, retries). paho-mqtt's manual ack sends at once, so this tracker holds each
completion until every earlier message is complete, then releases the run in arrival order.

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
    def __init__(self, send_ack: Callable[[int], object]) -> None:
        self._send_ack = send_ack
        self._lock = threading.Lock()
        self._queue: deque[AckToken] = deque()
        self._generation = 0

    def arrived(self, mid: int) -> AckToken:
        """Registers a message in arrival order; the returned token is passed to ``done``."""
        with self._lock:
            token = AckToken(mid, self._generation)
            self._queue.append(token)
        return token

    def done(self, token: AckToken) -> int:
        """Marks one message written; sends every ack now allowed; returns how many were sent."""
        sent = 0
        with self._lock:
            token.done = True
            # Acks go out under the lock so two threads cannot interleave and reorder them, and so a
            # reset() cannot slip between the check and the send.
            while self._queue and self._queue[0].done:
                self._send_ack(self._queue.popleft().mid)
                sent += 1
        return sent

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
        with self._lock:
            return len(self._queue)
