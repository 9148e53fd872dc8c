"""The generated dashboards, datasource and alert rules against the SDK's models and our conventions."""

from __future__ import annotations

import copy
import re

import pytest

from dashboards import alerts, datasource, provisioning, validate
from dashboards.conventions import DEVICE_UID, FLEET_UID, PIPELINE_UID

DASHBOARDS = provisioning.dashboards()


def _influx_targets(model: dict):
    for panel in model["panels"]:
        for target in panel.get("targets", []):
            if target.get("datasource", {}).get("type") == datasource.TYPE:
                yield panel, target


def test_uids_are_stable():
    assert sorted(DASHBOARDS) == sorted([FLEET_UID, DEVICE_UID, PIPELINE_UID])
    assert [rule["uid"] for rule in provisioning.rule_group()["rules"]] == [
        "tsdemo-site-silent", "tsdemo-freshness", "tsdemo-anomaly-spike"]


@pytest.mark.parametrize("uid", sorted(DASHBOARDS))
def test_dashboards_round_trip_through_the_sdk_models(uid):
    assert validate.check_dashboard(DASHBOARDS[uid]) == []
    assert validate.check_datasource_refs(DASHBOARDS[uid]) == []


def test_the_rule_group_round_trips_through_the_sdk_models():
    group = provisioning.rule_group()
    assert validate.check_rule_group(group) == []
    assert validate.check_datasource_refs(group) == []


def test_validation_catches_what_the_models_do_not_know():
    model = copy.deepcopy(DASHBOARDS[FLEET_UID])
    model["panels"][1]["options"]["legend"]["placment"] = "bottom"  # a typo
    model["panels"][2]["targets"][0]["datasource"] = {"type": "influx", "uid": datasource.UID}
    problems = validate.check_dashboard(model)
    assert any("legend.placment: dropped" in p for p in problems), problems
    assert any("no SDK query type for datasource type 'influx'" in p for p in problems), problems
    assert validate.check_datasource_refs(model) != []


def test_validation_checks_expression_and_annotation_targets_by_their_own_type():
    pipeline = copy.deepcopy(DASHBOARDS[PIPELINE_UID])
    (gap,) = [t for p, t in ((p, t) for p in pipeline["panels"] for t in p.get("targets", []))
              if t.get("type") == "math"]
    gap["expresion"] = gap.pop("expression")
    assert any("expresion" in p for p in validate.check_dashboard(pipeline))

    device = copy.deepcopy(DASHBOARDS[DEVICE_UID])
    device["annotations"]["list"][0]["target"]["textColumns"] = "detector"
    assert any("textColumns: dropped" in p for p in validate.check_dashboard(device))


@pytest.mark.parametrize("uid", sorted(DASHBOARDS))
def test_every_panel_has_a_unique_id_and_every_query_the_time_filter(uid):
    model = DASHBOARDS[uid]
    ids = [panel["id"] for panel in model["panels"]]
    assert len(ids) == len(set(ids))
    targets = list(_influx_targets(model))
    assert targets
    for panel, target in targets:
        assert target["rawQuery"] is True
        assert target["query"].count("$timeFilter") >= 1, (panel["title"], target["query"])
        assert panel["datasource"] == {"type": datasource.TYPE, "uid": datasource.UID}
        # A tag filter on a variable must be a regex: a single "=" would break on multiple values and "All".
        assert not re.search(r"=\s*'\$", target["query"]), target["query"]


def test_variables_and_annotations_use_the_datasource():
    for model in DASHBOARDS.values():
        for variable in model["templating"].get("list", []):
            assert variable["datasource"] == {"type": datasource.TYPE, "uid": datasource.UID}
            assert variable["query"].startswith("SHOW TAG VALUES")
        for annotation in model["annotations"]["list"]:
            assert annotation["datasource"]["uid"] == datasource.UID
            assert annotation["target"]["query"].count("$timeFilter") == 1


def test_the_datasource_is_influxql_with_a_fixed_uid_and_values_from_the_environment():
    entry = datasource.provisioning_entry()
    assert (entry["uid"], entry["type"], entry["jsonData"]["version"]) == (datasource.UID, "influxdb", "InfluxQL")
    assert entry["url"] == "${TSDEMO_INFLUX_URL}"
    assert entry["jsonData"]["dbName"] == "${TSDEMO_INFLUX_DATABASE}"
    assert entry["user"] == "${TSDEMO_INFLUX_USERNAME}"
    assert entry["secureJsonData"] == {"password": "${TSDEMO_INFLUX_PASSWORD}"}
    assert set(datasource.ENV_VARIABLES) == {"TSDEMO_INFLUX_URL", "TSDEMO_INFLUX_DATABASE",
                                             "TSDEMO_INFLUX_USERNAME", "TSDEMO_INFLUX_PASSWORD"}


def test_the_api_datasource_carries_a_password_only_when_given():
    assert "secureJsonData" not in datasource.api_payload("http://i:8086", "iot")
    body = datasource.api_payload("http://i:8086", "iot", "grafana", "pw")
    assert (body["user"], body["secureJsonData"]) == ("grafana", {"password": "pw"})


def test_rules_have_a_condition_among_their_queries_and_query_the_datasource():
    for rule in provisioning.rule_group()["rules"]:
        ref_ids = [q["refId"] for q in rule["data"]]
        assert rule["condition"] in ref_ids and len(ref_ids) == len(set(ref_ids))
        for query in rule["data"]:
            if query["datasourceUid"] == datasource.UID:
                assert query["relativeTimeRange"]["from"] > query["relativeTimeRange"]["to"] == 0
                assert "$timeFilter" in query["model"]["query"]
            else:
                assert query["datasourceUid"] == "__expr__"
                assert query["model"]["type"] in ("reduce", "threshold", "math")


def test_the_alerting_file_names_the_folder_by_title_and_the_interval_as_a_duration():
    file = alerts.file_format(provisioning.rule_group())
    (group,) = file["groups"]
    assert file["apiVersion"] == 1
    assert (group["name"], group["folder"], group["interval"], group["orgId"]) == ("tsdemo", "tsdemo", "60s", 1)
    assert [r["uid"] for r in group["rules"]] == [r["uid"] for r in provisioning.rule_group()["rules"]]
    assert all("folderUID" not in r and "ruleGroup" not in r for r in group["rules"])
