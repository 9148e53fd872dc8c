"""Pipeline health: readings/s at each stage, published against stored (any gap in red), freshness,
Kafka lag, Spark batch durations, late and invalid readings, and what went to the DLQ.

Stage counters come from the ``stage`` measurement, which the stage collector (``tsdemo storage stages``)
writes from the services' own Prometheus counters in every deployment; Spark's numbers from processing's
``pipeline`` measurement, one point per micro-batch and streaming query.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import expr, stat, timeseries
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import DynamicConfigValue

from dashboards import datasource
from dashboards.conventions import PIPELINE_UID, new_dashboard, panel_head, series_panel, stat_panel, target
from dashboards.measures import newest_window, pipeline_field, readings_per_bucket, stage_per_bucket
from servicekit.contract.influx import PIPELINE_QUERY_DLQ as DLQ_QUERY
from servicekit.contract.influx import PIPELINE_QUERY_WINDOWS as WINDOWS_QUERY
from servicekit.contract.influx import STAGE, STAGE_FIELD, STAGE_PUBLISHED, STAGE_REJECTED, STAGE_TAG

# Readings published in the last minute may still be on their way (window, watermark, trigger), so
# the comparison looks one minute back, where every published reading should be stored.
SETTLE_SHIFT = "1m"

STAGE_RATES = (
    f'SELECT non_negative_derivative(last("{STAGE_FIELD}"), 1s) AS "per_second" FROM "{STAGE}" '
    f'WHERE $timeFilter GROUP BY time($__interval), "{STAGE_TAG}" fill(none)'
)
SPARK_INPUT_RATE = pipeline_field("mean", "input_rate", WINDOWS_QUERY, "spark input (Kafka records/s)")
PUBLISHED = stage_per_bucket(STAGE_PUBLISHED)
STORED = readings_per_bucket()
GAP = "$A - $B"
FRESHNESS = newest_window()
KAFKA_LAG = pipeline_field("max", "kafka_lag")
BATCH_DURATION = pipeline_field("mean", "batch_duration_ms")
LATE = pipeline_field("sum", "late_rows", WINDOWS_QUERY, "late", fill="0")
INVALID = pipeline_field("sum", "output_rows", DLQ_QUERY, "invalid", fill="0")
DLQ_SPARK = pipeline_field("sum", "output_rows", DLQ_QUERY, "from spark (invalid readings)", fill="0")
DLQ_BRIDGE = stage_per_bucket(STAGE_REJECTED)


def _legend() -> common_b.VizLegendOptions:
    return (common_b.VizLegendOptions().show_legend(True).display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM))


def _stage_rates_panel() -> timeseries.Panel:
    return (
        panel_head(
            timeseries.Panel(), 1, "Readings/s at each stage",
            "published: readings the broker acknowledged; bridged: MQTT messages Kafka acknowledged (a gateway "
            "batch is one message); rejected: messages the bridge sent to the DLQ; stored: readings processing "
            "added to InfluxDB; spark input: Kafka records read. Each stage's rate is its own counter's.",
        )
        .with_target(target(STAGE_RATES, "A").alias("$tag_stage"))
        .with_target(target(SPARK_INPUT_RATE, "B"))
        .line_width(1)
        .unit("short")
        .min(0)
        .legend(_legend())
        .span(12)
        .height(8)
    )


def _published_vs_stored_panel() -> timeseries.Panel:
    gap = expr.TypeMath().ref_id("C").datasource(datasource.EXPRESSIONS).expression(GAP)
    red_bars = [
        DynamicConfigValue(id_val="displayName", value="gap (published - stored)"),
        DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "red"}),
        DynamicConfigValue(id_val="custom.drawStyle", value="bars"),
        DynamicConfigValue(id_val="custom.fillOpacity", value=80),
    ]
    return (
        panel_head(
            timeseries.Panel(), 2, "Published against stored (1 minute back)",
            "Readings the generator published (its acknowledged counter) and readings stored, per bucket, "
            "shifted one minute back so readings in flight do not count; the gap is drawn in red.",
        )
        .with_target(target(PUBLISHED, "A"))
        .with_target(target(STORED, "B"))
        .with_target(gap)
        .line_width(1)
        .time_shift(SETTLE_SHIFT)
        .override_by_query("C", red_bars)
        .legend(_legend())
        .span(12)
        .height(8)
    )


def _freshness_panel() -> stat.Panel:
    return stat_panel(3, "Freshness",
                      "Now minus the start of the newest stored window (an alert rule fires above 2 minutes).",
                      FRESHNESS, "dateTimeFromNow", 6, fields="/^Time$/")


def _series_panel(panel_id: int, title: str, query: str, unit: str, width: int, description: str,
                  alias: str | None = None, bars: bool = False) -> timeseries.Panel:
    panel = series_panel(panel_id, title, query, unit, width).description(description).line_width(1).legend(_legend())
    if alias:
        panel = panel.targets([target(query).alias(alias)])
    return panel.draw_style(common.GraphDrawStyle.BARS).fill_opacity(60) if bars else panel


def _dlq_panel() -> timeseries.Panel:
    return (
        panel_head(timeseries.Panel(), 8, "Sent to the DLQ",
                   "Records written to the DLQ topic: invalid readings (Spark), rejected messages (the bridge).")
        .with_target(target(DLQ_SPARK, "A"))
        .with_target(target(DLQ_BRIDGE, "B").alias("from the bridge (rejected messages)"))
        .draw_style(common.GraphDrawStyle.BARS)
        .fill_opacity(60)
        .stacking(common_b.StackingConfig().mode(common.StackingMode.NORMAL))
        .unit("none")
        .min(0)
        .legend(_legend())
        .span(8)
        .height(8)
    )


def build() -> dash_b.Dashboard:
    return (
        new_dashboard("tsdemo / Pipeline health", PIPELINE_UID, "Every stage from the broker to InfluxDB.")
        .with_row(dash_b.Row("Flow").id(100))
        .with_panel(_stage_rates_panel())
        .with_panel(_published_vs_stored_panel())
        .with_row(dash_b.Row("Spark").id(101))
        .with_panel(_freshness_panel())
        .with_panel(_series_panel(4, "Kafka lag", KAFKA_LAG, "none", 9,
                                  "Records behind the newest Kafka offsets, per streaming query.", "$tag_query"))
        .with_panel(_series_panel(5, "Spark batch duration", BATCH_DURATION, "ms", 9,
                                  "Mean micro-batch duration per streaming query.", "$tag_query"))
        .with_row(dash_b.Row("Rejected").id(102))
        .with_panel(_series_panel(6, "Late readings", LATE, "none", 8,
                                  "Readings dropped for arriving after the watermark.", bars=True))
        .with_panel(_series_panel(7, "Invalid readings", INVALID, "none", 8,
                                  "Readings that failed parsing or validation.", bars=True))
        .with_panel(_dlq_panel())
    )
