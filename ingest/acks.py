"""Ordered MQTT acknowledgements.

MQTT requires PUBACKs in the order the PUBLISHes arrived, but Kafka completes writes out of order
(different partitions, retries). paho-mqtt's manual ack sends at once, so this tracker holds each
completion until every earlier message is complete, then releases the run in arrival order.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable


class OrderedAcks:
    def __init__(self, send_ack: Callable[[int], None]) -> None:
        self._send_ack = send_ack
        self._lock = threading.Lock()
        self._queue: deque[list] = deque()  # [mid, done]

    def arrived(self, mid: int) -> list:
        """Registers a message in arrival order; the returned token is passed to ``done``."""
        token = [mid, False]
        with self._lock:
            self._queue.append(token)
        return token

    def done(self, token: list) -> int:
        """Marks one message written; sends every ack now allowed; returns how many were sent."""
        sent = 0
        with self._lock:
            token[1] = True
            # Acks go out under the lock so two threads cannot interleave and reorder them.
            while self._queue and self._queue[0][1]:
                mid = self._queue.popleft()[0]
                self._send_ack(mid)
                sent += 1
        return sent

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)
