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


#: Spark's error classes for a checkpoint whose state another version of the job wrote: a restart
#: cannot get past them, so the supervisor stops and says what to do instead of retrying.
INCOMPATIBLE_STATE = ("STATE_STORE_KEY_SCHEMA_NOT_COMPATIBLE", "STATE_STORE_VALUE_SCHEMA_NOT_COMPATIBLE")


class QuerySupervisor:
    def __init__(self, plans: dict[str, Callable[[], Any]], max_restarts: int,
                 clock: Callable[[], float] = time.monotonic, checkpoint_dir: object = "the checkpoint",
                 checkpoints: dict[str, object] | None = None) -> None:
        self.plans = plans
        self.max_restarts = max_restarts
        self.checkpoint_dir = checkpoint_dir
        #: each query's checkpoint directory, where it is not <checkpoint_dir>/<name>
        self.checkpoints = checkpoints or {}
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
                error = str(query.exception())
                if any(code in error for code in INCOMPATIBLE_STATE):
                    log.error("query %s cannot resume: the state in %s was written by a version of this job "
                              "with another state layout. Delete that directory (the query then reads Kafka "
                              "again from --starting-offsets; its writes overwrite the same points) or give "
                              "--checkpoint-dir a new place. Spark said: %s", name,
                              self.checkpoints.get(name, f"{self.checkpoint_dir}/{name}"), error.splitlines()[0])
                    return False
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
        for name, failures in self.restarts.items():
            if failures > self.max_restarts:
                log.error("query %s failed %d times in a row without finishing a micro-batch", name, failures)
                return False
        return True
