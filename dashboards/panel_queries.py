"""A generated dashboard's InfluxQL as Grafana would send it on load: each variable's options (its query
run in order, later ones may use earlier ones), each panel's time range (``timeShift``) and bucket
(``$__interval``), and each target's statement with variables and macros filled in by
:mod:`dashboards.interpolate`.

Shared by ``tsdemo dashboards snapshot`` and the tests that run every panel query against InfluxDB, so
both see exactly the statements Grafana would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from dashboards import datasource, interpolate

#: runs one InfluxQL statement, returns its rows (``storage.queries.InfluxQuery.query``)
RunQuery = Callable[[str], list[dict[str, Any]]]


def panel_interval_ms(panel: Mapping[str, Any], from_ms: int, to_ms: int, max_data_points: int) -> int:
    """``$__interval_ms`` of ``panel`` over [from, to]: its own maxDataPoints and interval, else the defaults."""
    minimum = panel.get("interval") or datasource.MIN_INTERVAL
    return interpolate.calculate_interval_ms(from_ms, to_ms, int(panel.get("maxDataPoints") or max_data_points),
                                             minimum)


def variable_options(dashboard: Mapping[str, Any], chosen: Mapping[str, Any], from_ms: int, to_ms: int,
                     run: RunQuery) -> dict[str, list[str]]:
    """Each variable's values, its query run in order with the earlier selections filled in."""
    options: dict[str, list[str]] = {}
    for variable in (dashboard.get("templating") or {}).get("list", []):
        selection = interpolate.selections(dashboard, chosen, options)
        statement = interpolate.interpolate(variable["query"], from_ms=from_ms, to_ms=to_ms, interval_ms=10_000,
                                            variables=selection)
        options[variable["name"]] = [r["value"] for r in run(statement)]
    return options


@dataclass(frozen=True)
class PanelRange:
    """Where a panel looks: its range after ``timeShift`` and its bucket."""

    from_ms: int
    to_ms: int
    interval_ms: int


def panel_range(panel: Mapping[str, Any], from_ms: int, to_ms: int, max_data_points: int) -> PanelRange:
    shift = interpolate.parse_interval_ms(panel["timeShift"]) if panel.get("timeShift") else 0
    start, end = from_ms - shift, to_ms - shift
    return PanelRange(start, end, panel_interval_ms(panel, start, end, max_data_points))


def target_statements(panel: Mapping[str, Any], where: PanelRange,
                      selection: Mapping[str, interpolate.Selection]) -> Iterator[tuple[dict[str, Any], str]]:
    """(target, statement) for each of the panel's InfluxQL targets; expressions (math) have none."""
    for target in panel.get("targets", []):
        if "query" in target:
            yield target, interpolate.interpolate(target["query"], from_ms=where.from_ms, to_ms=where.to_ms,
                                                  interval_ms=where.interval_ms, variables=selection)
