"""Fleet overview: readings/s, devices reporting, per-site averages, a map of the devices coloured by a
chosen metric, each device's totals, and the latest anomalies.

The map reads lat/lon from ``device_status`` (written by processing per device and window) and the
metric from ``device_window``; Grafana joins the two tables on ``device_id``.
"""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import geomap, stat, table, timeseries
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import geomap as geomap_m
from grafana_foundation_sdk.models.dashboard import DataTransformerConfig, FieldColorModeId

from dashboards.conventions import (
    FLEET_UID,
    hide_time_column,
    new_dashboard,
    panel_head,
    series_panel,
    stat_panel,
    tag_variable,
    target,
)
from dashboards.measures import latest_anomalies, readings_per_bucket, regex_filter
from servicekit.contract.influx import DEVICE_STATUS, DEVICE_WINDOW, SITE_WINDOW

SITE = regex_filter("site", "site")
METRIC = regex_filter("metric", "metric")

READINGS_PER_SECOND = readings_per_bucket(SITE, per_second=True)
DEVICES_REPORTING = (
    'SELECT count("n") AS "devices" FROM (SELECT last("count") AS "n" FROM "device_window" '
    f'WHERE $timeFilter AND {SITE} GROUP BY "device_id") WHERE $timeFilter'
)
SITE_AVERAGES = (
    'SELECT sum("sum") / sum("count") AS "mean", min("min") AS "min", max("max") AS "max", '
    f'sum("count") AS "readings" FROM "{SITE_WINDOW}" WHERE $timeFilter AND {SITE} GROUP BY "site", "metric"'
)
# The mean over a bucket is recomputed from sums, never averaged from window means (storage/README.md).
SITE_METRIC_MEAN = (
    f'SELECT sum("sum") / sum("count") AS "mean" FROM "{SITE_WINDOW}" WHERE $timeFilter AND {SITE} '
    f'AND {METRIC} GROUP BY time($__interval), "site" fill(none)'
)
DEVICE_TOTALS = (
    'SELECT sum("count") AS "readings", sum("sum") / sum("count") AS "mean", min("min") AS "min", '
    f'max("max") AS "max" FROM "{DEVICE_WINDOW}" WHERE $timeFilter AND {SITE} AND {METRIC} '
    'GROUP BY "site", "device_id"'
)
MAP_LOCATIONS = (
    'SELECT last("lat") AS "lat", last("lon") AS "lon", last("battery") AS "battery" '
    f'FROM "{DEVICE_STATUS}" WHERE $timeFilter AND {SITE} GROUP BY "device_id"'
)
MAP_VALUES = (
    f'SELECT last("mean") AS "value" FROM "{DEVICE_WINDOW}" WHERE $timeFilter AND {SITE} AND {METRIC} '
    'GROUP BY "device_id"'
)
ANOMALIES = latest_anomalies(SITE)


def _readings_panel() -> timeseries.Panel:
    return (
        series_panel(1, "Readings/s", READINGS_PER_SECOND, "short", 12)
        .description("Readings stored per second, by event time (a reading counts once, whatever its metrics).")
        .fill_opacity(15)
        .legend(common_b.VizLegendOptions().show_legend(True).display_mode(common.LegendDisplayMode.LIST)
                .placement(common.LegendPlacement.BOTTOM))
    )


def _devices_panel() -> stat.Panel:
    return stat_panel(2, "Devices reporting", "Devices with at least one stored window in the time range.",
                      DEVICES_REPORTING, "none", 4)


def _table(panel_id: int, title: str, query: str, span: int, height: int) -> table.Panel:
    return (
        panel_head(table.Panel(), panel_id, title)
        .with_target(target(query).table())
        .show_header(True)
        .span(span)
        .height(height)
    )


def _totals_table(panel_id: int, title: str, description: str, query: str, height: int) -> table.Panel:
    """Totals over the time range, one row per key, without the time column."""
    return (
        _table(panel_id, title, query, 12, height)
        .description(description)
        .with_transformation(hide_time_column())
        .decimals(2)
    )


def _anomalies_panel() -> table.Panel:
    return _table(3, "Latest anomalies", ANOMALIES, 8, 8)


def _site_averages_panel() -> table.Panel:
    return _totals_table(
        4, "Per-site metric averages",
        "Per site and metric over the time range: the mean weighted by readings, min, max, readings.",
        SITE_AVERAGES, 10)


def _site_metric_panel() -> timeseries.Panel:
    return (
        panel_head(timeseries.Panel(), 5, "Average $metric per site")
        .with_target(target(SITE_METRIC_MEAN).alias("$tag_site"))
        .line_width(1)
        .legend(common_b.VizLegendOptions().show_legend(True).display_mode(common.LegendDisplayMode.LIST)
                .placement(common.LegendPlacement.BOTTOM))
        .span(12)
        .height(10)
    )


def _map_layer() -> common_b.MapLayerOptions:
    marker_style: dict[str, Any] = {
        "color": {"field": "value", "fixed": "dark-green"},
        "opacity": 0.8,
        "size": {"fixed": 7, "min": 4, "max": 12},
        "symbol": {"fixed": "img/icons/marker/circle.svg", "mode": "fixed"},
    }
    return (
        common_b.MapLayerOptions()
        .type("markers")
        .name("Devices")
        .location(common_b.FrameGeometrySource().mode(common.FrameGeometrySourceMode.COORDS)
                  .latitude("lat").longitude("lon"))
        .config({"showLegend": True, "style": marker_style})
        .tooltip(True)
    )


def _map_panel() -> geomap.Panel:
    join = DataTransformerConfig(id_val="joinByField", options={"byField": "device_id", "mode": "outer"})
    return (
        panel_head(geomap.Panel(), 6, "Devices by location, coloured by $metric",
                   "Position and battery from device_status; colour: the device's latest window mean of $metric.")
        .with_target(target(MAP_LOCATIONS, "A").table())
        .with_target(target(MAP_VALUES, "B").table())
        .with_transformation(join)
        .view(geomap.MapViewConfig().id("fit").all_layers(True))
        .basemap(common_b.MapLayerOptions().type("default").name("Basemap"))
        .layers([_map_layer()])
        .tooltip(geomap.TooltipOptions().mode(geomap_m.TooltipMode.DETAILS))
        .controls(geomap.ControlsOptions().show_zoom(True).mouse_wheel_zoom(True))
        .color_scheme(dash_b.FieldColor().mode(FieldColorModeId.CONTINUOUS_GR_YL_RD))
        .span(12)
        .height(12)
    )


def _device_totals_panel() -> table.Panel:
    return _totals_table(7, "Devices: $metric over the time range",
                         "Readings, mean (weighted by readings), min and max of $metric per device.",
                         DEVICE_TOTALS, 12)


def build() -> dash_b.Dashboard:
    return (
        new_dashboard("tsdemo / Fleet overview", FLEET_UID, "The whole fleet: throughput, sites, devices, anomalies.")
        .with_variable(tag_variable("site", "Site", f'SHOW TAG VALUES FROM "{SITE_WINDOW}" WITH KEY = "site"',
                                    multi=True))
        .with_variable(tag_variable("metric", "Metric", f'SHOW TAG VALUES FROM "{SITE_WINDOW}" WITH KEY = "metric"'))
        .with_row(dash_b.Row("Throughput").id(100))
        .with_panel(_readings_panel())
        .with_panel(_devices_panel())
        .with_panel(_anomalies_panel())
        .with_row(dash_b.Row("Sites").id(101))
        .with_panel(_site_averages_panel())
        .with_panel(_site_metric_panel())
        .with_row(dash_b.Row("Devices").id(102))
        .with_panel(_map_panel())
        .with_panel(_device_totals_panel())
    )
