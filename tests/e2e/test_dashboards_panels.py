"""Every panel, variable and annotation query of the generated dashboards, after a real end-to-end run,
run against the real InfluxDB with variables and macros substituted as Grafana does, and compared
with what the raw measurements say (recomputed here in Python) and with the generator's ledger.

``device_status``, anomalies and Kafka lag are not written by the pipeline yet, nor ``stage`` (the stage
collector, which writes it, is not part of this run: tests/e2e/test_stage_collector.py): the test
writes those points itself (and keeps whatever processing may write too: expectations come from the
raw rows). The comparison runs at two resolutions: 10 s buckets (one window each) and 1 minute
buckets (several windows re-aggregated).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from dashboards import datasource, interpolate, panel_queries, provisioning
from dashboards.conventions import DEVICE_UID, FLEET_UID, PIPELINE_UID
from servicekit.contract.ledger import read_ledger
from storage.queries import InfluxQuery
from storage.settings import InfluxSettings
from storage.writer import InfluxWriter

READINGS = 2000
INVALID_MESSAGES = ["this is not json", '{"device_id": "bad-1"}', '[{"site": "lab"}]']
CHECK_METRIC = "temperature"
MINUTE = 60_000
SHIFT_MS = 60_000  # the published-against-stored panel's time shift


# -- the run ------------------------------------------------------------------------------------------
@dataclass
class Run:
    query: InfluxQuery
    from_ms: int
    to_ms: int
    ledger: dict[tuple[str, str], int]  # (device, metric) -> readings
    devices: dict[str, dict[str, str]]  # device -> {"site", "type"}
    published: int
    raw: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def rows(self, measurement: str) -> list[dict[str, Any]]:
        return self.raw[measurement]


def _settings(pipeline) -> InfluxSettings:
    return InfluxSettings(influx_url=pipeline.env["TSDEMO_INFLUX_URL"],
                          influx_database=pipeline.env["TSDEMO_INFLUX_DATABASE"])


def _write_own_points(writer: InfluxWriter, windows: list[dict[str, Any]], devices: dict[str, dict[str, str]],
                      site_readings: dict[int, int]) -> None:
    """device_status per device and window, the stage counters, anomalies, Kafka lag and bridge rejects."""
    points = []
    for i, (device, meta) in enumerate(sorted(devices.items())):
        times = sorted({w["time"] for w in windows if w["device_id"] == device})
        for k, t in enumerate(times):
            points.append({"measurement": "device_status",
                           "tags": {"site": meta["site"], "device_id": device, "type": meta["type"]},
                           "fields": {"lat": 52.0 + i / 100, "lon": 13.0 + i / 100, "battery": 100.0 - i - k / 10,
                                      "last_seen_ms": float(t + 9_000)},
                           "time": t})
    # The counter as a scrape just before each window ends would see it: everything up to that window.
    total = 0
    first = min(site_readings)
    minute = _bucket(first, MINUTE)
    # The zero before the first window sits in an earlier bucket at either resolution (10 s, 1 min).
    points.append({"measurement": "stage", "tags": {"stage": "published"}, "fields": {"total": 0.0},
                   "time": minute - 1})
    for start in sorted(site_readings):
        total += site_readings[start]
        points.append({"measurement": "stage", "tags": {"stage": "published"}, "fields": {"total": float(total)},
                       "time": start + 9_999})
    for k, rejected in enumerate((0, 2, 2, 5)):  # one point per minute: each its own bucket
        points.append({"measurement": "stage", "tags": {"stage": "rejected"}, "fields": {"total": float(rejected)},
                       "time": minute - 2 * MINUTE + k * MINUTE + 5_000})
    # 25 anomalies for the first device (more than the table shows), 5 for the first device of each site.
    firsts = {meta["site"]: device for device, meta in sorted(devices.items(), reverse=True)}
    for device in sorted(devices):
        count = 25 if device == sorted(devices)[0] else 5 if device in firsts.values() else 0
        for k in range(count):
            points.append({"measurement": "anomaly",
                           "tags": {"site": devices[device]["site"], "device_id": device,
                                    "type": devices[device]["type"], "metric": CHECK_METRIC, "detector": "e2e"},
                           "fields": {"value": 40.0 + k, "score": 6.0 + k / 10}, "time": first + k * 1_000 + 7})
    for k, lag in enumerate((120.0, 40.0, 0.0)):
        points.append({"measurement": "pipeline", "tags": {"query": "windows"}, "fields": {"kafka_lag": lag},
                       "time": first + k * 20_000 + 3})
    assert writer.write(points) == len(points)


@pytest.fixture(scope="module")
def run(pipeline) -> Run:
    ledger_path = pipeline.workdir / "ledger-dashboards.json"
    for message in INVALID_MESSAGES:
        subprocess.run(["mosquitto_pub", "-h", pipeline.mosquitto.host, "-p", str(pipeline.mosquitto.port),
                        "-q", "1", "-t", "sensors/lab/bad-1", "-m", message], check=True, timeout=10)
    pipeline.run(["generate", "--devices", "8", "--sites", "2", "--rate", "400", "--count", str(READINGS),
                  "--batch", "4"], {"TSDEMO_CLIENT_ID": "gen-dashboards", "TSDEMO_LEDGER_PATH": str(ledger_path)})
    result = pipeline.run(["verify", "--ledger-path", str(ledger_path), "--wait-s", "120", "--json"],
                          check=False)
    report = json.loads(result.stdout)
    assert report["lost"] == 0 and report["double_counted"] == 0, report

    header, entries = read_ledger(ledger_path)
    ledger: dict[tuple[str, str], int] = defaultdict(int)
    devices = {}
    for entry in entries:
        ledger[(entry.device_id, entry.metric)] += entry.count()
        devices[entry.device_id] = {"site": entry.site, "type": entry.type}
    query = InfluxQuery(_settings(pipeline))
    windows = query.query('SELECT * FROM "device_window"')
    site_windows = query.query('SELECT * FROM "site_window"')
    first, last = min(w["time"] for w in windows), max(w["time"] for w in windows)
    with InfluxWriter(_settings(pipeline)) as writer:
        _write_own_points(writer, windows, devices, _site_readings(site_windows, 10_000))
    # Freeze the store: with the job stopped (it writes its last pipeline points as it goes) nothing
    # changes any more, so every panel below sees exactly the snapshot taken here.
    assert pipeline.services["processing"].stop() == 0
    # The shifted panel looks a minute back, so the range ends past the last window by that minute.
    # No panel query uses now(), so a range ending ahead of the clock needs no waiting for it.
    to_ms = max(int(time.time() * 1000), last + 10_000 + SHIFT_MS + 5_000)
    run = Run(query, _bucket(first, MINUTE) - 3 * MINUTE, to_ms, dict(ledger), devices, int(header["published"]))
    for measurement in ("device_window", "site_window", "device_status", "stage", "anomaly", "pipeline"):
        run.raw[measurement] = query.query(
            f'SELECT * FROM "{measurement}" WHERE time >= {run.from_ms - SHIFT_MS}ms AND time <= {to_ms}ms'
        )
    return run


# -- Python re-computations of InfluxQL ------------------------------------------------------------------
def _bucket(t: int, size: int) -> int:
    return t - t % size


def _in(rows: list[dict[str, Any]], start: int, end: int, **tags: Any) -> list[dict[str, Any]]:
    return [r for r in rows if start <= r["time"] <= end and all(r.get(k) == v for k, v in tags.items())]


def _site_readings(site_windows: list[dict[str, Any]], size: int) -> dict[int, int]:
    """Readings per bucket: per site and type, the largest count over the type's metrics."""
    per_metric: dict[tuple, int] = defaultdict(int)
    for r in site_windows:
        per_metric[(_bucket(r["time"], size), r["site"], r["type"], r["metric"])] += r["count"]
    per_type: dict[tuple, int] = defaultdict(int)
    for (b, site, typ, _metric), n in per_metric.items():
        per_type[(b, site, typ)] = max(per_type[(b, site, typ)], n)
    totals: dict[int, int] = defaultdict(int)
    for (b, _site, _typ), n in per_type.items():
        totals[b] += n
    return dict(totals)


def _weighted(rows: list[dict[str, Any]]) -> dict[str, float]:
    n = sum(r["count"] for r in rows)
    return {"readings": n, "mean": sum(r["sum"] for r in rows) / n, "min": min(r["min"] for r in rows),
            "max": max(r["max"] for r in rows)}


def _last_per_bucket(rows: list[dict[str, Any]], field_name: str, size: int) -> dict[int, float]:
    last: dict[int, tuple[int, float]] = {}
    for r in rows:
        if r.get(field_name) is None:
            continue
        b = _bucket(r["time"], size)
        if b not in last or r["time"] >= last[b][0]:
            last[b] = (r["time"], r[field_name])
    return {b: v for b, (_t, v) in sorted(last.items())}


def _non_negative_difference(series: dict[int, float]) -> dict[int, float]:
    times = sorted(series)
    out = {}
    for previous, current in zip(times, times[1:], strict=False):
        if series[current] - series[previous] >= 0:
            out[current] = series[current] - series[previous]
    return out


def _non_negative_derivative(series: dict[int, float]) -> dict[int, float]:
    times = sorted(series)
    out = {}
    for previous, current in zip(times, times[1:], strict=False):
        rate = (series[current] - series[previous]) / ((current - previous) / 1000)
        if rate >= 0:
            out[current] = rate
    return out


def _aggregate(rows: list[dict[str, Any]], field_name: str, size: int, how: Callable) -> dict[int, float]:
    values: dict[int, list[float]] = defaultdict(list)
    for r in rows:
        if r.get(field_name) is not None:
            values[_bucket(r["time"], size)].append(r[field_name])
    return {b: how(v) for b, v in sorted(values.items())}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _series(rows: list[dict[str, Any]], column: str, **tags: Any) -> dict[int, float]:
    return {r["time"]: r[column] for r in rows if r.get(column) is not None
            and all(r.get(k) == v for k, v in tags.items())}


def _nonzero(series: dict[int, float]) -> dict[int, float]:
    return {t: v for t, v in series.items() if v}


def _approx(actual: Any, expected: Any) -> None:
    assert actual == pytest.approx(expected, rel=1e-9, abs=1e-9)


# -- one check per panel target --------------------------------------------------------------------------
@dataclass
class Check:
    run: Run
    panel: dict[str, Any]
    interval_ms: int
    from_ms: int
    to_ms: int
    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def rows(self, measurement: str, **tags: Any) -> list[dict[str, Any]]:
        return _in(self.run.rows(measurement), self.from_ms, self.to_ms, **tags)


def _fill_zero(actual: dict[int, float], expected: dict[int, float], check: Check) -> None:
    """A fill(0) series: the expected values, and a zero in every other bucket of the range."""
    _approx(_nonzero(actual), _nonzero(expected))
    size = check.interval_ms
    assert set(actual) == set(range(_bucket(check.from_ms, size), check.to_ms + 1, size))


def fleet_checks(site: str | None) -> dict[tuple[int, str], Callable[[Check, list[dict]], None]]:
    def site_rows(check: Check, measurement: str, **tags: Any) -> list[dict[str, Any]]:
        rows = check.rows(measurement, **tags)
        return [r for r in rows if site is None or r["site"] == site]

    def devices_in_scope(check: Check) -> list[str]:
        return sorted(d for d, meta in check.run.devices.items() if site is None or meta["site"] == site)

    def readings_per_second(check: Check, rows: list[dict]) -> None:
        size = check.interval_ms
        per_bucket = _site_readings(site_rows(check, "site_window"), size)
        _fill_zero(_series(rows, "stored"), {b: n * 1000 / size for b, n in per_bucket.items()}, check)
        expected_total = sum(n for (d, _m), n in check.run.ledger.items()
                             if d in devices_in_scope(check) and _m == _first_metric(check.run, d))
        assert sum(r["stored"] for r in rows) * size / 1000 == pytest.approx(expected_total)

    def devices_reporting(check: Check, rows: list[dict]) -> None:
        assert [r["devices"] for r in rows] == [len(devices_in_scope(check))]
        assert len({r["device_id"] for r in site_rows(check, "device_window")}) == len(devices_in_scope(check))

    def latest_anomalies(check: Check, rows: list[dict]) -> None:
        raw = sorted(site_rows(check, "anomaly"), key=lambda r: r["time"], reverse=True)[:20]
        assert len(rows) == min(20, len(raw)) >= 1
        assert [(r["time"], r["device_id"], r["metric"], r["score"]) for r in rows] == \
               [(r["time"], r["device_id"], r["metric"], r["score"]) for r in raw]

    def site_averages(check: Check, rows: list[dict]) -> None:
        groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
        for r in site_rows(check, "site_window"):
            groups[(r["site"], r["metric"])].append(r)
        assert {(r["site"], r["metric"]) for r in rows} == set(groups)
        for r in rows:
            want = _weighted(groups[(r["site"], r["metric"])])
            _approx({k: r[k] for k in want}, want)
            ledger = sum(n for (d, m), n in check.run.ledger.items()
                         if m == r["metric"] and check.run.devices[d]["site"] == r["site"])
            assert r["readings"] == ledger

    def site_metric_mean(check: Check, rows: list[dict]) -> None:
        by_site: dict[str, list[dict]] = defaultdict(list)
        for r in site_rows(check, "site_window", metric=CHECK_METRIC):
            by_site[r["site"]].append(r)
        assert {r["site"] for r in rows} == set(by_site)
        for s, raw in by_site.items():
            buckets: dict[int, list[dict]] = defaultdict(list)
            for r in raw:
                buckets[_bucket(r["time"], check.interval_ms)].append(r)
            _approx(_series(rows, "mean", site=s), {b: _weighted(v)["mean"] for b, v in buckets.items()})

    def map_locations(check: Check, rows: list[dict]) -> None:
        latest: dict[str, dict] = {}
        for r in site_rows(check, "device_status"):
            if r["device_id"] not in latest or r["time"] >= latest[r["device_id"]]["time"]:
                latest[r["device_id"]] = r
        assert sorted(r["device_id"] for r in rows) == devices_in_scope(check) == sorted(latest)
        for r in rows:
            _approx((r["lat"], r["lon"], r["battery"]), tuple(latest[r["device_id"]][k]
                                                               for k in ("lat", "lon", "battery")))

    def map_values(check: Check, rows: list[dict]) -> None:
        latest: dict[str, dict] = {}
        for r in site_rows(check, "device_window", metric=CHECK_METRIC):
            if r["device_id"] not in latest or r["time"] > latest[r["device_id"]]["time"]:
                latest[r["device_id"]] = r
        assert {r["device_id"]: (r["time"], r["value"]) for r in rows} == \
               {d: (r["time"], pytest.approx(r["mean"])) for d, r in latest.items()}

    def device_totals(check: Check, rows: list[dict]) -> None:
        per_device: dict[str, list[dict]] = defaultdict(list)
        for r in site_rows(check, "device_window", metric=CHECK_METRIC):
            per_device[r["device_id"]].append(r)
        assert sorted(r["device_id"] for r in rows) == sorted(per_device)
        for r in rows:
            want = _weighted(per_device[r["device_id"]])
            _approx({k: r[k] for k in want}, want)
            assert r["readings"] == check.run.ledger[(r["device_id"], CHECK_METRIC)]
            assert r["site"] == check.run.devices[r["device_id"]]["site"]

    return {
        (1, "A"): readings_per_second, (2, "A"): devices_reporting, (3, "A"): latest_anomalies,
        (4, "A"): site_averages, (5, "A"): site_metric_mean, (6, "A"): map_locations, (6, "B"): map_values,
        (7, "A"): device_totals,
    }


def _first_metric(run: Run, device: str) -> str:
    """One metric of the device: each of its readings carries all of them, so any one counts readings."""
    return sorted(m for d, m in run.ledger if d == device)[0]


def device_checks(device: str) -> dict[tuple[int, str], Callable[[Check, list[dict]], None]]:
    def band(check: Check, rows: list[dict]) -> None:
        buckets: dict[int, list[dict]] = defaultdict(list)
        for r in check.rows("device_window", device_id=device, metric=CHECK_METRIC):
            buckets[_bucket(r["time"], check.interval_ms)].append(r)
        assert [r["time"] for r in rows] == sorted(buckets)
        for r in rows:
            want = _weighted(buckets[r["time"]])
            _approx((r["mean"], r["min"], r["max"]), (want["mean"], want["min"], want["max"]))

    def readings(check: Check, rows: list[dict]) -> None:
        raw = _aggregate(check.rows("device_window", device_id=device, metric=CHECK_METRIC), "count",
                         check.interval_ms, sum)
        _fill_zero(_series(rows, "readings"), raw, check)
        assert sum(r["readings"] for r in rows) == check.run.ledger[(device, CHECK_METRIC)]

    def battery(check: Check, rows: list[dict]) -> None:
        want = _last_per_bucket(check.rows("device_status", device_id=device), "battery", check.interval_ms)
        assert want
        _approx(_series(rows, "battery"), want)

    def last_seen(check: Check, rows: list[dict]) -> None:
        raw = check.rows("device_status", device_id=device)
        newest = max(raw, key=lambda r: r["time"])
        assert [(r["time"], r["last_seen"]) for r in rows] == [(newest["time"], newest["last_seen_ms"])]

    return {(1, "A"): band, (2, "A"): readings, (3, "A"): battery, (4, "A"): last_seen}


def pipeline_checks() -> dict[tuple[int, str], Callable[[Check, list[dict]], None]]:
    def published_series(check: Check, stage: str) -> dict[int, float]:
        return _last_per_bucket(check.rows("stage", stage=stage), "total", check.interval_ms)

    def stage_rates(check: Check, rows: list[dict]) -> None:
        for stage in ("published", "rejected"):
            _approx(_series(rows, "per_second", stage=stage), _non_negative_derivative(published_series(check, stage)))

    def spark_input(check: Check, rows: list[dict]) -> None:
        want = _aggregate(check.rows("pipeline", query="windows"), "input_rate", check.interval_ms, _mean)
        assert want
        _approx(_series(rows, "spark input (Kafka records/s)"), want)

    def published(check: Check, rows: list[dict]) -> None:
        want = _non_negative_difference(published_series(check, "published"))
        _approx(_series(rows, "published"), want)
        assert sum(want.values()) == check.run.published == READINGS

    def stored(check: Check, rows: list[dict]) -> None:
        per_bucket = _site_readings(check.rows("site_window"), check.interval_ms)
        _fill_zero(_series(rows, "stored"), per_bucket, check)
        assert sum(r["stored"] for r in rows) == READINGS

    def gap(check: Check, rows: list[dict]) -> None:
        # Grafana computes $A - $B; what matters is that A and B line up bucket for bucket: no loss, no gap.
        a, b = _series(check.results["A"], "published"), _series(check.results["B"], "stored")
        assert {t: a[t] - b.get(t, 0) for t in a} == dict.fromkeys(a, 0)
        assert check.panel["targets"][2]["expression"] == "$A - $B"

    def freshness(check: Check, rows: list[dict]) -> None:
        assert [r["time"] for r in rows] == [max(r["time"] for r in check.rows("device_window"))]

    def kafka_lag(check: Check, rows: list[dict]) -> None:
        for q in ("windows", "dlq"):
            want = _aggregate(check.rows("pipeline", query=q), "kafka_lag", check.interval_ms, max)
            _approx(_series(rows, "kafka_lag", query=q), want)
        assert _series(rows, "kafka_lag", query="windows")

    def batch_duration(check: Check, rows: list[dict]) -> None:
        for q in ("windows", "dlq"):
            want = _aggregate(check.rows("pipeline", query=q), "batch_duration_ms", check.interval_ms, _mean)
            assert want
            _approx(_series(rows, "batch_duration_ms", query=q), want)

    def summed(field_name: str, query: str, column: str) -> Callable[[Check, list[dict]], None]:
        def check_sum(check: Check, rows: list[dict]) -> None:
            want = _aggregate(check.rows("pipeline", query=query), field_name, check.interval_ms, sum)
            _fill_zero(_series(rows, column), want, check)
        return check_sum

    def invalid(check: Check, rows: list[dict]) -> None:
        summed("output_rows", "dlq", "invalid")(check, rows)
        assert sum(r["invalid"] for r in rows) == len(INVALID_MESSAGES)

    def bridge_rejected(check: Check, rows: list[dict]) -> None:
        want = _non_negative_difference(published_series(check, "rejected"))
        assert sum(want.values()) == 5
        _approx(_series(rows, "rejected"), want)

    return {
        (1, "A"): stage_rates, (1, "B"): spark_input, (2, "A"): published, (2, "B"): stored,
        (2, "C"): gap, (3, "A"): freshness, (4, "A"): kafka_lag, (5, "A"): batch_duration,
        (6, "A"): summed("late_rows", "windows", "late"), (7, "A"): invalid,
        (8, "A"): summed("output_rows", "dlq", "from spark (invalid readings)"), (8, "B"): bridge_rejected,
    }


# -- running a dashboard --------------------------------------------------------------------------------
def _variable_options(run: Run, dashboard: dict[str, Any], chosen: dict[str, Any]) -> dict[str, list[str]]:
    return panel_queries.variable_options(dashboard, chosen, run.from_ms, run.to_ms, run.query.query)


def _run_dashboard(run: Run, uid: str, chosen: dict[str, Any], checks: dict, max_data_points: int) -> int:
    dashboard = provisioning.dashboards()[uid]
    options = _variable_options(run, dashboard, chosen)
    selection = interpolate.selections(dashboard, chosen, options)
    done = 0
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        where = panel_queries.panel_range(panel, run.from_ms, run.to_ms, max_data_points)
        check = Check(run, panel, where.interval_ms, where.from_ms, where.to_ms)
        statements = {target["refId"]: statement
                      for target, statement in panel_queries.target_statements(panel, where, selection)}
        for target in panel["targets"]:
            key = (panel["id"], target["refId"])
            assert key in checks, f"{uid} panel {panel['id']} ({panel['title']}) target {target['refId']} has no check"
            if target["refId"] in statements:
                statement = statements[target["refId"]]
                assert not re.search(r"\$[\w{\[]", statement), statement  # every variable and macro replaced
                check.results[target["refId"]] = run.query.query(statement)
            checks[key](check, check.results.get(target["refId"], []))
            done += 1
    return done


@pytest.fixture(params=[10_000, 60_000], ids=["10s-buckets", "1m-buckets"])
def max_data_points(request, run) -> int:
    """A panel width (in data points) giving buckets of ``request.param``: one window each, or six."""
    points = 1000 if request.param == 10_000 else (run.to_ms - run.from_ms) // MINUTE  # 60-90 s -> 1 m
    interval = interpolate.calculate_interval_ms(run.from_ms, run.to_ms, points, datasource.MIN_INTERVAL)
    assert interval == request.param
    return points


def test_fleet_overview_for_all_sites(run, max_data_points):
    checks = fleet_checks(site=None)
    done = _run_dashboard(run, FLEET_UID, {"site": interpolate.ALL, "metric": CHECK_METRIC}, checks,
                          max_data_points)
    assert done == len(checks)


def test_fleet_overview_for_one_site(run, max_data_points):
    site = sorted({meta["site"] for meta in run.devices.values()})[0]
    checks = fleet_checks(site=site)
    assert _run_dashboard(run, FLEET_UID, {"site": [site], "metric": CHECK_METRIC}, checks, max_data_points) \
        == len(checks)


def test_device_detail(run, max_data_points):
    device = next(d for d, meta in sorted(run.devices.items()) if (d, CHECK_METRIC) in run.ledger)
    site = run.devices[device]["site"]
    checks = device_checks(device)
    chosen = {"site": site, "device": device, "metric": CHECK_METRIC}
    assert _run_dashboard(run, DEVICE_UID, chosen, checks, max_data_points) == len(checks)


def test_pipeline_health(run, max_data_points):
    checks = pipeline_checks()
    assert _run_dashboard(run, PIPELINE_UID, {}, checks, max_data_points) == len(checks)


def test_variables_list_what_the_ledger_has(run):
    fleet = provisioning.dashboards()[FLEET_UID]
    options = _variable_options(run, fleet, {"site": interpolate.ALL, "metric": CHECK_METRIC})
    assert options["site"] == sorted({meta["site"] for meta in run.devices.values()})
    assert options["metric"] == sorted({m for _d, m in run.ledger})

    device = sorted(run.devices)[0]
    site = run.devices[device]["site"]
    detail = provisioning.dashboards()[DEVICE_UID]
    options = _variable_options(run, detail, {"site": site, "device": device})
    assert options["device"] == sorted(d for d, meta in run.devices.items() if meta["site"] == site)
    assert options["metric"] == sorted(m for d, m in run.ledger if d == device)


def test_anomaly_annotations_of_the_device(run):
    detail = provisioning.dashboards()[DEVICE_UID]
    device = sorted(run.devices)[0]
    chosen = {"site": run.devices[device]["site"], "device": device, "metric": CHECK_METRIC}
    selection = interpolate.selections(detail, chosen, _variable_options(run, detail, chosen))
    (annotation,) = detail["annotations"]["list"]
    statement = interpolate.interpolate(annotation["target"]["query"], from_ms=run.from_ms, to_ms=run.to_ms,
                                        interval_ms=10_000, variables=selection)
    rows = run.query.query(statement)
    raw = _in(run.rows("anomaly"), run.from_ms, run.to_ms, device_id=device)
    assert len(rows) == len(raw) >= 25
    columns = [annotation["target"]["textColumn"], *annotation["target"]["tagsColumn"].split(",")]
    assert all(r.get(c) for r in rows for c in columns)
