"""InfluxQL queries as grafana-foundation-sdk objects: panel targets, alert-rule models and annotation targets.

The SDK (generated for Grafana 10.1) ships query types for Prometheus, Loki, Elasticsearch and other
core datasources but none for InfluxDB, so this module adds one the way the SDK documents for
"custom query types": a ``cogvariants.Dataquery`` with ``to_json``/``from_json``, a builder, and a
variant registered under the plugin id ``influxdb`` so that ``Dashboard.from_json`` decodes our
targets into this type instead of an untyped bag. Only raw (hand-written) InfluxQL is modelled:
every query in these dashboards is written out in full, never built with Grafana's query editor.

The JSON keys are those of Grafana's InfluxDB query model (``query``, ``rawQuery``, ``resultFormat``,
``alias``; ``intervalMs``/``maxDataPoints`` for alert rules; ``fromAnnotations`` and the ``*Column``
keys for annotation queries).
"""

from __future__ import annotations

from typing import Any, Literal, Self

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard as sdk_dashboard

PLUGIN_ID = "influxdb"

ResultFormat = Literal["time_series", "table", "logs"]

# Python attribute -> Grafana JSON key, in the order the JSON is written.
_KEYS = (
    ("ref_id", "refId"),
    ("datasource", "datasource"),
    ("hide", "hide"),
    ("query", "query"),
    ("raw_query", "rawQuery"),
    ("result_format", "resultFormat"),
    ("alias", "alias"),
    ("interval_ms", "intervalMs"),
    ("max_data_points", "maxDataPoints"),
    ("from_annotations", "fromAnnotations"),
    ("title_column", "titleColumn"),
    ("text_column", "textColumn"),
    ("tags_column", "tagsColumn"),
)


class InfluxQLQuery(cogvariants.Dataquery):
    """One raw InfluxQL query as Grafana stores it in a panel, an alert rule or an annotation."""

    def __init__(
        self,
        query: str = "",
        ref_id: str | None = None,
        datasource: sdk_dashboard.DataSourceRef | None = None,
        hide: bool | None = None,
        raw_query: bool | None = True,
        result_format: ResultFormat | None = "time_series",
        alias: str | None = None,
        interval_ms: int | None = None,
        max_data_points: int | None = None,
        from_annotations: bool | None = None,
        title_column: str | None = None,
        text_column: str | None = None,
        tags_column: str | None = None,
    ) -> None:
        self.query = query
        self.ref_id = ref_id
        self.datasource = datasource
        self.hide = hide
        self.raw_query = raw_query
        self.result_format = result_format
        self.alias = alias
        self.interval_ms = interval_ms
        self.max_data_points = max_data_points
        self.from_annotations = from_annotations
        self.title_column = title_column
        self.text_column = text_column
        self.tags_column = tags_column

    def to_json(self) -> dict[str, object]:
        return {key: getattr(self, attr) for attr, key in _KEYS if getattr(self, attr) is not None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        args: dict[str, Any] = {attr: data[key] for attr, key in _KEYS if key in data}
        if "datasource" in args:
            args["datasource"] = sdk_dashboard.DataSourceRef.from_json(args["datasource"])
        # A key absent from the JSON must stay absent after a round trip, not take our defaults.
        for attr in ("raw_query", "result_format"):
            args.setdefault(attr, None)
        return cls(**args)


def variant_config() -> cogruntime.DataqueryConfig:
    """Lets ``Dashboard.from_json`` decode targets whose datasource type is ``influxdb``."""
    return cogruntime.DataqueryConfig(identifier=PLUGIN_ID, from_json_hook=InfluxQLQuery.from_json)


def register() -> None:
    """Registers the SDK's own plugins and this query type (idempotent) before decoding JSON."""
    from grafana_foundation_sdk.cog.plugins import register_default_plugins

    register_default_plugins()
    cogruntime.register_dataquery_variant(variant_config())


class InfluxQL(cogbuilder.Builder[InfluxQLQuery]):
    """Builder for a raw InfluxQL target: ``InfluxQL('SELECT ...').ref_id('A').table()``."""

    def __init__(self, query: str) -> None:
        self._internal = InfluxQLQuery(query=query)

    def build(self) -> InfluxQLQuery:
        return self._internal

    def ref_id(self, ref_id: str) -> Self:
        self._internal.ref_id = ref_id
        return self

    def datasource(self, datasource: sdk_dashboard.DataSourceRef) -> Self:
        self._internal.datasource = datasource
        return self

    def hide(self, hide: bool) -> Self:
        self._internal.hide = hide
        return self

    def table(self) -> Self:
        """Rows with a column per tag and field, as table panels and joins need."""
        self._internal.result_format = "table"
        return self

    def alias(self, alias: str) -> Self:
        """Series name pattern, e.g. ``$tag_stage``."""
        self._internal.alias = alias
        return self

    def for_alerting(self, interval_ms: int = 1000, max_data_points: int = 43200) -> Self:
        """The two keys Grafana's alert rule editor stores with every datasource query."""
        self._internal.interval_ms = interval_ms
        self._internal.max_data_points = max_data_points
        return self


class InfluxAnnotationTarget(sdk_dashboard.AnnotationTarget):
    """An annotation query's target for the InfluxDB datasource.

    The SDK types ``AnnotationQuery.target`` as the built-in Grafana datasource's target (limit,
    matchAny, tags, type: its schema says "TODO: this should be a regular DataQuery"), which cannot
    hold a query. This subclass keeps the SDK's annotation builder usable and serialises to the
    target Grafana's InfluxDB datasource reads (``query`` plus the columns mapped to the event).
    """

    def __init__(self, query: InfluxQLQuery) -> None:
        super().__init__()
        self.influx = query

    def to_json(self) -> dict[str, object]:
        return self.influx.to_json()


class InfluxAnnotation(cogbuilder.Builder[sdk_dashboard.AnnotationTarget]):
    """Builder of ``InfluxAnnotationTarget``: each row of ``query`` (table format) becomes an event."""

    def __init__(self, query: str, ref_id: str) -> None:
        self._query = InfluxQLQuery(
            query=query, ref_id=ref_id, result_format="table", from_annotations=True
        )

    def text_column(self, column: str) -> Self:
        self._query.text_column = column
        return self

    def tags_column(self, columns: str) -> Self:
        """Comma-separated columns whose values become the event's tags."""
        self._query.tags_column = columns
        return self

    def build(self) -> InfluxAnnotationTarget:
        return InfluxAnnotationTarget(self._query)
