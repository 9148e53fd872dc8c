"""The one InfluxDB datasource every panel and alert rule uses: its fixed uid, and its definition both
for a provisioning file (values from environment variables Grafana expands) and for the HTTP API.

A fixed uid lets dashboards, alert rules and both provisioning paths refer to the same datasource
whatever Grafana instance they land in; the datasource's name is only for people.
"""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.models.dashboard import DataSourceRef

UID = "tsdemo-influxdb"
NAME = "tsdemo InfluxDB"
TYPE = "influxdb"
# Grafana never picks a $__interval shorter than this: processing writes one point per 10 s window,
# so a shorter bucket would only show gaps.
MIN_INTERVAL = "10s"

# Environment variables Grafana expands in the datasource provisioning file (Grafana replaces $VAR /
# ${VAR} in every provisioning file; an unset variable becomes ""). They are the ones every tsdemo
# service reads, so one set of variables configures the pipeline and Grafana alike.
ENV_URL = "TSDEMO_INFLUX_URL"
ENV_DATABASE = "TSDEMO_INFLUX_DATABASE"
ENV_USERNAME = "TSDEMO_INFLUX_USERNAME"
ENV_PASSWORD = "TSDEMO_INFLUX_PASSWORD"
ENV_VARIABLES = {
    ENV_URL: "InfluxDB base URL as Grafana reaches it, e.g. http://influxdb:8086 (required)",
    ENV_DATABASE: "the database processing writes to, normally iot (required)",
    ENV_USERNAME: "InfluxDB user when its auth is on (may be empty)",
    ENV_PASSWORD: "that user's password (may be empty)",
}


# Grafana's server-side expressions (math, reduce, threshold) are addressed as this pseudo-datasource.
EXPRESSIONS_UID = "__expr__"
EXPRESSIONS = DataSourceRef(type_val=EXPRESSIONS_UID, uid=EXPRESSIONS_UID)


def ref() -> DataSourceRef:
    """What panels, targets, variables and annotations put in their ``datasource`` key."""
    return DataSourceRef(type_val=TYPE, uid=UID)


def _json_data(database: str) -> dict[str, Any]:
    return {
        "dbName": database,
        # POST sends the query in the body: the nested subqueries here are long for a URL.
        "httpMode": "POST",
        "version": "InfluxQL",
        "timeInterval": MIN_INTERVAL,
    }


def provisioning_entry() -> dict[str, Any]:
    """The datasource in a provisioning file, every connection value an environment variable."""
    return {
        "name": NAME,
        "uid": UID,
        "type": TYPE,
        "access": "proxy",
        "url": f"${{{ENV_URL}}}",
        "user": f"${{{ENV_USERNAME}}}",
        "isDefault": True,
        "editable": False,
        "jsonData": _json_data(f"${{{ENV_DATABASE}}}"),
        "secureJsonData": {"password": f"${{{ENV_PASSWORD}}}"},
        "version": 1,
    }


def api_payload(url: str, database: str, username: str | None = None, password: str | None = None) -> dict[str, Any]:
    """The body of ``POST /api/datasources`` and ``PUT /api/datasources/uid/<uid>``."""
    body: dict[str, Any] = {
        "name": NAME,
        "uid": UID,
        "type": TYPE,
        "access": "proxy",
        "url": url,
        "user": username or "",
        "isDefault": True,
        "jsonData": _json_data(database),
    }
    if password:
        body["secureJsonData"] = {"password": password}
    return body
