"""``tsdemo dashboards snapshot`` against the real InfluxDB: points written here, the panels' own queries run,
one PNG per dashboard, and the panels that have data drawn with it (and only those)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dashboards.snapshot import SnapshotSettings, series_of, snapshot
from storage.queries import InfluxQuery
from storage.settings import InfluxSettings
from storage.writer import InfluxWriter

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def database(influxdb) -> Iterator[InfluxSettings]:
    settings = InfluxSettings(influx_url=influxdb.endpoint, influx_database=f"snap_{uuid.uuid4().hex[:8]}")
    query = InfluxQuery(settings)
    query.query(f'CREATE DATABASE "{settings.influx_database}"', database="")
    try:
        yield settings
    finally:
        query.query(f'DROP DATABASE "{settings.influx_database}"', database="")
        query.close()


def _points(now: int) -> list[dict]:
    """Five minutes of 10 s windows for two devices on two sites, and the job's late counts."""
    start = now - now % 10_000 - 300_000
    points = []
    for k in range(30):
        t = start + k * 10_000
        for site, device in (("lab-a", "dev-1"), ("lab-b", "dev-2")):
            tags = {"site": site, "type": "environment", "metric": "temperature"}
            points.append({"measurement": "device_window", "tags": {**tags, "device_id": device},
                           "fields": {"count": 5, "sum": 100.0 + k, "mean": 20.0 + k / 5, "min": 19.0, "max": 25.0},
                           "time": t})
            points.append({"measurement": "site_window", "tags": tags,
                           "fields": {"count": 5, "sum": 100.0 + k, "mean": 20.0 + k / 5, "min": 19.0, "max": 25.0,
                                      "devices": 1}, "time": t})
        points.append({"measurement": "pipeline", "tags": {"query": "windows"},
                       "fields": {"late_rows": 2 if k % 10 == 0 else 0, "batch_duration_ms": 800.0 + k},
                       "time": t + 3})
    return points


def test_snapshot_draws_the_panels_that_have_data(database, tmp_path):
    now = int(time.time() * 1000)
    with InfluxWriter(database) as writer:
        writer.write(_points(now))
    out = tmp_path / "shots"
    settings = SnapshotSettings(influx_url=database.influx_url, influx_database=database.influx_database,
                                out=out, time_range="10m")
    lines: list[str] = []
    results = {r.uid: r for r in snapshot(settings, say=lines.append, now_ms=now)}

    assert set(results) == {"tsdemo-fleet", "tsdemo-device", "tsdemo-pipeline"}
    for result in results.values():
        data = result.path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, result.path
    assert sorted(p.name for p in out.iterdir()) == ["tsdemo-device.png", "tsdemo-fleet.png", "tsdemo-pipeline.png"]

    panels = {(uid, p.title): p for uid, r in results.items() for p in r.panels}
    # Variables resolved as Grafana opens the dashboard: All sites, the first device and metric.
    assert results["tsdemo-fleet"].variables["site"] == ["lab-a", "lab-b"]
    assert results["tsdemo-device"].variables == {"site": ["lab-a"], "device": ["dev-1"], "metric": ["temperature"]}
    per_site = panels[("tsdemo-fleet", "Average temperature per site")]
    assert (per_site.series, per_site.points) == (2, 60)  # one line per site, one point per 10 s window
    band = panels[("tsdemo-device", "temperature: mean with min/max band")]
    assert (band.series, band.points) == (3, 90)  # mean, min and max of dev-1
    assert panels[("tsdemo-fleet", "Readings/s")].points > 0
    assert panels[("tsdemo-pipeline", "Late readings")].points > 0
    assert panels[("tsdemo-pipeline", "Spark batch duration")].series == 1
    # Nothing written for these: drawn empty, not invented.
    assert panels[("tsdemo-device", "Battery")].points == 0
    assert panels[("tsdemo-pipeline", "Kafka lag")].points == 0
    assert not [p for p in panels.values() if p.error]
    assert any("tsdemo-fleet.png: 2 time-series panels, 2 with data\n" in line for line in lines), lines


def test_a_chosen_variable_narrows_the_panels(database, tmp_path):
    now = int(time.time() * 1000)
    with InfluxWriter(database) as writer:
        writer.write(_points(now))
    settings = SnapshotSettings(influx_url=database.influx_url, influx_database=database.influx_database,
                                out=tmp_path, time_range="10m", dashboard=["tsdemo-fleet"], var=["site=lab-b"])
    (result,) = snapshot(settings, say=lambda _line: None, now_ms=now)
    assert result.variables["site"] == ["lab-b"]
    per_site = next(p for p in result.panels if p.title == "Average temperature per site")
    assert (per_site.series, per_site.points) == (1, 30)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deploy.cli", "dashboards", "snapshot", *args], cwd=REPO,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=120)


def test_the_command_reads_tsdemo_variables_and_writes_the_pngs(database, tmp_path):
    with InfluxWriter(database) as writer:
        writer.write(_points(int(time.time() * 1000)))
    done = _cli("--dashboard", "tsdemo-pipeline", env={
        "TSDEMO_INFLUX_URL": database.influx_url, "TSDEMO_INFLUX_DATABASE": database.influx_database,
        "TSDEMO_OUT": str(tmp_path), "TSDEMO_TIME_RANGE": "10m"})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "tsdemo-pipeline.png").stat().st_size > 10_000
    assert f"{tmp_path / 'tsdemo-pipeline.png'}: 7 time-series panels" in done.stdout


def test_unreachable_influxdb_is_a_clear_error(tmp_path):
    from deploy.servers import free_port

    done = _cli("--influx-url", f"http://127.0.0.1:{free_port()}", "--out", str(tmp_path))
    assert done.returncode == 1
    assert "InfluxDB does not answer at http://127.0.0.1:" in done.stderr and "TSDEMO_INFLUX_URL" in done.stderr
    assert not list(tmp_path.iterdir())


def test_bad_options_name_the_flag(tmp_path):
    done = _cli("--time-range", "ten minutes", "--out", str(tmp_path))
    assert done.returncode == 2 and "--time-range / TSDEMO_TIME_RANGE" in done.stderr
    done = _cli("--var", "site", "--out", str(tmp_path))
    assert done.returncode == 2 and "--var / TSDEMO_VAR" in done.stderr


def test_series_are_named_as_grafana_names_them():
    rows = [{"time": 1, "_name": "pipeline", "query": "windows", "kafka_lag": 3.0},
            {"time": 2, "_name": "pipeline", "query": "dlq", "kafka_lag": None}]
    assert series_of(rows, "$tag_query") == {"windows": ([1], [3.0])}
    assert series_of(rows, None) == {"kafka_lag {query=windows}": ([1], [3.0])}
    assert series_of([{"time": 5, "mean": 1.0, "max": 2.0}], "$col") == {"mean": ([5], [1.0]), "max": ([5], [2.0])}
