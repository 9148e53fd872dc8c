"""Keeps the job's streaming queries running: a stopped query is started again from its checkpoint.

A query stops when a dependency is gone for longer than its retries cover (Kafka, InfluxDB past the
writer's budget). Its checkpoint makes a restart exact, so the service heals itself instead of
exiting. Restarts back off (4 s doubling to 60 s); only a query that fails again and again without
finishing a single micro-batch in between makes the process give up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("processing")

#: the first restart waits this long, each further one twice as long, up to MAX_BACKOFF_S
FIRST_BACKOFF_S = 4.0
MAX_BACKOFF_S = 60.0
#: a restart that raised is tried again after this long
FAILED_START_RETRY_S = 10.0


class QuerySupervisor:
    def __init__(self, plans: dict[str, Callable[[], Any]], max_restarts: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.plans = plans
        self.max_restarts = max_restarts
        self.clock = clock
        self.queries: dict[str, Any] = {name: plan() for name, plan in plans.items()}
        #: failures since the query last finished a micro-batch
        self.restarts: dict[str, int] = {name: 0 for name in plans}
        self._retry_at: dict[str, float] = {}

    def progressed(self, name: str) -> None:
        """The query finished a micro-batch: its earlier failures no longer count against it."""
        self.restarts[name] = 0

    def check(self) -> bool:
        """Restarts what stopped once its backoff has passed; False when a query failed too often."""
        for name, query in list(self.queries.items()):
            if query.isActive:
                continue
            now = self.clock()
            if name not in self._retry_at:
                self.restarts[name] += 1
                log.error("query %s stopped (failure %d): %s; restarting it from its checkpoint", name,
                          self.restarts[name], query.exception())
                self._retry_at[name] = now + min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (self.restarts[name] - 1))
            elif now >= self._retry_at[name]:
                del self._retry_at[name]
                try:
                    self.queries[name] = self.plans[name]()
                except Exception:
                    log.exception("query %s could not restart", name)
                    self._retry_at[name] = now + FAILED_START_RETRY_S
        return max(self.restarts.values(), default=0) <= self.max_restarts
