"""The InfluxQL of measures more than one dashboard or alert rule shows, written once.

Grafana macros (``$timeFilter``, ``$__interval``) and variables stay in the text: Grafana, or
``dashboards/interpolate.py``, substitutes them. Tag filters are written
``"tag" =~ /^($var)$/`` so the same query works for one value, several (Grafana joins them as an
alternation) and "All" (``.*``).
"""

from __future__ import annotations

from servicekit.contract.influx import ANOMALY, DEVICE_WINDOW, PIPELINE, SITE_WINDOW, STAGE, STAGE_FIELD, STAGE_TAG
from storage.queries import quote_ident, quote_string


def regex_filter(tag: str, variable: str) -> str:
    return f"{quote_ident(tag)} =~ /^(${variable})$/"


def readings_per_bucket(where: str = "", *, per_second: bool = False) -> str:
    """Readings (not metric values) stored per bucket, by window start; per second with ``per_second``.

    A reading carries one value per metric of its device's type, so each metric's count is that
    type's reading count: per site and type, the readings are the largest count over its metrics
    (equal for every metric when each reading carries all of them, as the simulator's do). Summing
    the counts over metrics instead would count a 3-metric reading three times.
    """
    extra = f" AND {where}" if where else ""
    per_metric = (
        f'SELECT sum("count") AS "n" FROM {quote_ident(SITE_WINDOW)} WHERE $timeFilter{extra} '
        f'GROUP BY time($__interval), "site", "type", "metric"'
    )
    per_type = f'SELECT max("n") AS "readings" FROM ({per_metric}) GROUP BY time($__interval), "site", "type"'
    rate = " * 1000 / $__interval_ms" if per_second else ""
    return (
        f'SELECT sum("readings"){rate} AS "stored" FROM ({per_type}) '
        f"WHERE $timeFilter GROUP BY time($__interval) fill(0)"
    )


def stage_per_bucket(stage: str) -> str:
    """Readings (or messages) through ``stage`` per bucket: the rise of its cumulative counter.

    ``non_negative_difference`` drops the one bucket in which a service restarted (its counter went
    back to zero) instead of counting a huge negative step.
    """
    return (
        f"SELECT non_negative_difference(last({quote_ident(STAGE_FIELD)})) AS {quote_ident(stage)} "
        f"FROM {quote_ident(STAGE)} "
        f'WHERE $timeFilter AND {quote_ident(STAGE_TAG)} = {quote_string(stage)} GROUP BY time($__interval) fill(none)'
    )


def pipeline_field(function: str, field: str, query: str | None = None, alias: str | None = None,
                   fill: str = "none") -> str:
    """One field of processing's ``pipeline`` measurement per bucket, per streaming query."""
    where = f' AND "query" = {quote_string(query)}' if query else ""
    group = "" if query else ', "query"'
    return (
        f"SELECT {function}({quote_ident(field)}) AS {quote_ident(alias or field)} FROM {quote_ident(PIPELINE)} "
        f"WHERE $timeFilter{where} GROUP BY time($__interval){group} fill({fill})"
    )


def newest_window() -> str:
    """The newest stored window in the range (its time is the window start)."""
    return f'SELECT last("count") AS "count" FROM {quote_ident(DEVICE_WINDOW)} WHERE $timeFilter'


def latest_anomalies(where: str = "", limit: int = 20) -> str:
    extra = f" AND {where}" if where else ""
    return (
        f'SELECT "score", "value", "site", "device_id", "metric", "detector" FROM {quote_ident(ANOMALY)} '
        f"WHERE $timeFilter{extra} ORDER BY time DESC LIMIT {limit}"
    )
