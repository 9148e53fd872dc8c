"""What the dashboards share: their folder, uids, tags, default time range and refresh, and the small
helpers that give every target, variable and table the same datasource and look.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import geomap, stat, table, timeseries
from grafana_foundation_sdk.builders.dashboard import Dashboard, QueryVariable
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DataTransformerConfig,
    VariableHide,
    VariableRefresh,
    VariableSort,
)

from dashboards import datasource
from dashboards.influxql import InfluxQL

FOLDER_UID = "tsdemo"
FOLDER_TITLE = "tsdemo"
TAGS = ["tsdemo", "generated"]

FLEET_UID = "tsdemo-fleet"
DEVICE_UID = "tsdemo-device"
PIPELINE_UID = "tsdemo-pipeline"

# Tag values in the schema are slugs and ids (berlin-00, dev-0007, pm2_5): no regex metacharacters,
# so the escaping differences between Grafana versions cannot change what a filter matches.
ALL_VALUE = ".*"


def json_data(value: Any) -> Any:
    """Plain JSON data (dicts, lists, str, numbers) from SDK objects, as Grafana would receive them."""
    return json.loads(JSONEncoder(sort_keys=True).encode(value))


def new_dashboard(title: str, uid: str, description: str) -> Dashboard:
    return (
        Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .readonly()
        .annotations([])  # Grafana expects annotations.list and templating.list, even empty
        .variables([])
    )


P = TypeVar("P", stat.Panel, table.Panel, timeseries.Panel, geomap.Panel)


def panel_head(panel: P, panel_id: int, title: str, description: str | None = None) -> P:
    """A panel's id, title, description and the tsdemo datasource: the start of every panel."""
    panel = panel.id(panel_id).title(title).datasource(datasource.ref())
    return panel.description(description) if description else panel


def target(query: str, ref_id: str = "A") -> InfluxQL:
    """A raw InfluxQL target on the tsdemo datasource."""
    return InfluxQL(query).ref_id(ref_id).datasource(datasource.ref())


def stat_panel(panel_id: int, title: str, description: str, query: str, unit: str, span: int,
               fields: str | None = None) -> stat.Panel:
    """A single value: the last non-null of one query (of ``fields``, when given), without a sparkline."""
    reduce = common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False)
    return (
        panel_head(stat.Panel(), panel_id, title, description)
        .with_target(target(query))
        .reduce_options(reduce.fields(fields) if fields else reduce)
        .graph_mode(common.BigValueGraphMode.NONE)
        .unit(unit)
        .span(span)
        .height(8)
    )


def series_panel(panel_id: int, title: str, query: str, unit: str, span: int, height: int = 8) -> timeseries.Panel:
    """A time series of one query from 0 up; callers add its style (bars, legend, limits)."""
    return (
        panel_head(timeseries.Panel(), panel_id, title)
        .with_target(target(query))
        .unit(unit)
        .min(0)
        .span(span)
        .height(height)
    )


def tag_variable(name: str, label: str, query: str, *, multi: bool = False) -> QueryVariable:
    """A variable listing a tag's values; ``multi`` adds "All" (as ``.*``) and multi-selection."""
    variable = (
        QueryVariable(name)
        .label(label)
        .datasource(datasource.ref())
        .query(query)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .hide(VariableHide.DONT_HIDE)
    )
    if multi:
        variable = variable.multi(True).include_all(True).all_value(ALL_VALUE)
    return variable


def hide_time_column() -> DataTransformerConfig:
    """Tables of per-series totals carry a meaningless Time column (the range start); hide it."""
    return DataTransformerConfig(id_val="organize", options={"excludeByName": {"Time": True}})
