"""Alert rules as code: a site stopped reporting, the newest stored window is too old, anomalies spike.

Built with the SDK's alerting models, whose JSON is the body of Grafana's alerting provisioning API
(``/api/v1/provisioning/...``); ``file_format`` turns the group into the shape of an alerting
provisioning file, which names a few keys differently.

Each rule's data query is InfluxQL; reducing, comparing and combining is done by Grafana's server-side
expressions. InfluxQL only returns series that have points, so a site that went silent would simply
vanish from a "count in the last minutes" query (and Grafana resolves alerts of vanished series): the
site rule therefore looks back a day with ``fill(0)`` so every site seen that day keeps a series, and
alerts when its last ten minutes sum to zero.
"""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import alerting, expr
from grafana_foundation_sdk.models.alerting import RelativeTimeRange, RuleGroup

from dashboards import datasource
from dashboards.conventions import FOLDER_TITLE, FOLDER_UID, PIPELINE_UID, target
from servicekit.contract.influx import ANOMALY, DEVICE_WINDOW, SITE_WINDOW

GROUP = "tsdemo"
INTERVAL_S = 60
ORG_ID = 1
LABELS = {"app": "tsdemo"}

SILENT_MINUTES = 10
FRESHNESS_THRESHOLD_S = 120
SPIKE_WINDOW_S = 300
SPIKE_BASELINE_S = 3600
SPIKE_FACTOR = 3
SPIKE_MIN_ANOMALIES = 10

# Per site, readings per minute averaged over the last SILENT_MINUTES one-minute buckets (0 when
# none); counts are integers, so an average below 1/SILENT_MINUTES means none at all.
SITE_SILENT = (
    f'SELECT moving_average(sum("count"), {SILENT_MINUTES}) AS "per_minute" FROM "{SITE_WINDOW}" '
    'WHERE $timeFilter GROUP BY time(1m), "site" fill(0)'
)
# Windows stored in the last FRESHNESS_THRESHOLD_S: none (no data) means freshness is above it.
FRESH_WINDOWS = f'SELECT count("count") AS "windows" FROM "{DEVICE_WINDOW}" WHERE $timeFilter'
ANOMALIES_PER_SITE = f'SELECT count("score") AS "anomalies" FROM "{ANOMALY}" WHERE $timeFilter GROUP BY "site"'
SPIKE = (
    f"$C >= {SPIKE_MIN_ANOMALIES} && "
    f"$C / {SPIKE_WINDOW_S} > {SPIKE_FACTOR} * $D / {SPIKE_BASELINE_S}"
)


def _influx(ref_id: str, query: str, seconds: int) -> alerting.Query:
    return (
        alerting.Query(ref_id)
        .datasource_uid(datasource.UID)
        .relative_time_range(RelativeTimeRange(from_val=seconds, to=0))
        .model(target(query, ref_id).for_alerting())
    )


def _expression(ref_id: str, model: Any) -> alerting.Query:
    return alerting.Query(ref_id).datasource_uid(datasource.EXPRESSIONS_UID).model(model.ref_id(ref_id))


def _reduce(ref_id: str, of: str) -> alerting.Query:
    return _expression(ref_id, expr.TypeReduce().datasource(datasource.EXPRESSIONS).expression(of).reducer("last"))


def _threshold(ref_id: str, of: str, kind: str, value: float) -> alerting.Query:
    evaluator = expr.ExprTypeThresholdConditionsEvaluator().type(kind).params([value])  # type: ignore[arg-type]
    condition = expr.ExprTypeThresholdConditions().evaluator(evaluator)
    threshold = expr.TypeThreshold().datasource(datasource.EXPRESSIONS).expression(of).conditions([condition])
    return _expression(ref_id, threshold)


def _rule(uid: str, title: str, summary: str, no_data: str, for_: str, queries: list[alerting.Query],
          condition: str, severity: str) -> alerting.Rule:
    return (
        alerting.Rule(title)
        .uid(uid)
        .folder_uid(FOLDER_UID)
        .rule_group(GROUP)
        .org_id(ORG_ID)
        .queries(queries)
        .condition(condition)
        .for_val(for_)
        .no_data_state(no_data)  # type: ignore[arg-type]
        .exec_err_state("Error")
        .labels({**LABELS, "severity": severity})
        .annotations({"summary": summary, "dashboard": f"/d/{PIPELINE_UID}"})
        .is_paused(False)
    )


def site_silent() -> alerting.Rule:
    return _rule(
        "tsdemo-site-silent",
        "A site stopped reporting",
        f"Site {{{{ $labels.site }}}} stored no reading in the last {SILENT_MINUTES} minutes.",
        "Alerting",  # no site reported for a whole day
        "2m",
        [_influx("A", SITE_SILENT, 86400), _reduce("B", "A"), _threshold("C", "B", "lt", 1 / SILENT_MINUTES)],
        "C",
        "critical",
    )


def freshness() -> alerting.Rule:
    return _rule(
        "tsdemo-freshness",
        "Stored windows are stale",
        f"The newest stored window started more than {FRESHNESS_THRESHOLD_S} s ago.",
        "Alerting",  # no window in the threshold: exactly the condition
        "1m",
        [_influx("A", FRESH_WINDOWS, FRESHNESS_THRESHOLD_S), _reduce("B", "A"), _threshold("C", "B", "lt", 1)],
        "C",
        "warning",
    )


def anomaly_spike() -> alerting.Rule:
    return _rule(
        "tsdemo-anomaly-spike",
        "Anomaly rate spike",
        f"Site {{{{ $labels.site }}}}: at least {SPIKE_MIN_ANOMALIES} anomalies in {SPIKE_WINDOW_S // 60} minutes, "
        f"over {SPIKE_FACTOR}x its rate of the last hour.",
        "OK",  # no anomaly at all is the good case
        "0s",
        [
            _influx("A", ANOMALIES_PER_SITE, SPIKE_WINDOW_S),
            _influx("B", ANOMALIES_PER_SITE, SPIKE_BASELINE_S),
            _reduce("C", "A"),
            _reduce("D", "B"),
            _expression("E", expr.TypeMath().datasource(datasource.EXPRESSIONS).expression(SPIKE)),
            _threshold("F", "E", "gt", 0),
        ],
        "F",
        "warning",
    )


def rule_group() -> RuleGroup:
    return (
        alerting.RuleGroup(GROUP)
        .folder_uid(FOLDER_UID)
        .interval(INTERVAL_S)
        .rules([site_silent(), freshness(), anomaly_spike()])
        .build()
    )


def file_format(api: dict[str, Any]) -> dict[str, Any]:
    """A rule group's API JSON as an alerting provisioning file: ``apiVersion: 1`` and ``groups``, each
    with ``name``, ``folder`` (a title, not a uid), ``interval`` as a duration and the rules' fields as
    Grafana's file provisioning documents them."""
    rules = []
    for rule in api["rules"]:
        rules.append({
            "uid": rule["uid"],
            "title": rule["title"],
            "condition": rule["condition"],
            "data": rule["data"],
            "noDataState": rule["noDataState"],
            "execErrState": rule["execErrState"],
            "for": rule["for"],
            "annotations": rule.get("annotations", {}),
            "labels": rule.get("labels", {}),
            "isPaused": rule.get("isPaused", False),
        })
    return {
        "apiVersion": 1,
        "groups": [{
            "orgId": ORG_ID,
            "name": api["title"],
            "folder": FOLDER_TITLE,
            "interval": f"{api['interval']}s",
            "rules": rules,
        }],
    }
