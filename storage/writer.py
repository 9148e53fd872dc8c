"""Synchronous, retrying writes of point dicts to InfluxDB's v1 ``/write`` endpoint.

Every call either gets each batch acknowledged (HTTP 204) or raises: server errors (5xx, 408, 429)
and connection failures are retried with exponential backoff within ``influx_retry_max_s``; a
client error (other 4xx) is raised at once as ``InfluxWriteError`` with the server's message, since
sending the same bytes again cannot succeed. Retrying is safe because InfluxDB overwrites a point
with the same measurement, tags and timestamp, so a batch that landed before its response was lost
is not duplicated.

One 4xx is not an error: InfluxDB 1.x answers 400 "partial write: points beyond retention policy
dropped=N" when points are older than the retention policy keeps. It stored the rest of the batch,
and sending the old points again could never succeed (they would be deleted anyway), so the
writer logs a warning, counts them in ``points_dropped_by_retention`` and goes on; raising would
wedge a stream replaying an old backlog on the same batch forever.

See ``storage.lineprotocol`` for the point dict shape and the field typing rules.
"""

from __future__ import annotations

import gzip
import logging
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

import urllib3

from storage.client import InfluxClient, server_message
from storage.lineprotocol import InvalidPointError, to_line
from storage.settings import InfluxSettings

log = logging.getLogger(__name__)

_FIRST_BACKOFF_S = 0.5
_MAX_BACKOFF_S = 8.0
_RETRYABLE_4XX = (408, 429)
# Reported only when retention was the sole reason points were dropped (1.x: 400; 2.x: 422, with
# a prefix); a batch with any other bad point gets that point's error instead.
_RETENTION_DROP = re.compile(r"partial write: points beyond retention policy dropped=(\d+)\s*$")


class InfluxWriteError(RuntimeError):
    """A write InfluxDB refused (4xx, not retried) or that kept failing for the whole retry budget.

    ``status`` is the last HTTP status (None for a connection error), ``server_message`` what the
    server said, ``written`` how many points of this call were acknowledged before the failure.
    A 1.x "partial write" (400) may also have stored some points of the failing batch.
    """

    def __init__(self, message: str, *, status: int | None, server_message: str, written: int) -> None:
        super().__init__(message)
        self.status = status
        self.server_message = server_message
        self.written = written


class InfluxWriter(InfluxClient):
    """Writes batches of line protocol (ms precision, gzip) to ``/write?db=<influx_database>``."""

    def __init__(self, settings: InfluxSettings, pool: urllib3.PoolManager | None = None) -> None:
        super().__init__(settings, pool)
        # Cumulative counters a service can export as metrics.
        self.points_written = 0
        self.points_skipped = 0
        self.points_dropped_by_retention = 0
        self.retries = 0

    def write(
        self,
        points: Iterable[Mapping[str, Any]],
        retention_policy: str | None = None,
        *,
        skip_invalid: bool = False,
    ) -> int:
        """Write every point and return how many InfluxDB stored.

        Points are validated before anything is sent: an invalid one raises ``InvalidPointError``
        (nothing written), or with ``skip_invalid`` is logged as a warning and left out. Without
        ``retention_policy`` points go to the database's default policy (``raw``).
        """
        lines: list[str] = []
        for index, point in enumerate(points):
            try:
                lines.append(to_line(point))
            except InvalidPointError as exc:
                if not skip_invalid:
                    raise InvalidPointError(str(exc), index) from None
                self.points_skipped += 1
                log.warning("skipped an invalid point", extra={"fields": {"index": index, "error": str(exc)}})
        written = 0
        size = self.settings.influx_batch_size
        for start in range(0, len(lines), size):
            batch = lines[start : start + size]
            stored = len(batch) - self._send(batch, retention_policy, written)
            written += stored
            self.points_written += stored
        return written

    def write_lines(self, lines: list[str], retention_policy: str | None = None) -> int:
        """Send ready-made line protocol (ms timestamps) as one batch, with the same retries;
        returns how many lines InfluxDB stored."""
        return len(lines) - self._send(lines, retention_policy, 0)

    def _send(self, lines: list[str], retention_policy: str | None, written: int) -> int:
        """Send one batch; returns how many of its points InfluxDB dropped for being too old."""
        body = gzip.compress("\n".join(lines).encode("utf-8"), compresslevel=5, mtime=0)
        params = {"db": self.settings.influx_database, "rp": retention_policy, "precision": "ms"}
        headers = {"Content-Encoding": "gzip", "Content-Type": "text/plain; charset=utf-8"}
        budget = self.settings.influx_retry_max_s
        deadline = time.monotonic() + budget
        backoff = _FIRST_BACKOFF_S
        attempt = 0
        while True:
            attempt += 1
            status: int | None = None
            retry_after: float | None = None
            try:
                response = self.http.request("POST", "/write", params=params, body=body, headers=headers)
            except urllib3.exceptions.HTTPError as exc:
                message = f"cannot reach InfluxDB at {self.settings.influx_url}: {exc}"
            else:
                status = response.status
                if status == 204:
                    return 0
                message = server_message(response)
                too_old = _RETENTION_DROP.search(message) if status in (400, 422) else None
                if too_old:
                    dropped = int(too_old.group(1))
                    self.points_dropped_by_retention += dropped
                    log.warning(
                        "InfluxDB dropped points older than the retention policy",
                        extra={"fields": {"dropped": dropped, "points": len(lines), "rp": retention_policy}},
                    )
                    return dropped
                if status < 500 and status not in _RETRYABLE_4XX:
                    hint = " (run `tsdemo storage init`?)" if "database not found" in message else ""
                    raise InfluxWriteError(
                        f"InfluxDB rejected a write of {len(lines)} points "
                        f"with HTTP {status}: {message}{hint}",
                        status=status,
                        server_message=message,
                        written=written,
                    )
                retry_after = _retry_after(response)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise InfluxWriteError(
                    f"write of {len(lines)} points to InfluxDB failed {attempt} times over {budget:g}s, "
                    f"giving up; last error: " + (f"HTTP {status}: {message}" if status else message),
                    status=status,
                    server_message=message,
                    written=written,
                )
            delay = min(retry_after if retry_after is not None else backoff, _MAX_BACKOFF_S, remaining)
            self.retries += 1
            log.warning(
                "write failed, retrying",
                extra={
                    "fields": {
                        "attempt": attempt,
                        "status": status,
                        "error": message,
                        "retry_in_s": round(delay, 2),
                        "budget_left_s": round(remaining, 1),
                        "points": len(lines),
                    }
                },
            )
            time.sleep(delay)
            backoff = min(backoff * 2, _MAX_BACKOFF_S)



def _retry_after(response: urllib3.BaseHTTPResponse) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
