"""Turns point dicts into InfluxDB line protocol with field types fixed by a per-measurement schema.

A point is a plain mapping, the shape Spark's ``foreachBatch`` gets from ``Row.asDict()``::

    {
        "measurement": "device_window",                      # required, str
        "tags": {"site": "s1", "device_id": "d-1", "type": "environment", "metric": "temperature"},
        "fields": {"count": 12, "mean": 21.5, "min": 20.9, "max": 22.0},   # at least one non-null
        "time": 1700000000000,                                # epoch milliseconds (or an aware datetime)
    }

Why a schema: InfluxDB fixes a field's type (integer or float) by the first value it sees in a
shard, and rejects later points of the other type. Python hands us ``21.0`` or ``21`` depending on
the data, so the type must not depend on the value: fields listed in ``INTEGER_FIELDS`` are
written as integers (``12i``) and every other field as a float, even a whole one.

Escaping is influxdb-client's ``Point``. Some strings have no exact line-protocol spelling in
InfluxDB 1.x: a newline, tab or carriage return anywhere in a measurement, tag key, tag value or
field key, or one of those ending in a backslash; and, in a measurement or field key, a backslash
before a comma, space, equals sign or double quote. The client would store them altered, so they
are rejected here instead. Spaces, commas, equals signs, quotes, other backslashes and any unicode
round-trip exactly. InfluxDB also refuses a tag or field named ``time``; so does this module.

A null field is left out (InfluxDB has no null); NaN and infinities cannot be stored either and
are left out with a warning; a point left with no field at all is invalid, never silently dropped.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from numbers import Integral, Real
from typing import Any

from influxdb_client import Point, WritePrecision

from servicekit.contract.influx import INTEGER_FIELDS

log = logging.getLogger(__name__)

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UNREPRESENTABLE = ("\n", "\r", "\t")
_BACKSLASH_BEFORE_SPECIAL = re.compile(r'\\[, ="]')


class InvalidPointError(ValueError):
    """A point that cannot be written as given; ``index`` is its position in the input."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message if index is None else f"point #{index}: {message}")
        self.index = index


def _check_name(kind: str, name: Any, *, key: bool = False) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidPointError(f"{kind} must be a non-empty string, got {name!r}")
    if any(c in name for c in _UNREPRESENTABLE):
        raise InvalidPointError(f"{kind} {name!r} contains a newline, tab or carriage return")
    if key and _BACKSLASH_BEFORE_SPECIAL.search(name):
        # InfluxDB 1.x reads these back altered or not at all in measurements and field keys
        # (tags are fine), and the client has no way to escape the backslash itself.
        raise InvalidPointError(f"{kind} {name!r} has a backslash before a comma, space, '=' or '\"'")
    if name.endswith("\\"):
        # The client appends a space to a trailing backslash, which InfluxDB then reads as an
        # escaped space: "a\\" would be stored as "a ".
        raise InvalidPointError(f"{kind} {name!r} ends with a backslash")
    return name


def _time_ms(value: Any) -> int:
    if isinstance(value, bool):
        raise InvalidPointError(f"time must be epoch milliseconds, got {value!r}")
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidPointError(f"time {value!r} has no timezone; use epoch ms or an aware datetime")
        # Integer arithmetic: float seconds would round some millisecond timestamps down by one.
        delta = value - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    raise InvalidPointError(f"time must be epoch milliseconds, got {value!r}")


def _field_value(measurement: str, key: str, value: Any, integers: frozenset[str]) -> int | float | None:
    if value is None:
        return None
    # Decimal is not a numbers.Real, but Spark hands DecimalType columns over as one.
    if isinstance(value, bool) or not isinstance(value, Real | Decimal):
        raise InvalidPointError(f"{measurement} field {key!r} must be a number, got {value!r}")
    if key in integers:
        if not isinstance(value, Integral):
            finite = value.is_finite() if isinstance(value, Decimal) else math.isfinite(value)
            if not (finite and value == int(value)):
                raise InvalidPointError(f"{measurement} field {key!r} must be a whole number, got {value!r}")
        number = int(value)
        if not _INT64_MIN <= number <= _INT64_MAX:
            raise InvalidPointError(f"{measurement} field {key!r} is outside the int64 range: {number}")
        return number
    try:
        number = float(value)
    except OverflowError:
        raise InvalidPointError(f"{measurement} field {key!r} is too large for a float: {value!r}") from None
    if not math.isfinite(number):
        log.warning(
            "left out a non-finite field value", extra={"fields": {"measurement": measurement, "field": key}}
        )
        return None
    return number


def to_point(point: Mapping[str, Any]) -> Point:
    """An influxdb-client ``Point`` (millisecond precision) for one point dict; see the module doc."""
    if hasattr(point, "asDict") and not isinstance(point, Mapping):
        point = point.asDict(recursive=True)  # a pyspark Row
    if not isinstance(point, Mapping):
        raise InvalidPointError(f"a point must be a mapping, got {type(point).__name__}")
    unknown = set(point) - {"measurement", "tags", "fields", "time"}
    if unknown:
        raise InvalidPointError(
            f"unknown point keys {sorted(unknown)}; expected measurement, tags, fields, time"
        )
    measurement = _check_name("measurement", point.get("measurement"), key=True)
    if "time" not in point or point["time"] is None:
        raise InvalidPointError(f"{measurement} point has no time")
    result = Point(measurement).time(_time_ms(point["time"]), WritePrecision.MS)

    tags = point.get("tags") or {}
    if not isinstance(tags, Mapping):
        raise InvalidPointError(f"{measurement} tags must be a mapping, got {type(tags).__name__}")
    for key, value in tags.items():
        _check_name("tag key", key)
        if key == "time":
            raise InvalidPointError(f"{measurement} has a tag named 'time', which InfluxDB refuses")
        # InfluxDB treats an empty tag exactly like a missing one, so leaving it out loses nothing.
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise InvalidPointError(f"{measurement} tag {key!r} must be a string, got {value!r}")
        _check_name(f"{measurement} tag {key!r} value", value)
        result.tag(key, value)

    fields = point.get("fields") or {}
    if not isinstance(fields, Mapping):
        raise InvalidPointError(f"{measurement} fields must be a mapping, got {type(fields).__name__}")
    integers = INTEGER_FIELDS.get(measurement, frozenset())
    written = 0
    for key, value in fields.items():
        _check_name("field key", key, key=True)
        if key == "time":
            raise InvalidPointError(f"{measurement} has a field named 'time', which InfluxDB refuses")
        number = _field_value(measurement, key, value, integers)
        if number is not None:
            result.field(key, number)
            written += 1
    if not written:
        raise InvalidPointError(f"{measurement} point has no field with a value (fields: {dict(fields)!r})")
    return result


def to_line(point: Mapping[str, Any]) -> str:
    """One line of line protocol (no newline) for a point dict, timestamp in milliseconds."""
    return to_point(point).to_line_protocol(WritePrecision.MS)
