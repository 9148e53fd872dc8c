"""Line protocol from point dicts: escaping, schema-fixed field types, what is refused and why."""

from __future__ import annotations

import gzip
import math
from datetime import UTC, datetime, timedelta, timezone

import pytest

from storage.lineprotocol import InvalidPointError, to_line
from storage.settings import InfluxSettings
from storage.writer import InfluxWriter

T = 1_700_000_000_000


def window(**fields: object) -> dict:
    return {
        "measurement": "device_window",
        "tags": {"site": "s1", "device_id": "d-1", "type": "environment", "metric": "temperature"},
        "fields": fields or {"count": 3, "mean": 21.5, "min": 21.0, "max": 22.0},
        "time": T,
    }


def test_device_window_line() -> None:
    assert to_line(window()) == (
        "device_window,device_id=d-1,metric=temperature,site=s1,type=environment "
        f"count=3i,max=22,mean=21.5,min=21 {T}"
    )


def test_count_is_integer_even_when_given_as_float_and_floats_stay_floats_when_whole() -> None:
    line = to_line(window(count=4.0, mean=20, min=20, max=20))
    fields = line.split(" ")[1]
    # No "i" suffix means float in line protocol: a whole mean can never clash with 20.5 later.
    assert fields == "count=4i,max=20,mean=20,min=20"


def test_site_window_devices_is_integer_and_pipeline_fields_are_floats() -> None:
    site = {
        "measurement": "site_window",
        "tags": {"site": "s1", "type": "t", "metric": "m"},
        "fields": {"count": 10, "devices": 2, "mean": 1.5, "min": 1, "max": 2},
        "time": T,
    }
    assert " count=10i,devices=2i,max=2,mean=1.5,min=1 " in to_line(site)
    pipeline = {
        "measurement": "pipeline",
        "tags": {"query": "windows"},
        "fields": {"state_rows": 7},
        "time": T,
    }
    assert to_line(pipeline) == f"pipeline,query=windows state_rows=7 {T}"


@pytest.mark.parametrize("bad", [2.5, float("nan"), True, "3"])
def test_integer_field_refuses_non_integers(bad: object) -> None:
    with pytest.raises(InvalidPointError, match="count"):
        to_line(window(count=bad, mean=1.0))


def test_integer_field_refuses_out_of_int64() -> None:
    with pytest.raises(InvalidPointError, match="int64"):
        to_line(window(count=2**63, mean=1.0))


def test_string_and_bool_fields_are_refused() -> None:
    with pytest.raises(InvalidPointError, match="must be a number"):
        to_line(window(count=1, mean="21.5"))
    with pytest.raises(InvalidPointError, match="must be a number"):
        to_line(window(count=1, mean=False))


def test_none_and_non_finite_fields_are_left_out() -> None:
    line = to_line(window(count=1, mean=2.0, stddev=None, min=math.nan, max=math.inf))
    assert line.split(" ")[1] == "count=1i,mean=2"


def test_point_without_any_field_value_is_refused_not_dropped() -> None:
    with pytest.raises(InvalidPointError, match="no field"):
        to_line(window(mean=None, min=math.nan))


def test_escaping_of_measurement_tags_and_field_keys() -> None:
    point = {
        "measurement": "my measure,x",
        "tags": {"tag key": 'a b,c=d"e\\f', "ü": "中文 🚀"},
        "fields": {"f=1,2 3": 1.5},
        "time": T,
    }
    assert to_line(point) == (
        f'my\\ measure\\,x,tag\\ key=a\\ b\\,c\\=d"e\\f,ü=中文\\ 🚀 f\\=1\\,2\\ 3=1.5 {T}'
    )


def test_empty_and_none_tags_are_left_out() -> None:
    point = window()
    point["tags"] = {"site": "", "device_id": None, "metric": "m"}
    assert to_line(point) == f"device_window,metric=m count=3i,max=22,mean=21.5,min=21 {T}"


@pytest.mark.parametrize(
    ("where", "value"),
    [
        ("tag", "a\nb"),
        ("tag", "a\tb"),
        ("tag", "a\rb"),
        ("tag", "ends\\"),
        ("tag key", "k\\"),
        ("field key", "f\n"),
        ("field key", "f\\"),
        ("measurement", "m\\"),
        ("measurement", ""),
        ("measurement", "a\\,b"),
        ("field key", "a\\ b"),
        ("field key", 'a\\"b'),
        ("field key", "a\\=b"),
    ],
)
def test_strings_line_protocol_cannot_carry_exactly_are_refused(where: str, value: str) -> None:
    point = window(count=1)
    if where == "tag":
        point["tags"] = {"device_id": value}
    elif where == "tag key":
        point["tags"] = {value: "x"}
    elif where == "field key":
        point["fields"] = {value: 1.0}
    else:
        point["measurement"] = value
    with pytest.raises(InvalidPointError):
        to_line(point)


def test_time_forms() -> None:
    assert to_line(window()).endswith(f" {T}")
    moment = datetime(2023, 11, 14, 22, 13, 20, 123999, tzinfo=UTC)
    point = window()
    point["time"] = moment
    assert to_line(point).endswith(" 1700000000123")
    point["time"] = moment.astimezone(timezone(timedelta(hours=2)))
    assert to_line(point).endswith(" 1700000000123")
    for bad in (None, "2023-01-01", datetime(2023, 1, 1), 1.5):
        point["time"] = bad
        with pytest.raises(InvalidPointError):
            to_line(point)


def test_unknown_keys_and_shapes_are_refused() -> None:
    with pytest.raises(InvalidPointError, match="unknown point keys"):
        to_line({**window(), "timestamp": T})
    with pytest.raises(InvalidPointError, match="mapping"):
        to_line(["device_window"])  # type: ignore[arg-type]


def test_spark_row_like_objects_are_accepted() -> None:
    class Row:
        def asDict(self, recursive: bool = False) -> dict:  # noqa: N802 (pyspark's name)
            return window()

    assert to_line(Row()) == to_line(window())  # type: ignore[arg-type]


def test_writer_validates_everything_before_sending(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[bytes] = []
    writer = InfluxWriter(InfluxSettings(influx_url="http://127.0.0.1:1"))
    monkeypatch.setattr(writer, "_send", lambda lines, rp, written: sent.append(lines) or 0)
    with pytest.raises(InvalidPointError, match="point #1"):
        writer.write([window(), window(count=None, mean=None)])
    assert sent == []
    assert writer.write([window(), window(count=None, mean=None), window()], skip_invalid=True) == 2
    assert writer.points_skipped == 1


def test_writer_batches_and_gzips(monkeypatch: pytest.MonkeyPatch) -> None:
    requests = []

    class Response:
        status = 204
        data = b""
        headers: dict = {}

    settings = InfluxSettings(influx_url="http://127.0.0.1:1", influx_batch_size=2)
    writer = InfluxWriter(settings)
    monkeypatch.setattr(writer.http, "request", lambda *a, **kw: requests.append(kw) or Response())
    points = [dict(window(), time=T + i) for i in range(5)]
    assert writer.write(points, retention_policy="raw") == 5
    assert [len(gzip.decompress(r["body"]).splitlines()) for r in requests] == [2, 2, 1]
    assert requests[0]["headers"]["Content-Encoding"] == "gzip"
    assert requests[0]["params"] == {"db": "iot", "rp": "raw", "precision": "ms"}


def test_decimals_and_numpy_like_numbers() -> None:
    from decimal import Decimal

    line = to_line(window(count=Decimal("4"), mean=Decimal("2.5"), min=Decimal("1"), max=Decimal("4")))
    assert line.split(" ")[1] == "count=4i,max=4,mean=2.5,min=1"
    with pytest.raises(InvalidPointError, match="whole number"):
        to_line(window(count=Decimal("4.5"), mean=1.0))
    with pytest.raises(InvalidPointError, match="whole number"):
        to_line(window(count=Decimal("NaN"), mean=1.0))


def test_time_is_not_a_tag_or_field_name() -> None:
    with pytest.raises(InvalidPointError, match="named 'time'"):
        to_line(window(count=1, time=5.0))
    point = window()
    point["tags"] = {"time": "x"}
    with pytest.raises(InvalidPointError, match="named 'time'"):
        to_line(point)
