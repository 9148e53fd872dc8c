"""Turns a panel's InfluxQL into the statement Grafana sends to InfluxDB: dashboard variables, then
``$timeFilter``, ``$interval``, ``$__interval_ms`` and ``$__interval``, so the queries can be run
and checked against a real InfluxDB without a Grafana server.

Hand-written because no library does this outside Grafana; it mirrors Grafana 10/11:

* the bucket: ``calculateInterval`` and ``roundInterval`` of ``@grafana/data``'s rangeutil (range
  divided by the panel's max data points, rounded to a "nice" step, never below the datasource's or
  panel's minimum interval);
* the macros: ``pkg/tsdb/influxdb/models/query.go`` ``Build`` (``time >= <from>ms and time <=
  <to>ms``; the interval written by ``gtime.FormatInterval``);
* variables: the InfluxDB datasource's ``interpolateQueryExpr`` (a single value is regex-escaped,
  several become ``(a|b)``, "All" with a custom all value is inserted as it is).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000,
             "M": 2_592_000_000, "y": 31_536_000_000}  # fmt: skip
_INTERVAL = re.compile(r"^(\d+)(ms|s|m|h|d|w|M|y)$")
# (exclusive upper bound of the raw interval, the rounded interval), both in ms, from rangeutil.ts.
_LADDER = (
    (10, 1), (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1500, 1000),
    (3500, 2000), (7500, 5000), (12500, 10000), (17500, 15000), (25000, 20000), (45000, 30000),
    (90000, 60000), (210000, 120000), (450000, 300000), (750000, 600000), (1050000, 900000),
    (1500000, 1200000), (2700000, 1800000), (5400000, 3600000), (9000000, 7200000),
    (16200000, 10800000), (32400000, 21600000), (86400000, 43200000), (604800000, 86400000),
    (1814400000, 604800000), (3628800000, 2592000000),
)  # fmt: skip
_YEAR_MS = 31_536_000_000
# Grafana's template variable syntaxes: $name, [[name]] / [[name:fmt]], ${name} / ${name:fmt}.
_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?::([^}]+))?\}")
_REGEX_SPECIAL = re.compile(r"[\\^$*+?.()|\[\]{}/]")
_FLOAT_PREFIX = re.compile(r"^\s*[+-]?(Infinity|(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?)")


def parse_interval_ms(text: str) -> int:
    """``10s`` -> 10000; the units Grafana accepts for a minimum interval."""
    match = _INTERVAL.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not an interval like 10s, 1m or 500ms")
    return int(match.group(1)) * _UNITS_MS[match.group(2)]


def round_interval_ms(interval_ms: float) -> int:
    for bound, rounded in _LADDER:
        if interval_ms < bound:
            return rounded
    return _YEAR_MS


def calculate_interval_ms(from_ms: int, to_ms: int, max_data_points: int, min_interval: str | None = None) -> int:
    """``$__interval_ms`` for a panel ``max_data_points`` wide over [from, to]."""
    interval = round_interval_ms((to_ms - from_ms) / max(1, max_data_points))
    if min_interval:
        interval = max(interval, parse_interval_ms(min_interval))
    return interval


def format_interval(interval_ms: int) -> str:
    """``$__interval`` as Grafana's backend writes it: the largest whole unit (so 90000 -> ``1m``)."""
    for unit, size in (("y", _YEAR_MS), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if interval_ms >= size:
            return f"{interval_ms // size}{unit}"
    return f"{max(1, interval_ms)}ms"


def time_filter(from_ms: int, to_ms: int) -> str:
    return f"time >= {from_ms}ms and time <= {to_ms}ms"


def escape_regex(value: str) -> str:
    """``escapeRegex`` of ``@grafana/data``."""
    return _REGEX_SPECIAL.sub(lambda m: "\\" + m.group(0), value)


@dataclass(frozen=True)
class Selection:
    """A dashboard variable's current selection and the settings that decide how it is written."""

    values: tuple[str, ...]
    multi: bool = False
    include_all: bool = False
    all_value: str | None = None
    is_all: bool = False

    def render(self) -> str:
        if self.is_all and self.all_value is not None:
            return self.all_value  # a custom all value is used as written, never escaped
        if not self.multi and not self.include_all:
            value = self.values[0] if self.values else ""
            return value if _FLOAT_PREFIX.match(value) else escape_regex(value)
        escaped = [escape_regex(v) for v in self.values]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


ALL = object()  # pass as a variable's value to select "All"


def selections(dashboard: Mapping[str, Any], chosen: Mapping[str, Any],
               options: Mapping[str, Sequence[str]] | None = None) -> dict[str, Selection]:
    """Selections for ``dashboard``'s variables from ``chosen`` (a value, a list, or ``ALL``).

    ``options`` are each variable's values as its query returned them; "All" without a custom all
    value means all of them.
    """
    result = {}
    for variable in (dashboard.get("templating") or {}).get("list", []):
        name = variable["name"]
        if name not in chosen:
            continue
        value = chosen[name]
        is_all = value is ALL
        if is_all:
            values = tuple((options or {}).get(name, ()))
        elif isinstance(value, str):
            values = (value,)
        else:
            values = tuple(value)
        result[name] = Selection(values, bool(variable.get("multi")), bool(variable.get("includeAll")),
                                 variable.get("allValue"), is_all)
    return result


def substitute_variables(query: str, variables: Mapping[str, Selection]) -> str:
    """Replaces the dashboard variables Grafana knows; any other ``$word`` is left for the backend."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        selection = variables.get(name)
        return match.group(0) if selection is None else selection.render()

    return _VARIABLE.sub(replace, query)


def substitute_macros(query: str, from_ms: int, to_ms: int, interval_ms: int) -> str:
    """Grafana's InfluxQL backend step, in its order (``$__interval_ms`` before ``$__interval``)."""
    text = format_interval(interval_ms)
    query = query.replace("$timeFilter", time_filter(from_ms, to_ms))
    query = query.replace("$interval", text)
    query = query.replace("$__interval_ms", str(interval_ms))
    return query.replace("$__interval", text)


def interpolate(query: str, *, from_ms: int, to_ms: int, interval_ms: int,
                variables: Mapping[str, Selection] | None = None) -> str:
    """The statement Grafana would send for ``query`` with these variables over [from, to]."""
    return substitute_macros(substitute_variables(query, variables or {}), from_ms, to_ms, interval_ms)
