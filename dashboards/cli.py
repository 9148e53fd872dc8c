"""``tsdemo dashboards generate``, ``provision`` and ``snapshot``.

``deploy/cli.py`` calls ``add_parser(subparsers)`` and dispatches with ``args.func(args)``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import Field

from dashboards.settings import COMMITTED, GrafanaSettings
from servicekit.settings import ServiceSettings, add_command_group, add_service_command


class GenerateSettings(ServiceSettings):
    out: Path = Field(COMMITTED, description="directory to write")
    check: bool = Field(False, description="write nothing; exit 1 when the directory differs from what the code "
                        "generates")


def _generate(settings: GenerateSettings) -> int:
    from dashboards import provisioning

    out = settings.out
    try:
        if settings.check:
            stale = provisioning.stale(out)
            for line in stale:
                print(f"{out / line}", file=sys.stderr)
            if stale:
                print("tsdemo: the provisioning files differ from the code; run `tsdemo dashboards generate`",
                      file=sys.stderr)
                return 1
            print(f"{out} is up to date")
            return 0
        written = provisioning.write(out)
    except provisioning.InvalidDashboardError as exc:
        print(f"tsdemo: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    leftover = [line for line in provisioning.stale(out) if line.endswith("(not generated)")]
    for line in leftover:
        print(f"tsdemo: {out / line.removesuffix(' (not generated)')} is not generated any more; remove it",
              file=sys.stderr)
    return 0


def _provision(settings: GrafanaSettings) -> int:
    from dashboards.grafana_api import ProvisionError, provision

    try:
        provision(settings, say=lambda line: print(line, flush=True))
    except ProvisionError as exc:
        print(f"tsdemo: {exc}", file=sys.stderr)
        return 1
    return 0


def _snapshot(settings) -> int:  # noqa: ANN001 (a SnapshotSettings, imported with the command)
    from dashboards.snapshot import InfluxUnreachableError, snapshot

    try:
        snapshot(settings, say=lambda line: print(line, flush=True))
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "matplotlib":
            print("tsdemo: `tsdemo dashboards snapshot` draws with matplotlib: pip install 'tsdemo[snapshot]'",
                  file=sys.stderr)
            return 2
        raise
    except InfluxUnreachableError as exc:
        print(f"tsdemo: {exc}; is the stack up (`tsdemo status`)? Point --influx-url (TSDEMO_INFLUX_URL) at it",
              file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"tsdemo: {exc}", file=sys.stderr)
        return 2
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Registers ``tsdemo dashboards {generate,provision,snapshot}``."""
    commands = add_command_group(
        subparsers, "dashboards",
        "Grafana dashboards and alert rules: write the provisioning files, or push them to a Grafana",
        "Grafana dashboards, datasource and alert rules, built in Python (see dashboards/README.md).")
    add_service_command(
        commands, "generate", "write the provisioning tree (datasources/, dashboards/, alerting/) Grafana reads",
        GenerateSettings, _generate, description=(
            "Write Grafana's provisioning tree from the code: datasources/tsdemo-influxdb.yaml,\n"
            "dashboards/tsdemo-provider.yaml with one JSON file per dashboard, and alerting/tsdemo-rules.yaml.\n"
            "Mount the directory as /etc/grafana/provisioning. The datasource reads TSDEMO_INFLUX_URL,\n"
            "TSDEMO_INFLUX_DATABASE, TSDEMO_INFLUX_USERNAME and TSDEMO_INFLUX_PASSWORD from Grafana's environment."))
    add_service_command(
        commands, "provision",
        "create or update the datasource, folder, dashboards and alert rules in a running Grafana",
        GrafanaSettings, _provision, description=(
            "Wait for Grafana's /api/health, then create or update, through its HTTP API, the InfluxDB\n"
            "datasource, the tsdemo folder, the dashboards and the alert rules. Safe to run again: only\n"
            "what is missing or different is written. Objects that Grafana got from the provisioning\n"
            "files are left to them (the command says so)."))
    from dashboards.snapshot import SnapshotSettings

    add_service_command(
        commands, "snapshot", "draw each dashboard's time-series panels from InfluxDB into PNGs (no Grafana needed)",
        SnapshotSettings, _snapshot, description=(
            "Run each dashboard's time-series panel queries, variables and $timeFilter/$__interval filled\n"
            "in as Grafana would, against InfluxDB, and draw them: one PNG per dashboard (DIR/<uid>.png),\n"
            "panels in a grid, over the last --time-range. Variables: --var NAME=VALUE, else All where the\n"
            "variable offers it, else its first value. Prints each panel's series and points; exits 1 when\n"
            "InfluxDB cannot be reached. Example: tsdemo dashboards snapshot --out /tmp/shots --time-range 30m"))
