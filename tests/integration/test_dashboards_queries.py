"""The alert rules' InfluxQL and the shared measures, against the real InfluxDB, on points written here.

Grafana's expressions (reduce last, thresholds, the spike's math) cannot run without Grafana; the
tests check what they are fed: the value per site the query returns, as Grafana would read it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from dashboards import alerts, interpolate, measures
from storage.queries import InfluxQuery
from storage.settings import InfluxSettings
from storage.writer import InfluxWriter

MINUTE = 60_000


@pytest.fixture
def db(influxdb) -> Iterator[tuple[InfluxQuery, InfluxWriter]]:
    settings = InfluxSettings(influx_url=influxdb.endpoint, influx_database=f"dash_{uuid.uuid4().hex[:8]}")
    query, writer = InfluxQuery(settings), InfluxWriter(settings)
    query.query(f'CREATE DATABASE "{settings.influx_database}"', database="")
    try:
        yield query, writer
    finally:
        query.query(f'DROP DATABASE "{settings.influx_database}"', database="")
        query.close()
        writer.close()


def _now() -> int:
    return int(time.time() * 1000)


def _rule_query(rule_query: str, seconds: int, now: int) -> str:
    """An alert rule's query as Grafana's alerting runs it: $timeFilter from its relative time range."""
    return interpolate.interpolate(rule_query, from_ms=now - seconds * 1000, to_ms=now, interval_ms=1000)


def _site_window(site: str, t: int, count: int = 5) -> dict:
    return {"measurement": "site_window", "tags": {"site": site, "type": "environment", "metric": "temperature"},
            "fields": {"count": count, "sum": 20.0 * count, "mean": 20.0, "min": 19.0, "max": 21.0, "devices": 1},
            "time": t}


def test_a_silent_site_keeps_its_series_and_reads_zero(db):
    query, writer = db
    now = _now()
    start = now - now % 10_000
    points = [_site_window("live", start - k * 10_000) for k in range(1, 180)]  # the last 30 minutes
    points += [_site_window("quiet", start - k * 10_000) for k in range(90, 180)]  # silent for 15 minutes
    writer.write(points)
    rows = query.query(_rule_query(alerts.SITE_SILENT, 86_400, _now()))
    last = {site: max((r for r in rows if r["site"] == site), key=lambda r: r["time"])["per_minute"]
            for site in ("live", "quiet")}
    assert last["quiet"] == 0  # below the threshold: the rule fires for this site
    assert last["live"] >= 5 * 6 * (alerts.SILENT_MINUTES - 2) / alerts.SILENT_MINUTES  # far above it


def test_a_site_silent_for_minutes_only_still_reads_above_the_threshold(db):
    query, writer = db
    now = _now()
    start = now - now % 10_000
    writer.write([_site_window("blip", start - k * 10_000, count=1) for k in range(30, 40)])  # 5-6.5 minutes ago
    rows = query.query(_rule_query(alerts.SITE_SILENT, 86_400, _now()))
    assert max(rows, key=lambda r: r["time"])["per_minute"] >= 1 / alerts.SILENT_MINUTES


def test_freshness_has_no_data_exactly_when_the_newest_window_is_older_than_the_threshold(db):
    query, writer = db
    now = _now()

    def window(t: int) -> dict:
        return {"measurement": "device_window",
                "tags": {"site": "s", "device_id": "d", "type": "environment", "metric": "temperature"},
                "fields": {"count": 3, "sum": 60.0, "mean": 20.0, "min": 19.0, "max": 21.0}, "time": t}

    writer.write([window(now - 5 * MINUTE)])
    assert query.query(_rule_query(alerts.FRESH_WINDOWS, alerts.FRESHNESS_THRESHOLD_S, _now())) == []
    writer.write([window(now - 30_000)])
    (row,) = query.query(_rule_query(alerts.FRESH_WINDOWS, alerts.FRESHNESS_THRESHOLD_S, _now()))
    assert row["windows"] == 1


def test_anomaly_counts_per_site_feed_the_spike_expression(db):
    query, writer = db
    now = _now()

    def anomaly(site: str, t: int) -> dict:
        return {"measurement": "anomaly",
                "tags": {"site": site, "device_id": f"{site}-d", "type": "vibration", "metric": "rms",
                         "detector": "zscore"},
                "fields": {"value": 9.0, "score": 6.5}, "time": t}

    points = [anomaly("spiky", now - k * 10_000) for k in range(1, 13)]  # 12 in the last two minutes
    points += [anomaly("spiky", now - k * 5 * MINUTE) for k in range(2, 6)]  # 4 earlier in the hour
    points += [anomaly("calm", now - k * 4 * MINUTE) for k in range(1, 15)]  # 14 spread over the hour
    writer.write(points)
    recent = {r["site"]: r["anomalies"] for r in query.query(
        _rule_query(alerts.ANOMALIES_PER_SITE, alerts.SPIKE_WINDOW_S, _now()))}
    hour = {r["site"]: r["anomalies"] for r in query.query(
        _rule_query(alerts.ANOMALIES_PER_SITE, alerts.SPIKE_BASELINE_S, _now()))}
    assert (recent["spiky"], hour["spiky"]) == (12, 16)
    assert hour["calm"] == 14 and recent["calm"] <= 2

    def spike(c: float, d: float) -> bool:  # $C >= min && $C / window > factor * $D / baseline
        return c >= alerts.SPIKE_MIN_ANOMALIES and c / alerts.SPIKE_WINDOW_S > (
            alerts.SPIKE_FACTOR * d / alerts.SPIKE_BASELINE_S)

    assert alerts.SPIKE == (f"$C >= {alerts.SPIKE_MIN_ANOMALIES} && $C / {alerts.SPIKE_WINDOW_S} > "
                            f"{alerts.SPIKE_FACTOR} * $D / {alerts.SPIKE_BASELINE_S}")
    assert spike(recent["spiky"], hour["spiky"])
    assert not spike(recent["calm"], hour["calm"])


def test_a_reading_counts_once_whatever_its_metrics(db):
    query, writer = db
    t = _now() - 5 * MINUTE
    t -= t % 10_000
    tags = {"site": "s", "type": "environment"}
    writer.write([
        {"measurement": "site_window", "tags": {**tags, "metric": m}, "fields": {"count": 4, "sum": 1.0}, "time": t}
        for m in ("temperature", "humidity", "pressure")
    ] + [{"measurement": "site_window", "tags": {"site": "s", "type": "vibration", "metric": m},
          "fields": {"count": 2, "sum": 1.0}, "time": t} for m in ("rms", "peak")])
    statement = interpolate.interpolate(measures.readings_per_bucket(), from_ms=t - MINUTE, to_ms=t + MINUTE,
                                        interval_ms=10_000)
    stored = {r["time"]: r["stored"] for r in query.query(statement)}
    assert stored[t] == 4 + 2  # not 3 * 4 + 2 * 2 metric values
    assert set(stored.values()) == {0, 6}


def test_a_restarted_counter_does_not_count_negative(db):
    query, writer = db
    t = _now() - 10 * MINUTE
    t -= t % MINUTE
    totals = [0, 100, 250, 30, 80]  # the service restarted before the fourth sample
    writer.write([{"measurement": "stage", "tags": {"stage": "published"}, "fields": {"total": float(v)},
                   "time": t + k * MINUTE + 1_000} for k, v in enumerate(totals)])
    statement = interpolate.interpolate(measures.stage_per_bucket("published"), from_ms=t, to_ms=t + 6 * MINUTE,
                                        interval_ms=MINUTE)
    assert [r["published"] for r in query.query(statement)] == [100, 150, 50]
