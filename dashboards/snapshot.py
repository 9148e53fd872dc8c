"""``tsdemo dashboards snapshot``: each dashboard's time-series panels drawn to a PNG from their own InfluxQL.

For rooms (and machines) without a Grafana server. Not a second dashboard system: the statements are the
panels' own, with variables and macros filled in by :mod:`dashboards.panel_queries` exactly as for the
tests, run against InfluxDB, and drawn with matplotlib, one PNG per dashboard with the time-series
panels in a grid. Stat, table and geomap panels are left out (their numbers are one query away:
``--show-queries`` prints every statement).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from dashboards import interpolate, panel_queries
from storage.settings import InfluxSettings

_ALIAS = re.compile(r"\$(tag_\w+|col|measurement|m)\b|\[\[(tag_\w+|col|measurement|m)\]\]")


class SnapshotSettings(InfluxSettings):
    out: Path = Field(Path(".tsdemo/snapshots"), description="directory the PNGs are written to (created)")
    time_range: str = Field("15m", description="how far back from now the panels look, like Grafana's "
                            "'Last 15 minutes': 30s, 15m, 1h, 1d")
    dashboard: list[str] = Field(default_factory=list, description="only this dashboard (uid, e.g. "
                                 "tsdemo-pipeline); default all")
    var: list[str] = Field(default_factory=list, description="a variable's value, NAME=VALUE (repeat a NAME for "
                           "several values; VALUE All for all); default: All where the variable offers it, "
                           "else its first value")
    max_data_points: int = Field(300, ge=10, le=10_000, description="points across a panel; decides "
                                 "$__interval as a panel's width in pixels does in Grafana")
    show_queries: bool = Field(False, description="print every statement as it is sent to InfluxDB")

    @field_validator("time_range")
    @classmethod
    def _range(cls, value: str) -> str:
        interpolate.parse_interval_ms(value)
        return value.strip()

    @field_validator("var")
    @classmethod
    def _vars(cls, value: list[str]) -> list[str]:
        for item in value:
            if "=" not in item or not item.split("=", 1)[0]:
                raise ValueError(f"{item!r} is not NAME=VALUE")
        return value

    def chosen(self) -> dict[str, Any]:
        """``--var`` as interpolate.selections takes it: one value, a list, or ALL."""
        given: dict[str, list[str]] = {}
        for item in self.var:
            name, value = item.split("=", 1)
            given.setdefault(name, []).append(value)
        return {name: interpolate.ALL if values == ["All"] else values for name, values in given.items()}


class InfluxUnreachableError(RuntimeError):
    """InfluxDB did not answer /ping."""


@dataclass
class PanelSnapshot:
    title: str
    series: int = 0
    points: int = 0
    error: str | None = None


@dataclass
class DashboardSnapshot:
    uid: str
    title: str
    path: Path
    variables: dict[str, list[str]]
    panels: list[PanelSnapshot] = field(default_factory=list)


def _alias(alias: str, column: str, tags: Mapping[str, str], measurement: str) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name == "col":
            return column
        if name in ("m", "measurement"):
            return measurement
        return tags.get(name.removeprefix("tag_"), "")

    return _ALIAS.sub(replace, alias)


def series_of(rows: list[dict[str, Any]], alias: str | None) -> dict[str, tuple[list[int], list[float]]]:
    """The rows of one target as named lines: one per numeric column and tag set (string values are tags),
    named by the target's alias as Grafana names them, else ``column {tag=value, ...}``."""
    lines: dict[str, tuple[list[int], list[float]]] = {}
    for row in rows:
        tags = {k: v for k, v in row.items() if isinstance(v, str) and k != "_name"}
        for column, value in row.items():
            if column in ("time", "_name") or isinstance(value, str) or isinstance(value, bool) or value is None:
                continue
            if alias:
                name = _alias(alias, column, tags, row.get("_name", ""))
            else:
                name = column + (" {" + ", ".join(f"{k}={v}" for k, v in sorted(tags.items())) + "}" if tags else "")
            times, values = lines.setdefault(name, ([], []))
            times.append(int(row["time"]))
            values.append(float(value))
    return lines


def _default_choice(dashboard: Mapping[str, Any], chosen: Mapping[str, Any], from_ms: int, to_ms: int,
                    run: panel_queries.RunQuery) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The selections Grafana would open with when nothing is saved: All where offered, else the first value."""
    chosen = dict(chosen)
    options: dict[str, list[str]] = {}
    for variable in (dashboard.get("templating") or {}).get("list", []):
        name = variable["name"]
        # Options of this variable may depend on the ones before it, so resolve in order.
        options = panel_queries.variable_options(dashboard, chosen, from_ms, to_ms, run)
        if name not in chosen:
            if variable.get("includeAll"):
                chosen[name] = interpolate.ALL
            elif options.get(name):
                chosen[name] = [options[name][0]]
    options = panel_queries.variable_options(dashboard, chosen, from_ms, to_ms, run)
    return chosen, options


def snapshot(settings: SnapshotSettings, say: Callable[[str], None] = print,
             now_ms: int | None = None) -> list[DashboardSnapshot]:
    """Writes one PNG per dashboard into ``settings.out``; returns what each panel showed."""
    # Imported here: the provisioning code pulls in the SDK, and matplotlib is slow to import.
    from matplotlib.figure import Figure

    from dashboards import provisioning
    from storage.queries import InfluxQuery

    client = InfluxQuery(settings)
    if not client.ping(timeout=min(5.0, settings.influx_timeout_s)):
        raise InfluxUnreachableError(f"InfluxDB does not answer at {settings.influx_url}")

    def run(statement: str) -> list[dict[str, Any]]:
        if settings.show_queries:
            say(f"  query: {statement}")
        return client.query(statement)

    to_ms = int(time.time() * 1000) if now_ms is None else now_ms
    from_ms = to_ms - interpolate.parse_interval_ms(settings.time_range)
    dashboards = provisioning.dashboards()
    unknown = sorted(set(settings.dashboard) - set(dashboards))
    if unknown:
        raise ValueError(f"no dashboard {', '.join(unknown)}; there are {', '.join(sorted(dashboards))}")
    settings.out.mkdir(parents=True, exist_ok=True)
    results = []
    for uid, dashboard in dashboards.items():
        if settings.dashboard and uid not in settings.dashboard:
            continue
        chosen, options = _default_choice(dashboard, settings.chosen(), from_ms, to_ms, run)
        selection = interpolate.selections(dashboard, chosen, options)
        shown = {name: list(s.values) for name, s in selection.items()}
        panels = sorted((p for p in dashboard["panels"] if p["type"] == "timeseries"),
                        key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))
        result = DashboardSnapshot(uid, dashboard["title"], settings.out / f"{uid}.png", shown)
        columns = 2 if len(panels) > 1 else 1
        rows = max(1, -(-len(panels) // columns))
        figure = Figure(figsize=(7.5 * columns, 3.4 * rows + 0.8), layout="constrained")
        variables = "  ".join(f"{k}={','.join(v) if len(v) < 4 else f'All ({len(v)})'}" for k, v in shown.items())
        figure.suptitle(f"{dashboard['title']}   {_utc(from_ms)} to {_utc(to_ms)} UTC   {variables}", fontsize=11)
        for index, panel in enumerate(panels):
            axes = figure.add_subplot(rows, columns, index + 1)
            drawn = PanelSnapshot(interpolate.substitute_variables(panel["title"], selection))
            where = panel_queries.panel_range(panel, from_ms, to_ms, settings.max_data_points)
            try:
                for target, statement in panel_queries.target_statements(panel, where, selection):
                    for name, (times, values) in series_of(run(statement), target.get("alias")).items():
                        axes.plot([datetime.fromtimestamp(t / 1000, UTC) for t in times], values, label=name,
                                  marker="." if len(times) < 30 else None, linewidth=1.2)
            except Exception as exc:  # one broken panel must not hide the others; it says why on the picture
                if not client.ping(timeout=2.0):
                    raise InfluxUnreachableError(f"InfluxDB stopped answering at {settings.influx_url}") from exc
                drawn.error = str(exc)
                axes.text(0.5, 0.5, f"query failed:\n{exc}"[:300], ha="center", va="center", wrap=True,
                          transform=axes.transAxes, fontsize=8, color="darkred")
            drawn.series = len(axes.lines)
            drawn.points = sum(len(line.get_xdata()) for line in axes.lines)
            _decorate(axes, drawn, where)
            result.panels.append(drawn)
        figure.savefig(result.path, dpi=80)
        with_data = [p for p in result.panels if p.points]
        say(f"{result.path}: {len(result.panels)} time-series panels, {len(with_data)} with data"
            + "".join(f"\n  {p.title}: {p.series} series, {p.points} points" + (f" (error: {p.error})"
                      if p.error else "") for p in result.panels))
        results.append(result)
    if not any(p.points for r in results for p in r.panels):
        say(f"no panel has data in the last {settings.time_range}: is the pipeline writing to "
            f"{settings.influx_url} (database {settings.influx_database})? Try a longer --time-range.")
    return results


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _decorate(axes: Any, drawn: PanelSnapshot, where: panel_queries.PanelRange) -> None:
    from matplotlib import dates

    axes.set_title(drawn.title, fontsize=10, loc="left")
    axes.set_xlim(datetime.fromtimestamp(where.from_ms / 1000, UTC), datetime.fromtimestamp(where.to_ms / 1000, UTC))
    axes.xaxis.set_major_formatter(dates.DateFormatter("%H:%M:%S", tz=UTC))
    axes.tick_params(labelsize=8)
    axes.grid(alpha=0.3)
    if drawn.series:
        axes.legend(fontsize=7, loc="upper left", ncols=2 if drawn.series > 4 else 1)
    elif not drawn.error:
        axes.text(0.5, 0.5, "no data", ha="center", va="center", transform=axes.transAxes, color="grey")
