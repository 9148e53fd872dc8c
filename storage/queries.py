"""InfluxQL over the v1 ``/query`` endpoint, flattened into rows, plus the read helpers that
``tsdemo verify``/``status``, the dashboards and the tests share.

Queries are sent chunked: InfluxDB 1.x truncates an unchunked answer at ``max-row-limit`` rows
(marking it ``partial``), while chunks have no such limit, so a result is always complete.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import urllib3

from servicekit.contract.influx import DEVICE_WINDOW
from storage.client import InfluxClient, server_message

log = logging.getLogger(__name__)

_CHUNK_SIZE = 10_000
_BARE_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# InfluxQL 1.x keywords: an identifier spelled like one must be quoted.
KEYWORDS = frozenset(
    """ALL ALTER ANALYZE ANY AS ASC BEGIN BY CARDINALITY CREATE CONTINUOUS DATABASE DATABASES DEFAULT
    DELETE DESC DESTINATIONS DIAGNOSTICS DISTINCT DROP DURATION END EVERY EXACT EXPLAIN FIELD FOR FROM
    GRANT GRANTS GROUP GROUPS IN INF INSERT INTO KEY KEYS KILL LIMIT MEASUREMENT MEASUREMENTS NAME
    OFFSET ON ORDER PASSWORD POLICIES POLICY PRIVILEGES QUERIES QUERY READ REPLICATION RESAMPLE
    RETENTION REVOKE SELECT SERIES SET SHARD SHARDS SLIMIT SOFFSET STATS SUBSCRIPTION SUBSCRIPTIONS
    TAG TO USER USERS VALUES WHERE WITH WRITE""".split()
)


def quote_ident(name: str, *, always: bool = True) -> str:
    """An InfluxQL identifier; with ``always=False`` quoted only when needed, as InfluxDB prints it."""
    if not always and _BARE_IDENT.fullmatch(name) and name.upper() not in KEYWORDS:
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_string(value: str) -> str:
    """An InfluxQL string literal (for WHERE tag = '...')."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def source(measurement: str, retention_policy: str | None = None, database: str | None = None) -> str:
    """``"db"."rp"."measurement"`` with the parts given; an unset rp means the default policy."""
    parts = []
    if database:
        # "db".."m" is InfluxQL for the database's default retention policy.
        parts = [quote_ident(database), quote_ident(retention_policy) if retention_policy else ""]
    elif retention_policy:
        parts = [quote_ident(retention_policy)]
    return ".".join([*parts, quote_ident(measurement)])


class InfluxQueryError(RuntimeError):
    """A query InfluxDB refused or could not run; ``server_message`` is what it said."""

    def __init__(self, message: str, *, server_message: str, query: str, status: int | None = None) -> None:
        super().__init__(message)
        self.server_message = server_message
        self.query = query
        self.status = status


def _time_range(since_ms: int | None, until_ms: int | None) -> str:
    conditions = []
    if since_ms is not None:
        conditions.append(f"time >= {int(since_ms)}ms")
    if until_ms is not None:
        conditions.append(f"time < {int(until_ms)}ms")
    return (" WHERE " + " AND ".join(conditions)) if conditions else ""


def _json_documents(text: str) -> list[Any]:
    # A chunked answer is several JSON documents, one per line; an unchunked one is a single one.
    decoder = json.JSONDecoder()
    documents, position = [], 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            return documents
        document, position = decoder.raw_decode(text, position)
        documents.append(document)


class InfluxQuery(InfluxClient):
    """Runs InfluxQL; rows come back as dicts of the columns with the series' tags merged in.

    ``time`` is epoch milliseconds. Each row also carries ``_name``, the series name (the
    measurement for a SELECT, the database for SHOW CONTINUOUS QUERIES) when InfluxDB gives one.
    """

    def query_retrying(self, influxql: str, budget_s: float | None = None) -> list[dict[str, Any]]:
        """``query``, retried with backoff while InfluxDB cannot be reached or answers 5xx, for up to
        ``budget_s`` (default: the writer's ``influx_retry_max_s``): the processing job reads back
        what it wrote, and an InfluxDB restart must not fail its micro-batch."""
        budget = self.settings.influx_retry_max_s if budget_s is None else budget_s
        deadline = time.monotonic() + budget
        delay = 0.5
        while True:
            try:
                return self.query(influxql)
            except InfluxQueryError as exc:
                if exc.status is not None and exc.status < 500:
                    raise
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise
                log.warning("query failed, retrying", extra={"fields": {
                    "error": str(exc), "retry_in_s": round(min(delay, remaining), 2),
                    "budget_left_s": round(remaining, 1)}})
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, 5.0)

    def query(self, influxql: str, database: str | None = None) -> list[dict[str, Any]]:
        """Run one or more statements (``;``-separated); rows of every statement in order.

        ``database`` defaults to the configured database; pass ``""`` for statements that name
        their database themselves (``CREATE DATABASE``, ``SHOW DATABASES``).
        """
        db = self.settings.influx_database if database is None else database
        form = {"q": influxql, "db": db, "epoch": "ms", "chunked": "true", "chunk_size": str(_CHUNK_SIZE)}
        body = urlencode({k: v for k, v in form.items() if v}).encode()
        try:
            response = self.http.request(
                "POST",
                "/query",
                body=body,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        except urllib3.exceptions.HTTPError as exc:
            raise InfluxQueryError(
                f"cannot reach InfluxDB at {self.settings.influx_url}: {exc}",
                server_message=str(exc),
                query=influxql,
            ) from None
        if response.status != 200:
            message = server_message(response)
            raise InfluxQueryError(
                f"InfluxDB answered HTTP {response.status} to {_short(influxql)}: {message}",
                server_message=message,
                query=influxql,
                status=response.status,
            )
        try:
            documents = _json_documents(response.data.decode("utf-8"))
        except ValueError as exc:
            raise InfluxQueryError(
                f"InfluxDB sent an answer that is not JSON to {_short(influxql)}: {exc}",
                server_message=response.data[:500].decode("utf-8", "replace"),
                query=influxql,
            ) from None
        rows: list[dict[str, Any]] = []
        for document in documents:
            if document.get("error"):
                raise InfluxQueryError(
                    f"InfluxDB refused {_short(influxql)}: {document['error']}",
                    server_message=document["error"],
                    query=influxql,
                )
            for result in document.get("results", []):
                if result.get("error"):
                    raise InfluxQueryError(
                        f"InfluxDB refused {_short(influxql)}: {result['error']}",
                        server_message=result["error"],
                        query=influxql,
                    )
                for message in result.get("messages") or []:
                    log.warning("influxdb: %s", message.get("text"), extra={"fields": {"query": influxql}})
                for series in result.get("series") or []:
                    tags = series.get("tags") or {}
                    columns = series.get("columns") or []
                    name = series.get("name")
                    for values in series.get("values") or []:
                        row = {**tags, **dict(zip(columns, values, strict=False))}
                        if name is not None:
                            row["_name"] = name
                        rows.append(row)
        return rows

    def stored_counts(
        self,
        measurement: str = DEVICE_WINDOW,
        since_ms: int | None = None,
        until_ms: int | None = None,
        *,
        retention_policy: str | None = None,
    ) -> dict[tuple[str, str], int]:
        """Readings stored per (device_id, metric): the sum of ``count`` over windows whose start
        time is in [since_ms, until_ms).

        Grouping by tags alone yields one row per series, so the answer stays small however long
        the range. A measurement without ``device_id`` (site_window) keys on "".
        """
        rows = self.query(
            f"SELECT sum({quote_ident('count')}) AS {quote_ident('count')} "
            f"FROM {source(measurement, retention_policy)}{_time_range(since_ms, until_ms)} "
            f'GROUP BY "device_id", "metric"'
        )
        counts: dict[tuple[str, str], int] = {}
        for row in rows:
            if row.get("count") is not None:
                key = (row.get("device_id", ""), row.get("metric", ""))
                counts[key] = counts.get(key, 0) + int(row["count"])
        return counts

    def stored_counts_by_minute(
        self,
        device_id: str,
        metric: str,
        since_ms: int,
        until_ms: int | None = None,
        measurement: str = DEVICE_WINDOW,
    ) -> dict[int, int]:
        """One series' stored readings per minute (epoch ms of the minute start) from ``since_ms``:
        where a count differs from what was sent, this tells when it happened."""
        rows = self.query(
            f"SELECT sum({quote_ident('count')}) AS {quote_ident('count')} FROM {source(measurement)}"
            f"{_time_range(since_ms, until_ms)} "
            f"AND {quote_ident('device_id')} = {quote_string(device_id)} "
            f"AND {quote_ident('metric')} = {quote_string(metric)} GROUP BY time(1m) fill(none)"
        )
        return {int(r["time"]): int(r["count"]) for r in rows if r.get("count") is not None}

    def latest_window_time(self, measurement: str = DEVICE_WINDOW) -> int | None:
        """Start time (epoch ms) of the newest window stored, or None when there is none."""
        rows = self.query(f"SELECT last({quote_ident('count')}) FROM {quote_ident(measurement)}")
        return int(rows[0]["time"]) if rows and rows[0].get("time") is not None else None

    def ping(self, timeout: float = 2.0) -> bool:
        """True when InfluxDB answers ``/ping``."""
        return self.http.ping(timeout)

    def wait_until_ready(
        self, timeout_s: float, on_wait: Callable[[float], None] | None = None, interval_s: float = 1.0
    ) -> bool:
        """Ping until InfluxDB answers or ``timeout_s`` passes; ``on_wait(elapsed_s)`` before each wait."""
        started = time.monotonic()
        while True:
            if self.ping(timeout=min(2.0, max(timeout_s, 0.1))):
                return True
            elapsed = time.monotonic() - started
            if elapsed >= timeout_s:
                return False
            if on_wait is not None:
                on_wait(elapsed)
            time.sleep(min(interval_s, max(0.0, timeout_s - elapsed)))



def _short(influxql: str) -> str:
    text = " ".join(influxql.split())
    return repr(text if len(text) <= 200 else text[:197] + "...")
