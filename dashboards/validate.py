"""Checks generated dashboards and alert rules against the SDK's models: decode the JSON with the SDK,
encode it again, and report every key that did not survive (a key the model does not know, a value
of the wrong shape) or that the decoding added.

Two places where the SDK (generated for Grafana 10.1) cannot decode valid Grafana JSON as a whole are
checked piece by piece instead:

* a panel's targets are decoded by the *panel's* datasource type, so an expression target
  (``__expr__``) in an InfluxDB panel would be read as an InfluxQL query: each target whose
  datasource differs from its panel's is decoded by its own type;
* an annotation's ``target`` is typed as the built-in Grafana datasource's, so an InfluxDB annotation
  target is decoded as our InfluxQL query type.

Every target must decode into a known query type: an unknown datasource type (a typo) is an error.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.models.alerting import RuleGroup
from grafana_foundation_sdk.models.dashboard import Dashboard, DataSourceRef

from dashboards import datasource, influxql
from dashboards.conventions import json_data


def differences(before: Any, after: Any, path: str = "") -> list[str]:
    """Keys lost, added or changed between two JSON values, as readable paths."""
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for key in sorted(set(before) | set(after)):
            where = f"{path}.{key}" if path else key
            if key not in after:
                found.append(f"{where}: dropped by the SDK model (value {json.dumps(before[key])[:80]})")
            elif key not in before:
                found.append(f"{where}: added by the SDK model (value {json.dumps(after[key])[:80]})")
            else:
                found.extend(differences(before[key], after[key], where))
        return found
    if isinstance(before, list) and isinstance(after, list):
        if len(before) != len(after):
            return [f"{path}: {len(before)} items became {len(after)}"]
        pairs = enumerate(zip(before, after, strict=True))
        return [d for i, (b, a) in pairs for d in differences(b, a, f"{path}[{i}]")]
    return [] if before == after else [f"{path}: {before!r} became {after!r}"]


def _check_query(query: dict[str, Any], type_hint: str, where: str) -> list[str]:
    decoded = cogruntime.dataquery_from_json(query, type_hint)
    if isinstance(decoded, cogruntime.UnknownDataquery):
        return [f"{where}: no SDK query type for datasource type {type_hint!r}"]
    return differences(query, json_data(decoded), where)


def check_dashboard(model: dict[str, Any]) -> list[str]:
    """Problems found decoding ``model`` with the SDK; empty when it round-trips exactly."""
    influxql.register()
    model = copy.deepcopy(model)
    problems: list[str] = []
    for p, panel in enumerate(model.get("panels", [])):
        panel_type = (panel.get("datasource") or {}).get("type", "")
        same_type = []
        for t, query in enumerate(panel.get("targets") or []):
            own_type = (query.get("datasource") or {}).get("type", "")
            problems += _check_query(query, own_type or panel_type, f"panels[{p}].targets[{t}]")
            if not own_type or own_type == panel_type:
                same_type.append(query)
        if "targets" in panel:
            panel["targets"] = same_type  # the others were checked above, by their own type
    for a, annotation in enumerate((model.get("annotations") or {}).get("list", [])):
        source_type = (annotation.get("datasource") or {}).get("type", "")
        if source_type not in ("grafana", "datasource") and "target" in annotation:
            problems += _check_query(annotation.pop("target"), source_type, f"annotations.list[{a}].target")
    return problems + differences(model, json_data(Dashboard.from_json(model)), "dashboard")


def check_rule_group(group: dict[str, Any]) -> list[str]:
    """Problems decoding an alert rule group (the API's JSON) with the SDK's alerting models."""
    influxql.register()
    problems = differences(group, json_data(RuleGroup.from_json(group)), "group")
    for r, rule in enumerate(group.get("rules", [])):
        for q, query in enumerate(rule.get("data", [])):
            model = query.get("model", {})
            problems += _check_query(model, "", f"rules[{r}].data[{q}].model")
    return problems


def datasource_refs(value: Any) -> list[dict[str, Any]]:
    """Every ``datasource`` reference inside a dashboard or rule group."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "datasource" and isinstance(item, dict):
                found.append(item)
            else:
                found += datasource_refs(item)
    elif isinstance(value, list):
        for item in value:
            found += datasource_refs(item)
    return found


def check_datasource_refs(value: Any) -> list[str]:
    """Every reference must be the tsdemo InfluxDB datasource or Grafana's expressions, as a valid
    ``DataSourceRef``. (The SDK has no model of a datasource's own configuration.)"""
    allowed = ({"type": datasource.TYPE, "uid": datasource.UID},
               {"type": datasource.EXPRESSIONS_UID, "uid": datasource.EXPRESSIONS_UID})
    problems = []
    for ref in datasource_refs(value):
        if json_data(DataSourceRef.from_json(ref)) != ref:
            problems.append(f"datasource reference {ref} does not round-trip through DataSourceRef")
        if ref not in allowed:
            problems.append(f"datasource reference {ref} is not the tsdemo InfluxDB datasource")
    return problems
