"""Idempotent schema setup for InfluxDB 1.x: the database, its retention policies and the
continuous queries that roll the 10 s windows up to 1 minute and 1 hour.

Running ``init_storage`` again changes nothing unless a setting or a query definition changed, in
which case it alters the retention policy or drops and recreates the continuous query.

The rollup arithmetic is exact. A mean of means would be wrong whenever windows hold different
numbers of readings, so each rollup carries ``sum`` (the sum of the readings) next to ``count``:
the 1-minute query rebuilds each raw window's sum as ``mean * count`` in a subquery (processing
writes nothing extra for this), and every level above adds sums and counts up. ``mean`` is then
``sum / count``, ``min`` the min of mins, ``max`` the max of maxes, ``first``/``last`` the first and
last of the windows. Distinct devices are not additive (a device in two windows would be counted
twice), so a rollup's ``devices`` is recounted from ``device_window``: the number of devices with
at least one window in the bucket.

Continuous queries only look back ``FOR`` (15 minutes for the 1-minute rollup, 2 hours for the
hourly one). ``backfill_rollups`` runs the same statements over any past range, e.g. after
processing caught up on an older backlog.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from servicekit.contract.influx import (
    CQ_PREFIX,
    DEVICE_WINDOW,
    DEVICE_WINDOW_1H,
    DEVICE_WINDOW_1M,
    RAW_RP,
    ROLLUP_1H_RP,
    ROLLUP_1M_RP,
    SITE_WINDOW,
    SITE_WINDOW_1H,
    SITE_WINDOW_1M,
)
from storage.queries import InfluxQuery, quote_ident
from storage.settings import InfluxSettings, parse_duration_s


@dataclass(frozen=True)
class ContinuousQuery:
    """One rollup continuous query; ``select`` is its ``SELECT ... INTO ... GROUP BY time(...)``."""

    name: str
    interval: str
    every: str
    lookback: str
    select: str

    def create_statement(self, database: str) -> str:
        # Spelled exactly as InfluxDB prints it back in SHOW CONTINUOUS QUERIES, so that an
        # unchanged definition compares equal and init stays a no-op.
        return (
            f"CREATE CONTINUOUS QUERY {_ident(self.name)} ON {_ident(database)} "
            f"RESAMPLE EVERY {self.every} FOR {self.lookback} BEGIN {self.select} END"
        )


def _ident(name: str) -> str:
    return quote_ident(name, always=False)


def rollup_queries(database: str) -> list[ContinuousQuery]:
    """The rollup continuous queries, 1-minute ones first (the hourly ones read their output)."""
    db = _ident(database)

    def src(rp: str, measurement: str) -> str:
        return f"{db}.{_ident(rp)}.{_ident(measurement)}"

    def stats(total: str, extra: str = "") -> str:
        return (
            f"sum(count) AS count, sum({total}) AS sum, sum({total}) / sum(count) AS mean, "
            f"min(min) AS min, max(max) AS max{extra}"
        )

    first_last = ", first(first) AS first, last(last) AS last"

    def devices(interval: str, rp: str, measurement: str, into: str) -> str:
        # Per bucket: one inner row per device that had a window, counted per site/type/metric.
        return (
            f"SELECT count(c) AS devices INTO {into} "
            f"FROM (SELECT sum(count) AS c FROM {src(rp, measurement)} "
            f"GROUP BY time({interval}), site, type, metric, device_id fill(none)) "
            f"GROUP BY time({interval}), site, type, metric"
        )

    m1 = {"interval": "1m", "every": "1m", "lookback": "15m"}
    h1 = {"interval": "1h", "every": "10m", "lookback": "2h"}
    return [
        ContinuousQuery(
            name=f"{CQ_PREFIX}{DEVICE_WINDOW_1M}",
            select=(
                f"SELECT {stats('s', first_last)} INTO {src(ROLLUP_1M_RP, DEVICE_WINDOW_1M)} "
                f"FROM (SELECT mean * count AS s, count, min, max, first, last "
                f"FROM {src(RAW_RP, DEVICE_WINDOW)} GROUP BY *) GROUP BY time(1m), *"
            ),
            **m1,
        ),
        ContinuousQuery(
            name=f"{CQ_PREFIX}{SITE_WINDOW_1M}",
            select=(
                f"SELECT {stats('s')} INTO {src(ROLLUP_1M_RP, SITE_WINDOW_1M)} "
                f"FROM (SELECT mean * count AS s, count, min, max FROM {src(RAW_RP, SITE_WINDOW)} "
                f"GROUP BY *) GROUP BY time(1m), *"
            ),
            **m1,
        ),
        ContinuousQuery(
            name=f"{CQ_PREFIX}{SITE_WINDOW_1M}_devices",
            select=devices("1m", RAW_RP, DEVICE_WINDOW, src(ROLLUP_1M_RP, SITE_WINDOW_1M)),
            **m1,
        ),
        ContinuousQuery(
            name=f"{CQ_PREFIX}{DEVICE_WINDOW_1H}",
            select=(
                f"SELECT {stats('sum', first_last)} INTO {src(ROLLUP_1H_RP, DEVICE_WINDOW_1H)} "
                f"FROM {src(ROLLUP_1M_RP, DEVICE_WINDOW_1M)} GROUP BY time(1h), *"
            ),
            **h1,
        ),
        ContinuousQuery(
            name=f"{CQ_PREFIX}{SITE_WINDOW_1H}",
            select=(
                f"SELECT {stats('sum')} INTO {src(ROLLUP_1H_RP, SITE_WINDOW_1H)} "
                f"FROM {src(ROLLUP_1M_RP, SITE_WINDOW_1M)} GROUP BY time(1h), *"
            ),
            **h1,
        ),
        ContinuousQuery(
            name=f"{CQ_PREFIX}{SITE_WINDOW_1H}_devices",
            select=devices("1h", ROLLUP_1M_RP, DEVICE_WINDOW_1M, src(ROLLUP_1H_RP, SITE_WINDOW_1H)),
            **h1,
        ),
    ]


def _normalised(statement: str) -> str:
    return re.sub(r"\s+", " ", statement.replace('"', "")).strip()


def _retention_policies(settings: InfluxSettings) -> list[tuple[str, str, bool]]:
    return [
        (RAW_RP, settings.raw_retention, True),
        (ROLLUP_1M_RP, settings.rollup_1m_retention, False),
        (ROLLUP_1H_RP, settings.rollup_1h_retention, False),
    ]


def init_storage(settings: InfluxSettings, query: InfluxQuery | None = None) -> list[str]:
    """Create or update the database, retention policies and rollup continuous queries.

    Returns what it did, one line per action; an empty list means everything was already in place.
    """
    client = query or InfluxQuery(settings)
    db = settings.influx_database
    actions: list[str] = []

    if db not in {row["name"] for row in client.query("SHOW DATABASES", database="")}:
        # Created with raw as its first policy so no unused "autogen" policy appears.
        client.query(
            f"CREATE DATABASE {quote_ident(db)} WITH DURATION {settings.raw_retention} REPLICATION 1 "
            f"NAME {quote_ident(RAW_RP)}",
            database="",
        )
        actions.append(
            f"created database {db} with default retention policy {RAW_RP} ({settings.raw_retention})"
        )

    existing = {
        row["name"]: row for row in client.query(f"SHOW RETENTION POLICIES ON {quote_ident(db)}", database="")
    }
    for name, duration, default in _retention_policies(settings):
        have = existing.get(name)
        if have is None:
            client.query(
                f"CREATE RETENTION POLICY {quote_ident(name)} ON {quote_ident(db)} DURATION {duration} "
                f"REPLICATION 1{' DEFAULT' if default else ''}",
                database="",
            )
            actions.append(f"created retention policy {name} ({duration}{', default' if default else ''})")
            continue
        changes = []
        if parse_duration_s(have["duration"]) != parse_duration_s(duration):
            changes.append(f"DURATION {duration}")
        if default and not have.get("default"):
            changes.append("DEFAULT")
        if changes:
            client.query(
                f"ALTER RETENTION POLICY {quote_ident(name)} ON {quote_ident(db)} {' '.join(changes)}",
                database="",
            )
            was = f"was {have['duration']}{', default' if have.get('default') else ''}"
            actions.append(f"altered retention policy {name}: {' '.join(changes)} ({was})")

    stored = {
        row["name"]: row["query"]
        for row in client.query("SHOW CONTINUOUS QUERIES", database="")
        if row.get("_name") == db
    }
    for cq in rollup_queries(db):
        statement = cq.create_statement(db)
        current = stored.pop(cq.name, None)
        if current is not None and _normalised(current) == _normalised(statement):
            continue
        if current is not None:
            client.query(f"DROP CONTINUOUS QUERY {quote_ident(cq.name)} ON {quote_ident(db)}", database="")
        client.query(statement, database="")
        actions.append(f"{'created' if current is None else 'updated'} continuous query {cq.name}")
    for name in sorted(stored):
        if name.startswith(CQ_PREFIX):
            client.query(f"DROP CONTINUOUS QUERY {quote_ident(name)} ON {quote_ident(db)}", database="")
            actions.append(f"dropped stale continuous query {name}")
    return actions


def stored_rollup_selects(settings: InfluxSettings, query: InfluxQuery | None = None) -> dict[str, str]:
    """The ``SELECT ... INTO`` body of each rollup continuous query, as InfluxDB holds it."""
    client = query or InfluxQuery(settings)
    db = settings.influx_database
    bodies = {}
    for row in client.query("SHOW CONTINUOUS QUERIES", database=""):
        if row.get("_name") == db and row["name"].startswith(CQ_PREFIX):
            match = re.search(r"\bBEGIN (.*) END$", row["query"].strip(), flags=re.DOTALL)
            if match:
                bodies[row["name"]] = match.group(1)
    return bodies


def with_time_range(select: str, since_ms: int, until_ms: int) -> str:
    """``select`` (a rollup body, which has no outer WHERE) limited to [since_ms, until_ms)."""
    head, group_by, tail = select.rpartition(" GROUP BY time(")
    if not group_by:
        raise ValueError(f"not a rollup query (no GROUP BY time): {select!r}")
    return f"{head} WHERE time >= {since_ms}ms AND time < {until_ms}ms{group_by}{tail}"


def backfill_rollups(
    settings: InfluxSettings, since_ms: int, until_ms: int, query: InfluxQuery | None = None
) -> list[str]:
    """Run every rollup continuous query's own statement over [since_ms, until_ms), widened to
    whole buckets so no partial bucket overwrites a complete one. Returns one line per query.
    """
    client = query or InfluxQuery(settings)
    bodies = stored_rollup_selects(settings, client)
    actions = []
    for cq in rollup_queries(settings.influx_database):
        if cq.name not in bodies:
            raise RuntimeError(f"continuous query {cq.name} is missing; run `tsdemo storage init` first")
        step = int(parse_duration_s(cq.interval) * 1000)
        start, end = since_ms // step * step, -(-until_ms // step) * step
        rows = client.query(with_time_range(bodies[cq.name], start, end))
        written = sum(int(row.get("written") or 0) for row in rows)
        actions.append(f"{cq.name}: wrote {written} points for [{start}, {end}) ms")
    return actions
