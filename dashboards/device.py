"""Device detail: one device's metric as its mean with a min/max band, its readings per bucket, its
battery and when it was last seen, with its anomalies as annotations.

Battery and last-seen read ``device_status`` (written by processing per device and window).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import stat, timeseries
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import DynamicConfigValue

from dashboards import datasource
from dashboards.conventions import DEVICE_UID, new_dashboard, panel_head, series_panel, stat_panel, tag_variable, target
from dashboards.influxql import InfluxAnnotation
from dashboards.measures import regex_filter
from servicekit.contract.influx import ANOMALY, DEVICE_STATUS, DEVICE_WINDOW

DEVICE = regex_filter("device_id", "device")
METRIC = regex_filter("metric", "metric")

BAND = (
    'SELECT sum("sum") / sum("count") AS "mean", min("min") AS "min", max("max") AS "max" '
    f'FROM "{DEVICE_WINDOW}" WHERE $timeFilter AND {DEVICE} AND {METRIC} GROUP BY time($__interval) fill(none)'
)
READINGS = (
    f'SELECT sum("count") AS "readings" FROM "{DEVICE_WINDOW}" WHERE $timeFilter AND {DEVICE} AND {METRIC} '
    "GROUP BY time($__interval) fill(0)"
)
BATTERY = (
    f'SELECT last("battery") AS "battery" FROM "{DEVICE_STATUS}" WHERE $timeFilter AND {DEVICE} '
    "GROUP BY time($__interval) fill(none)"
)
LAST_SEEN = f'SELECT last("last_seen_ms") AS "last_seen" FROM "{DEVICE_STATUS}" WHERE $timeFilter AND {DEVICE}'
ANOMALIES = (
    f'SELECT "score", "value", "metric", "detector" FROM "{ANOMALY}" WHERE $timeFilter AND {DEVICE}'
)


def _band_panel() -> timeseries.Panel:
    edge = [DynamicConfigValue(id_val="custom.lineWidth", value=0),
            DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "blue"})]
    return (
        panel_head(timeseries.Panel(), 1, "$metric: mean with min/max band",
                   "Per bucket: the mean weighted by readings, and the smallest and largest reading.")
        .with_target(target(BAND).alias("$col"))
        .line_width(1)
        .override_by_name("max", [*edge, DynamicConfigValue(id_val="custom.fillBelowTo", value="min"),
                                  DynamicConfigValue(id_val="custom.fillOpacity", value=20)])
        .override_by_name("min", edge)
        .legend(common_b.VizLegendOptions().show_legend(True).display_mode(common.LegendDisplayMode.LIST)
                .placement(common.LegendPlacement.BOTTOM))
        .span(24)
        .height(9)
    )


def _readings_panel() -> timeseries.Panel:
    return (
        series_panel(2, "Readings of $metric per bucket", READINGS, "none", 12)
        .draw_style(common.GraphDrawStyle.BARS)
        .fill_opacity(60)
        .legend(common_b.VizLegendOptions().show_legend(False))
    )


def _battery_panel() -> timeseries.Panel:
    return (
        series_panel(3, "Battery", BATTERY, "percent", 8)
        .line_width(1)
        .max(100)
        .legend(common_b.VizLegendOptions().show_legend(False))
    )


def _last_seen_panel() -> stat.Panel:
    return stat_panel(4, "Last reading", "Event time of the device's newest reading (device_status.last_seen_ms).",
                      LAST_SEEN, "dateTimeFromNow", 4)


def _anomaly_annotation() -> dash_b.AnnotationQuery:
    return (
        dash_b.AnnotationQuery()
        .name("Anomalies")
        .datasource(datasource.ref())
        .enable(True)
        .icon_color("red")
        .target(InfluxAnnotation(ANOMALIES, "Anomalies").text_column("detector").tags_column("metric,detector"))
    )


def build() -> dash_b.Dashboard:
    return (
        new_dashboard("tsdemo / Device detail", DEVICE_UID, "One device: a metric over time, battery, anomalies.")
        .with_variable(tag_variable("site", "Site", f'SHOW TAG VALUES FROM "{DEVICE_WINDOW}" WITH KEY = "site"'))
        .with_variable(tag_variable(
            "device", "Device",
            f'SHOW TAG VALUES FROM "{DEVICE_WINDOW}" WITH KEY = "device_id" WHERE {regex_filter("site", "site")}',
        ))
        .with_variable(tag_variable(
            "metric", "Metric", f'SHOW TAG VALUES FROM "{DEVICE_WINDOW}" WITH KEY = "metric" WHERE {DEVICE}'
        ))
        .annotation(_anomaly_annotation())
        .with_panel(_band_panel())
        .with_panel(_readings_panel())
        .with_panel(_battery_panel())
        .with_panel(_last_seen_panel())
    )
