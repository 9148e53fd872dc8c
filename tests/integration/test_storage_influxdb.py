"""Storage against a real influxd (1.x): idempotent init, exact rollups, retries through an outage,
server errors surfaced, and exact round-trips of awkward names.

Most tests share the session's ``influxdb`` fixture (tests/conftest.py), each in a database of its
own. The outage and row-limit tests use a private server of this module: one they may stop, and
one with a small ``max-row-limit``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import re
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator

import pytest
import urllib3

from deploy.servers import InfluxDB, free_port
from servicekit.contract import influx
from storage.cli import add_parser
from storage.queries import InfluxQuery, InfluxQueryError, quote_ident, quote_string
from storage.settings import InfluxSettings
from storage.setup import backfill_rollups, init_storage, rollup_queries, stored_rollup_selects
from storage.writer import InfluxWriteError, InfluxWriter

ROW_LIMIT = 100  # the private server's max-row-limit: query() must still return every row
# Recent and hour-aligned: points older than the raw policy (7d) would be dropped by InfluxDB.
BASE = int(time.time() * 1000) // 3_600_000 * 3_600_000 - 3_600_000


class LimitedInfluxDB(InfluxDB):
    """The shared launcher with a row limit, like a production server configured defensively."""

    def _prepare(self) -> None:
        super()._prepare()
        config = self.config_path.read_text()
        self.config_path.write_text(config.replace("[http]\n", f"[http]\n  max-row-limit = {ROW_LIMIT}\n", 1))


@pytest.fixture(scope="module")
def own_influxdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB]:
    server = LimitedInfluxDB(tmp_path_factory.mktemp("own-influxdb"), free_port())
    with server:
        yield server


@pytest.fixture
def settings(influxdb: InfluxDB) -> InfluxSettings:
    """A database of the test's own, so tests never see each other's data."""
    return InfluxSettings(
        influx_url=influxdb.endpoint, influx_database=f"t_{uuid.uuid4().hex[:10]}", influx_retry_max_s=5
    )


@pytest.fixture
def db(settings: InfluxSettings) -> Iterator[InfluxQuery]:
    init_storage(settings)
    query = InfluxQuery(settings)
    yield query
    query.query(f"DROP DATABASE {quote_ident(settings.influx_database)}", database="")
    query.close()


def _schema(query: InfluxQuery, database: str) -> tuple[list, list]:
    policies = query.query(f"SHOW RETENTION POLICIES ON {quote_ident(database)}", database="")
    cqs = [row for row in query.query("SHOW CONTINUOUS QUERIES", database="") if row["_name"] == database]
    return policies, cqs


# --- init ---------------------------------------------------------------------------------------


def test_init_twice_leaves_the_same_state(settings: InfluxSettings, db: InfluxQuery) -> None:
    first = _schema(db, settings.influx_database)
    assert init_storage(settings) == []
    assert _schema(db, settings.influx_database) == first

    policies = {row["name"]: row for row in first[0]}
    assert set(policies) == {influx.RAW_RP, influx.ROLLUP_1M_RP, influx.ROLLUP_1H_RP}  # no stray autogen
    assert policies[influx.RAW_RP]["default"] and policies[influx.RAW_RP]["duration"] == "168h0m0s"
    assert policies[influx.ROLLUP_1M_RP]["duration"] == "2160h0m0s"
    assert policies[influx.ROLLUP_1H_RP]["duration"] == "26280h0m0s"
    # Every CQ is stored exactly as written (else init could never be a no-op).
    stored = {row["name"]: row["query"] for row in first[1]}
    assert stored == {
        cq.name: cq.create_statement(settings.influx_database)
        for cq in rollup_queries(settings.influx_database)
    }


def test_init_updates_what_changed(settings: InfluxSettings, db: InfluxQuery) -> None:
    name = settings.influx_database
    stale_cq = rollup_queries(name)[0].name
    db.query(f"DROP CONTINUOUS QUERY {stale_cq} ON {name}", database="")
    db.query(
        f"CREATE CONTINUOUS QUERY {stale_cq} ON {name} BEGIN SELECT mean(mean) AS mean "
        f"INTO {name}.rollup_1m.device_window_1m FROM {name}.raw.device_window GROUP BY time(1m), * END",
        database="",
    )
    db.query(
        f"CREATE CONTINUOUS QUERY tsdemo_old ON {name} BEGIN SELECT max(max) AS max "
        f"INTO {name}.rollup_1m.old FROM {name}.raw.device_window GROUP BY time(1m) END",
        database="",
    )
    db.query(
        f"CREATE CONTINUOUS QUERY someone_elses ON {name} BEGIN SELECT max(max) AS max "
        f"INTO {name}.rollup_1m.theirs FROM {name}.raw.device_window GROUP BY time(1m) END",
        database="",
    )
    changed = settings.model_copy(update={"raw_retention": "2d", "rollup_1h_retention": "INF"})
    actions = init_storage(changed)
    assert actions == [
        "altered retention policy raw: DURATION 2d (was 168h0m0s, default)",
        "altered retention policy rollup_1h: DURATION INF (was 26280h0m0s)",
        f"updated continuous query {stale_cq}",
        "dropped stale continuous query tsdemo_old",
    ]
    assert init_storage(changed) == []
    policies, cqs = _schema(db, name)
    assert {row["name"]: row["duration"] for row in policies}[influx.ROLLUP_1H_RP] == "0s"
    assert "someone_elses" in {row["name"] for row in cqs}


# --- rollups ------------------------------------------------------------------------------------

# site -> device -> type; one device id carries characters that need escaping.
SITES = {
    "north": {"n-1": "environment", 'n 2,"x"': "power_meter", "n-3": "environment"},
    "south": {"s-1": "environment", "s-2": "power_meter"},
}
TYPES = {"environment": ["temperature", "humidity"], "power_meter": ["power"]}
WINDOW_MS = 10_000


def _fleet_windows(start_ms: int, end_ms: int, seed: int = 7) -> tuple[list[dict], list[dict]]:
    """Raw 10 s windows like processing writes, with gaps and uneven counts (so that a mean of
    means would visibly differ from the true mean) and first/last on some devices only."""
    rng = random.Random(seed)
    device_points, site_acc = [], defaultdict(list)
    for site, devices in SITES.items():
        for device, kind in devices.items():
            for metric in TYPES[kind]:
                for t in range(start_ms, end_ms, WINDOW_MS):
                    if rng.random() < 0.2:
                        continue
                    values = [round(rng.uniform(-50, 150), 3) for _ in range(rng.choice([1, 2, 3, 7, 12]))]
                    fields = {
                        "count": len(values),
                        "mean": sum(values) / len(values),
                        "min": min(values),
                        "max": max(values),
                    }
                    if device != "n-1":
                        fields.update(first=values[0], last=values[-1])
                    tags = {"site": site, "device_id": device, "type": kind, "metric": metric}
                    device_points.append(
                        {"measurement": influx.DEVICE_WINDOW, "tags": tags, "fields": fields, "time": t}
                    )
                    site_acc[(site, kind, metric, t)].append((device, values))
    site_points = []
    for (site, kind, metric, t), per_device in site_acc.items():
        values = [v for _, vs in per_device for v in vs]
        site_points.append(
            {
                "measurement": influx.SITE_WINDOW,
                "tags": {"site": site, "type": kind, "metric": metric},
                "fields": {
                    "count": len(values),
                    "mean": sum(values) / len(values),
                    "min": min(values),
                    "max": max(values),
                    "devices": len(per_device),
                },
                "time": t,
            }
        )
    return device_points, site_points


def _expected(device_points: list[dict], site_points: list[dict], bucket_ms: int) -> tuple[dict, dict]:
    """Rollups recomputed from the raw windows: the ground truth the continuous queries must match."""
    devices: dict[tuple, dict] = {}
    for p in sorted(device_points, key=lambda p: p["time"]):
        key = (tuple(sorted(p["tags"].items())), p["time"] // bucket_ms * bucket_ms)
        f = p["fields"]
        acc = devices.setdefault(key, {"count": 0, "sum": 0.0, "min": math.inf, "max": -math.inf})
        acc["count"] += f["count"]
        acc["sum"] += f["mean"] * f["count"]
        acc["min"], acc["max"] = min(acc["min"], f["min"]), max(acc["max"], f["max"])
        if "first" in f:
            acc.setdefault("first", f["first"])
            acc["last"] = f["last"]
    sites: dict[tuple, dict] = {}
    for p in site_points:
        key = (tuple(sorted(p["tags"].items())), p["time"] // bucket_ms * bucket_ms)
        f = p["fields"]
        acc = sites.setdefault(key, {"count": 0, "sum": 0.0, "min": math.inf, "max": -math.inf, "ids": set()})
        acc["count"] += f["count"]
        acc["sum"] += f["mean"] * f["count"]
        acc["min"], acc["max"] = min(acc["min"], f["min"]), max(acc["max"], f["max"])
    for p in device_points:
        tags = p["tags"]
        key = (
            tuple(sorted({k: tags[k] for k in ("site", "type", "metric")}.items())),
            p["time"] // bucket_ms * bucket_ms,
        )
        sites[key]["ids"].add(tags["device_id"])
    for acc in [*devices.values(), *sites.values()]:
        acc["mean"] = acc["sum"] / acc["count"]
    for acc in sites.values():
        acc["devices"] = len(acc.pop("ids"))
    return devices, sites


def _stored(query: InfluxQuery, rp: str, measurement: str, tag_keys: tuple[str, ...]) -> dict[tuple, dict]:
    rows = query.query(f"SELECT * FROM {quote_ident(rp)}.{quote_ident(measurement)}")
    stored = {}
    for row in rows:
        tags = tuple(sorted((k, row.pop(k)) for k in tag_keys))
        key = (tags, row.pop("time"))
        row.pop("_name")
        stored[key] = {k: v for k, v in row.items() if v is not None}
    return stored


def _assert_rollup(stored: dict, expected: dict) -> None:
    assert stored.keys() == expected.keys()
    for key, want in expected.items():
        got = stored[key]
        assert got.keys() == want.keys(), key
        for field, value in want.items():
            if field in ("count", "devices"):
                assert got[field] == value and isinstance(got[field], int), (key, field)
            else:
                assert math.isclose(got[field], value, rel_tol=1e-9, abs_tol=1e-9), (
                    key,
                    field,
                    got[field],
                    value,
                )


def test_rollups_equal_a_recomputation_from_the_raw_windows(
    settings: InfluxSettings, db: InfluxQuery
) -> None:
    hour = 3_600_000
    start = (int(time.time() * 1000) - 5 * hour) // hour * hour + 7 * 60_000  # partial first hour
    end = start + 2 * hour + 3 * 60_000 + 20_000  # ... and partial last minute and hour
    device_points, site_points = _fleet_windows(start, end)
    with InfluxWriter(settings) as writer:
        assert writer.write(device_points + site_points) == len(device_points) + len(site_points)

    # Far outside the continuous queries' FOR window, so nothing has rolled up on its own...
    assert db.query(f"SELECT count(*) FROM {influx.ROLLUP_1M_RP}.{influx.DEVICE_WINDOW_1M}") == []
    # ... and the backfill runs the exact statements InfluxDB holds for the continuous queries.
    selects = stored_rollup_selects(settings)
    assert selects == {cq.name: cq.select for cq in rollup_queries(settings.influx_database)}
    actions = backfill_rollups(settings, start, end)
    assert len(actions) == 6 and all("wrote" in a for a in actions)

    device_tags = ("device_id", "metric", "site", "type")
    site_tags = ("metric", "site", "type")
    for bucket, rp, device_m, site_m in (
        (60_000, influx.ROLLUP_1M_RP, influx.DEVICE_WINDOW_1M, influx.SITE_WINDOW_1M),
        (hour, influx.ROLLUP_1H_RP, influx.DEVICE_WINDOW_1H, influx.SITE_WINDOW_1H),
    ):
        want_devices, want_sites = _expected(device_points, site_points, bucket)
        _assert_rollup(_stored(db, rp, device_m, device_tags), want_devices)
        _assert_rollup(_stored(db, rp, site_m, site_tags), want_sites)

    # The data is uneven enough that averaging the window means would have been caught.
    naive = db.query(
        f"SELECT mean(mean) AS m FROM {influx.DEVICE_WINDOW} WHERE time >= {start}ms AND time < {end}ms GROUP BY *"
    )
    weighted = db.query(
        f"SELECT sum(sum) / sum(count) AS m FROM {influx.ROLLUP_1H_RP}.{influx.DEVICE_WINDOW_1H} GROUP BY *"
    )
    assert any(not math.isclose(a["m"], b["m"], rel_tol=1e-6) for a, b in zip(naive, weighted, strict=True))


@pytest.mark.slow
def test_continuous_queries_roll_up_recent_windows_by_themselves(
    settings: InfluxSettings, db: InfluxQuery
) -> None:
    now = int(time.time() * 1000)
    start = (now - 3 * 60_000) // 60_000 * 60_000
    end = now // WINDOW_MS * WINDOW_MS
    device_points, site_points = _fleet_windows(start, end, seed=11)
    InfluxWriter(settings).write(device_points + site_points)
    want_devices, want_sites = _expected(device_points, site_points, 60_000)
    # Only minutes that were complete when written: the current one may be rolled up half-full.
    limit = end // 60_000 * 60_000
    want_devices = {k: v for k, v in want_devices.items() if k[1] < limit}
    want_sites = {k: v for k, v in want_sites.items() if k[1] < limit}
    assert want_devices and want_sites

    def check() -> None:
        stored = _stored(db, influx.ROLLUP_1M_RP, influx.DEVICE_WINDOW_1M, ("device_id", "metric", "site", "type"))
        _assert_rollup({k: v for k, v in stored.items() if k[1] < limit}, want_devices)
        stored = _stored(db, influx.ROLLUP_1M_RP, influx.SITE_WINDOW_1M, ("metric", "site", "type"))
        _assert_rollup({k: v for k, v in stored.items() if k[1] < limit}, want_sites)

    # RESAMPLE EVERY 1m: the queries run at each minute boundary (run-interval is 1s here); a run
    # that raced the write above is corrected by the next one, since each revisits 15 minutes.
    deadline = time.monotonic() + 130
    while True:
        try:
            check()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


# --- writes and errors --------------------------------------------------------------------------


def _point(t: int, **fields: float) -> dict:
    return {
        "measurement": influx.DEVICE_WINDOW,
        "tags": {"site": "s", "device_id": "d", "type": "t", "metric": "m"},
        "fields": fields or {"count": 1, "mean": 1.0, "min": 1.0, "max": 1.0},
        "time": t,
    }


def test_write_retries_through_a_10s_outage(own_influxdb: InfluxDB, caplog: pytest.LogCaptureFixture) -> None:
    settings = InfluxSettings(
        influx_url=own_influxdb.endpoint, influx_database="outage", influx_retry_max_s=60, influx_timeout_s=5
    )
    init_storage(settings)
    own_influxdb.stop()
    now = int(time.time() * 1000) // 1000 * 1000
    points = [_point(now - i * WINDOW_MS, count=i + 1, mean=0.5, min=0.0, max=1.0) for i in range(50)]
    outcome: dict = {}

    def write() -> None:
        try:
            outcome["written"] = InfluxWriter(settings).write(points)
        except Exception as exc:  # noqa: BLE001 (asserted below)
            outcome["error"] = exc

    caplog.set_level(logging.WARNING, logger="storage.writer")
    thread = threading.Thread(target=write)
    started = time.monotonic()
    try:
        thread.start()
        time.sleep(10)
        assert thread.is_alive(), f"write ended while InfluxDB was down: {outcome}"
    finally:
        own_influxdb.start()
        own_influxdb.wait_ready()
    thread.join(60)
    assert not thread.is_alive()
    assert outcome == {"written": 50}
    assert time.monotonic() - started >= 10
    retries = [r for r in caplog.records if r.getMessage() == "write failed, retrying"]
    assert len(retries) >= 3 and retries[0].fields["status"] is None  # type: ignore[attr-defined]
    assert InfluxQuery(settings).stored_counts() == {("d", "m"): sum(range(1, 51))}


def test_write_gives_up_when_the_retry_budget_is_spent() -> None:
    settings = InfluxSettings(influx_url=f"http://127.0.0.1:{free_port()}", influx_retry_max_s=1.5)
    started = time.monotonic()
    with pytest.raises(InfluxWriteError, match="failed .* times over 1.5s") as info:
        InfluxWriter(settings).write([_point(1)])
    assert 1.4 <= time.monotonic() - started < 5
    assert info.value.status is None and info.value.written == 0


def test_field_type_conflict_is_rejected_with_the_server_message(
    settings: InfluxSettings, db: InfluxQuery
) -> None:
    # Someone else wrote mean as an integer first (raw HTTP, not our writer).
    http = urllib3.PoolManager()
    response = http.request(
        "POST",
        f"{settings.influx_url}/write?db={settings.influx_database}&precision=ms",
        body=f"device_window,site=s,device_id=d,type=t,metric=m count=1i,mean=5i {BASE}".encode(),
    )
    assert response.status == 204
    with InfluxWriter(settings) as writer:
        with pytest.raises(InfluxWriteError) as info:
            writer.write([_point(BASE + 10_000, count=1, mean=5.0, min=5.0, max=5.0)])
        assert writer.retries == 0  # a 4xx is not retried
    assert info.value.status == 400
    assert "field type conflict" in info.value.server_message
    assert "field type conflict" in str(info.value) and "HTTP 400" in str(info.value)


def test_points_older_than_retention_are_counted_not_fatal(
    settings: InfluxSettings, db: InfluxQuery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="storage.writer")
    with InfluxWriter(settings) as writer:
        assert writer.write([_point(1_000), _point(BASE), _point(2_000)]) == 1
        assert writer.points_dropped_by_retention == 2 and writer.points_written == 1
    assert db.stored_counts() == {("d", "m"): 1}
    assert any("older than the retention policy" in r.getMessage() for r in caplog.records)


def test_unknown_database_error_names_it(influxdb: InfluxDB) -> None:
    settings = InfluxSettings(influx_url=influxdb.endpoint, influx_database="nope_not_here")
    with pytest.raises(InfluxWriteError, match="database not found.*storage init") as info:
        InfluxWriter(settings).write([_point(1)])
    assert info.value.status == 404
    with pytest.raises(InfluxQueryError, match="database not found"):
        InfluxQuery(settings).query("SELECT * FROM device_window")
    with pytest.raises(InfluxQueryError, match="error parsing query"):
        InfluxQuery(settings).query("SELEKT 1")


@pytest.mark.parametrize(
    "text",
    [
        "a b",
        "a,b",
        "a=b",
        'a"b',
        "a'b",
        "a\\b",
        "a\\,b",
        "a\\ b",
        "\\\\x",
        "ünïcødé 中文 🚀",
        ' ,="\\ü= mix ',
    ],
)
def test_awkward_names_round_trip_exactly(settings: InfluxSettings, db: InfluxQuery, text: str) -> None:
    # Measurements and field keys cannot hold a backslash before , = space or " exactly (the
    # writer refuses those, see the unit tests); tag keys and values can hold anything here.
    key_text = re.sub(r'\\(?=[, ="])', "/", text)
    measurement = f"m {key_text}"
    point = {
        "measurement": measurement,
        "tags": {f"k {text}": text, "device_id": text, "metric": "x"},
        "fields": {f"f {key_text}": 1.25, "count": 3},
        "time": BASE + 5000,
    }
    InfluxWriter(settings).write([point])
    src = quote_ident(measurement)
    rows = db.query(f"SELECT * FROM {src} WHERE {quote_ident(f'k {text}')} = {quote_string(text)}")
    assert rows == [
        {
            "time": BASE + 5000,
            f"k {text}": text,
            "device_id": text,
            "metric": "x",
            f"f {key_text}": 1.25,
            "count": 3.0,
            "_name": measurement,
        }
    ]
    tag_values = db.query(f"SHOW TAG VALUES FROM {src} WITH KEY = {quote_ident('device_id')}")
    assert [row["value"] for row in tag_values] == [text]
    measurements = [row["name"] for row in db.query("SHOW MEASUREMENTS")]
    assert measurement in measurements
    assert db.stored_counts(measurement) == {(text, "x"): 3}


# --- queries ------------------------------------------------------------------------------------


def test_query_helpers(settings: InfluxSettings, db: InfluxQuery) -> None:
    assert db.ping()
    assert db.latest_window_time() is None
    assert db.stored_counts() == {}
    points = [
        {
            **_point(t),
            "tags": {"site": "s", "device_id": f"d{d}", "type": "t", "metric": m},
            "fields": {"count": d + 1, "mean": 1.0},
        }
        for d in range(60)
        for m in ("a", "b")
        for t in (BASE + 10_000, BASE + 20_000, BASE + 30_000)
    ]
    InfluxWriter(settings).write(points)
    counts = db.stored_counts()
    assert len(counts) == 120
    assert counts[("d5", "a")] == 18
    assert db.stored_counts(since_ms=BASE + 20_000, until_ms=BASE + 30_000)[("d5", "b")] == 6
    assert db.latest_window_time() == BASE + 30_000
    rows = db.query(f"SELECT * FROM {influx.DEVICE_WINDOW}")
    assert len(rows) == 360 and rows[0]["time"] == BASE + 10_000
    assert not InfluxQuery(InfluxSettings(influx_url=f"http://127.0.0.1:{free_port()}")).ping()


def test_query_json_is_flattened_with_tags_and_name(db: InfluxQuery, settings: InfluxSettings) -> None:
    InfluxWriter(settings).write([_point(BASE + 60_000), _point(BASE + 70_000)])
    rows = db.query(
        f"SELECT sum({quote_ident('count')}) AS n FROM {influx.DEVICE_WINDOW} GROUP BY time(1m), site fill(none)"
    )
    assert rows == [{"site": "s", "time": BASE + 60_000, "n": 2, "_name": influx.DEVICE_WINDOW}]
    json.dumps(rows)


def test_query_returns_every_row_past_max_row_limit(own_influxdb: InfluxDB) -> None:
    settings = InfluxSettings(influx_url=own_influxdb.endpoint, influx_database="rowlimit")
    init_storage(settings)
    points = [
        {
            **_point(BASE + i * 1000),
            "tags": {"device_id": f"d{i % 150}", "metric": "m"},
            "fields": {"count": 2},
        }
        for i in range(3 * ROW_LIMIT)
    ]
    InfluxWriter(settings).write(points)
    # The limit is real: an unchunked answer is cut short...
    plain = urllib3.PoolManager().request(
        "POST",
        f"{own_influxdb.endpoint}/query",
        fields={"db": "rowlimit", "q": f"SELECT * FROM {influx.DEVICE_WINDOW}"},
        encode_multipart=False,
    )
    assert json.loads(plain.data)["results"][0]["series"][0].get("partial") is True
    # ... while query() and the helpers see everything.
    query = InfluxQuery(settings)
    assert len(query.query(f"SELECT * FROM {influx.DEVICE_WINDOW}")) == 3 * ROW_LIMIT
    counts = query.stored_counts()
    assert len(counts) == 150 > ROW_LIMIT and set(counts.values()) == {4}


def test_cli_init_and_backfill(influxdb: InfluxDB, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="tsdemo")
    add_parser(parser.add_subparsers(dest="command"))
    database = f"t_{uuid.uuid4().hex[:10]}"
    flags = ["--influx-url", influxdb.endpoint, "--influx-database", database, "--wait-s", "5"]
    try:
        args = parser.parse_args(["storage", "init", *flags])
        assert args.func(args) == 0
        out = capsys.readouterr().out
        assert (
            f"created database {database}" in out and "created continuous query tsdemo_site_window_1h" in out
        )
        assert args.func(args) == 0
        assert capsys.readouterr().out == f"storage in database {database} is already up to date\n"
        args = parser.parse_args(["storage", "backfill", "--since", "3h", *flags])
        assert args.func(args) == 0
        assert capsys.readouterr().out.count(": wrote 0 points for [") == 6
    finally:
        InfluxQuery(InfluxSettings(influx_url=influxdb.endpoint)).query(
            f"DROP DATABASE {database}", database=""
        )
